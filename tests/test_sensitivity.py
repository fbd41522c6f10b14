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
