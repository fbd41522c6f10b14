"""The divergence guard: non-finite updates are skipped and counted; --max-skips stops the run."""

import json
import math
import os

import jax
import numpy as np

from plastic_jax.checkpoint import Checkpointer
from plastic_jax.cli import main
from plastic_jax.experiment import rule_of
from plastic_jax.rundir import read_config
from plastic_jax.train import init_state

# bio (F0, F2 and Oja's F9) with θ_0 = 1e8: the first online update makes the activations
# overflow, so every meta-gradient is non-finite from the first episode on (the meta-loss itself
# may stay finite). The same small program as test_checkpoint.py's (shared compilation cache).
BLOWUP = ["--hidden", "8", "--M", "2", "--K", "3", "--Q", "1", "--rule", "bio", "--theta0", "1e8",
          "--analysis-every", "4", "--no-progress"]
THETA0 = {"F0": 1e8, "F2": 0.0, "F9": 0.0}


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_consecutive_skips_stop_the_run_and_keep_the_last_finite_theta(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["meta-train", *BLOWUP, "--episodes", "10", "--max-skips", "3", "--checkpoint-every", "5",
                 "--guard", "skip", "--out", out])
    assert code == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "stopped at episode 2" in err and "3 consecutive meta-updates not applied" in err
    assert "--guard rollback recovers" in err
    recs = _records(out)
    assert [r["episode"] for r in recs] == [0, 1, 2]
    assert [r["skipped"] for r in recs] == [True, True, True]
    assert [r["consecutive_skips"] for r in recs] == [1, 2, 3]
    # Θ never moved from its start: θ_0 = 1e8 (exact in float32), the others 0
    for r in recs:
        assert r["theta"] == THETA0
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["theta"] == [THETA0]
    assert summary["episodes_completed"] == 3 and "stopped at episode 2" in summary["stopped"]
    assert all(math.isfinite(v) for v in summary["theta"][0].values())
    # the stop wrote a checkpoint of the last finite state (the 5-episode schedule had not come)
    ck = Checkpointer(os.path.join(out, "checkpoints"))
    assert ck.steps() == [3]
    cfg = read_config(out)
    got = ck.restore_latest(jax.device_get(init_state(cfg, rule_of(cfg))))
    np.testing.assert_array_equal(got.state.theta, np.array([[1e8, 0.0, 0.0]], np.float32))
    assert int(got.state.skips[0]) == 3
    assert int(got.state.opt_state.inner_state[0].count[0]) == 0  # Adam never counted a skipped update


def test_rollback_guard_also_stops_at_max_skips_when_even_the_start_diverges(tmp_path, capsys):
    # the snapshot a rollback returns to is the start itself, which diverges too: the last resort
    out = str(tmp_path / "run")
    assert main(["meta-train", *BLOWUP, "--episodes", "10", "--max-skips", "4", "--checkpoint-every", "0",
                 "--out", out]) == 3
    assert "--guard rollback recovers" not in capsys.readouterr().err
    recs = _records(out)
    assert [r["rolled_back"] for r in recs] == [True] * 4
    assert [r["step_scale"] for r in recs] == [0.5, 0.25, 0.125, 0.0625]
    assert all(r["theta"] == THETA0 for r in recs)
    assert json.load(open(os.path.join(out, "summary.json")))["events"]["rollbacks"] == [4]


def test_max_skips_zero_never_stops(tmp_path):
    out = str(tmp_path / "run")
    assert main(["meta-train", *BLOWUP, "--episodes", "4", "--max-skips", "0", "--out", out]) == 0
    recs = _records(out)
    assert [r["consecutive_skips"] for r in recs] == [1, 2, 3, 4]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["theta"] == [THETA0] and "stopped" not in summary
