"""Checkpoints and --resume: a SIGKILLed run resumes bitwise; damaged checkpoints fall back."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plastic_jax.checkpoint import Checkpointer, CheckpointError, state_digest
from plastic_jax.cli import main
from plastic_jax.meta import meta_init

#: forward mode, not auto's adjoint: the adjoint's program holds a host callback, which JAX never
#: writes to the persistent compilation cache, so every run and resume here would compile it again
#: (~8 s each); checkpoints and resumes do not depend on the estimator
TINY = ["--hidden", "8", "--M", "2", "--K", "3", "--Q", "1", "--rule", "bio", "--meta-grad", "forward",
        "--episodes", "10", "--analysis-every", "4", "--checkpoint-every", "3", "--no-progress"]
KILL_AT = os.path.join(os.path.dirname(__file__), "_kill_at.py")


def _lines(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One run of 10 episodes without interruption, checkpoints every 3 (kept: steps 9 and 10)."""
    out = str(tmp_path_factory.mktemp("ckpt") / "whole")
    assert main(["meta-train", *TINY, "--out", out]) == 0
    return out


def _state(theta=(1.0, 2.0)):
    opt = optax.adam(1e-3)
    return meta_init(jnp.asarray(theta, jnp.float32), opt)


def test_checkpointer_round_trip_keeps_the_newest_two(tmp_path):
    ck = Checkpointer(str(tmp_path / "c"), keep=2)
    for ep in (3, 6, 9):
        ck.save(ep, _state((ep, -ep)))
    assert ck.steps() == [6, 9]
    got = ck.restore_latest(_state())
    assert got.episode == 9
    np.testing.assert_array_equal(got.state.theta, np.array([9.0, -9.0], np.float32))
    assert state_digest(got.state) == state_digest(_state((9, -9)))


def test_a_failed_read_silences_asyncio_reports_of_its_unawaited_sibling_reads(tmp_path):
    """A step with its data files gone fails to read; orbax leaves sibling read tasks nobody
    awaits, which asyncio reports with a traceback whenever they are collected (CI saw one)."""
    import logging

    from plastic_jax import checkpoint

    log = logging.getLogger("asyncio")
    log.removeFilter(checkpoint._ASYNCIO_FILTER)
    ck = Checkpointer(str(tmp_path / "c"), keep=2)
    ck.save(3, _state((3, -3)))
    for path in glob.glob(str(tmp_path / "c" / "3" / "state" / "d" / "*")):
        os.remove(path)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        ck.restore_latest(_state())
    assert checkpoint._ASYNCIO_FILTER in log.filters
    record = logging.LogRecord("asyncio", logging.ERROR, "", 0, "Task exception was never retrieved", (), None)
    assert not log.filter(record)


def test_a_non_finite_state_is_never_written(tmp_path):
    ck = Checkpointer(str(tmp_path / "c"), keep=2)
    for bad in (np.nan, np.inf):  # (meta_init refuses a non-finite Θ: the state turns non-finite later)
        state = _state()
        with pytest.raises(CheckpointError, match="non-finite"):
            ck.save(1, state._replace(theta=jnp.asarray([bad, 0.0], jnp.float32)))
    assert ck.steps() == []


def test_kill_between_checkpoints_then_resume_is_bitwise_identical(tmp_path, uninterrupted):
    out = str(tmp_path / "killed")
    # SIGKILL when episode 8 starts: checkpoint 6 is on disk, 9 is not; records 0..7 are written
    cache = jax.config.jax_compilation_cache_dir  # conftest's persistent cache, shared with the child
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache or "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    proc = subprocess.run([sys.executable, KILL_AT, "8", *TINY, "--out", out], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["3", "6"]
    assert len(_lines(out)) == 8
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"episode": 8, "seed": 0, "meta_lo')  # a torn last line, as from a kill mid-write
    assert main(["meta-train", "--resume", out, "--no-progress"]) == 0
    whole, resumed = _lines(uninterrupted), _lines(out)
    # same text: every float (Θ, losses, accuracies, alignment) is bitwise the same; no episode
    # is missing or duplicated
    assert [json.loads(x)["episode"] for x in resumed] == list(range(10))
    assert resumed == whole
    a = json.load(open(os.path.join(uninterrupted, "summary.json")))
    b = json.load(open(os.path.join(out, "summary.json")))
    assert a == b
    # and the final checkpoints hold the same bytes (Θ, Adam's moments and count, skips)
    from plastic_jax.experiment import rule_of
    from plastic_jax.rundir import read_config
    from plastic_jax.train import init_state

    cfg = read_config(out)
    target = jax.device_get(init_state(cfg, rule_of(cfg)))  # one seed; Θ, Adam and the guard's state
    ra = Checkpointer(os.path.join(uninterrupted, "checkpoints")).restore_latest(target)
    rb = Checkpointer(os.path.join(out, "checkpoints")).restore_latest(target)
    assert ra.episode == rb.episode == 10
    assert state_digest(ra.state) == state_digest(rb.state)


def _corrupt_data_files(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True) if os.path.isfile(f)]
    assert files
    for f in files:
        with open(f, "wb") as fh:
            fh.write(b"\x00garbage")


