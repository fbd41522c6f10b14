"""``plastic-jax benchmark`` end to end on a tiny case, and its user errors."""

import json

import pytest

from plastic_jax.benchmark import synthetic_class_index
from plastic_jax.cli import main

KEYS = {"rule", "feedback", "estimator", "T", "meta_batch", "ms_per_episode", "forward_ms",
        "peak_mem_mb", "compile_s"}


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_tiny_benchmark_case_via_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--rule", "bio", "--feedback", "fa", "--estimator", "forward,auto",
               "--T", "10", "--meta-batch", "2", "--sizes", "16,8,5", "--repeats", "2",
               "--naive", "yes", "--json", str(out)])
    assert rc == 0
    recs = json.loads(out.read_text())
    assert [r["estimator"] for r in recs] == ["forward", "auto"]
    for r in recs:
        assert "error" not in r, r.get("error")
        assert KEYS <= set(r)
        assert (r["rule"], r["feedback"], r["T"], r["meta_batch"]) == ("bio", "fa", 10, 2)
        assert r["ms_per_episode"] > 0 and r["forward_ms"] > 0 and r["peak_mem_mb"] >= r["base_rss_mb"] > 0
    assert recs[1]["resolved_estimator"] == "adjoint"  # R = 3 > AUTO_FORWARD_MAX_R
    assert recs[0]["naive_ms"] > 0 and recs[0]["speedup_vs_naive"] > 0
    table = capsys.readouterr().out
    assert "| bio | fa | forward | 10 | 2 |" in table and "auto→adjoint" in table


@pytest.mark.parametrize("argv,msg", [(["--T", "12"], "multiples of M=5"),
                                      (["--meta-batch", "0"], "--meta-batch"),
                                      (["--repeats", "0"], "--repeats")])
def test_benchmark_user_errors_exit_2(argv, msg, capsys):
    assert main(["benchmark", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_synthetic_data_has_exactly_the_needed_examples():
    ci = synthetic_class_index(25, (16, 8, 7))
    assert ci.x.shape == (5 * (5 + 10), 16)
    assert list(ci.count[:5]) == [15] * 5 and int(ci.count[5:].sum()) == 0


def test_the_published_column_never_shows_a_time_this_run_did_not_measure():
    from plastic_jax.benchmark import _published_cell

    case = {"rule": "bio", "feedback": "fa", "T": 250, "meta_batch": 1, "ms_per_episode": 50.0}
    assert _published_cell(case) == "not measured (--published-code DIR)"
    measured = {**case, "published_source": "measured", "published_ms": 1028.0, "speedup_vs_published": 20.6}
    assert _published_cell(measured) == "1028 ms measured (21×)"
    assert _published_cell({**case, "T": 100}) == ""


def test_benchmark_json_goes_through_a_write_that_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    from plastic_jax import checkpoint

    path = tmp_path / "bench.json"
    path.write_text('[{"earlier": 1}]')

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(OSError):
        checkpoint.atomic_write_json(str(path), [{"rule": "bio"}])
    assert path.read_text() == '[{"earlier": 1}]'
