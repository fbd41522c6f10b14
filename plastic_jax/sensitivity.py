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

Three regimes (``regime``): an episode whose adapted weights or query loss are not finite has
*diverged* (2); a finite one that amplified more than ``CHAOS_THRESHOLD``-fold (or whose tangent
overflowed) is *chaotic* (1); any other is *smooth* (0). ``is_chaotic`` lumps the last two.

The default direction v is all ones / √R (R = Θ's size): the same fixed direction for every Θ,
episode and run, which is what meta-training logs (``metrics.episode_analysis``) and the
stability map (scripts/stability_map.py) use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from plastic_jax import checks
from plastic_jax.data.base import Task
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec, _draw, check_episode
from plastic_jax.inner import Rule, _adapt_with_feedback, _query_loss, query_loss, state_step
from plastic_jax.meta import tree_norm
from plastic_jax.network import Weights

#: an episode that amplifies a perturbation of Θ more than this many-fold is chaotic
CHAOS_THRESHOLD = 1e3
#: the regimes ``regime`` returns, by code: 0 smooth, 1 chaotic, 2 diverged
REGIMES = ("smooth", "chaotic", "diverged")
SMOOTH, CHAOTIC, DIVERGED = 0, 1, 2


class Sensitivity(NamedTuple):
    """growth: (T,) ‖δW_t‖_F after each online step; amplification: () growth_T / growth_1;
    loss: () the query loss at Θ; dloss: () its derivative along the unit direction v;
    diverged: () bool, the adapted weights or the query loss are not finite."""

    growth: jax.Array
    amplification: jax.Array
    loss: jax.Array
    dloss: jax.Array
    diverged: jax.Array


class TangentEpisode(NamedTuple):
    """An adapted episode with its tangent along v: the task, the adapted W and the feedback state
    B at the end (as ``episode.run``), dW = (dW_T/dΘ)·v (W's shapes) and growth (T,) ‖δW_t‖_F."""

    task: Task
    W: Weights
    B: Weights
    dW: Weights
    growth: jax.Array


def unit_direction(theta: jax.Array, direction: jax.Array | None = None, where: str = "episode_sensitivity"
                   ) -> jax.Array:
    """The unit direction v (Θ's shape (R,)): ``direction`` normalised, default all ones / √R."""
    v = jnp.ones_like(theta) if direction is None else jnp.asarray(direction, theta.dtype)
    if v.shape != theta.shape:
        checks.fail(where, f"direction must have Θ's shape {theta.shape}, got {v.shape}")
    return v / jnp.linalg.norm(v)


def tangent_episode(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex,
                    direction: jax.Array | None = None) -> TangentEpisode:
    """Draw the episode ``key`` (``episode.draw``), adapt with Θ and carry the tangent of (W, B)
    along the unit direction v (``unit_direction``) through the stream: one ``jax.jvp`` of
    ``inner.state_step`` per step, so the adapted W is ``episode.run``'s (same ops, same order)."""
    check_episode("episode_sensitivity", theta, rule, spec, ci)
    v = unit_direction(theta, direction)
    task, W, B = _draw(spec, key, ci, theta.dtype, rule.feedback)
    W, B = tuple(W), tuple(B)
    zero = jax.tree.map(jnp.zeros_like, (W, B))

    def body(carry, xy):
        WB, dWB = carry
        x, y = xy
        WB, dWB = jax.jvp(lambda th, w, b: state_step(th, rule, w, b, x, y), (theta, *WB), (v, *dWB))
        return (WB, dWB), tree_norm(dWB[0])

    ((W, B), (dW, _)), growth = jax.lax.scan(body, ((W, B), zero), (task.xs, task.ys))
    return TangentEpisode(task, W, B, dW, growth)


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def sensitivity_of(ep: TangentEpisode) -> Sensitivity:
    """The ``Sensitivity`` of a tangent episode (its query loss and that loss's derivative along v)."""
    loss, dloss = jax.jvp(lambda w: query_loss(w, ep.task.xq, ep.task.yq)[0], (ep.W,), (ep.dW,))
    diverged = ~(_finite(ep.W) & jnp.isfinite(loss))
    return Sensitivity(ep.growth, ep.growth[-1] / ep.growth[0], loss, dloss, diverged)


def episode_sensitivity(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex,
                        direction: jax.Array | None = None) -> Sensitivity:
    """The growth of the tangent (dW_t/dΘ)·v through the episode of the task ``key`` (one task:
    ``key`` is a task key, e.g. ``replay.task_keys(seed, episode, meta_batch)[i]``).

    theta: (R,); ``direction`` v: (R,), normalised here (default: all ones / √R). Returns growth
    (T,) and scalars (``Sensitivity``). Jittable with ``rule`` and ``spec`` static; vmap it over
    keys for several tasks.
    """
    return sensitivity_of(tangent_episode(theta, rule, spec, key, ci, direction))


def finite_differences(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex,
                       direction: jax.Array | None = None,
                       steps: Sequence[float] = (1e-2, 1e-3, 1e-4)) -> jax.Array:
    """Central differences (L(Θ + h v) − L(Θ − h v)) / 2h of the task's query loss along the unit
    direction v, one per h in ``steps``: (len(steps),)."""
    check_episode("finite_differences", theta, rule, spec, ci)
    v = unit_direction(theta, direction, "finite_differences")

    def loss(th):
        task, W, B = _draw(spec, key, ci, th.dtype, rule.feedback)
        W, _ = _adapt_with_feedback(th, rule, W, B, task.xs, task.ys)
        return _query_loss(W, task.xq, task.yq)[0]

    return jnp.stack([(loss(theta + h * v) - loss(theta - h * v)) / (2 * h) for h in steps])


def is_chaotic(s: Sensitivity, threshold: float = CHAOS_THRESHOLD) -> jax.Array:
    """Whether the episode amplified the perturbation more than ``threshold``-fold (or overflowed);
    () bool, or the shape of ``s.amplification`` for a batch. A diverged episode counts too (its
    amplification is not finite); ``regime`` tells the two apart."""
    return ~jnp.isfinite(s.amplification) | (s.amplification > threshold)


def regime(s: Sensitivity, threshold: float = CHAOS_THRESHOLD) -> jax.Array:
    """The episode's regime (``REGIMES``): 2 diverged (weights or query loss not finite), else 1
    chaotic (``is_chaotic``), else 0 smooth; int32 of ``s.amplification``'s shape."""
    return jnp.where(s.diverged, DIVERGED, jnp.where(is_chaotic(s, threshold), CHAOTIC, SMOOTH)).astype(jnp.int32)