def _drop_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


@pytest.mark.parametrize("damage", [_corrupt_data_files, _drop_metadata])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, uninterrupted, capsys, damage):
    out = str(tmp_path / "run")
    shutil.copytree(uninterrupted, out)
    damage(os.path.join(out, "checkpoints", "10"))
    assert main(["meta-train", "--resume", out, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "checkpoints/10 is unusable" in err and "resuming" in err and "at episode 9" in err
    assert os.path.isdir(os.path.join(out, "checkpoints_bad", "10"))
    # episode 9 was run again from checkpoint 9: the same records, none twice
    assert _lines(out) == _lines(uninterrupted)
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["10", "9"]


def test_no_usable_checkpoint_stops_with_one_line(tmp_path, uninterrupted, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(uninterrupted, out)
    for step in ("9", "10"):
        _corrupt_data_files(os.path.join(out, "checkpoints", step))
    assert main(["meta-train", "--resume", out, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no usable checkpoint" in err and "step 10" in err and "step 9" in err
    assert _lines(out) == _lines(uninterrupted)  # nothing was cut


@pytest.mark.parametrize(
    "args,message",
    [
        (["--hidden", "9"], "hidden is [8] in"),
        (["--rule", "oja"], "rule is 'bio' in"),
        (["--config", "x.toml"], "leave out --config"),
    ],
)
def test_resume_refuses_to_change_the_run(tmp_path, uninterrupted, capsys, args, message):
    assert main(["meta-train", "--resume", uninterrupted, "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_resume_without_a_run_is_an_error(tmp_path, capsys):
    assert main(["meta-train", "--resume", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_resume_without_checkpoints_restarts_at_episode_0(tmp_path, uninterrupted, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(uninterrupted, out)
    shutil.rmtree(os.path.join(out, "checkpoints"))
    assert main(["meta-train", "--resume", out, "--checkpoint-every", "0", "--no-progress"]) == 0
    assert "at episode 0" in capsys.readouterr().err
    assert _lines(out) == _lines(uninterrupted)
    assert os.listdir(os.path.join(out, "checkpoints")) == ["10"]  # the final state is still saved


def test_resume_can_raise_episodes(tmp_path, uninterrupted):
    out = str(tmp_path / "run")
    shutil.copytree(uninterrupted, out)
    assert main(["meta-train", "--resume", out, "--episodes", "12", "--no-progress"]) == 0
    lines = _lines(out)
    assert lines[:10] == _lines(uninterrupted)
    assert [json.loads(x)["episode"] for x in lines] == list(range(12))
    assert json.load(open(os.path.join(out, "config.json")))["episodes"] == 12
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["10", "12"]


def test_a_new_run_does_not_clobber_checkpoints(tmp_path, uninterrupted, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(uninterrupted, out)
    os.remove(os.path.join(out, "metrics.jsonl"))
    assert main(["meta-train", *TINY, "--out", out]) == 2
    assert "holds checkpoints" in capsys.readouterr().err
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["10", "9"]


SLOW_RUN = os.path.join(os.path.dirname(__file__), "_slow_run.py")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_a_signal_writes_records_checkpoint_and_summary_then_resume_completes(tmp_path, uninterrupted, sig, code):
    """SIGINT/SIGTERM mid-run: the episode in flight finishes, its checkpoint and summary.json are
    written, one line says how to resume, and the resumed run equals the uninterrupted one."""
    out = str(tmp_path / "signalled")
    cache = jax.config.jax_compilation_cache_dir
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache or "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    i = TINY.index("--checkpoint-every")
    args = TINY[:i] + TINY[i + 2:]  # the default interval (25 > 10 episodes)
    proc = subprocess.Popen([sys.executable, SLOW_RUN, "0.5", *args, "--out", out], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.monotonic() + 300
    while not (os.path.exists(metrics) and _lines(out)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    n = len(_lines(out))
    assert 1 <= n < 10
    line = f"interrupted at episode {n}; resume with: plastic-jax meta-train --resume {out}"
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    assert os.listdir(os.path.join(out, "checkpoints")) == [str(n)]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["stopped"] == f"interrupted at episode {n}" and summary["episodes_completed"] == n
    assert main(["meta-train", "--resume", out, "--checkpoint-every", "3", "--no-progress"]) == 0
    assert _lines(out) == _lines(uninterrupted)
    assert "stopped" not in json.load(open(os.path.join(out, "summary.json")))


def test_checkpoints_are_on_by_default():
    from plastic_jax.config import TrainConfig

    assert TrainConfig().checkpoint_every == 25


def test_the_progress_bar_says_compiling_first_and_labels_the_trailing_mean(tmp_path, capsys, uninterrupted):
    out = str(tmp_path / "bar")
    args = [a for a in TINY if a != "--no-progress"]
    assert main(["meta-train", *args, "--out", out]) == 0
    err = capsys.readouterr().err
    assert err.startswith("compiling … (") and " s)\n" in err
    assert "acc(last 100)=" in err
    assert _lines(out) == _lines(uninterrupted)  # the compiled-ahead step is the same program
