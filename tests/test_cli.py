"""The meta-train command end to end, determinism, and its one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

from plastic_jax.cli import main

TINY = ["--hidden", "16", "--M", "3", "--K", "5", "--Q", "2", "--no-progress"]
#: forward mode instead of auto's adjoint where the estimator is not the point: the adjoint's program
#: holds a host callback, which JAX never writes to the persistent compilation cache, so each run
#: would compile it again (the first test keeps auto)
FWD = ["--meta-grad", "forward"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_meta_train_writes_config_metrics_and_summary(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["meta-train", "--rule", "bio", "--episodes", "4", "--out", out, *TINY]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["rule"] == "bio" and cfg["episodes"] == 4 and cfg["hidden"] == [16]
    recs = _records(out)
    assert [r["episode"] for r in recs] == [0, 1, 2, 3]
    for r in recs:
        assert set(r["theta"]) == {"F0", "F2", "F9"}
        assert 0.0 <= r["accuracy"] <= 1.0 and r["meta_loss"] > 0
    # Θ moves away from its docs/METHOD.md §5 start (θ_0 = 1e-3, others 0) under Adam
    assert recs[-1]["theta"]["F0"] != pytest.approx(1e-3)
    printed = capsys.readouterr().out
    assert "last 4 episodes" in printed and "F9=" in printed
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["last100_accuracy"] == pytest.approx(sum(r["accuracy"] for r in recs) / 4)


def test_terms_override_rule(tmp_path):
    out = str(tmp_path / "run")
    # ehebb's terms: the program of test_same_seed_gives_identical_metrics, compiled once
    assert main(["meta-train", "--rule", "bio", "--terms", "0,2", "--episodes", "1", "--out", out, *TINY, *FWD]) == 0
    assert set(_records(out)[0]["theta"]) == {"F0", "F2"}


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_same_seed_gives_identical_metrics(tmp_path):
    args = ["meta-train", "--rule", "ehebb", "--episodes", "3", *TINY, *FWD]
    assert main([*args, "--out", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "8"]) == 0
    a, b, c = (_records(str(tmp_path / n)) for n in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    "args,message",
    [
        (["--rule", "hebbish"], "unknown rule or term id"),
        (["--terms", "0,12"], "term ids are 0-9"),
        (["--M", "0"], "--M must be a positive integer"),
        (["--K", "-1"], "--K must be a positive integer"),
        (["--Q", "0"], "--Q must be a positive integer"),
        (["--episodes", "0"], "--episodes must be a positive integer"),
        (["--M", "11"], "larger than the dataset's 10 classes"),
        (["--K", "170", "--Q", "10"], "larger than the smallest class"),
        (["--feedback", "xx"], "unknown feedback"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    out = str(tmp_path / "run")
    assert main(["meta-train", "--episodes", "1", "--out", out, "--hidden", "16", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not os.path.exists(os.path.join(out, "metrics.jsonl"))


def test_unwritable_out_is_reported(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["meta-train", "--episodes", "1", "--out", str(blocker / "run"), *TINY]) == 2
    assert "cannot write to --out" in capsys.readouterr().err


def test_existing_run_is_not_overwritten_without_flag(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["meta-train", "--rule", "ehebb", "--episodes", "1", "--out", out, *TINY, *FWD]  # compiled once
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "plastic_jax.cli", "meta-train", "--rule", "nope", "--out", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
