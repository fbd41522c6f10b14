"""The two bp meta-gradient settings (docs/METHOD.md §2), against independent computations.

- ``through``: the exact gradient of the meta-loss, so central finite differences of the loss
  (B = W at every step) must match it (tests/test_meta.py and test_estimators.py do that).
- ``frozen``: the published code's gradient, B = a detached copy of W. It is the derivative of
  the meta-loss with the feedback matrices held at the values B_t = W_t that the unperturbed
  run produced. Here that is computed independently: a plain NumPy loop records B_t along the
  trajectory at Θ, then central finite differences of the NumPy loss with those B_t fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, draw
from plastic_jax.estimators import ESTIMATORS
from plastic_jax.inner import make_rule

SPEC = EpisodeSpec((64, 12, 10, 10), M=3, K=4, Q=3, meta_batch=1)


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        data = load_dataset("digits")
        ci = build_class_index(data)
        ci = ci._replace(x=jnp.asarray(data.x, jnp.float64))
        key = jax.random.PRNGKey(7)
        task, W0, _ = draw(SPEC, jax.random.split(key, 1)[0], ci, jnp.float64)
        np_task = [np.asarray(a) for a in task]
        return ci, key, np_task, [np.asarray(w) for w in W0]


def _numpy_loss(theta, rule, W0, task, Bs=None):
    """Query loss after the online stream; feedback B_t = Bs[t] if given, else the current W."""
    xs, ys, xq, yq = task
    W, used = W0, []
    for t, (x, y) in enumerate(zip(xs, ys)):
        B = W if Bs is None else Bs[t]
        used.append(B)
        W = ref.online_step(theta, rule.layer_terms, rule.terms, W, B, x, int(y), "fa")
    return ref.query_loss(W, xq, yq)[0], used


@pytest.mark.parametrize("terms", [(0,), (0, 2, 9)])
@pytest.mark.parametrize("estimator", ["reverse", "forward", "reverse-remat"])
def test_frozen_bp_gradient_is_the_derivative_with_feedback_held_at_its_trajectory(problem, terms, estimator):
    ci, key, task, W0 = problem
    with jax.enable_x64(True):
        rule = make_rule(terms, n_layers=3, feedback="bp", bp_grad="frozen")
        theta = np.array([0.2, -0.05, 0.03][: len(terms)])
        (loss, _), grad = jax.jit(ESTIMATORS[estimator], static_argnums=(1, 2))(
            jnp.asarray(theta), rule, SPEC, key, ci)
        want_loss, Bs = _numpy_loss(theta, rule, W0, task)
        h = 1e-6
        fd = []
        for i in range(len(theta)):
            e = np.eye(len(theta))[i] * h
            up, down = _numpy_loss(theta + e, rule, W0, task, Bs)[0], _numpy_loss(theta - e, rule, W0, task, Bs)[0]
            fd.append((up - down) / (2 * h))
        fd = np.array(fd)
        np.testing.assert_allclose(float(loss), want_loss, rtol=1e-10)
        # float64 central differences: O(h²) truncation + O(eps/h) rounding ≈ 1e-10 relative
        np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


def test_frozen_and_through_differ_but_adapt_the_same(problem):
    """Same loss (same adapted weights), different meta-gradients; the through one is the
    finite-difference derivative of the loss with B = W moving with Θ."""
    ci, key, task, W0 = problem
    with jax.enable_x64(True):
        theta = np.array([0.2])
        out = {}
        for mode in ("frozen", "through"):
            rule = make_rule((0,), n_layers=3, feedback="bp", bp_grad=mode)
            out[mode] = jax.jit(ESTIMATORS["reverse"], static_argnums=(1, 2))(jnp.asarray(theta), rule, SPEC, key, ci)
        assert float(out["frozen"][0][0]) == float(out["through"][0][0])
        g_frozen, g_through = float(out["frozen"][1][0]), float(out["through"][1][0])
        h = 1e-6
        fd = (_numpy_loss(theta + h, rule, W0, task)[0] - _numpy_loss(theta - h, rule, W0, task)[0]) / (2 * h)
        assert g_through == pytest.approx(fd, rel=1e-6)
        assert abs(g_frozen - g_through) > 1e-3 * abs(g_through)
