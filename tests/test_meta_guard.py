"""The recovering guard of ``meta.meta_step`` (``meta.Guard``): relative clipping, spikes, rollback.

The meta-gradient is replaced by a scripted one (an estimator is a value of meta_step), so every
norm is chosen and the expected state is computed here by plain NumPy/optax arithmetic.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec
from plastic_jax.inner import make_rule
from plastic_jax.meta import Guard, meta_init, meta_step, recent_median

RULE = make_rule((0, 2), n_layers=2, feedback="fa")
SPEC = EpisodeSpec((64, 8, 10), M=3, K=2, Q=1)


@pytest.fixture(scope="module")
def ci():
    return build_class_index(load_dataset("digits"))


def scripted(grad, loss=1.0):
    """An estimator that returns ``grad`` (and ``loss``) whatever Θ and the task."""
    def estimator(theta, rule, spec, key, ci):
        return (jnp.asarray(loss, jnp.float32), jnp.float32(0.5)), jnp.asarray(grad, jnp.float32)
    return estimator


def run(state, grads, ci, guard, opt, losses=None):
    """meta_step over the scripted gradients; the states and metrics after each."""
    states, metrics = [], []
    for i, g in enumerate(grads):
        loss = 1.0 if losses is None else losses[i]
        state, m = meta_step(state, jax.random.PRNGKey(i), ci, rule=RULE, spec=SPEC, optimizer=opt,
                             estimator=scripted(g, loss), guard=guard)
        states.append(state)
        metrics.append(jax.device_get(m))
    return states, metrics


def test_recent_median_reads_only_the_written_part_of_the_ring_buffer():
    norms = jnp.array([3.0, 1.0, 2.0, 0.0, 0.0])
    assert np.isnan(float(recent_median(norms, jnp.int32(0))))
    assert float(recent_median(norms, jnp.int32(2))) == 2.0  # median of 3, 1
    assert float(recent_median(norms, jnp.int32(3))) == 2.0
    full = jnp.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert float(recent_median(full, jnp.int32(17))) == float(np.median(full))


def test_relative_clipping_scales_the_gradient_to_a_multiple_of_the_recent_median(ci):
    guard = Guard(clip_factor=3.0, warmup=4, window=8)
    opt = optax.sgd(1.0)  # Θ moves by exactly the (clipped) gradient
    state = meta_init(jnp.zeros(2), opt, guard)
    norms = [1.0, 2.0, 3.0, 4.0, 100.0, 2.5]
    grads = [np.array([n, 0.0]) for n in norms]
    states, ms = run(state, grads, ci, guard, opt)
    theta = np.zeros(2)
    for i, n in enumerate(norms):
        seen = [min(x, 3 * np.median(norms[:j]) if j >= 4 else np.inf) for j, x in enumerate(norms[:i])]
        limit = 3 * np.median(seen) if i >= 4 else np.inf
        assert ms[i]["grad_norm"] == pytest.approx(n)  # always the norm before clipping
        assert bool(ms[i]["clipped"]) == (n > limit)
        theta = theta - np.array([min(n, limit), 0.0])
        np.testing.assert_allclose(np.asarray(states[i].theta), theta, rtol=1e-6)
    # the spike entered the buffer capped at the clip (3 × median(1, 2, 3, 4) = 7.5), not as 100
    assert float(states[4].guard.norms[4]) == pytest.approx(7.5)


def test_a_spike_is_flagged_always_and_rejected_only_when_asked(ci):
    opt = optax.sgd(1.0)
    grads = [np.array([1.0, 1.0])] * 4 + [np.array([1e4, 0.0])]
    for reject in (False, True):
        guard = Guard(spike_factor=100.0, reject_spikes=reject, warmup=4)
        states, ms = run(meta_init(jnp.zeros(2), opt, guard), grads, ci, guard, opt)
        assert [bool(m["spike"]) for m in ms] == [False] * 4 + [True]
        assert bool(ms[-1]["skipped"]) == reject
        moved = not np.array_equal(np.asarray(states[-1].theta), np.asarray(states[-2].theta))
        assert moved != reject
        assert int(states[-1].skips) == int(reject)


def test_rollback_restores_theta_and_the_optimizer_state_of_the_older_snapshot_exactly(ci):
    guard = Guard(rollback=True, snapshot_every=3, backoff=0.5, recover=4)
    opt = optax.adam(0.1)
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=2) for _ in range(8)] + [np.array([np.nan, 0.0])]
    states, ms = run(meta_init(jnp.zeros(2), opt, guard), grads, ci, guard, opt)
    # snapshots are taken after accepted updates 3 and 6 (states[2], states[5]); a rollback at the
    # 9th update returns to the older one: the state after the 3rd update, Adam's moments and count
    rolled = states[-1]
    assert bool(ms[-1]["rolled_back"]) and bool(ms[-1]["skipped"])
    for got, want in zip(jax.tree.leaves((rolled.theta, rolled.opt_state)),
                         jax.tree.leaves((states[2].theta, states[2].opt_state))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(rolled.skips) == 1 and int(rolled.guard.rollbacks) == 1
    # the step shrinks by the backoff: 1 (recovered to the cap of 1) × 0.5
    assert float(rolled.guard.step_scale) == 0.5
    # the next accepted update applies half of Adam's step from the restored state
    g = np.array([0.3, -0.2])
    after, m = meta_step(rolled, jax.random.PRNGKey(99), ci, rule=RULE, spec=SPEC, optimizer=opt,
                         estimator=scripted(g), guard=guard)
    upd, _ = opt.update(jnp.asarray(g, jnp.float32), states[2].opt_state, states[2].theta)
    np.testing.assert_allclose(np.asarray(after.theta), np.asarray(states[2].theta) + 0.5 * np.asarray(upd),
                               rtol=1e-6)
    assert float(after.guard.step_scale) == pytest.approx(0.5 * 2 ** 0.25)


def test_without_rollback_a_non_finite_update_holds_theta(ci):
    guard = Guard(rollback=False)
    opt = optax.adam(0.1)
    states, ms = run(meta_init(jnp.zeros(2), opt, guard), [np.ones(2), np.ones(2), np.array([np.inf, 0.0])],
                     ci, guard, opt)
    assert not bool(ms[-1]["rolled_back"]) and bool(ms[-1]["skipped"])
    np.testing.assert_array_equal(np.asarray(states[-1].theta), np.asarray(states[-2].theta))


def test_guard_and_state_must_go_together(ci):
    opt = optax.adam(0.1)
    from plastic_jax.checks import PlasticJaxError

    with pytest.raises(PlasticJaxError, match="guard"):
        meta_step(meta_init(jnp.zeros(2), opt), jax.random.PRNGKey(0), ci, rule=RULE, spec=SPEC, optimizer=opt,
                  estimator=scripted(np.ones(2)), guard=Guard())
    with pytest.raises(PlasticJaxError, match="guard"):
        meta_step(meta_init(jnp.zeros(2), opt, Guard()), jax.random.PRNGKey(0), ci, rule=RULE, spec=SPEC,
                  optimizer=opt, estimator=scripted(np.ones(2)))
