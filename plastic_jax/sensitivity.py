"""How sensitive one episode is to Θ: the growth of a perturbation of Θ through the online stream.

A change δΘ of the coefficients changes the first update by about δΘ·F and every later one by
what the changed weights make of it. Carrying the tangent δW_t = (dW_t/dΘ)·v (forward mode, one
``jax.jvp`` of the online step per step of the scan) gives its size along the episode:

    growth_t = ‖δW_t‖_F  (t = 1 … T),     amplification = growth_T / growth_1

A smooth episode amplifies a perturbation a few-fold; a chaotic one by orders of magnitude, and
there the exact meta-gradient of that one episode says little about nearby Θ (finite differences
flip sign, estimators disagree). ``dloss`` is the directional derivative of the query loss along
v, and ``finite_differences`` the same by central differences at several steps h: where they
disagree the episode is not locally linear at those scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from plastic_jax import checks
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec, draw
from plastic_jax.inner import Rule, adapt_with_feedback, query_loss, state_step
from plastic_jax.meta import tree_norm


class Sensitivity(NamedTuple):
    """growth: (T,) ‖δW_t‖_F after each online step; amplification: growth_T / growth_1;
    loss: the query loss at Θ; dloss: its derivative along the unit direction v."""

    growth: jax.Array
    amplification: jax.Array
    loss: jax.Array
    dloss: jax.Array


def episode_sensitivity(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex,
                        direction: jax.Array | None = None) -> Sensitivity:
    """The growth of the tangent (dW_t/dΘ)·v through the episode of the task ``key`` (one task:
    ``key`` is a task key, e.g. ``replay.task_keys(seed, episode, meta_batch)[i]``).

    ``direction`` v: (R,), normalised here (default: all ones / √R). Jittable with ``rule`` and
    ``spec`` static.
    """
    checks.check_episode("episode_sensitivity", theta, rule, spec, ci)
    v = jnp.ones_like(theta) if direction is None else jnp.asarray(direction, theta.dtype)
    if v.shape != theta.shape:
        checks.fail("episode_sensitivity", f"direction must have Θ's shape {theta.shape}, got {v.shape}")
    v = v / jnp.linalg.norm(v)
    task, W, B = draw(spec, key, ci, theta.dtype, rule.feedback)
    W, B = tuple(W), tuple(B)
    zero = jax.tree.map(jnp.zeros_like, (W, B))

    def body(carry, xy):
        WB, dWB = carry
        x, y = xy
        WB, dWB = jax.jvp(lambda th, w, b: state_step(th, rule, w, b, x, y), (theta, *WB), (v, *dWB))
        return (WB, dWB), tree_norm(dWB[0])

    ((W, _), (dW, _)), growth = jax.lax.scan(body, ((W, B), zero), (task.xs, task.ys))
    loss, dloss = jax.jvp(lambda w: query_loss(w, task.xq, task.yq)[0], (W,), (dW,))
    return Sensitivity(growth, growth[-1] / growth[0], loss, dloss)


def finite_differences(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex,
                       direction: jax.Array | None = None,
                       steps: Sequence[float] = (1e-2, 1e-3, 1e-4)) -> jax.Array:
    """Central differences (L(Θ + h v) − L(Θ − h v)) / 2h of the task's query loss along the unit
    direction v, one per h in ``steps``: (len(steps),)."""
    v = jnp.ones_like(theta) if direction is None else jnp.asarray(direction, theta.dtype)
    v = v / jnp.linalg.norm(v)

    def loss(th):
        task, W, B = draw(spec, key, ci, th.dtype, rule.feedback)
        W, _ = adapt_with_feedback(th, rule, W, B, task.xs, task.ys)
        return query_loss(W, task.xq, task.yq)[0]

    return jnp.stack([(loss(theta + h * v) - loss(theta - h * v)) / (2 * h) for h in steps])


def is_chaotic(s: Sensitivity, threshold: float = 1e3) -> jax.Array:
    """Whether the episode amplified the perturbation more than ``threshold``-fold (or overflowed)."""
    return ~jnp.isfinite(s.amplification) | (s.amplification > threshold)
