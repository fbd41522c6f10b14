"""One-program sweeps (``--l1 a,b --meta-lr x,y --seeds N``) and the replay helper."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax import episode as ep_mod
from plastic_jax import rundir
from plastic_jax.cli import main
from plastic_jax.config import ConfigError
from plastic_jax.replay import replay_episode

TINY = ["--hidden", "8", "--M", "2", "--K", "3", "--Q", "1", "--rule", "bio", "--meta-grad", "forward",
        "--episodes", "6", "--analysis-every", "0", "--checkpoint-every", "3", "--no-progress"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep") / "run")
    assert main(["meta-train", *TINY, "--l1", "0,0.5", "--meta-lr", "1e-3,1e-2", "--seeds", "2", "--out", out]) == 0
    return out


def test_every_record_names_its_member_and_every_member_is_there(sweep):
    recs = _records(sweep)
    members = {(r["l1"], r["meta_lr"], r["seed"]) for r in recs}
    assert members == {(lam, lr, s) for lam in (0.0, 0.5) for lr in (1e-3, 1e-2) for s in (0, 1)}
    assert len(recs) == 6 * 8
    summary = json.load(open(os.path.join(sweep, "summary.json")))
    assert [(c["l1"], c["meta_lr"]) for c in summary["combinations"]] == [(0.0, 1e-3), (0.0, 1e-2), (0.5, 1e-3),
                                                                         (0.5, 1e-2)]
    per = summary["last100_accuracy_per_seed"]
    assert summary["combinations"][3]["last100_accuracy"] == pytest.approx(np.mean(per[6:8]))


@pytest.mark.parametrize("l1,lr,seed", [(0.5, 1e-2, 1), (0.0, 1e-3, 0)])
def test_a_member_of_a_sweep_equals_its_single_run(sweep, tmp_path, l1, lr, seed):
    out = str(tmp_path / "single")
    assert main(["meta-train", *TINY, "--l1", str(l1), "--meta-lr", str(lr), "--seed", str(seed), "--out", out]) == 0
    single = _records(out)
    member = [r for r in _records(sweep) if (r["l1"], r["meta_lr"], r["seed"]) == (l1, lr, seed)]
    assert [r["episode"] for r in member] == [r["episode"] for r in single] == list(range(6))
    for a, b in zip(member, single):
        # one program vmapped over 8 members against one over 1: the same arithmetic, up to the
        # float32 rounding of differently batched XLA kernels
        assert a["meta_loss"] == pytest.approx(b["meta_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        for k in a["theta"]:
            assert a["theta"][k] == pytest.approx(b["theta"][k], rel=1e-4, abs=1e-8)


def test_a_sweep_resumes_where_it_stopped(sweep, tmp_path):
    import shutil

    out = str(tmp_path / "resumed")
    shutil.copytree(sweep, out)
    assert main(["meta-train", "--resume", out, "--episodes", "8", "--no-progress"]) == 0
    recs = _records(out)
    assert recs[:48] == _records(sweep)
    assert {r["episode"] for r in recs[48:]} == {6, 7} and len(recs) == 64


def test_a_duplicated_value_in_a_sweep_is_refused(tmp_path, capsys):
    assert main(["meta-train", *TINY, "--l1", "0,1,0", "--out", str(tmp_path / "r")]) == 2
    assert "lists a value twice" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")


def test_replay_returns_the_tasks_the_meta_step_used(tmp_path):
    out = str(tmp_path / "mb2")
    assert main(["meta-train", *TINY, "--meta-batch", "2", "--seeds", "2", "--out", out]) == 0
    ep = replay_episode(out, 4, seed=1)
    rec = ep.record
    assert (rec["episode"], rec["seed"]) == (4, 1)
    prev = [r for r in _records(out) if (r["episode"], r["seed"]) == (3, 1)][0]
    np.testing.assert_array_equal(np.asarray(ep.theta), np.asarray(list(prev["theta"].values()), np.float32))
    # the record's query loss is the mean over the meta-batch's tasks: the replayed ones give it
    losses = [float(ep_mod.run(ep.theta, ep.rule, ep.spec, k, ep.ci).loss) for k in ep.task_keys]
    assert np.mean(losses) == pytest.approx(rec["query_loss"], rel=1e-5)
    # the initial W of each task is what draw gives for its key (and differs between the tasks)
    assert not np.array_equal(np.asarray(ep.W[0][0]), np.asarray(ep.W[1][0]))
    # replaying the episode key itself (the tempting mistake) is another task
    naive = jax.random.fold_in(jax.random.PRNGKey(1), 4)
    assert float(ep_mod.run(ep.theta, ep.rule, ep.spec, naive, ep.ci).loss) != pytest.approx(np.mean(losses), rel=1e-3)
    with pytest.raises(ConfigError, match="no member"):
        replay_episode(out, 4, seed=7)
    with pytest.raises(ConfigError, match="no record of episode 99"):
        replay_episode(out, 99)
    assert rundir.member_index(ep.cfg, rec) == 1
    assert jnp.asarray(ep.task_keys).shape[0] == 2
