"""A run trusts neither its own files nor its neighbours too far (docs/RUNS.md, "Errors and safety").

What a resume checks before it continues (every setting named in config.json, the data's
fingerprint, whose checkpoints they are, run files of the right kind), how it resumes after a
torn last line with newer checkpoints on disk (bitwise the uninterrupted run), checkpoint write
failures as one line, the lock against symlinks, deleted lock files and a second writer, and a
new run that fails or is interrupted before its first record leaving nothing it created.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_bad_inputs import _snapshot  # every file (its sha256) and folder under a directory

from plastic_jax import rundir
from plastic_jax.checkpoint import Checkpointer, state_digest
from plastic_jax.cli import main

TINY = ["--hidden", "8", "--K", "3", "--Q", "2", "--M", "3", "--analysis-every", "0", "--no-progress"]


def _lines(run, name=rundir.METRICS):
    with open(os.path.join(run, name)) as f:
        return f.read().splitlines()


def _config(run):
    with open(os.path.join(run, rundir.CONFIG)) as f:
        return json.load(f)


def _set_config(run, d):
    with open(os.path.join(run, rundir.CONFIG), "w") as f:
        json.dump(d, f)


def _one_line(capsys):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _env():
    cache = jax.config.jax_compilation_cache_dir
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache or "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


def _final_digest(run):
    from plastic_jax.experiment import rule_of
    from plastic_jax.train import init_state

    cfg = rundir.read_config(run)
    target = jax.device_get(init_state(cfg, rule_of(cfg)))
    got = Checkpointer(os.path.join(run, rundir.CHECKPOINTS)).restore_latest(target, set_aside=False)
    return got.episode, state_digest(got.state)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """4 episodes without interruption, a checkpoint after each (kept: 2, 3 and 4)."""
    out = str(tmp_path_factory.mktemp("integrity") / "whole")
    assert main(["meta-train", *TINY, "--episodes", "4", "--checkpoint-every", "1", "--keep-checkpoints", "3",
                 "--out", out]) == 0
    return out


def _copy(whole, tmp_path, name="run"):
    run = str(tmp_path / name)
    shutil.copytree(whole, run)
    return run


# --------------------------------------------------------------------------- 1. torn line, newer checkpoint


def test_a_torn_last_line_with_a_newer_checkpoint_resumes_the_first_time_bitwise(tmp_path, whole, capsys):
    """Killed while writing episode 3's record after checkpoint 4 of an earlier pass was on disk
    (or a copy of such a run): checkpoint 4 is beyond the records, so 3 is restored and episode 3
    runs again; checkpoint 4 is set aside for the new one, and the run is the uninterrupted one."""
    run = _copy(whole, tmp_path)
    lines = _lines(run)
    with open(os.path.join(run, rundir.METRICS), "w") as f:
        f.write("\n".join(lines[:3]) + "\n" + lines[3][:40])
    assert main(["meta-train", "--resume", run, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "at episode 3" in err and "checkpoints/4 is not used" in err
    assert _lines(run) == _lines(whole)
    assert json.load(open(os.path.join(run, rundir.SUMMARY))) == json.load(open(os.path.join(whole, rundir.SUMMARY)))
    assert _final_digest(run) == _final_digest(whole)
    assert os.path.isdir(os.path.join(run, rundir.CHECKPOINTS_BAD, "4"))  # set aside, not deleted


# --------------------------------------------------------------------------- 2a. config.json lacking a key


@pytest.mark.parametrize("key", ["hidden", "K", "feedback", "seeds"])
def test_a_config_json_lacking_a_setting_is_refused_by_resume_and_evaluate(tmp_path, whole, capsys, key):
    run = _copy(whole, tmp_path)
    cfg = _config(run)
    del cfg[key]
    _set_config(run, cfg)
    before = _snapshot(run)
    for argv in (["meta-train", "--resume", run, "--no-progress"],
                 ["evaluate", run, "--tasks", "2", "--tune-tasks", "1", "--baseline-grid", "0.1"]):
        assert main(argv) == 2
        line = _one_line(capsys)
        assert f"lacks the setting '{key}'" in line and "config.json" in line, line
        assert _snapshot(run) == before


def test_a_config_json_lacking_only_settings_added_later_reads_with_their_legacy_values(tmp_path, whole):
    run = _copy(whole, tmp_path)
    cfg = _config(run)
    for key in ("bp_grad", "f5_f8", "meta_clip", "tensorboard"):
        del cfg[key]
    _set_config(run, cfg)
    got = rundir.read_config(run)
    assert (got.bp_grad, got.f5_f8, got.meta_clip, got.tensorboard) == ("through", "matrix", 0.0, False)


# --------------------------------------------------------------------------- 2b. the data's fingerprint


def _npz(path, x, y):
    np.savez(path, x=x, y=y)
    return str(path)


def _data(seed=0, C=6, per=12, D=16):
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 1, (C, D))
    y = np.repeat(np.arange(C), per)
    x = np.clip(protos[y] + rng.normal(0, 0.1, (len(y), D)), 0, 1).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("npz")
    x, y = _data()
    data = _npz(tmp / "mine.npz", x, y)
    out = str(tmp / "run")
    assert main(["meta-train", *TINY, "--dataset", data, "--holdout", "0.5", "--episodes", "2",
                 "--checkpoint-every", "1", "--out", out]) == 0
    return out, data


@pytest.mark.parametrize("change,words", [
    ("reorder", "contents differ"),
    ("edit", "contents differ"),
    ("shape", "x has shape (72, 16) in the run but (60, 16) now"),
])
def test_a_resume_with_other_data_is_refused_naming_what_changed(tmp_path, npz_run, capsys, change, words):
    src, data = npz_run
    run = _copy(src, tmp_path)
    x, y = _data()
    if change == "reorder":
        order = np.random.default_rng(1).permutation(len(y))
        x, y = x[order], y[order]
    elif change == "edit":
        x = x.copy()
        x[0, 0] = 1.0 - x[0, 0]
    else:
        keep = np.arange(len(y)) % 12 < 10  # 10 of each class's 12 rows
        x, y = x[keep], y[keep]
    other = _npz(tmp_path / "mine.npz", x, y)
    cfg = _config(run)
    cfg["dataset"] = other  # the same path, replaced: here another path with the run's name
    _set_config(run, cfg)
    before = _snapshot(run)
    assert main(["meta-train", "--resume", run, "--episodes", "3", "--no-progress"]) == 2
    line = _one_line(capsys)
    assert words in line and "resume with the data the run was trained on" in line, line
    assert _snapshot(run) == before


def test_the_fingerprint_is_recorded_and_a_run_without_one_resumes_and_records_it(tmp_path, npz_run, capsys):
    src, data = npz_run
    run = _copy(src, tmp_path)
    fp = _config(run)["extra"]["fingerprint"]
    assert fp["x"] == [72, 16] and fp["y"] == [72] and len(fp["data_sha256"]) == 64
    assert sorted(fp["train_classes"] + fp["test_classes"]) == list(range(6))
    cfg = _config(run)
    del cfg["extra"]["fingerprint"]  # written before fingerprints existed
    _set_config(run, cfg)
    assert main(["meta-train", "--resume", run, "--episodes", "3", "--no-progress"]) == 0
    assert _config(run)["extra"]["fingerprint"] == fp
    assert main(["meta-train", "--resume", run, "--episodes", "4", "--no-progress"]) == 0  # same data: fine


# --------------------------------------------------------------------------- 2c. whose checkpoint


def test_a_checkpoint_copied_from_another_run_is_not_used(tmp_path, whole, capsys):
    run = _copy(whole, tmp_path)
    other = _copy(whole, tmp_path, "other")
    cfg = _config(other)
    cfg["extra"]["run_id"] = "f" * 32  # another run (a copy of the same settings, with its own id)
    _set_config(other, cfg)
    shutil.rmtree(os.path.join(other, rundir.CHECKPOINTS))
    assert main(["meta-train", "--resume", other, "--episodes", "4", "--no-progress"]) == 0  # its own checkpoint 4
    shutil.rmtree(os.path.join(run, rundir.CHECKPOINTS, "4"))
    shutil.copytree(os.path.join(other, rundir.CHECKPOINTS, "4"), os.path.join(run, rundir.CHECKPOINTS, "4"))
    capsys.readouterr()
    assert main(["meta-train", "--resume", run, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "checkpoints/4 is unusable (written by another run" in err and "at episode 3" in err
    assert _lines(run) == _lines(whole) and _final_digest(run) == _final_digest(whole)


def test_every_run_gets_its_own_id_and_checkpoints_without_one_stay_usable(tmp_path, whole, capsys):
    rid = _config(whole)["extra"]["run_id"]
    assert len(rid) == 32
    again = str(tmp_path / "again")
    assert main(["meta-train", "--config", os.path.join(whole, rundir.CONFIG), "--out", again, "--episodes", "1",
                 "--no-progress"]) == 0
    assert _config(again)["extra"]["run_id"] != rid  # a rerun from a run's config.json is another run
    run = _copy(whole, tmp_path)
    cfg = _config(run)
    del cfg["extra"]["run_id"]  # a run written before ids: its checkpoints name none either
    _set_config(run, cfg)
    ck = Checkpointer(os.path.join(run, rundir.CHECKPOINTS))
    from plastic_jax.experiment import rule_of
    from plastic_jax.train import init_state

    c = rundir.read_config(run)
    target = jax.device_get(init_state(c, rule_of(c)))
    state = ck.restore_latest(target, set_aside=False).state
    ck.close()
    for step in ("2", "3", "4"):
        shutil.rmtree(os.path.join(run, rundir.CHECKPOINTS, step))
    old = Checkpointer(os.path.join(run, rundir.CHECKPOINTS))  # no id: what older runs wrote
    old.save(4, state)
    old.close()
    assert main(["meta-train", "--resume", run, "--episodes", "5", "--no-progress"]) == 0
    assert "at episode 4" in capsys.readouterr().err
    assert len(_config(run)["extra"]["run_id"]) == 32  # recorded from then on


# --------------------------------------------------------------------------- 2d. a duplicated record


def test_a_duplicated_record_does_not_block_resume_and_is_set_aside(tmp_path, whole, capsys):
    run = _copy(whole, tmp_path)
    lines = _lines(run)
    with open(os.path.join(run, rundir.METRICS), "w") as f:
        f.write("\n".join(lines[:2] + [lines[1]] + lines[2:]) + "\n")
    assert main(["meta-train", "--resume", run, "--no-progress"]) == 0
    assert _lines(run) == _lines(whole)  # one record per episode again
    assert _lines(run, rundir.METRICS_CUT) == [lines[1]]  # the copy is kept aside, not lost


def test_a_new_run_over_a_run_offers_resume_before_overwrite(tmp_path, whole, capsys):
    run = _copy(whole, tmp_path)
    assert main(["meta-train", *TINY, "--out", run]) == 2
    line = _one_line(capsys)
    assert f"--resume {run}" in line and line.index("--resume") < line.index("--overwrite"), line


# --------------------------------------------------------------------------- 3. checkpoint write failures


FAIL_AT_SAVE = """
import resource, sys
import plastic_jax.checkpoint as C
from plastic_jax.cli import main
real = C.Checkpointer.save
def save(self, episode, state):
    if episode == 2:  # the disk is full from here on (a file-size limit: EFBIG, as ENOSPC)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400, resource.RLIM_INFINITY))
    return real(self, episode, state)
