"""The meta-gradient against central finite differences (float64, tiny network) and the meta-step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss
from plastic_jax.estimators import reverse_grad
from plastic_jax.inner import make_rule
from plastic_jax.meta import l1_penalty, meta_init, meta_step
from plastic_jax.network import init_network


@pytest.fixture(scope="module")
def ci64():
    data = load_dataset("digits")
    ci = build_class_index(data)
    return ci._replace(x=np.asarray(ci.x, np.float64))


@pytest.mark.parametrize("terms,feedback", [((0,), "bp"), ((0, 2, 9), "fa"), (tuple(range(10)), "fa")])
def test_meta_gradient_matches_central_finite_differences(ci64, terms, feedback):
    with jax.enable_x64(True):
        ci = ci64._replace(x=jnp.asarray(ci64.x, jnp.float64))
        spec = EpisodeSpec((64, 12, 10, 10), M=3, K=4, Q=3, meta_batch=2)
        # finite differences see the exact gradient: differentiate through B = W (bp)
        rule = make_rule(terms, n_layers=3, feedback=feedback, bp_grad="through")
        rng = np.random.default_rng(0)
        theta = jnp.asarray(np.where(np.array(rule.terms) == 0, 0.3, rng.normal(scale=0.02, size=len(terms))))
        key = jax.random.PRNGKey(5)
        (loss, _), grad = jax.jit(reverse_grad, static_argnums=(1, 2))(theta, rule, spec, key, ci)
        f = jax.jit(lambda th: batch_loss(th, rule, spec, key, ci)[0])
        h = 1e-6
        fd = np.array([(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h) for i in range(len(terms))])
        # central differences in float64 with h = 1e-6: truncation O(h²·f''') and rounding
        # O(eps·|f|/h) ≈ 1e-10, so 1e-6 relative to the gradient's scale is a safe margin
        np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
        assert np.isfinite(float(loss))


def test_l1_penalty_value_and_subgradient():
    theta = jnp.array([0.5, -0.25, 0.0])
    val, g = l1_penalty(theta, 2.0)
    assert float(val) == pytest.approx(1.5)
    np.testing.assert_array_equal(np.asarray(g), [2.0, -2.0, 0.0])


def test_meta_step_applies_adam_to_the_meta_gradient_plus_l1():
    data = load_dataset("digits")
    ci = build_class_index(data)
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=2)
    rule = make_rule((0, 2), n_layers=2, feedback="fa")
    opt = optax.adam(1e-2)
    theta = jnp.array([0.05, 0.01])
    state = meta_init(theta, opt)
    key = jax.random.PRNGKey(0)
    new, m = meta_step(state, key, ci, rule=rule, spec=spec, optimizer=opt, l1=0.1, estimator=reverse_grad)
    (loss, _), g = reverse_grad(theta, rule, spec, key, ci)
    g = g + 0.1 * jnp.sign(theta)
    upd, _ = opt.update(g, opt.init(theta), theta)
    np.testing.assert_allclose(np.asarray(new.theta), np.asarray(theta + upd), rtol=1e-6)
    assert float(m["meta_loss"]) == pytest.approx(float(loss) + 0.1 * 0.06, rel=1e-6)
    assert not bool(m["skipped"])


def test_meta_step_skips_a_non_finite_update():
    data = load_dataset("digits")
    ci = build_class_index(data)
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=2)
    rule = make_rule((0,), n_layers=2, feedback="fa")
    opt = optax.adam(1e-2)
    state = meta_init(jnp.array([0.01]), opt)

    def nan_grad(theta, rule, spec, key, ci):  # a concrete NaN Θ is refused; a NaN gradient is the case
        return (jnp.float32(1.0), jnp.float32(0.5)), jnp.full_like(theta, jnp.nan)

    new, m = meta_step(state, jax.random.PRNGKey(0), ci, rule=rule, spec=spec, optimizer=opt, estimator=nan_grad)
    assert bool(m["skipped"]) and int(new.skips) == 1
    assert float(new.theta[0]) == pytest.approx(0.01)


def test_meta_step_skips_an_update_that_overflows_the_optimizer_state():
    """A finite meta-gradient of 1e20 overflows Adam's second moment (g² = inf in float32) while Θ
    stays finite: the step must be skipped, not accepted with an infinite optimizer state."""
    data = load_dataset("digits")
    ci = build_class_index(data)
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=2)
    rule = make_rule((0,), n_layers=2, feedback="fa")
    opt = optax.adam(1e-2)
    state = meta_init(jnp.array([0.01]), opt)

    def huge(theta, rule, spec, key, ci):
        return (jnp.float32(1.0), jnp.float32(0.5)), jnp.full_like(theta, 1e20)

    new, m = meta_step(state, jax.random.PRNGKey(0), ci, rule=rule, spec=spec, optimizer=opt, estimator=huge)
    with np.errstate(over="ignore"):
        assert np.isfinite(np.float32(1e20)) and not np.isfinite(np.float32(1e20) ** 2)
    assert bool(m["skipped"]) and int(new.skips) == 1
    assert float(new.theta[0]) == pytest.approx(0.01)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(new.opt_state))


def test_init_is_xavier_uniform_and_feedback_independent():
    sizes = (300, 200, 100)
    W, B = init_network(jax.random.PRNGKey(0), sizes)
    for w, b, (n_in, n_out) in zip(W, B, zip(sizes[:-1], sizes[1:])):
        r = np.sqrt(6 / (n_in + n_out))
        assert w.shape == (n_out, n_in) and w.dtype == jnp.float32
        assert np.abs(w).max() <= r and np.abs(w).max() > 0.95 * r
        # variance of U(-r, r) is r²/3; 20k+ samples give a ~1% standard error
        assert np.var(np.asarray(w)) == pytest.approx(r * r / 3, rel=0.05)
        assert abs(np.corrcoef(np.asarray(w).ravel(), np.asarray(b).ravel())[0, 1]) < 0.05
