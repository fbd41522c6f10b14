"""The run directory (plastic_jax/rundir.py): an old run still resumes, evaluates and plots; the
one records reader; the lock; nothing on disk changes before every check has passed."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from plastic_jax import rundir
from plastic_jax.cli import main
from plastic_jax.plots import load_run

DATA = os.path.join(os.path.dirname(__file__), "data")
#: written by the driver before issue 14 (``plastic-jax meta-train --rule bio --hidden 8 --episodes 4
#: --K 3 --Q 2 --M 3 --seeds 2 --analysis-every 2 --holdout 0.5 --checkpoint-every 2``): its
#: config.json has no bp_grad / f5_f8; checkpoints 2 and 4
OLD_RUN = os.path.join(DATA, "old_run")
#: the same run by the same old code, 6 episodes without interruption (records and summary)
OLD_6 = os.path.join(DATA, "old_run_6_episodes.jsonl")
OLD_6_SUMMARY = os.path.join(DATA, "old_run_6_summary.json")


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _close(a, b, rel=1e-5):
    """Same keys and values; floats to ``rel`` (float32 rounding of a rewritten core)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == pytest.approx(b, rel=rel, abs=1e-9)
    return a == b


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_an_old_run_directory_resumes_evaluates_and_plots(tmp_path, capsys):
    run = str(tmp_path / "old_run")
    shutil.copytree(OLD_RUN, run)
    old_lines = _lines(os.path.join(OLD_RUN, rundir.METRICS))
    assert "bp_grad" not in json.load(open(os.path.join(OLD_RUN, rundir.CONFIG)))

    assert main(["meta-train", "--resume", run, "--episodes", "6", "--no-progress"]) == 0
    assert "at episode 4" in capsys.readouterr().err
    lines = _lines(os.path.join(run, rundir.METRICS))
    assert lines[:8] == old_lines  # the records written before are kept byte for byte
    records = [json.loads(x) for x in lines]
    assert [(r["episode"], r["seed"]) for r in records] == [(e, s) for e in range(6) for s in (0, 1)]
    # episodes 4 and 5 continue the old run: what the old code wrote without interruption
    whole = [json.loads(x) for x in _lines(OLD_6)]
    # (today's records and summary add keys: the member's l1 and meta_lr, telemetry, guard events)
    assert all(_close({k: a[k] for k in b}, b) for a, b in zip(records[8:], whole[8:]))
    new_summary, old_summary = json.load(open(os.path.join(run, rundir.SUMMARY))), json.load(open(OLD_6_SUMMARY))
    assert _close({k: new_summary[k] for k in old_summary}, old_summary)
    assert records[8]["l1"] == 0.0 and records[8]["meta_lr"] == 1e-3 and records[8]["grad_norm"] > 0
    cfg = json.load(open(os.path.join(run, rundir.CONFIG)))
    # the run keeps the semantics it had: the exact gradient through B = W was the only one then
    assert (cfg["episodes"], cfg["bp_grad"], cfg["f5_f8"]) == (6, "through", "matrix")
    assert sorted(os.listdir(os.path.join(run, rundir.CHECKPOINTS))) == ["4", "6"]
    assert not os.path.exists(os.path.join(run, rundir.LOCK))

    js = str(tmp_path / "ev.json")
    # as many tuning tasks as tasks and one grid value: tuning runs the evaluation's compiled program
    assert main(["evaluate", run, "--tasks", "2", "--tune-tasks", "2", "--baseline-grid", "0.1",
                 "--json", js]) == 0
    res = json.load(open(js))
    summary = json.load(open(os.path.join(run, rundir.SUMMARY)))
    # evaluate takes every seed of the run by default: each seed's Θ is the run's summary Θ
    assert [p["theta"] for p in res["per_seed"]] == [pytest.approx(t, rel=1e-6) for t in summary["theta"]]
    assert res["held_out"] and res["test_classes"] == cfg["extra"]["class_split"]["test"]

    figs = str(tmp_path / "figs")
    assert main(["plot", run, "--out", figs]) == 0
    assert {"accuracy.png", "theta.png", "alignment.png"} <= set(os.listdir(figs))
    old = load_run(OLD_RUN)  # and the untouched old directory reads as before
    assert old.accuracy.shape == (2, 4) and list(old.analysis_episodes) == [0, 2, 3]


