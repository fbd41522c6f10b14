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

**Checks, once per public call.** ``check_episode`` (Θ for the rule, the rule for the network of
``spec``, ``spec`` for the data) runs once at the top of every public function here, and of the
estimators and ``evaluate.task_accuracies``; the work below it is done by the unchecked private
functions (``_draw``, ``_run``, ``_task_loss``, ``_batch_loss``, and ``inner``'s), so a
meta-batch does not re-check every task. The checks read static shapes and Python values only,
so they run at trace time under ``jax.jit`` / ``jax.vmap`` and cost nothing in the compiled
program; the few that need values (a non-finite Θ, the class index's allowed classes) run only
on concrete arrays (``inner.check_theta``, ``data.sampler.check_class_index``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from plastic_jax import checks
from plastic_jax.data.base import Task
from plastic_jax.data.sampler import ClassIndex, check_class_index, sample_task
from plastic_jax.feedback import DIRECT_MODES, init_direct
from plastic_jax.inner import Rule, _adapt_with_feedback, _query_loss, check_theta
from plastic_jax.network import Weights, init_network


class EpisodeSpec(NamedTuple):
    """Static shape of an episode: layer sizes (n_0, …, n_L), the task's M, K, Q, the meta-batch."""

    sizes: tuple[int, ...]
    M: int = 5
    K: int = 50
    Q: int = 10
    meta_batch: int = 1


def check_spec(where: str, spec: object, rule: Rule | None = None) -> None:
    """``spec`` is an ``EpisodeSpec`` with positive sizes; its network has ``rule``'s layers."""
    if not isinstance(spec, EpisodeSpec):
        checks.fail(where, f"spec must be an episode.EpisodeSpec, got {type(spec).__name__}")
    sizes = spec.sizes
    if not isinstance(sizes, tuple) or len(sizes) < 2:
        checks.fail(where, f"spec.sizes must be a tuple (n_0, ..., n_L) of at least two layer sizes, got {sizes!r}")
    for n in sizes:
        checks.check_int(where, "every layer size in spec.sizes", n, 1)
    for name in ("M", "K", "Q", "meta_batch"):
        checks.check_int(where, f"spec.{name}", getattr(spec, name), 1)
    if rule is not None and rule.n_layers != len(sizes) - 1:
        checks.fail(where, f"the rule has {rule.n_layers} layer(s) but spec.sizes {sizes} makes a network "
                           f"of {len(sizes) - 1} weight layer(s); build the rule with n_layers={len(sizes) - 1}")


def check_episode(where: str, theta: object, rule: object, spec: object, ci: object) -> None:
    """Everything an episode needs: Θ for the rule (``inner.check_theta``), the rule for the
    network of ``spec`` (``check_spec``), the data ``ci`` for both (``check_class_index``)."""
    check_theta(where, theta, rule)
    check_spec(where, spec, rule)
    check_class_index(where, ci, spec)


def draw(spec: EpisodeSpec, key: jax.Array, ci: ClassIndex, dtype=jnp.float32,
         feedback: str = "fa") -> tuple[Task, Weights, Weights]:
    """The task and the fresh network of the episode ``key``.

    Returns ``(task, W, B)``: task.xs (M·K, n_0) and task.xq (M·Q, n_0) cast to ``dtype``;
    W and B tuples of (n_ℓ, n_{ℓ-1}) matrices; for a ``feedback`` that needs them (``dfa``,
    ``routing``) B also holds the direct matrices D_0 … D_{L−2} (n_L, n_ℓ) after B_1 … B_L
    (the same W and B_1 … B_L as every other mode: the same key, the same network).
    """
    check_spec("draw", spec)
    check_class_index("draw", ci, spec)
    return _draw(spec, key, ci, dtype, feedback)


def _draw(spec: EpisodeSpec, key: jax.Array, ci: ClassIndex, dtype=jnp.float32,
          feedback: str = "fa") -> tuple[Task, Weights, Weights]:
    """``draw`` without the checks (the caller has made them)."""
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
    check_episode("run", theta, rule, spec, ci)
    return _run(theta, rule, spec, key, ci)


def _run(theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex) -> Outcome:
    """``run`` without the checks (the caller has made them)."""
    task, W, B = _draw(spec, key, ci, theta.dtype, rule.feedback)
    W, B = _adapt_with_feedback(theta, rule, W, B, task.xs, task.ys)
    loss, acc = _query_loss(W, task.xq, task.yq)
    return Outcome(loss, acc, W, B, task)


def task_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """Query loss and accuracy () of the one task drawn from ``key``."""
    check_episode("task_loss", theta, rule, spec, ci)
    return _task_loss(theta, rule, spec, key, ci)


def _task_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """``task_loss`` without the checks (the caller has made them)."""
    out = _run(theta, rule, spec, key, ci)
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
    check_episode("batch_loss", theta, rule, spec, ci)
    return _batch_loss(theta, rule, spec, key, ci)


def _batch_loss(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex
) -> tuple[jax.Array, jax.Array]:
    """``batch_loss`` without the checks (the caller has made them)."""
    return mean_over_tasks(lambda k: _task_loss(theta, rule, spec, k, ci), spec, key)
