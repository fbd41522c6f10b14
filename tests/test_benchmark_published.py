"""``plastic-jax benchmark --published-code DIR --torch-python PY`` and scripts/bench_published.py,
without torch: a fake "torch Python" stands in for the harness, and the JAX cases are canned."""

import json
import subprocess
import sys
import textwrap

import pytest

from plastic_jax import benchmark
from plastic_jax.benchmark import EMNIST_SIZES, PUBLISHED_FILES, PUBLISHED_HARNESS, markdown_table
from plastic_jax.cli import main


def _record(rule, ms, feedback="fa", T=250, mb=1, sizes=EMNIST_SIZES, estimator="forward"):
    """A JAX case's record as the worker returns it (canned: no JAX run)."""
    return {"rule": rule, "feedback": feedback, "estimator": estimator, "resolved_estimator": estimator,
            "T": T, "meta_batch": mb, "ms_per_episode": ms, "forward_ms": ms / 2, "grad_over_forward": 2.0,
            "cpu_ms_per_episode": ms, "forward_cpu_ms": ms / 2, "peak_mem_mb": 300.0, "base_rss_mb": 250.0,
            "xla_temp_mb": 1.0, "compile_s": 1.0, "forward_compile_s": 1.0, "episodes_per_s": 1e3 / ms,
            "repeats": 3, "sizes": list(sizes), "device": "cpu:cpu"}


@pytest.fixture
def checkout(tmp_path):
    """A folder with the published code's file names (their contents are never read here)."""
    d = tmp_path / "MetaLearning-Plasticity"
    d.mkdir()
    for f in PUBLISHED_FILES:
        (d / f).write_text("# stand-in\n")
    return d


