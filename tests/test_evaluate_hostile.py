"""Hostile ``plastic-jax evaluate`` command lines: every bad override is the one line meta-train
gives (exit code 2, never "internal error"), and ``--json`` never leaves an earlier file truncated
or invalid when the write fails."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import threading

import pytest

from plastic_jax import evaluate
from plastic_jax.cli import main
from plastic_jax.config import TrainConfig, class_split

TINY = ["--hidden", "8", "--K", "3", "--Q", "2"]
#: a Θ by hand (no run directory)
BY_HAND = ["evaluate", "--rule", "f0", "--theta", "0.1", *TINY, "--tasks", "2", "--baseline-lr", "0.1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as meta-train writes it (config.json, summary.json), written directly."""
    out = tmp_path_factory.mktemp("evh") / "run"
    out.mkdir()
    cfg = TrainConfig(rule="bio", holdout=0.5, hidden=(8,), K=3, Q=2, episodes=3, out=str(out))
    train, test = class_split(cfg, 10)
    cfg = dataclasses.replace(cfg, extra={"class_split": {"train": list(train), "test": list(test)}})
    cfg.dump(str(out / "config.json"))
    (out / "summary.json").write_text(json.dumps({"episodes": 3, "seeds": [0],
                                                  "theta": [{"F0": 0.05, "F2": -0.02, "F9": 0.01}]}))
    return str(out)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err and "internal error" not in err, err
    return err


# --- 4. every override of evaluate is validated as meta-train's flag is ------------------------

OVERRIDES = [
    (["--feedback", "xx"], "unknown feedback 'xx'; choose one of bp, fa"),
    (["--f5-f8", "xx"], "unknown --f5-f8 'xx'; choose one of matrix, elementwise"),
    (["--hidden", "0"], "--hidden sizes must be positive"),
    (["--hidden", "-5"], "--hidden sizes must be positive"),
    (["--hidden", ""], "--hidden must list at least one hidden layer"),
    (["--hidden", "99999999999"], "--hidden must be at most"),
    (["--M", "0"], "--M must be a positive integer"),
    (["--M", "99999999999"], "--M must be at most"),
    (["--K", "0"], "--K must be a positive integer"),
    (["--Q", "-1"], "--Q must be a positive integer"),
    (["--holdout", "2"], "--holdout must be a fraction in [0, 1)"),
    (["--holdout", "nan"], "--holdout must be finite"),
    (["--split-seed", "-1"], "--split-seed must be a non-negative integer"),
    (["--split-seed", "99999999999"], "--split-seed must be at most"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", ""], "unknown dataset ''"),
]


@pytest.mark.parametrize("flags,words", OVERRIDES, ids=[" ".join(f) for f, _ in OVERRIDES])
@pytest.mark.parametrize("how", ["run", "by-hand"])
def test_every_bad_override_is_one_line_and_exit_code_2(run_dir, capsys, flags, words, how):
    argv = ["evaluate", run_dir, "--tasks", "2", "--baseline-lr", "0.1"] if how == "run" else BY_HAND
    assert main([*argv, *flags]) == 2
    assert words in _one_line(capsys)


# --- 3. --json is written whole or not at all -----------------------------------------------------


def _canned(**changes):
    """The results of a meta-test, as evaluate_args returns them (no work done)."""
    rule = {"name": "learned", "tasks": 2, "feedback": "fa", "mean_accuracy": 0.5, "ci95": [0.4, 0.6],
            "theta": {"F0": 0.1}, "theta_source": "given"}
    res = {"dataset": "digits", "rules": [rule], "M": 5, "K": 3, "Q": 2, "test_classes": [0, 1],
           "held_out": True, "paired_differences": [], "per_seed": [], "across_seeds": None,
           "baseline_tuning": {}, "interval": "95% t-interval over tasks"}
    res.update(changes)
    return res


@pytest.fixture()
def earlier(tmp_path):
    """An earlier, valid --json FILE."""
    path = tmp_path / "evaluate.json"
    path.write_text(json.dumps({"earlier": True}, indent=2))
    return path


def _left_alone(path, before):
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left behind


def test_a_value_that_cannot_be_serialised_leaves_the_earlier_file_whole(earlier, monkeypatch, capsys):
    before = earlier.read_bytes()
    monkeypatch.setattr(evaluate, "evaluate_args", lambda args: _canned(bad=object()))
    assert main(["evaluate", "--json", str(earlier)]) != 0
    capsys.readouterr()
    _left_alone(earlier, before)


@pytest.mark.parametrize("where", ["dump", "replace"])
def test_a_failed_write_leaves_the_earlier_file_byte_identical(earlier, monkeypatch, capsys, where):
    before = earlier.read_bytes()
    monkeypatch.setattr(evaluate, "evaluate_args", lambda args: _canned())

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "dump":
        monkeypatch.setattr(json, "dump", disk_full)
        monkeypatch.setattr(json, "dumps", disk_full)
    else:
        monkeypatch.setattr(os, "replace", disk_full)
    assert main(["evaluate", "--json", str(earlier)]) == 2
    err = _one_line(capsys)
    assert f"cannot write --json {str(earlier)!r}" in err and "No space left" in err, err
    _left_alone(earlier, before)


def test_the_json_is_strict_even_with_a_nan_accuracy(tmp_path, monkeypatch, capsys):
    res = _canned()
    res["rules"][0]["mean_accuracy"] = float("nan")
    monkeypatch.setattr(evaluate, "format_table", lambda res: "table")
    monkeypatch.setattr(evaluate, "evaluate_args", lambda args: res)
    path = tmp_path / "ev.json"
    assert main(["evaluate", "--json", str(path)]) == 0

    def refuse(c):
        raise ValueError(f"not strict JSON: {c}")

    written = json.loads(path.read_text(), parse_constant=refuse)
    assert written["rules"][0]["mean_accuracy"] is None


def test_a_fifo_as_json_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    fifo = tmp_path / "ev.json"
    os.mkfifo(fifo)
    called = []
    monkeypatch.setattr(evaluate, "evaluate_rule", lambda *a, **k: called.append(1) or _canned())
    box: list[int] = []
    t = threading.Thread(target=lambda: box.append(main([*BY_HAND, "--json", str(fifo)])), daemon=True)
    t.start()
    t.join(60)
    assert box == [2], "evaluate --json FIFO blocked or did not refuse"
    assert "not a regular file" in _one_line(capsys)
    assert not called


def test_evaluating_a_run_on_other_data_than_it_was_trained_on_warns(capsys):
    from plastic_jax import rundir
    from plastic_jax.config import TrainConfig
    from plastic_jax.evaluate import warn_other_data
    from plastic_jax.experiment import build

    cfg = TrainConfig(holdout=0.5)
    data = build(cfg).data
    fp = rundir.data_fingerprint(data, cfg)
    warn_other_data(TrainConfig(holdout=0.5, extra={"fingerprint": fp}), data, "runs/r")
    assert capsys.readouterr().err == ""  # the same data: silent
    warn_other_data(TrainConfig(holdout=0.5, extra={"fingerprint": {**fp, "data_sha256": "0" * 64}}), data, "runs/r")
    err = capsys.readouterr().err
    assert err.startswith("warning: runs/r was meta-trained on other data:") and "contents differ" in err
    warn_other_data(TrainConfig(holdout=0.5), data, "runs/r")  # a run written before fingerprints
    assert capsys.readouterr().err == ""
