"""The meta-gradient estimators agree with each other and with jax.grad of the meta-loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss
from plastic_jax.estimators import (
    ESTIMATORS,
    adapt_remat,
    choose_estimator,
    forward_online_step,
    remat_segment_length,
)
from plastic_jax.inner import adapt, make_rule, online_step
from plastic_jax.network import init_network


@pytest.fixture(scope="module")
def ci():
    return build_class_index(load_dataset("digits"))


def _theta(rule, seed=0):
    rng = np.random.default_rng(seed)
    th = np.where(np.array(rule.terms) == 0, 0.1, rng.normal(scale=0.02, size=len(rule.terms)))
    return jnp.asarray(th, jnp.float32)


# pool+bp compiles the largest programs (~100 s on a loaded 2-core CPU); pool+fa already covers
# all ten terms and f0+bp the bp path, so it runs with the slow tests
CASES = [
    ((0,), "bp", "frozen"),
    ((0,), "bp", "through"),
    ((0, 2, 9), "fa", "frozen"),
    (tuple(range(10)), "fa", "frozen"),
    pytest.param(tuple(range(10)), "bp", "frozen", marks=pytest.mark.slow),
    pytest.param(tuple(range(10)), "bp", "through", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("terms,feedback,bp_grad", CASES)
def test_all_estimators_agree_with_jax_grad(ci, terms, feedback, bp_grad):
    # float32, T = 21 online steps, meta-batch 2; the reference is plain jax.grad of the
    # meta-loss. Forward and reverse mode sum the same products in different orders, so they
    # differ by float32 rounding accumulated over the episode: ~1e-6 relative; 1e-4 is the
    # agreement the issue asks for, still far below any real discrepancy (a wrong term or a
    # missing tangent changes the gradient at the 1e-2..1 level).
    spec = EpisodeSpec((64, 24, 16, 10), M=3, K=7, Q=3, meta_batch=2)
    rule = make_rule(terms, n_layers=3, feedback=feedback, bp_grad=bp_grad)
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
    assert choose_estimator(1) == "forward"
    assert choose_estimator(10) == "forward"  # the whole pool: forward measured 2x faster
    assert choose_estimator(17) == "reverse-remat"