C.Checkpointer.save = save
sys.exit(main(["meta-train", *sys.argv[1:]]))
"""


def test_a_checkpoint_that_cannot_be_written_is_one_line_without_orbax_noise(tmp_path):
    run = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", FAIL_AT_SAVE, *TINY, "--episodes", "4", "--checkpoint-every", "1",
                           "--out", run], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "absl" not in proc.stderr, proc.stderr[-3000:]
    assert "checkpoints/2 (File too large)" in lines[0] and "free space" in lines[0] and "--resume" in lines[0]
    assert [p for p in os.listdir(os.path.join(run, rundir.CHECKPOINTS)) if "tmp" not in p] == ["1"]
    assert main(["meta-train", "--resume", run, "--no-progress"]) == 0
    assert [json.loads(x)["episode"] for x in _lines(run)] == [0, 1, 2, 3]
    assert not glob.glob(os.path.join(run, rundir.CHECKPOINTS, "*tmp*"))  # the half-written step is gone


@pytest.mark.parametrize("out,words", [
    ("bad\udcffdir", "is not valid UTF-8"),
    ("/".join(["d" * 200] * 20), "--out is too long"),
    ("a\nb", "control character '\\n'"),
    ("a\x1b[2Jb", "control character '\\x1b'"),
])
def test_an_out_path_the_run_could_not_use_is_refused_up_front(tmp_path, monkeypatch, capsys, out, words):
    monkeypatch.chdir(tmp_path)
    assert main(["meta-train", *TINY, "--episodes", "1", "--out", out]) == 2
    line = _one_line(capsys)
    assert words in line, line
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- 4. quarantine twice


def test_a_second_quarantine_of_the_same_step_keeps_the_first(tmp_path):
    from test_checkpoint import _corrupt_data_files, _state

    d = str(tmp_path / "c")
    for n in range(2):
        ck = Checkpointer(d, keep=3)
        for ep in (1, 2):
            ck.save(ep, _state((ep, n)))
        _corrupt_data_files(os.path.join(d, "2"))
        assert ck.restore_latest(_state()).episode == 1
        ck.close()
        shutil.rmtree(os.path.join(d, "1"))
    assert sorted(os.listdir(d + "_bad")) == ["2", "2.1"]


# --------------------------------------------------------------------------- 5. the lock


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path, whole, capsys):
    run = _copy(whole, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.symlink(victim, os.path.join(run, rundir.LOCK))
    with pytest.raises(rundir.RunDirError, match="symbolic link"):
        rundir.RunLock(run).acquire()
    for argv in (["meta-train", "--resume", run, "--no-progress"],
                 ["meta-train", *TINY, "--out", run, "--overwrite"]):
        assert main(argv) == 2
        assert "is a symbolic link" in _one_line(capsys)
    assert victim.read_text() == "precious\n" and os.path.islink(os.path.join(run, rundir.LOCK))
    assert _lines(run) == _lines(whole)


def test_a_second_writer_is_refused_even_when_the_lock_file_was_deleted(tmp_path):
    run = str(tmp_path)
    with rundir.RunLock(run):
        os.remove(os.path.join(run, rundir.LOCK))
        with pytest.raises(rundir.RunDirError, match="being written by another process"):
            rundir.RunLock(run).acquire()
    assert not os.path.exists(os.path.join(run, rundir.LOCK))


def test_a_writer_whose_lock_file_was_deleted_stops_with_one_line(tmp_path, monkeypatch, capsys):
    from plastic_jax import train

    out = str(tmp_path / "run")
    real = train.episode_keys

    def episode_keys(base, episode):
        if episode == 2:
            os.remove(os.path.join(out, rundir.LOCK))  # someone "cleans up" the lock mid-run
        return real(base, episode)

    monkeypatch.setattr(train, "episode_keys", episode_keys)
    assert main(["meta-train", *TINY, "--episodes", "4", "--checkpoint-every", "1", "--out", out]) == 2
    line = _one_line(capsys)
    assert "lock file" in line and "was removed or replaced" in line and "--resume" in line, line
    assert [r["episode"] for r in rundir.read_records(out)] == [0, 1]
    monkeypatch.setattr(train, "episode_keys", real)
    assert main(["meta-train", "--resume", out, "--no-progress"]) == 0
    assert [r["episode"] for r in rundir.read_records(out)] == [0, 1, 2, 3]


def test_a_second_new_run_against_a_live_writer_names_it(tmp_path, capsys):
    run = str(tmp_path / "run")
    os.makedirs(run)
    with rundir.RunLock(run):
        for name in (rundir.CONFIG, rundir.METRICS):  # what the live writer has written so far
            with open(os.path.join(run, name), "w") as f:
                f.write("{}\n" if name == rundir.CONFIG else "")
        before = _snapshot(run)
        assert main(["meta-train", *TINY, "--episodes", "1", "--out", run]) == 2
        line = _one_line(capsys)
        assert f"being written by pid {os.getpid()} on host {socket.gethostname()}" in line, line
        assert _snapshot(run) == before


# --------------------------------------------------------------------------- 6. leftovers


def test_ctrl_c_right_after_the_lock_appears_leaves_nothing(tmp_path, monkeypatch, capsys):
    real = rundir.RunLock.acquire

    def acquire(self):
        real(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.RunLock, "acquire", acquire)
    assert main(["meta-train", *TINY, "--episodes", "1", "--out", str(tmp_path / "a" / "b" / "run")]) == 130
    assert os.listdir(tmp_path) == []


def test_a_full_disk_at_the_start_leaves_nothing(tmp_path, monkeypatch, capsys):
    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "_boot_id", full)  # the lock file is created, writing into it fails
    assert main(["meta-train", *TINY, "--episodes", "1", "--out", str(tmp_path / "a" / "b" / "run")]) == 2
    assert "No space left on device" in _one_line(capsys)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra", [[], ["--tensorboard"]])
def test_a_new_run_failing_before_its_first_record_removes_the_directories_it_made(tmp_path, monkeypatch, capsys,
                                                                                   extra):
    pytest.importorskip("tensorboardX") if extra else None
    from plastic_jax import train

    def boom(*a, **k):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(train, "init_state", boom)
    os.makedirs(tmp_path / "kept")
    assert main(["meta-train", *TINY, *extra, "--episodes", "1", "--out", str(tmp_path / "kept" / "x" / "y")]) == 2
    assert "out of memory" in _one_line(capsys)
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []


# --------------------------------------------------------------------------- 7. run files of the wrong kind


@pytest.mark.parametrize("name,how,words", [
    (rundir.SUMMARY, "dir", "summary.json: it is a directory"),
    (rundir.METRICS_CUT, "dir", "metrics_cut.jsonl: it is a directory"),
    (rundir.CHECKPOINTS_BAD, "file", "checkpoints_bad is a file"),
    (rundir.METRICS, "link", "metrics.jsonl is a symbolic link"),
    (rundir.SUMMARY, "link", "summary.json is a symbolic link"),
])
def test_a_run_file_of_the_wrong_kind_is_refused_before_anything_runs(tmp_path, whole, capsys, name, how, words):
    run = _copy(whole, tmp_path)
    path = os.path.join(run, name)
    if os.path.exists(path):
        elsewhere = str(tmp_path / ("moved-" + name))
        shutil.move(path, elsewhere)
    if how == "dir":
        os.makedirs(os.path.join(path, "x"))
    elif how == "file":
        with open(path, "w") as f:
            f.write("x")
    else:
        os.symlink(elsewhere, path)
    before, outside = _snapshot(run), _snapshot(str(tmp_path))
    assert main(["meta-train", "--resume", run, "--episodes", "6", "--no-progress"]) == 2
    line = _one_line(capsys)
    assert words in line, line
    assert _snapshot(run) == before and _snapshot(str(tmp_path)) == outside


@pytest.mark.parametrize("name", [rundir.METRICS, rundir.SUMMARY, rundir.CONFIG])
def test_a_fifo_or_device_for_a_run_file_is_one_line_not_a_hang(tmp_path, whole, capsys, name):
    """A planted FIFO (or a link to /dev/zero) would block (or never end) every reader."""
    import signal

    run = _copy(whole, tmp_path)
    os.remove(os.path.join(run, name))
    if name == rundir.CONFIG:
        os.symlink("/dev/zero", os.path.join(run, name))
    else:
        os.mkfifo(os.path.join(run, name))

    def hung(*a):
        raise TimeoutError("the reader blocked")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        for argv in (["meta-train", "--resume", run, "--no-progress"],
                     ["evaluate", run, "--tasks", "2", "--tune-tasks", "1", "--baseline-grid", "0.1"],
                     ["plot", run, "--out", str(tmp_path / "figs")]):
            if (name, argv[0]) in ((rundir.SUMMARY, "plot"), (rundir.METRICS, "evaluate")):
                continue  # plot reads no summary.json; evaluate reads the summary's Θ, not the records
            assert main(argv) == 2, argv
            line = _one_line(capsys)
            assert any(w in line for w in ("not a regular file", "is a symbolic link", "holds no run")), line
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
