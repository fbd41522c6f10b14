"""The inner loop (docs/METHOD.md §4): online adaptation as one ``lax.scan`` over the stream.

A ``Rule`` (static) names the active terms per layer, the feedback mode, the two reading
choices and, optionally, a user's pool of terms; Θ is an array. Drawing a whole episode (task,
fresh network, query loss) lives in ``episode.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from plastic_jax.feedback import BP_GRADS, FEEDBACK_MODES, feedback_matrices, teaching_signals
from plastic_jax.network import Weights, forward
from plastic_jax.plasticity import PAPER_POOLS, Pool, Term, layer_update, union_terms, with_reading

#: readings of terms F5–F8 (docs/METHOD.md §3)
F5_F8_READINGS = tuple(PAPER_POOLS)


class Rule(NamedTuple):
    """Static description of a plasticity rule (hashable: usable as a jit static argument).

    layer_terms: one tuple of term ids per weight layer (L entries).
    feedback: ``"bp"`` or ``"fa"``.
    bp_grad: with ``bp``, ``"frozen"`` (the paper's code: the meta-gradient holds B = W constant)
      or ``"through"`` (the exact gradient through B = W); see ``feedback.feedback_matrices``.
    f5_f8: the reading of terms F5–F8, ``"matrix"`` or ``"elementwise"`` (docs/METHOD.md §3).
    pool: the terms the ids index into: None for the paper's ten, or a user's tuple of
      ``plasticity.Term`` (hashable by identity). The paper's F5–F8, where they appear in it,
      follow ``f5_f8`` (``plasticity.with_reading``); ``term_pool`` is the pool in effect.
    """

    layer_terms: tuple[tuple[int, ...], ...]
    feedback: str = "fa"
    bp_grad: str = "frozen"
    f5_f8: str = "matrix"
    pool: Pool | None = None

    @property
    def term_pool(self) -> Pool:
        """The terms Θ's ids index into, F5–F8 in the rule's reading."""
        return with_reading(PAPER_POOLS["matrix"] if self.pool is None else self.pool, self.f5_f8)

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
    pool: Sequence[Term] | None = None,
) -> Rule:
    """A rule shared by all ``n_layers`` layers, or a per-layer one (``layer_terms``).

    ``pool``: a user's terms (``plasticity.Term``), e.g. ``PAPER_POOL + (my_term,)``; term ids
    index into it. None: the paper's ten terms.
    """
    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"unknown feedback mode {feedback!r}; choose one of {FEEDBACK_MODES}")
    if bp_grad not in BP_GRADS:
        raise ValueError(f"unknown bp_grad {bp_grad!r}; choose one of {BP_GRADS}")
    if f5_f8 not in F5_F8_READINGS:
        raise ValueError(f"unknown f5_f8 reading {f5_f8!r}; choose one of {F5_F8_READINGS}")
    if pool is not None:
        pool = tuple(pool)
        bad = [t for t in pool if not isinstance(t, Term)]
        if bad or not pool:
            raise ValueError(f"a pool is a non-empty sequence of plasticity.Term, got {bad or pool!r}")
    if layer_terms is None:
        layer_terms = [tuple(terms)] * n_layers
    layer_terms = tuple(tuple(sorted(set(t))) for t in layer_terms)
    n = len(PAPER_POOLS["matrix"] if pool is None else pool)
    bad_ids = sorted({r for t in layer_terms for r in t if not 0 <= r < n})
    if bad_ids:
        raise ValueError(f"term id(s) {bad_ids} outside the pool of {n} terms (ids 0-{n - 1})")
    return Rule(layer_terms, feedback, bp_grad, f5_f8, pool)


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

    W, B: tuples of (n_ℓ, n_{ℓ-1}); theta (len(rule.terms),); x: (n_0,), label: () int.
    All layers use the pre-update weights and errors; the update of each layer is built from the
    declarations of ``rule.term_pool`` (``plasticity.layer_update``).
    """
    act = forward(W, x)
    pool = rule.term_pool
    need_e0 = any(pool[r].needs_e_pre for r in rule.layer_terms[0])
    es = teaching_signals(act, label, feedback_matrices(rule.feedback, W, B, rule.bp_grad),
                           need_e0=need_e0)
    terms = rule.terms
    return tuple(
        layer_update(
            theta, terms, rule.layer_terms[i], W[i],
            pre=act.ys[i], post=act.ys[i + 1], e_pre=es[i], e_post=es[i + 1], z=act.zs[i], pool=pool,
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
