"""The inner loop (docs/METHOD.md §4): online adaptation as one ``lax.scan`` over the stream.

A ``Rule`` (static) names the active terms per layer, the feedback mode and the two reading
choices; Θ is an array. Drawing a whole episode (task, fresh network, query loss) lives in
``episode.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plastic_jax.feedback import BP_GRADS, FEEDBACK_MODES, feedback_matrices, teaching_signals
from plastic_jax.network import Weights, forward
from plastic_jax.plasticity import NEEDS_E_PRE, layer_update, union_terms

#: readings of terms F5–F8 (docs/METHOD.md §3)
F5_F8_READINGS = ("matrix", "elementwise")


class Rule(NamedTuple):
    """Static description of a plasticity rule (hashable: usable as a jit static argument).

    layer_terms: one tuple of term ids per weight layer (L entries).
    feedback: ``"bp"`` or ``"fa"``.
    bp_grad: with ``bp``, ``"frozen"`` (the paper's code: the meta-gradient holds B = W constant)
      or ``"through"`` (the exact gradient through B = W); see ``feedback.feedback_matrices``.
    f5_f8: the reading of terms F5–F8, ``"matrix"`` or ``"elementwise"`` (docs/METHOD.md §3).
    """

    layer_terms: tuple[tuple[int, ...], ...]
    feedback: str = "fa"
    bp_grad: str = "frozen"
    f5_f8: str = "matrix"

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
    *,
    bp_grad: str = "frozen",
    f5_f8: str = "matrix",
) -> Rule:
    """A rule shared by all ``n_layers`` layers, or a per-layer one (``layer_terms``)."""
    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {feedback!r}; choose one of {FEEDBACK_MODES}")
    if bp_grad not in BP_GRADS:
        raise ValueError(f"unknown bp_grad {bp_grad!r}; choose one of {BP_GRADS}")
    if f5_f8 not in F5_F8_READINGS:
        raise ValueError(f"unknown f5_f8 reading {f5_f8!r}; choose one of {F5_F8_READINGS}")
    if layer_terms is None:
        layer_terms = [tuple(terms)] * n_layers
    return Rule(tuple(tuple(sorted(t)) for t in layer_terms), feedback, bp_grad, f5_f8)


def initial_theta(rule: Rule, dtype=jnp.float32, theta0: float = 1e-3) -> jax.Array:
    """docs/METHOD.md §5: θ_0 = 1e-3, every other θ_r = 0; shape (len(rule.terms),)."""
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
    es = teaching_signals(act, label, feedback_matrices(rule.feedback, W, B, rule.bp_grad),
                           need_e0=need_e0)
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
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, yq))
    acc = jnp.mean(jnp.argmax(z, axis=-1) == yq)
    return loss, acc
