"""episode_sensitivity: the tangent of the weights along the episode against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, draw
from plastic_jax.inner import make_rule, state_step
from plastic_jax.sensitivity import episode_sensitivity, finite_differences, is_chaotic

SPEC = EpisodeSpec((64, 10, 10), M=3, K=4, Q=2)


@pytest.fixture(scope="module")
def ci64():
    ci = build_class_index(load_dataset("digits"))
    return ci._replace(x=np.asarray(ci.x, np.float64))


def test_growth_is_the_norm_of_the_weights_derivative_along_the_stream(ci64):
    with jax.enable_x64(True):
        ci = ci64._replace(x=jnp.asarray(ci64.x, jnp.float64))
        rule = make_rule((0, 2, 9), n_layers=2, feedback="fa")
        theta = jnp.array([0.05, -0.02, 0.01])
        v = jnp.array([1.0, 2.0, -1.0])
        key = jax.random.PRNGKey(3)
        s = episode_sensitivity(theta, rule, SPEC, key, ci, v)
        u = v / jnp.linalg.norm(v)

        # independent: W_t(Θ ± h u) by a plain Python loop over the stream, central differences
        step = jax.jit(state_step, static_argnums=1)
        task, W0, B0 = draw(SPEC, key, ci, jnp.float64, "fa")

        def weights_after(th, t):
            W, B = W0, B0
            for i in range(t):
                W, B = step(th, rule, W, B, task.xs[i], task.ys[i])
            return W

        h = 1e-6
        for t in (1, 5, SPEC.M * SPEC.K):
            plus, minus = weights_after(theta + h * u, t), weights_after(theta - h * u, t)
            fd = np.sqrt(sum(float(jnp.sum(((a - b) / (2 * h)) ** 2)) for a, b in zip(plus, minus)))
            # float64 central differences, h = 1e-6: error O(h²) + O(eps/h) ≈ 1e-10 relative
            assert float(s.growth[t - 1]) == pytest.approx(fd, rel=1e-6)
        assert float(s.amplification) == pytest.approx(float(s.growth[-1] / s.growth[0]))
        fds = finite_differences(theta, rule, SPEC, key, ci, v, steps=(1e-5, 1e-6))
        np.testing.assert_allclose(np.asarray(fds), float(s.dloss), rtol=1e-5)
        assert not bool(is_chaotic(s))


def test_a_strong_rule_amplifies_far_more_than_a_weak_one(ci64):
    ci = ci64._replace(x=jnp.asarray(ci64.x, jnp.float32))
    rule = make_rule((0, 9), n_layers=2, feedback="fa")
    key = jax.random.PRNGKey(0)
    weak = episode_sensitivity(jnp.array([0.01, 0.0]), rule, SPEC, key, ci)
    strong = episode_sensitivity(jnp.array([3.0, 2.0]), rule, SPEC, key, ci)
    assert float(strong.amplification) > 100 * float(weak.amplification) or not np.isfinite(float(strong.amplification))
    assert bool(is_chaotic(strong, threshold=float(weak.amplification) * 100))


def test_regime_tells_a_diverged_episode_from_a_chaotic_one(ci64):
    """A huge θ0 overflows the weights: ``regime`` says diverged (2), ``is_chaotic`` lumps it in; a
    large one leaves them finite but amplifies a perturbation ≫ 1e3-fold: chaotic (1)."""
    from plastic_jax.sensitivity import CHAOTIC, DIVERGED, SMOOTH, regime

    ci = ci64._replace(x=jnp.asarray(ci64.x, jnp.float32))
    spec = EpisodeSpec((64, 16, 16, 10), M=3, K=5, Q=2)  # two hidden layers: the weights can overflow
    rule = make_rule("bio", n_layers=3, feedback="fa")
    key = jax.random.split(jax.random.PRNGKey(5), 3)[0]  # (some tasks keep finite weights: dead units)
    huge = episode_sensitivity(jnp.array([1e8, 0.0, 0.0]), rule, spec, key, ci)
    assert bool(huge.diverged) and int(regime(huge)) == DIVERGED and bool(is_chaotic(huge))
    wild = episode_sensitivity(jnp.array([2.0, 0.0, 0.0]), rule, spec, key, ci)
    assert not bool(wild.diverged) and float(wild.amplification) > 1e3 and int(regime(wild)) == CHAOTIC
    calm = episode_sensitivity(jnp.array([0.01, -0.01, 0.001]), rule, spec, key, ci)
    assert not bool(calm.diverged) and int(regime(calm)) == SMOOTH


def test_meta_training_logs_the_amplification_of_the_replayed_episode(tmp_path):
    """At every analysis point the record's amplification (mean and max over the meta-batch) and
    chaotic flag are those of ``episode_sensitivity`` on the (seed, episode)'s tasks with the
    pre-update Θ (``replay.replay_episode``); the telemetry figure draws them."""
    from plastic_jax import plots, rundir
    from plastic_jax.config import TrainConfig
    from plastic_jax.replay import replay_episode
    from plastic_jax.train import meta_train

    out = str(tmp_path / "run")
    cfg = TrainConfig(dataset="digits", rule="bio", feedback="fa", hidden=(16,), M=3, K=5, Q=2, episodes=4,
                      seeds=2, meta_batch=2, analysis_every=2, checkpoint_every=0, meta_lr=0.05, out=out)
    meta_train(cfg, progress=False)
    records = rundir.read_records(out)
    logged = [r for r in records if "amplification" in r]
    assert sorted((r["episode"], r["seed"]) for r in logged) == [(e, s) for e in (0, 2, 3) for s in (0, 1)]
    assert all("amplification" not in r for r in records if r["episode"] == 1)
    sens = jax.jit(episode_sensitivity, static_argnums=(1, 2))
    for r in logged:
        ep = replay_episode(out, r["episode"], seed=r["seed"])
        s = [sens(ep.theta, ep.rule, ep.spec, k, ep.ci) for k in ep.task_keys]
        amps = np.array([float(x.amplification) for x in s])
        assert r["amplification"] == pytest.approx(amps.mean(), rel=1e-4)
        assert r["amplification_max"] == pytest.approx(amps.max(), rel=1e-4)
        assert r["chaotic"] == any(bool(is_chaotic(x)) for x in s)

    (run,) = plots.load_runs(out)
    amp = run.telemetry["amplification"]
    assert amp.shape == (2, 4) and np.isnan(amp[:, 1]).all() and np.isfinite(amp[:, [0, 2, 3]]).all()
    written = plots.plot_runs([run], str(tmp_path / "fig"), window=2)
    assert any(p.endswith("telemetry.png") for p in written)


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_telemetry_figure_draws_the_amplification_on_a_log_axis(tmp_path, monkeypatch):
    """Panel (e): one line per seed through the analysis points, a dashed line at the threshold,
    a red triangle where an analysis point's amplification is null but flagged chaotic; a run
    without amplification (older records) has the four panels only."""
    import json
    import os

    from plastic_jax import plots

    def fake(path, amplification):
        os.makedirs(path)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"rule": "bio", "feedback": "fa"}, f)
        with open(os.path.join(path, "metrics.jsonl"), "w") as f:
            for ep in range(6):
                for s in (0, 1):
                    rec = {"episode": ep, "seed": s, "accuracy": 0.5, "meta_loss": 1.0, "query_loss": 1.0,
                           "theta": {"F0": 0.01}, "grad_norm": 1.0 + ep, "grad_norm_median": 1.0,
                           "update_norm": 1e-3, "adam_nu_max": 1.0, "step_scale": 1.0, "clipped": False,
                           "spike": False, "rolled_back": False}
                    if amplification and ep % 2 == 0:
                        diverged = (ep, s) == (4, 1)
                        rec.update(amplification=None if diverged else 10.0 ** (ep + s), chaotic=diverged or ep >= 4,
                                   amplification_max=None if diverged else 10.0 ** (ep + s))
                    f.write(json.dumps(rec) + "\n")

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    fake(a, True)
    fake(b, False)
    figs = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out, name: figs.setdefault(name, fig) and save(fig, out, name))
    plots.plot_runs(plots.load_runs(a), str(tmp_path / "fa"))
    axes = [ax for ax in figs["telemetry"].axes if ax.axison]
    assert len(axes) == 5 and axes[4].get_title().startswith("(e) perturbation amplification")
    assert axes[4].get_yscale() == "log"
    lines = axes[4].get_lines()
    assert any(ln.get_linestyle() == "--" and list(ln.get_ydata()) == [1e3, 1e3] for ln in lines)
    seeds = [ln for ln in lines if ln.get_marker() == "."]
    assert [list(ln.get_xdata()) for ln in seeds] == [[0, 2, 4], [0, 2]]
    assert list(seeds[0].get_ydata()) == [1.0, 1e2, 1e4]
    (tri,) = [ln for ln in lines if ln.get_marker() == "^"]
    assert list(tri.get_xdata()) == [4]
    figs.clear()
    plots.plot_runs(plots.load_runs(b), str(tmp_path / "fb"))
    assert len([ax for ax in figs["telemetry"].axes if ax.axison]) == 4
    assert "amplification" not in plots.load_runs(b)[0].telemetry
