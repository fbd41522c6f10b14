"""One episode, drawn in one place (docs/METHOD.md §4): the task, the fresh network, the loss.

Every consumer of an episode (the meta-gradient estimators, the meta-step, the analysis metrics,
``evaluate``) draws it here, so the same key always means the same task, stream order, initial
W and feedback B:

    key ─split─▶ (k_task, k_net)
    k_task ─▶ ``data.sample_task``  (M classes, K + Q examples each, shuffled stream)
    k_net  ─▶ ``network.init_network``  (Xavier-uniform W and, independently, B)
    fold_in(k_net, 1) ─▶ ``feedback.init_direct``  (``dfa``/``routing`` only: D_0 … D_{L−2})

A meta-batch is ``spec.meta_batch`` tasks from ``split(key, meta_batch)``, vmapped, and
averaged (``mean_over_tasks``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from plastic_jax import checks
from plastic_jax.data.base import Task
from plastic_jax.data.sampler import ClassIndex, sample_task
from plastic_jax.feedback import DIRECT_MODES, init_direct
from plastic_jax.inner import Rule, adapt_with_feedback, query_loss
from plastic_jax.network import Weights, init_network


class EpisodeSpec(NamedTuple):
    """Static shape of an episode: layer sizes (n_0, …, n_L), the task's M, K, Q, the meta-batch."""

    sizes: tuple[int, ...]
    M: int = 5
    K: int = 50
    Q: int = 10
    meta_batch: int = 1


def draw(spec: EpisodeSpec, key: jax.Array, ci: ClassIndex, dtype=jnp.float32,
         feedback: str = "fa") -> tuple[Task, Weights, Weights]:
    """The task and the fresh network of the episode ``key``.

    Returns ``(task, W, B)``: task.xs (M·K, n_0) and task.xq (M·Q, n_0) cast to ``dtype``;
    W and B tuples of (n_ℓ, n_{ℓ-1}) matrices; for a ``feedback`` that needs them (``dfa``,
    ``routing``) B also holds the direct matrices D_0 … D_{L−2} (n_L, n_ℓ) after B_1 … B_L
    (the same W and B_1 … B_L as every other mode: the same key, the same network).
    """
    checks.check_spec("draw", spec)
    checks.check_class_index("draw", ci, spec)
    k_task, k_net = jax.random.split(key)
    task = sample_task(k_task, ci, spec.M, spec.K, spec.Q)
    task = task._replace(xs=task.xs.astype(dtype), xq=task.xq.astype(dtype))
    W, B = init_network(k_net, spec.sizes, dtype)
    if feedback in DIRECT_MODES:
        B = B + init_direct(jax.random.fold_in(k_net, 1), spec.sizes, dtype)
    return task, W, B


class Outcome(NamedTuple):
    """An adapted episode: query loss and accuracy (), the adapted W, the feedback state B at
    the end of the episode (it changes only under ``kp``/``plastic``), the task."""

    loss: jax.Array
    accuracy: jax.Array
    W: Weights
    B: Weights
    task: Task


def run(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex) -> Outcome:
    """Draw the episode ``key``, adapt online with Θ (one ``lax.scan``), measure the query set.

    Raises ``checks.PlasticJaxError`` when Θ, the rule, ``spec`` and ``ci`` do not fit together."""
    checks.check_episode("run", theta, rule, spec, ci)
    task, W, B = draw(spec, key, ci, theta.dtype, rule.feedback)
    W, B = adapt_with_feedback(theta, rule, W, B, task.xs, task.ys)
    loss, acc = query_loss(W, task.xq, task.yq)
    return Outcome(loss, acc, W, B, task)


def task_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """Query loss and accuracy () of the one task drawn from ``key``."""
    checks.check_episode("task_loss", theta, rule, spec, ci)
    out = run(theta, rule, spec, key, ci)
    return out.loss, out.accuracy


def mean_over_tasks(per_task: Callable[[jax.Array], Any], spec: EpisodeSpec, key: jax.Array) -> Any:
    """vmap ``per_task(task_key) -> pytree`` over the ``spec.meta_batch`` tasks of ``key`` and
    average every leaf over the tasks."""
    keys = jax.random.split(key, spec.meta_batch)
    return jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(per_task)(keys))


def batch_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """Mean query loss and accuracy over the meta-batch of ``key`` (without the L1 term)."""
    checks.check_episode("batch_loss", theta, rule, spec, ci)
    return mean_over_tasks(lambda k: task_loss(theta, rule, spec, k, ci), spec, key)
