"""The inner loop (SPEC §4): online adaptation as one ``lax.scan`` over the training stream.

A ``Rule`` (static) names the active terms per layer and the feedback mode; Θ is an array.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from plastic_jax.feedback import FEEDBACK_MODES, feedback_matrices, teaching_signals
from plastic_jax.network import Weights, forward, init_network
from plastic_jax.plasticity import NEEDS_E_PRE, layer_update, union_terms


class Rule(NamedTuple):
    """Static description of a plasticity rule (hashable: usable as a jit static argument).

    layer_terms: one tuple of term ids per weight layer (L entries).
    feedback: ``"bp"`` or ``"fa"``.
    """

    layer_terms: tuple[tuple[int, ...], ...]
    feedback: str = "fa"

    @property
    def terms(self) -> tuple[int, ...]:
        """The entries of Θ: the union of the layers' terms, sorted."""
        return union_terms(self.layer_terms)

    @property
    def n_layers(self) -> int:
        return len(self.layer_terms)


def make_rule(
    terms: Sequence[int] | None = None,
    n_layers: int = 5,
    feedback: str = "fa",
    layer_terms: Sequence[Sequence[int]] | None = None,
) -> Rule:
    """A rule shared by all ``n_layers`` layers, or a per-layer one (``layer_terms``)."""
    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {feedback!r}; choose one of {FEEDBACK_MODES}")
    if layer_terms is None:
        layer_terms = [tuple(terms)] * n_layers
    return Rule(tuple(tuple(sorted(t)) for t in layer_terms), feedback)


def initial_theta(rule: Rule, dtype=jnp.float32, theta0: float = 1e-3) -> jax.Array:
    """SPEC §5: θ_0 = 1e-3, every other θ_r = 0; shape (len(rule.terms),)."""
    return jnp.array([theta0 if r == 0 else 0.0 for r in rule.terms], dtype)


def online_step(
    theta: jax.Array,
    rule: Rule,
    W: Weights,
    B: Weights,
    x: jax.Array,
    label: jax.Array,
) -> Weights:
    """One online update: forward, teaching signals, W_l ← W_l + Σ θ_r F^r for every layer.

    x: (n_0,), label: () int. All layers use the pre-update weights and errors.
    """
    act = forward(W, x)
    need_e0 = any(r in NEEDS_E_PRE for r in rule.layer_terms[0])
    es = teaching_signals(act, label, feedback_matrices(rule.feedback, W, B), need_e0=need_e0)
    terms = rule.terms
    return tuple(
        layer_update(
            theta, terms, rule.layer_terms[i], W[i],
            pre=act.ys[i], post=act.ys[i + 1], e_pre=es[i], e_post=es[i + 1], z=act.zs[i],
        )
        for i in range(len(W))
    )


def adapt(
    theta: jax.Array, rule: Rule, W: Weights, B: Weights, xs: jax.Array, labels: jax.Array
) -> Weights:
    """Online learning over the stream: xs (T, n_0), labels (T,). Returns the adapted W."""

    def body(W, xy):
        return online_step(theta, rule, W, B, *xy), None

    W, _ = jax.lax.scan(body, W, (xs, labels))
    return W


def query_loss(W: Weights, xq: jax.Array, yq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy of W on the query set xq (N, n_0), yq (N,)."""
    z = forward(W, xq).zs[-1]
    logp = jax.nn.log_softmax(z, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(logp, yq[:, None], axis=-1))
    acc = jnp.mean(jnp.argmax(z, axis=-1) == yq)
    return loss, acc


class Task(NamedTuple):
    """One episode's data: a shuffled training stream and a query set."""

    xs: jax.Array  # (T, n_0) with T = M·K
    ys: jax.Array  # (T,) int
    xq: jax.Array  # (M·Q, n_0)
    yq: jax.Array  # (M·Q,) int


def episode(
    theta: jax.Array, rule: Rule, sizes: tuple[int, ...], key: jax.Array, task: Task
) -> tuple[jax.Array, tuple[jax.Array, Weights, Weights]]:
    """Fresh W and B from ``key``, online adaptation on the stream, query loss.

    Returns ``(loss, (accuracy, adapted W, B))``.
    """
    W, B = init_network(key, sizes, theta.dtype)
    W = adapt(theta, rule, W, B, task.xs.astype(theta.dtype), task.ys)
    loss, acc = query_loss(W, task.xq.astype(theta.dtype), task.yq)
    return loss, (acc, W, B)
