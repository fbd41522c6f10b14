"""The outer loop (SPEC §5): meta-loss, meta-gradient, and an optax meta-step.

Everything here is a pure function; the driver (``train.py``) jits and vmaps it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plastic_jax.data.sampler import ClassIndex, sample_task
from plastic_jax.inner import Rule, episode


class EpisodeSpec(NamedTuple):
    """Static shape of an episode: layer sizes and the task's M, K, Q, and the meta-batch."""

    sizes: tuple[int, ...]
    M: int = 5
    K: int = 50
    Q: int = 10
    meta_batch: int = 1


class MetaState(NamedTuple):
    """What meta-training carries from one episode to the next (per seed)."""

    theta: jax.Array  # (R,)
    opt_state: optax.OptState
    skips: jax.Array  # () int32: consecutive non-finite updates skipped


def task_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """Query loss and accuracy of one task drawn from ``key`` (task and network init)."""
    k_task, k_net = jax.random.split(key)
    task = sample_task(k_task, ci, spec.M, spec.K, spec.Q)
    loss, (acc, _, _) = episode(theta, rule, spec.sizes, k_net, task)
    return loss, acc


def batch_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """Mean query loss and accuracy over ``spec.meta_batch`` tasks (vmap), without the L1 term."""
    keys = jax.random.split(key, spec.meta_batch)
    losses, accs = jax.vmap(lambda k: task_loss(theta, rule, spec, k, ci))(keys)
    return jnp.mean(losses), jnp.mean(accs)


def l1_penalty(theta: jax.Array, l1: float) -> tuple[jax.Array, jax.Array]:
    """λ Σ_r |θ_r| and its subgradient λ·sign(θ) (0 at θ_r = 0, so an unused term stays put)."""
    return l1 * jnp.sum(jnp.abs(theta)), l1 * jnp.sign(theta)


#: meta-gradient estimators f(theta, rule, spec, key, ci) -> ((loss, acc), grad) live in
#: ``estimators.py`` (reverse, reverse-remat, forward, auto); re-exported here.
from plastic_jax.estimators import ESTIMATORS, Estimator, reverse_grad  # noqa: E402, F401


def meta_init(theta: jax.Array, optimizer: optax.GradientTransformation) -> MetaState:
    return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))


def meta_step(
    state: MetaState,
    key: jax.Array,
    ci: ClassIndex,
    *,
    rule: Rule,
    spec: EpisodeSpec,
    optimizer: optax.GradientTransformation,
    l1: float = 0.0,
    estimator: str = "reverse",
) -> tuple[MetaState, dict[str, jax.Array]]:
    """One meta-training episode: meta-gradient of the meta-loss, one optimizer update.

    A non-finite meta-loss or meta-gradient skips the update (Θ and the optimizer state stay)
    and increments ``skips``; a finite one resets it.
    """
    (loss, acc), grad = ESTIMATORS[estimator](state.theta, rule, spec, key, ci)
    pen, pen_grad = l1_penalty(state.theta, l1)
    grad = grad + pen_grad
    meta_loss = loss + pen
    updates, opt_state = optimizer.update(grad, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    ok = jnp.isfinite(meta_loss) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(theta))
    new = MetaState(theta, opt_state, jnp.zeros((), jnp.int32))
    old = state._replace(skips=state.skips + 1)
    state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    metrics = {"meta_loss": meta_loss, "query_loss": loss, "accuracy": acc, "skipped": ~ok}
    return state, metrics
