"""The meta-gradient estimators agree with each other and with jax.grad of the meta-loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from user_terms import USER_POOL  # the test user pool, declared once (tests/user_terms.py)

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss
from plastic_jax.estimators import (
    ESTIMATORS,
    adapt_remat,
    choose_estimator,
    forward_online_step,
    forward_online_step_generic,
    remat_segment_length,
)
from plastic_jax.inner import adapt, make_rule, online_step
from plastic_jax.meta import meta_init, meta_step
from plastic_jax.network import init_network


@pytest.fixture(scope="module")
def ci():
    return build_class_index(load_dataset("digits"))


def _theta(rule, seed=0):
    rng = np.random.default_rng(seed)
    th = np.where(np.array(rule.terms) == 0, 0.1, rng.normal(scale=0.02, size=len(rule.terms)))
    return jnp.asarray(th, jnp.float32)


# pool+bp compiles the largest programs (~100 s on a loaded 2-core CPU); pool+fa already covers
# all ten terms and f0+bp the bp path, so it runs with the slow tests; so does bio+fa, whose three
# terms pool+fa (and the elementwise pool below) cover in the same setting
CASES = [
    ((0,), "bp", "frozen"),
    ((0,), "bp", "through"),
    pytest.param((0, 2, 9), "fa", "frozen", marks=pytest.mark.slow),
    (tuple(range(10)), "fa", "frozen"),
    pytest.param(tuple(range(10)), "bp", "frozen", marks=pytest.mark.slow),
    pytest.param(tuple(range(10)), "bp", "through", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("terms,feedback,bp_grad", CASES)
def test_all_estimators_agree_with_jax_grad(ci, terms, feedback, bp_grad):
    _assert_estimators_agree_with_jax_grad(ci, make_rule(terms, n_layers=3, feedback=feedback, bp_grad=bp_grad))


# the user pool's agreement with jax.grad runs with the slow tests (~50 s here): forward and
# reverse mode on a user pool are also compared by the end-to-end test below
@pytest.mark.parametrize("case", ["pool-elementwise", pytest.param("user-pool", marks=pytest.mark.slow)])
def test_all_estimators_agree_with_jax_grad_elementwise_and_user_pool(ci, case):
    if case == "pool-elementwise":
        rule = make_rule(tuple(range(10)), n_layers=3, feedback="fa", f5_f8="elementwise")
    else:
        rule = make_rule((0, 2, 6, 9, 10, 11), n_layers=3, feedback="fa", pool=USER_POOL)
    _assert_estimators_agree_with_jax_grad(ci, rule)


def _assert_estimators_agree_with_jax_grad(ci, rule):
    # float32, T = 21 online steps, meta-batch 2; the reference is plain jax.grad of the
    # meta-loss. Forward and reverse mode sum the same products in different orders, so they
    # differ by float32 rounding accumulated over the episode: ~1e-6 relative; 1e-4 is the
    # agreement the issue asks for, still far below any real discrepancy (a wrong term or a
    # missing tangent changes the gradient at the 1e-2..1 level).
    spec = EpisodeSpec((64, 24, 16, 10), M=3, K=7, Q=3, meta_batch=2)
    theta = _theta(rule)
    key = jax.random.PRNGKey(3)
    want_loss, want_acc = batch_loss(theta, rule, spec, key, ci)
    want = np.asarray(jax.grad(lambda t: batch_loss(t, rule, spec, key, ci)[0])(theta))
    assert np.all(np.isfinite(want)) and np.abs(want).max() > 0
    # "auto" is one of the others (test_auto_* checks which); skip compiling it again
    for name in ("reverse", "reverse-remat", "forward"):
        (loss, acc), grad = jax.jit(ESTIMATORS[name], static_argnums=(1, 2))(theta, rule, spec, key, ci)
        np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5, err_msg=name)
        assert float(acc) == pytest.approx(float(want_acc)), name
        # relative to the gradient's largest component (a tiny component has no relative scale)
        np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=name)


def test_forward_mode_matches_finite_differences_in_float64(ci):
    with jax.enable_x64(True):
        ci64 = ci._replace(x=jnp.asarray(ci.x, jnp.float64))
        spec = EpisodeSpec((64, 12, 10), M=3, K=5, Q=3, meta_batch=1)
        # finite differences see the exact gradient: differentiate through B = W
        rule = make_rule((0, 3, 5, 6, 7, 8, 9), n_layers=2, feedback="bp", bp_grad="through")
        theta = jnp.asarray(np.asarray(_theta(rule, 1)), jnp.float64)
        key = jax.random.PRNGKey(0)
        (_, _), grad = jax.jit(ESTIMATORS["forward"], static_argnums=(1, 2))(theta, rule, spec, key, ci64)
        f = jax.jit(lambda th: batch_loss(th, rule, spec, key, ci64)[0])
        h = 1e-6
        fd = np.array([(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h) for i in range(len(theta))])
        # central differences in float64: error O(h²) + O(eps/h) ≈ 1e-10 relative
        np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


def test_forward_mode_matches_finite_differences_in_float64_elementwise(ci):
    with jax.enable_x64(True):
        ci64 = ci._replace(x=jnp.asarray(ci.x, jnp.float64))
        spec = EpisodeSpec((64, 12, 10), M=3, K=5, Q=3, meta_batch=1)
        rule = make_rule((0, 3, 5, 6, 7, 9, 11), n_layers=2, feedback="bp", bp_grad="through",
                         f5_f8="elementwise", pool=USER_POOL)
        theta = jnp.asarray(np.asarray(_theta(rule, 4)), jnp.float64)
        key = jax.random.PRNGKey(2)
        (_, _), grad = jax.jit(ESTIMATORS["forward"], static_argnums=(1, 2))(theta, rule, spec, key, ci64)
        f = jax.jit(lambda th: batch_loss(th, rule, spec, key, ci64)[0])
        h = 1e-6
        fd = np.array([(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h) for i in range(len(theta))])
        assert np.all(np.abs(fd) > 0)
        np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("case", ["pool-elementwise-bp-through", "pool-bp-frozen", "user-pool-fa"])
def test_hand_batched_forward_step_equals_the_generic_jvp(case):
    # the kept hand-batched step and jax.linearize of online_step: same new W and tangents
    with jax.enable_x64(True):
        sizes = (20, 9, 7, 5)
        W, B = init_network(jax.random.PRNGKey(4), sizes, jnp.float64)
        rule = {
            "pool-elementwise-bp-through": make_rule(tuple(range(10)), n_layers=3, feedback="bp",
                                                     bp_grad="through", f5_f8="elementwise"),
            "pool-bp-frozen": make_rule(tuple(range(10)), n_layers=3, feedback="bp"),
            "user-pool-fa": make_rule(layer_terms=[(0, 10), (1, 8, 11), tuple(range(12))], feedback="fa",
                                      pool=USER_POOL, f5_f8="elementwise"),
        }[case]
        theta = jnp.asarray(np.asarray(_theta(rule, 5)), jnp.float64)
        R = len(theta)
        dW = tuple(jax.random.normal(jax.random.PRNGKey(6 + i), (R, *w.shape), jnp.float64) * 0.1
                   for i, w in enumerate(W))
        x = jax.random.uniform(jax.random.PRNGKey(2), (20,), jnp.float64)
        got = jax.jit(forward_online_step, static_argnums=1)(theta, rule, W, dW, B, x, jnp.array(3))
        want = jax.jit(forward_online_step_generic, static_argnums=1)(theta, rule, W, dW, B, x, jnp.array(3))
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-11, atol=1e-13)


def test_a_user_term_trains_end_to_end_with_forward_and_reverse_mode(ci):
    # a few meta-training steps through meta.meta_step with a pool extended by two user terms
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=2, meta_batch=1)
    rule = make_rule((0, 2, 10, 11), n_layers=2, feedback="fa", pool=USER_POOL)
    opt = optax.adam(1e-2)
    theta0 = jnp.array([0.1, 0.01, 0.01, 0.01])
    runs = {}
    for name in ("forward", "reverse"):
        step = jax.jit(functools.partial(meta_step, rule=rule, spec=spec, optimizer=opt, l1=0.0,
                                         estimator=ESTIMATORS[name]))
        state = meta_init(theta0, opt)
        thetas, losses = [], []
        for k in range(3):
            state, m = step(state, jax.random.PRNGKey(10 + k), ci)
            assert not bool(m["skipped"])
            thetas.append(np.asarray(state.theta))
            losses.append(float(m["meta_loss"]))
        _, grad = jax.jit(ESTIMATORS[name], static_argnums=(1, 2))(state.theta, rule, spec, jax.random.PRNGKey(20), ci)
        runs[name] = (np.array(thetas), np.array(losses), np.asarray(grad))
    (th_f, loss_f, g_f), (th_r, loss_r, g_r) = runs["forward"], runs["reverse"]
    assert np.all(np.isfinite(g_f)) and np.all(np.isfinite(g_r)) and np.all(np.isfinite(loss_f))
    # every θ component moved, the user terms' included (Adam's first steps are ≈ lr in size)
    assert np.all(np.abs(th_f[-1] - np.asarray(theta0)) > 1e-3)
    assert np.all(np.abs(g_f[2:]) > 0)
    np.testing.assert_allclose(g_f, g_r, rtol=1e-4, atol=1e-4 * np.abs(g_r).max())
    np.testing.assert_allclose(th_f, th_r, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loss_f, loss_r, rtol=1e-5)


@pytest.mark.parametrize("feedback", ["fa", "bp"])
def test_forward_online_step_primal_is_online_step(feedback):
    sizes = (20, 9, 7, 5)
    W, B = init_network(jax.random.PRNGKey(1), sizes)
    rule = make_rule(tuple(range(10)), n_layers=3, feedback=feedback)
    theta = _theta(rule, 2)
    dW = tuple(jnp.zeros((len(theta), *w.shape)) for w in W)
    x = jax.random.uniform(jax.random.PRNGKey(2), (20,))
    got, _ = jax.jit(forward_online_step, static_argnums=1)(theta, rule, W, dW, B, x, jnp.array(3))
    want = jax.jit(online_step, static_argnums=1)(theta, rule, W, B, x, jnp.array(3))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seg", [None, 4, 21, 1])
def test_checkpointed_adapt_equals_adapt(seg):
    # T = 21 is not a multiple of 4: the remainder runs as a shorter segment
    sizes = (20, 9, 5)
    W, B = init_network(jax.random.PRNGKey(1), sizes)
    rule = make_rule((0, 2, 9), n_layers=2, feedback="fa")
    theta = _theta(rule)
    xs = jax.random.uniform(jax.random.PRNGKey(2), (21, 20))
    ys = jax.random.randint(jax.random.PRNGKey(3), (21,), 0, 5)
    got = adapt_remat(theta, rule, W, B, xs, ys, seg)
    want = adapt(theta, rule, W, B, xs, ys)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)


def test_segment_length_is_near_sqrt_T():
    assert remat_segment_length(250) in (10, 25)
    assert remat_segment_length(2500) == 50
    assert remat_segment_length(97) == 10  # prime: round(√97), remainder segment of 7
    assert remat_segment_length(1) == 1


def test_auto_picks_forward_up_to_the_measured_crossover():
    assert choose_estimator(1) == "forward"  # f0: forward mode 2.5-2.9 forward episodes, the adjoint 1.9-3.8
    assert choose_estimator(2) == "adjoint"  # the adjoint (2-4.4 for any R) from here on
    assert choose_estimator(10) == "adjoint"  # the whole pool: forward mode 8.5-14 forward episodes
    assert choose_estimator(50) == "adjoint"  # per-layer pool


# ----------------------------------------------------------------------------- the registry


def test_everything_reads_the_registry():
    # the --meta-grad choices (config), ESTIMATORS, auto's picks and the benchmark's --estimator
    # all come from estimators.REGISTRY: one record per estimator module
    import argparse

    from plastic_jax import estimators
    from plastic_jax.benchmark import add_benchmark_args
    from plastic_jax.config import choices_of

    names = estimators.names()
    assert names == ("auto", *estimators.REGISTRY) == tuple(ESTIMATORS) == choices_of("estimator")
    for name, rec in estimators.REGISTRY.items():
        assert rec.name == name and ESTIMATORS[name] is rec.fn and callable(rec.memory)
        assert rec.description and "\n" not in rec.description
    p = argparse.ArgumentParser()
    add_benchmark_args(p)
    assert p.parse_args(["--estimator", ",".join(names)]).estimator == names
    assert p.parse_args([]).estimator == tuple(n for n, r in estimators.REGISTRY.items() if r.benchmark)


def test_auto_picks_exactly_one_registered_estimator_for_every_case():
    from plastic_jax.estimators import REGISTRY
    from plastic_jax.feedback import FEEDBACK_MODES

    for fb in FEEDBACK_MODES:
        for R in range(1, 61):
            picks = [n for n, r in REGISTRY.items() if r.auto is not None and r.auto(R, fb)]
            assert picks == [choose_estimator(R, fb)], (R, fb, picks)
            assert REGISTRY[picks[0]].exact  # auto never smooths the meta-loss
    assert [choose_estimator(R, "kp") for R in (1, 3, 4)] == ["forward", "forward", "reverse-remat"]


def test_one_memory_model_for_the_training_check_and_the_benchmark(monkeypatch):
    # the registry's memory model is the training check's (the numbers of the model it replaced:
    # W and B plus T snapshots / √T segments / 2R tangents / 3 rebuild arrays, float32, per task)
    # and the benchmark's (×1.5)
    from plastic_jax import benchmark, experiment
    from plastic_jax.config import ConfigError, TrainConfig
    from plastic_jax.estimators import memory_bytes

    sizes = (784, 170, 130, 100, 70, 47)
    n = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    spec = EpisodeSpec(sizes, M=5, K=50, Q=10, meta_batch=3)
    seg = remat_segment_length(250)
    cases = [("bio", "fa", "reverse", 2 + 250), ("bio", "fa", "reverse-remat", 2 + 250 // seg + seg),
             ("bio", "fa", "forward", 2 + 2 * 3), ("bio", "fa", "adjoint", 5), ("bio", "fa", "auto", 5),
             ("f0", "fa", "auto", 2 + 2), ("bio", "kp", "auto", 2 + 6)]
    for rule, fb, est, copies in cases:
        r = make_rule(rule, n_layers=5, feedback=fb)
        assert memory_bytes(est, spec, r) == 4 * n * copies * 3, (rule, fb, est)
        assert benchmark._estimate_mem_gb(est, rule, fb, 250, 3, sizes) == pytest.approx(4 * n * copies * 3 * 1.5 / 1e9)
    # the training check refuses exactly above the model's bytes × seeds (+ the accuracy table)
    cfg = TrainConfig(rule="bio", estimator="reverse", seeds=2, meta_batch=3, episodes=10)
    need = 4 * n * 252 * 3 * 2 + 8 * 10 * 2
    r = make_rule("bio", n_layers=5)
    monkeypatch.setattr(experiment, "available_memory", lambda devices=None: (need, "test"))
    experiment.check_training_memory(cfg, spec, r)
    monkeypatch.setattr(experiment, "available_memory", lambda devices=None: (need - 1, "test"))
    with pytest.raises(ConfigError, match="reverse meta-gradient"):
        experiment.check_training_memory(cfg, spec, r)


def test_adjoint_does_not_import_the_estimators():
    # no cycle adjoint <-> estimators: the adjoint's shared helper lives in plasticity
    import subprocess
    import sys

    code = "import sys, plastic_jax.adjoint; assert 'plastic_jax.estimators' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_registered_exact_estimator_agrees_with_jax_grad(ci):
    # a newcomer's estimator is checked here by registering it: every record with exact=True
    # against jax.grad of the meta-loss (float32, tolerances as in the tests above); the smoothed
    # ones (es) have their own tests (tests/test_es.py)
    from plastic_jax.estimators import REGISTRY

    rule = make_rule((0, 2, 9), n_layers=2, feedback="fa")
    spec = EpisodeSpec((64, 12, 10), M=3, K=4, Q=2, meta_batch=2)
    theta, key = _theta(rule, 7), jax.random.PRNGKey(8)
    exact = [n for n, r in REGISTRY.items() if r.exact]
    assert {"reverse", "reverse-remat", "forward", "adjoint"} <= set(exact)

    def program(th):
        want = jax.value_and_grad(lambda t: batch_loss(t, rule, spec, key, ci), has_aux=True)(th)
        return want, {n: REGISTRY[n].fn(th, rule, spec, key, ci) for n in exact}

    ((want_loss, want_acc), want), got = jax.jit(program, compiler_options={"xla_backend_optimization_level": 0})(theta)
    want = np.asarray(want)
    assert np.all(np.isfinite(want)) and np.abs(want).max() > 0
    for name, ((loss, acc), grad) in got.items():
        np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5, err_msg=name)
        assert float(acc) == pytest.approx(float(want_acc)), name
        np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)