def _fake_python(tmp_path, seconds: dict, fail: str | None = None):
    """An executable standing in for the torch Python: it logs its argv and writes the harness's JSON."""
    log = tmp_path / "calls.log"
    script = tmp_path / "fake-torch-python"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import json, sys
        argv = sys.argv[1:]
        with open({str(log)!r}, "a") as f:
            f.write(json.dumps(argv) + "\\n")
        if {fail!r} is not None:
            print("bench_published.py: error: " + {fail!r}, file=sys.stderr)
            sys.exit(1)
        rules = argv[argv.index("--rule") + 1].split(",")
        secs = {seconds!r}
        cases = [{{"rule": r, "feedback": "fa", "s_per_episode": secs[r], "cpu_s_per_episode": secs[r] / 2,
                   "threads": 1,
                   "episodes": int(argv[argv.index("--episodes") + 1])}} for r in rules]
        json.dump({{"torch": "fake", "published_code": argv[argv.index("--published-code") + 1],
                   "cases": cases}}, open(argv[argv.index("--json") + 1], "w"))
        print("published: fake")
        """))
    script.chmod(0o755)
    return script, log


def _canned_worker(monkeypatch, ms_by_rule):
    monkeypatch.setattr(benchmark, "_run_worker", lambda case: _record(case["rule"], ms_by_rule[case["rule"]],
                                                                       case["feedback"], case["T"],
                                                                       case["meta_batch"], case["sizes"],
                                                                       case["estimator"]))


def test_measured_column_and_ratio(tmp_path, checkout, monkeypatch, capsys):
    fake, log = _fake_python(tmp_path, {"bio": 2.5, "f0": 0.35})
    _canned_worker(monkeypatch, {"bio": 100.0, "f0": 50.0, "pool": 400.0})
    out = tmp_path / "b.json"
    rc = main(["benchmark", "--rule", "f0,bio,pool", "--feedback", "fa,bp", "--estimator", "forward",
               "--T", "250", "--meta-batch", "1", "--naive", "no", "--repeats", "3",
               "--published-code", str(checkout), "--torch-python", str(fake), "--json", str(out)])
    assert rc == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 1  # the published code runs once per benchmark run
    argv = calls[0]
    assert argv[0] == PUBLISHED_HARNESS and argv[argv.index("--rule") + 1] == "f0,bio"
    assert argv[argv.index("--episodes") + 1] == "3" and argv[argv.index("--published-code") + 1] == str(checkout)

    table = capsys.readouterr().out
    assert "| 2500 ms measured (25×) |" in table  # bio: 2.5 s / 100 ms
    assert "| 350 ms measured (7.0×) |" in table  # f0: 0.35 s / 50 ms (one decimal under 10×)
    assert "not measured" not in table  # both rows the published code ran are measured
    recs = {(r["rule"], r["feedback"]): r for r in json.loads(out.read_text())}
    bio = recs[("bio", "fa")]
    assert bio["published_source"] == "measured" and bio["published_ms"] == 2500.0
    assert bio["speedup_vs_published"] == 25.0 and bio["published_threads"] == 1
    assert bio["published_cpu_ms"] == 1250.0 and bio["published_episodes"] == 3 and bio["published_torch"] == "fake"
    assert recs[("f0", "fa")]["speedup_vs_published"] == 7.0
    for key in [("bio", "bp"), ("f0", "bp"), ("pool", "fa"), ("pool", "bp")]:
        assert "published_ms" not in recs[key]  # the published code ran f0/bio with fa only


def test_measured_only_on_the_papers_episode(tmp_path, checkout, monkeypatch, capsys):
    fake, _ = _fake_python(tmp_path, {"bio": 2.0})
    _canned_worker(monkeypatch, {"bio": 80.0})
    assert main(["benchmark", "--rule", "bio", "--feedback", "fa", "--estimator", "forward", "--T", "250,500",
                 "--meta-batch", "1,2", "--naive", "no", "--repeats", "1", "--published-code", str(checkout),
                 "--torch-python", str(fake)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| bio |")]
    assert len(rows) == 4
    assert [("measured" in row) for row in rows] == [True, False, False, False]
    assert "| 2000 ms measured (25×) |" in rows[0]


def test_without_published_code_the_column_says_not_measured_and_quotes_no_time():
    table = markdown_table([_record("bio", 100.0), _record("f0", 50.0), _record("bio", 100.0, T=2500)])
    rows = table.splitlines()[2:]
    assert rows[0].endswith("| not measured (--published-code DIR) |")
    assert rows[1].endswith("| not measured (--published-code DIR) |")
    assert rows[2].endswith("|  |")  # not the paper's episode: the published code never ran it
    assert " ms (" not in table and "×)" not in table  # no quoted time, no ratio to one


@pytest.mark.parametrize("which", ["missing-dir", "missing-file", "no-python", "only-code", "wrong-case"])
def test_bad_published_args_exit_2_before_any_case(which, tmp_path, checkout, monkeypatch, capsys):
    fake, log = _fake_python(tmp_path, {"bio": 1.0})
    monkeypatch.setattr(benchmark, "_run_worker", lambda case: pytest.fail("a case ran before the check"))
    code, py, extra = str(checkout), str(fake), []
    if which == "missing-dir":
        code = str(tmp_path / "nope")
    elif which == "missing-file":
        (checkout / "optim.py").unlink()
    elif which == "no-python":
        py = str(tmp_path / "no-such-python")
    elif which == "wrong-case":
        extra = ["--T", "500"]
    argv = ["benchmark", "--rule", "bio", "--feedback", "fa", "--meta-batch", "1", "--published-code", code]
    argv += [] if which == "only-code" else ["--torch-python", py]
    argv += extra or ["--T", "250"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    want = {"missing-dir": "is not a folder", "missing-file": "lacks optim.py", "no-python": "not an executable",
            "only-code": "go together", "wrong-case": "--T 250"}[which]
    assert want in lines[0]
    assert not log.exists()  # the published code did not run either


def test_failing_published_run_is_one_line_exit_2(tmp_path, checkout, monkeypatch, capsys):
    fake, log = _fake_python(tmp_path, {"bio": 1.0}, fail="importing the published code failed: boom")
    monkeypatch.setattr(benchmark, "_run_worker", lambda case: pytest.fail("a case ran after the failure"))
    assert main(["benchmark", "--rule", "bio", "--feedback", "fa", "--T", "250", "--meta-batch", "1",
                 "--published-code", str(checkout), "--torch-python", str(fake)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "measuring the published code failed (exit 1)" in last and "boom" in last and "Traceback" not in err
    assert len(log.read_text().splitlines()) == 1


# ------------------------------------------------------------------ scripts/bench_published.py itself


def _harness(*args, pre="pass"):
    code = (f"import sys, runpy; {pre}; sys.argv = ['bench_published.py', *{list(args)!r}]; "
            f"runpy.run_path({PUBLISHED_HARNESS!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_harness_help_names_the_repository():
    proc = _harness("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "NeuralDynamicsAndComputing/MetaLearning-Plasticity" in text and "not bundled" in text


@pytest.mark.parametrize("which", ["missing-dir", "missing-file", "no-torch"])
def test_harness_errors_are_one_line_exit_2(which, tmp_path, checkout):
    path = str(tmp_path / "nope") if which == "missing-dir" else str(checkout)
    if which == "missing-file":
        (checkout / "main.py").unlink()
    pre = "sys.modules['torch'] = None" if which == "no-torch" else "pass"  # import torch fails
    proc = _harness("--published-code", path, pre=pre)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench_published.py: error:") and "Traceback" not in proc.stderr
    want = {"missing-dir": "is not a folder", "missing-file": "lacks main.py", "no-torch": "torch is not installed"}
    assert want[which] in lines[0]
    if which == "missing-dir":
        assert "NeuralDynamicsAndComputing/MetaLearning-Plasticity" in lines[0]


def test_harness_is_not_importing_plastic_jax():
    """It runs under a torch-only Python: nothing from this package (or jax) may be imported."""
    src = open(PUBLISHED_HARNESS).read()
    imports = [line for line in src.splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if "jax" in line], imports


def test_every_json_record_carries_the_load_it_was_measured_under(tmp_path, monkeypatch):
    _canned_worker(monkeypatch, {"bio": 100.0, "f0": 50.0})
    loads = iter([(1.5, 0, 0), (2.25, 0, 0), (3.0, 0, 0), (4.75, 0, 0)])  # start, case 1, case 2, end
    monkeypatch.setattr(benchmark.os, "getloadavg", lambda: next(loads))
    out = tmp_path / "b.json"
    assert main(["benchmark", "--rule", "f0,bio", "--feedback", "fa", "--estimator", "forward", "--T", "250",
                 "--meta-batch", "1", "--naive", "no", "--repeats", "1", "--json", str(out)]) == 0
    recs = json.loads(out.read_text())
    assert [r["load_before"] for r in recs] == [2.25, 3.0]
    assert all(r["load_start"] == 1.5 and r["load_end"] == 4.75 and r["cpus"] >= 1 for r in recs)
