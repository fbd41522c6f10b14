"""The ES meta-gradient (plastic_jax/estimators/es.py): what it estimates, common random numbers,
and its place in the registry, the config and the jitted, vmapped meta-step.

Tiny float64 episodes (digits, 64-6-10 network, T = M·K = 6 online steps) so that thousands of
perturbed episodes run in a few seconds; the statistical tolerances are a few standard errors
estimated from the estimator's own per-pair samples (``es_samples``)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax import checks, rundir, train
from plastic_jax.cli import main
from plastic_jax.config import ConfigError, TrainConfig, validate
from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss
from plastic_jax.estimators import ESTIMATORS, REGISTRY, es_grad, es_samples, memory_bytes
from plastic_jax.estimators.es import ES_PAIRS, ES_SIGMA, default_chunk, es_directions, es_memory
from plastic_jax.inner import make_rule

#: T = 6 online steps, meta-batch 1: one perturbed episode costs microseconds
SPEC = EpisodeSpec((64, 6, 10), M=2, K=3, Q=2, meta_batch=1)
OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "old_run")


@pytest.fixture(scope="module")
def ci64():
    ci = build_class_index(load_dataset("digits"))
    return ci._replace(x=np.asarray(ci.x, np.float64))


def _loss_fn(rule, spec, key, ci):
    return lambda th: batch_loss(th, rule, spec, key, ci)[0]


# ----------------------------------------------------------------------------- what it estimates


def test_the_expectation_is_the_gradient_of_the_gaussian_smoothed_loss(ci64):
    # f0 (R = 1): dL_σ/dθ = E_ε[L'(θ + σε)] by Gauss-Hermite quadrature (probabilists' nodes,
    # weight e^{-x²/2}) of jax.grad of the meta-loss, against ES with many pairs
    with jax.enable_x64(True):
        ci = ci64._replace(x=jnp.asarray(ci64.x))
        rule = make_rule("f0", n_layers=2, feedback="fa")
        key = jax.random.PRNGKey(0)
        # θ = 0.2 sits where L' turns from -6 (θ = 0.2) to +37 (θ = 0.3) on this task: the smoothing
        # over σ = 0.03 moves the gradient by a lot (checked below), and L stays finite over θ ± 6σ
        theta, sigma, pairs = jnp.array([0.2]), 0.03, 4000
        dL = jax.jit(jax.vmap(jax.grad(_loss_fn(rule, SPEC, key, ci))))

        def smoothed(n):
            x, w = np.polynomial.hermite_e.hermegauss(n)
            return float(np.sum(w * np.asarray(dL(theta + sigma * jnp.asarray(x)[:, None]))[:, 0]) / np.sqrt(2 * np.pi))

        quad = smoothed(60)
        quad_err = abs(quad - smoothed(40))  # measured ~1e-3: the quadrature has converged
        # all 2P + 1 tiny episodes in one vmapped scan (the CPU default, one at a time, is slower here)
        _, g = jax.jit(lambda th: es_samples(th, rule, SPEC, key, ci, sigma=sigma, pairs=pairs,
                                             chunk=2 * pairs + 1))(theta)
        g = np.asarray(g)[:, 0]
        es, se = g.mean(), g.std(ddof=1) / np.sqrt(pairs)
        # measured: quadrature -4.330, ES -4.348 ± 0.074 (0.25 standard errors). 4 standard errors
        # (a chance of 6e-5 for an unbiased estimator; the keys are fixed, so it never flakes)
        # plus the quadrature's own error
        assert abs(es - quad) <= 4 * se + quad_err, (es, se, quad)
        # and the test tells L_σ' from L': the exact gradient at θ (-6.34) is ~27 standard errors
        # away, so ES estimating L'(θ) instead (or a wrong scale, e.g. 1/σ for 1/(2σ)) fails above
        exact = float(dL(theta[None])[0, 0])
        assert abs(exact - quad) > 10 * se, (exact, quad, se)


def test_in_a_smooth_regime_small_sigma_matches_the_exact_gradient(ci64):
    # bio (R = 3) at a Θ where the tiny episode is smooth: as σ → 0 the smoothed gradient tends to
    # the exact one (reverse mode), up to ES's standard error and an O(σ²) bias
    with jax.enable_x64(True):
        ci = ci64._replace(x=jnp.asarray(ci64.x))
        rule = make_rule("bio", n_layers=2, feedback="fa")
        key = jax.random.PRNGKey(3)
        theta, sigma, pairs = jnp.array([0.1, -0.02, 0.01]), 1e-4, 1000
        (_, _), want = jax.jit(ESTIMATORS["reverse"], static_argnums=(1, 2))(theta, rule, SPEC, key, ci)
        want = np.asarray(want)
        _, g = jax.jit(lambda th: es_samples(th, rule, SPEC, key, ci, sigma=sigma, pairs=pairs,
                                             chunk=2 * pairs + 1))(theta)
        g = np.asarray(g)
        es, se = g.mean(0), g.std(0, ddof=1) / np.sqrt(pairs)
        # the O(σ²) bias: ES minus the σ → 0 formula of the same ε measured 3e-5·|∇L| at σ = 1e-4 on
        # such an episode (and 100× less per decade of σ); 1e-3·|∇L| leaves room for a 30× larger
        # third derivative. 4 standard errors per component as in the test above
        tol = 4 * se + 1e-3 * np.linalg.norm(want)
        assert np.all(np.abs(es - want) <= tol), (es, want, se)
        # the standard error is small enough for the test to mean something: ~5% of |∇L|
        assert np.all(se < 0.1 * np.linalg.norm(want)), se


@pytest.mark.parametrize("feedback", ["fa", "plastic"])
def test_perturbations_see_the_same_tasks_per_layer_and_stateful(ci64, feedback):
    # with σ tiny, [L(Θ+σε) - L(Θ-σε)]/(2σ) is the directional derivative ∇L·ε of *the same* meta-loss
    # (same tasks, streams, W_0, B) only if every perturbation sees the key's tasks: compare with
    # jax.jvp of batch_loss along the estimator's own ε. Per-layer Θ (R = 2 layers × 3 terms), and
    # under plastic (B changes during the episode; Θ^B's 3 entries are perturbed too)
    with jax.enable_x64(True):
        ci = ci64._replace(x=jnp.asarray(ci64.x))
        rule = make_rule("bio", n_layers=2, feedback=feedback, per_layer=True)
        spec = SPEC._replace(meta_batch=2)
        n = rule.n_theta
        assert n == (6 if feedback == "fa" else 9)
        rng = np.random.default_rng(1)
        theta = jnp.asarray(np.where(np.arange(n) % 3 == 0, 0.1, rng.normal(scale=0.02, size=n)))
        if feedback == "plastic":
            theta = theta.at[6:].set(jnp.array([0.5, 0.05, 0.3]))
        key = jax.random.PRNGKey(7)
        sigma, pairs = 1e-6, 16
        f = _loss_fn(rule, spec, key, ci)

        def program(th):
            (loss, acc), grad = es_grad(th, rule, spec, key, ci, sigma=sigma, pairs=pairs)
            eps = es_directions(th, key, pairs)
            directional = jax.vmap(lambda e: jax.jvp(f, (th,), (e,))[1])(eps)  # (P,)
            return loss, acc, grad, jnp.mean(directional[:, None] * eps, axis=0), batch_loss(th, rule, spec, key, ci)

        loss, acc, grad, want, (ref_loss, ref_acc) = jax.jit(program)(theta)
        assert grad.shape == (n,) and want.shape == (n,)
        # float64: the central difference's truncation O(σ²·L''') ≈ 1e-12 and rounding O(eps·L/σ)
        # ≈ 1e-10; tasks that changed with ε would put every component off by O(ΔL/σ) ~ 1e5
        np.testing.assert_allclose(np.asarray(grad), np.asarray(want), rtol=1e-6, atol=1e-6 * np.abs(want).max())
        assert np.abs(np.asarray(want)).min() > 0  # every entry of Θ, Θ^B's included, is reached
        # loss and accuracy at the unperturbed Θ (the first of the 2P + 1 vmapped episodes)
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12) and float(acc) == float(ref_acc)
        # the tasks are key's, not ε's: the directions come from a key of their own
        assert not np.allclose(np.asarray(es_directions(theta, key, pairs)),
                               np.asarray(jax.random.normal(key, (pairs, n), theta.dtype)))


def test_a_meta_step_of_a_two_seed_run_through_the_driver():
    # the jitted, vmapped meta-step of train.make_step, with es's σ and P from the config
    cfg = TrainConfig(dataset="digits", hidden=(6,), M=2, K=3, Q=2, rule="bio", estimator="es", es_sigma=0.02,
                      es_pairs=3, seeds=2, episodes=1, preset="paper")
    exp = train.build(cfg)
    _, step = train.make_step(cfg, exp.rule, exp.spec)
    state = train.init_state(cfg, exp.rule)
    keys = train.episode_keys(train.seed_keys(cfg), 0)
    l1 = jnp.asarray(train.member_hyperparameters(cfg)["l1"])
    new, m = step(state, keys, exp.ci, l1)
    assert new.theta.shape == (2, 3) and m["grad_norm"].shape == (2,)
    assert not np.any(np.asarray(m["skipped"])) and np.all(np.isfinite(np.asarray(new.theta)))
    assert np.all(np.asarray(new.theta) != np.asarray(state.theta))  # every entry moved (Adam: ≈ lr)
    theta0 = state.theta[0]
    for s in range(2):
        (loss, _), grad = jax.jit(lambda th, k: es_grad(th, exp.rule, exp.spec, k, exp.ci, sigma=0.02, pairs=3))(
            theta0, keys[s])
        # the same estimate as es_grad with the run's σ and P (float32; the vmapped program rounds
        # differently: ~1e-6 of the loss, divided by 2σ)
        assert float(m["grad_norm"][s]) == pytest.approx(float(jnp.linalg.norm(grad)), rel=1e-3)
        assert float(m["meta_loss"][s]) == pytest.approx(float(loss), rel=1e-5)
        # ... and not the one of the defaults (σ = 1e-3, P = 8): the options did reach the estimator
        _, default = jax.jit(lambda th, k: es_grad(th, exp.rule, exp.spec, k, exp.ci))(theta0, keys[s])
        assert abs(float(jnp.linalg.norm(default)) - float(m["grad_norm"][s])) > 1e-2 * float(m["grad_norm"][s])
    assert float(m["grad_norm"][0]) != float(m["grad_norm"][1])  # each seed its own tasks and ε


# ----------------------------------------------------------------------------- settings and registry


def test_the_registry_record_and_the_config_defaults_agree():
    rec = REGISTRY["es"]
    assert ESTIMATORS["es"] is es_grad and rec.fn is es_grad and not rec.exact and rec.auto is None
    assert (TrainConfig().es_sigma, TrainConfig().es_pairs) == (ES_SIGMA, ES_PAIRS)
    assert dict(rec.options) == {"es_sigma": "sigma", "es_pairs": "pairs"}
    # the memory model: W_0, B and W with its update for each episode in flight, per task
    spec = EpisodeSpec((784, 170, 130, 100, 70, 47), M=5, K=50, Q=10, meta_batch=2)
    n = 784 * 170 + 170 * 130 + 130 * 100 + 100 * 70 + 70 * 47
    rule = make_rule("bio", n_layers=5)
    assert es_memory(spec, rule, pairs=8, chunk=100) == 4 * n * (2 + 2 * 17) * 2  # all 2P + 1 at once
    assert es_memory(spec, rule, pairs=8, chunk=4) == 4 * n * (2 + 2 * 4) * 2
    live = min(201, default_chunk(201))  # 1 on a CPU: the episodes run one after the other there
    assert memory_bytes("es", spec, rule, TrainConfig(es_pairs=100)) == 4 * n * (2 + 2 * live) * 2


@pytest.mark.parametrize("flags,message", [
    (["--es-sigma", "0"], "--es-sigma must be positive, got 0.0"),
    (["--es-sigma=-1e-3"], "--es-sigma must be positive, got -0.001"),
    (["--es-sigma", "nan"], "--es-sigma must be finite, got nan"),
    (["--es-pairs", "0"], "--es-pairs must be a positive integer, got 0"),
    (["--es-pairs", "1.5"], "argument --es-pairs: invalid int value: '1.5'"),
])
def test_bad_es_settings_are_one_line(tmp_path, capsys, flags, message):
    assert main(["meta-train", "--meta-grad", "es", *flags, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not os.path.exists(tmp_path / "r")


def test_es_settings_are_recorded_and_an_old_run_reads_without_them(tmp_path):
    cfg = TrainConfig(estimator="es", es_sigma=0.005, es_pairs=4)
    validate(cfg)
    d = cfg.to_json()
    assert (d["estimator"], d["es_sigma"], d["es_pairs"]) == ("es", 0.005, 4)
    assert TrainConfig.from_json(json.loads(json.dumps(d))).es_sigma == 0.005
    with pytest.raises(ConfigError, match="^--es-pairs must be a positive integer"):
        validate(TrainConfig(es_pairs=-2))
    # a run directory written before the settings existed
    run = str(tmp_path / "old")
    shutil.copytree(OLD_RUN, run)
    with open(os.path.join(run, "config.json")) as f:
        assert "es_sigma" not in json.load(f)
    old = rundir.read_config(run)
    assert (old.es_sigma, old.es_pairs) == (ES_SIGMA, ES_PAIRS)


@pytest.mark.parametrize("kw,message", [
    (dict(sigma=0.0), "sigma must be a positive finite number, got 0.0"),
    (dict(sigma=float("inf")), "sigma must be a positive finite number, got inf"),
    (dict(pairs=0), "pairs must be an integer >= 1, got 0"),
    (dict(pairs=2.0), "pairs must be an integer >= 1, got 2.0"),
    (dict(chunk=0), "chunk must be an integer >= 1, got 0"),
])
def test_es_grad_refuses_bad_options_in_one_line(ci64, kw, message):
    rule = make_rule("f0", n_layers=2)
    with pytest.raises(checks.PlasticJaxError, match=f"^es_grad: {message}"):
        es_grad(jnp.array([1e-3]), rule, SPEC, jax.random.PRNGKey(0), ci64, **kw)


def test_chunked_perturbations_give_the_same_estimate(ci64):
    # chunk: how many episodes are vmapped at once (lax.map over chunks; 1: a plain scan, the CPU
    # default); the numbers do not change beyond float32 rounding
    rule = make_rule("bio", n_layers=2)
    theta = jnp.array([0.05, -0.01, 0.01], jnp.float32)
    key = jax.random.PRNGKey(2)
    ci = ci64._replace(x=jnp.asarray(ci64.x, jnp.float32))
    f = jax.jit(lambda th, c: es_grad(th, rule, SPEC, key, ci, sigma=1e-2, pairs=5, chunk=c), static_argnums=1)
    (l1, a1), g1 = f(theta, 11)  # all 2P + 1 = 11 episodes in one vmapped scan
    for chunk in (None, 1, 4):  # 4: chunks of 4, 4 and a remainder of 3
        (l2, a2), g2 = f(theta, chunk)
        assert float(l1) == pytest.approx(float(l2), rel=1e-6) and float(a1) == float(a2)
        # float32 losses differ by ~1e-7 between the programs, divided by 2σ = 0.02
        np.testing.assert_allclose(np.asarray(g2), np.asarray(g1), rtol=1e-4, atol=1e-4 * np.abs(np.asarray(g1)).max())