def test_resume_refuses_to_change_a_setting_the_old_run_predates(tmp_path, capsys):
    run = str(tmp_path / "old_run")
    shutil.copytree(OLD_RUN, run)
    assert main(["meta-train", "--resume", run, "--bp-grad", "frozen", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bp_grad is 'through'" in err and "\n" not in err
    assert _lines(os.path.join(run, rundir.METRICS)) == _lines(os.path.join(OLD_RUN, rundir.METRICS))


# --- reading back ----------------------------------------------------------------------------


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _rec(ep, seed, **kw):
    return json.dumps({"episode": ep, "seed": seed, "accuracy": 0.5, **kw}) + "\n"


def test_read_records_drops_a_torn_last_line_and_names_a_damaged_one(tmp_path):
    run = str(tmp_path)
    path = os.path.join(run, rundir.METRICS)
    _write(path, _rec(0, 0) + _rec(0, 1) + _rec(1, 0) + '{"episode": 1, "se')
    assert [(r["episode"], r["seed"]) for r in rundir.read_records(run)] == [(0, 0), (0, 1), (1, 0)]
    assert [r["episode"] for r in rundir.complete_episodes(rundir.read_records(run), 2)] == [0, 0]
    _write(path, _rec(0, 0) + "not json\n" + _rec(1, 0))
    with pytest.raises(rundir.RunDirError, match=r"metrics.jsonl line 2 is not JSON"):
        rundir.read_records(run)
    _write(path, _rec(0, 0) + "[1, 2]\n" + _rec(1, 0))
    with pytest.raises(rundir.RunDirError, match=r"line 2 is not a record"):
        rundir.read_records(run)
    assert rundir.read_records(str(tmp_path / "nothing")) == []


def test_nan_meta_loss_is_written_as_null_and_both_spellings_read_back(tmp_path):
    """A skipped episode's NaN meta-loss is written as null (strict JSON); runs written before
    spelled it NaN (Python's JSON): the reader gives NaN for both."""
    new = rundir.record_line({"episode": 1, "seed": 0, "accuracy": 0.5, "meta_loss": float("nan")})
    assert "NaN" not in new and json.loads(new)["meta_loss"] is None
    _write(os.path.join(tmp_path, rundir.METRICS), _rec(0, 0, meta_loss=float("nan")) + new)
    assert "NaN" in open(os.path.join(tmp_path, rundir.METRICS)).read()
    old, r = rundir.read_records(str(tmp_path))
    assert old["meta_loss"] != old["meta_loss"] and r["meta_loss"] != r["meta_loss"]


def test_latest_record_of_an_episode_wins(tmp_path):
    _write(os.path.join(tmp_path, rundir.METRICS), _rec(0, 0) + _rec(1, 0) + _rec(1, 0, accuracy=0.9))
    latest = rundir.latest_records(rundir.read_records(str(tmp_path)))
    assert list(latest) == [(0, 0), (1, 0)] and latest[(1, 0)]["accuracy"] == 0.9


@pytest.mark.parametrize("name,text,message", [
    (rundir.CONFIG, "{not json", "config.json is not valid JSON"),
    (rundir.CONFIG, "[1]", "config.json must hold a table"),
    (rundir.CONFIG, '{"episodez": 3}', "unknown config key(s): episodez"),
    (rundir.SUMMARY, "{", "summary.json is not valid JSON"),
])
def test_damaged_files_are_one_line_naming_the_file(tmp_path, name, text, message):
    _write(os.path.join(tmp_path, name), text)
    with pytest.raises(rundir.RunDirError) as e:
        rundir.read_config(str(tmp_path)) if name == rundir.CONFIG else rundir.read_summary(str(tmp_path))
    assert message in str(e.value) and name in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_config_json_stops_resume_and_evaluate_with_one_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    shutil.copytree(OLD_RUN, run)
    _write(os.path.join(run, rundir.CONFIG), '{"rule": "bio", "K": ')
    for argv in (["meta-train", "--resume", run, "--no-progress"], ["evaluate", run], ["plot", run]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "config.json is not valid JSON" in err and "\n" not in err, argv


# --- the lock --------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with rundir.RunLock(run):
        with pytest.raises(rundir.RunDirError) as e:
            rundir.RunLock(run).acquire()
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(e.value)
        assert main(["meta-train", "--episodes", "1", "--hidden", "8", "--out", run, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is being written by pid" in err and "\n" not in err
        assert not os.path.exists(os.path.join(run, rundir.CONFIG))
    assert not os.path.exists(os.path.join(run, rundir.LOCK))  # released: removed


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    run = str(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write(os.path.join(run, rundir.LOCK), json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with rundir.RunLock(run):
        holder = json.load(open(os.path.join(run, rundir.LOCK)))
        assert holder["pid"] == os.getpid()
    assert "taking over the stale lock" in capsys.readouterr().err


def test_a_lock_naming_another_host_is_not_taken(tmp_path):
    run = str(tmp_path)
    _write(os.path.join(run, rundir.LOCK), json.dumps({"pid": 12345, "host": "elsewhere"}))
    with pytest.raises(rundir.RunDirError, match="locked by pid 12345 on host elsewhere"):
        rundir.RunLock(run).acquire()


# --- nothing changes on disk before every check has passed -----------------------------------


def _an_earlier_run(run):
    _write(os.path.join(run, rundir.METRICS), _rec(0, 0))
    _write(os.path.join(run, rundir.SUMMARY), "{}")
    _write(os.path.join(run, rundir.CHECKPOINTS, "1", "x"), "x")
    return {p: open(os.path.join(run, p)).read() for p in (rundir.METRICS, rundir.SUMMARY)}


@pytest.mark.parametrize("args,message", [
    (["--K", "170", "--Q", "10"], "larger than the smallest class"),  # a dataset check
    (["--devices", "0"], "--devices must be a positive integer"),  # a device check
    (["--M", "0"], "--M must be a positive integer"),
])
def test_overwrite_deletes_nothing_before_every_check_has_passed(tmp_path, capsys, args, message):
    run = str(tmp_path / "run")
    before = _an_earlier_run(run)
    assert main(["meta-train", "--overwrite", "--episodes", "1", "--hidden", "8", "--out", run, "--no-progress",
                 *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert {p: open(os.path.join(run, p)).read() for p in before} == before
    assert os.listdir(os.path.join(run, rundir.CHECKPOINTS)) == ["1"]
    assert not os.path.exists(os.path.join(run, rundir.CONFIG))


def test_one_reader_the_old_names_are_the_readers_of_plastic_jax_runs():
    from plastic_jax import plots, runs

    assert plots.Run is runs.Run and plots.load_runs is runs.load_runs and plots.load_run is runs.load_run
    for name in ("read_json", "read_config_dict", "read_config", "read_summary", "read_records", "latest_records",
                 "member_of", "complete_episodes", "split_sweep", "member_index", "RunDirError", "THETA_KEY"):
        assert getattr(rundir, name) is getattr(runs, name), name
    assert rundir.RunWriter is not runs.Run  # the writer has a name of its own


def test_a_run_reads_the_committed_old_run_directory_without_writing_to_it():
    import dataclasses

    import numpy as np

    from plastic_jax import runs

    def stamps():
        return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
                for d, _, files in os.walk(OLD_RUN) for f in files}

    before = stamps()
    run = runs.load_run(OLD_RUN)
    assert stamps() == before and not os.path.exists(os.path.join(OLD_RUN, rundir.LOCK))
    assert (run.path, run.label, run.member, run.seeds) == (OLD_RUN, "bio+fa", "", [0, 1])
    assert list(run.episodes) == [0, 1, 2, 3] and run.accuracy.shape == run.meta_loss.shape == (2, 4)
    assert list(run.theta) == ["F0", "F2", "F9"] and list(run.analysis_episodes) == [0, 2, 3]
    assert run.alignment.shape == (2, 3, 2) and run.telemetry == {}  # written before telemetry
    # the records and summary as read, and the curves drawn from them
    assert run.records == tuple(rundir.read_records(OLD_RUN)) and len(run.records) == 8
    assert run.summary == json.load(open(os.path.join(OLD_RUN, rundir.SUMMARY))) and run.finished
    by_seed = run.seed_records()
    assert [r["episode"] for r in by_seed[1]] == [0, 1, 2, 3]
    assert np.array_equal(run.accuracy[1], [r["accuracy"] for r in by_seed[1]])
    # its config.json records the class split in extra (as meta-train still writes it) and lacks the
    # settings added since, which read as the run had them
    assert run.config["extra"]["class_split"] == {"train": [0, 1, 5, 8, 9], "test": [2, 3, 4, 6, 7]}
    cfg = run.train_config
    assert (cfg.bp_grad, cfg.f5_f8, cfg.preset, cfg.holdout) == ("through", "matrix", "paper", 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.label = "mine"  # read-only: a relabelled run is a copy
    mine = runs.relabel(run, "mine")
    assert (mine.label, run.label) == ("mine", "bio+fa") and mine.records is run.records


def test_a_run_of_each_member_of_a_sweep_holds_that_members_records_only(tmp_path):
    from plastic_jax import runs
    from plastic_jax.config import ConfigError
    from plastic_jax.paper.synthetic import synthetic_run

    out = synthetic_run(str(tmp_path / "sweep"), 5, {0: {"acc": 0.4}, 1: {"acc": 0.6}}, l1=(0.0, 1.0),
                        meta_lr=1e-3)
    members = runs.load_runs(out)
    assert [(r.config["l1"], r.config["meta_lr"], r.member) for r in members] == [
        (0.0, 1e-3, " λ=0 lr=0.001"), (1.0, 1e-3, " λ=1 lr=0.001")]
    assert [r.label for r in members] == ["f0+fa λ=0 lr=0.001", "f0+fa λ=1 lr=0.001"]
    for r in members:
        assert {(x["l1"], x["seed"]) for x in r.records} == {(r.config["l1"], 0), (r.config["l1"], 1)}
        assert len(r.records) == 10 and r.seeds == [0, 1] and r.accuracy.shape == (2, 5)
        assert {s: len(v) for s, v in r.seed_records().items()} == {0: 5, 1: 5}
        assert r.summary is not None and r.train_config.l1 == (0.0, 1.0)  # the directory's settings
    with pytest.raises(ConfigError, match="a sweep of 2"):
        runs.load_run(out)
