"""Teaching signals (docs/METHOD.md §2 and §9): the feedback pathways.

The output error is always e_L = softmax(z_L) − onehot(label). The hidden errors depend on the
feedback mode (``Rule.feedback``); σ′(y) = 1 − exp(−β y) (network.softplus_grad_from_y):

- ``bp``: e_ℓ = (W_{ℓ+1}ᵀ e_{ℓ+1}) ⊙ σ′(y_ℓ), the forward weights carry the errors back.
- ``fa``: e_ℓ = (B_{ℓ+1}ᵀ e_{ℓ+1}) ⊙ σ′(y_ℓ), B fixed random, drawn with the episode.
- ``dfa``: e_ℓ = (D_ℓᵀ e_L) ⊙ σ′(y_ℓ), straight from the output error through a fixed random
  D_ℓ (n_L, n_ℓ) for every ℓ = 0 … L−1 (e_0 included, for the terms that read e_pre at the first
  layer). The top hidden layer's D_{L−1} is B_L, so its signal equals ``fa``'s (as in Nøkland's
  DFA, where the last hidden layer is fed by the output error through one random matrix).
- ``sign``: ``fa`` with B_ℓ = sign(W_ℓ) ⊙ |R_ℓ|, R_ℓ the episode's fixed random matrix (stored in
  B's place), re-read from the current W at every step.
- ``kp``: ``fa`` whose B changes with W (Kolen–Pollack; Kolen & Pollack 1994, Akrout et al. 2019:
  ΔW = −η δ xᵀ − λW, ΔB = −η δ xᵀ − λB, so W − B shrinks by (1 − λ) per step). Here the rule's
  own update of W plays −η δ xᵀ and the rule's own W-proportional part (``keep``, e.g. θ_3's
  decay) plays λ: B_{t+1} = B_t ⊙ (keep + Σ a bᵀ) + Σ u vᵀ with W's fused factors
  (``plasticity.Fused``). So W_t − B_t = (W_0 − B_0) ⊙ Π keep: B converges to W exactly as fast
  as the rule decays W, and without a decay B_t = B_0 + (W_t − W_0).
- ``plastic``: ``fa`` whose B changes by its own rule, B_{t+1} = B_t + Σ_k θ^B_k G^k with three
  local terms (``PLASTIC_B_TERMS``): G^kp = KP's change (the step above minus B_t), G^decay = −B_t,
  G^err = −e_ℓ y_{ℓ−1}ᵀ (the error-times-input form of F0 on B's own synapse). Θ^B is
  meta-learned with Θ; Θ^B = 0 is ``fa``.
- ``routing``: e_ℓ = (g_ℓ B_{ℓ+1}ᵀ e_{ℓ+1} + (1 − g_ℓ) D_ℓᵀ e_L) ⊙ σ′(y_ℓ), a mix of the
  layer-wise (``fa``) and the direct (``dfa``) signal, g_ℓ = sigmoid(φ_ℓ) with φ_ℓ meta-learned
  (started at 0, g = ½), one per ℓ = 0 … L−2 (at ℓ = L−1 the two signals coincide). All g = 1
  is ``fa``, all g = 0 is ``dfa``.

The feedback state B is a tuple: B_1 … B_L (W's shapes) and, for ``dfa`` and ``routing``, the
direct matrices D_0 … D_{L−2} after them (``feedback_shapes``). The modes' meta-parameters
(Θ^B, φ) sit after the plasticity coefficients in Θ (``Rule.n_theta``; ``feedback_labels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from plastic_jax.network import Activations, Weights, forward, softplus_grad_from_y, xavier_uniform
from plastic_jax.pathways import (  # noqa: F401 - re-exported: the names the package has always had
    DIRECT_MODES,
    FEEDBACK_MODES,
    PLASTIC_B_TERMS,
    REGISTRY,
    STATEFUL_MODES,
    get,
)
from plastic_jax.plasticity import Fused

# the pathways and their lists are declared once, in plastic_jax/pathways.py (``Pathway``):
# FEEDBACK_MODES (every mode), DIRECT_MODES (B carries direct matrices D_0 … D_{L−2} after
# B_1 … B_L), STATEFUL_MODES (B changes during the episode, carried by the scan beside W) and
# PLASTIC_B_TERMS (the terms of ``plastic`` feedback, in Θ^B's order) are derived there

#: how the meta-gradient treats B = W under ``bp`` (docs/METHOD.md §2)
BP_GRADS = ("frozen", "through")


# ----------------------------------------------------------------------------- shapes and params


def feedback_shapes(feedback: str, sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Shapes of the feedback state B for layer sizes (n_0, …, n_L): W's, then with ``dfa`` and
    ``routing`` the direct matrices (n_L, n_ℓ) for ℓ = 0 … L−2."""
    shapes = [(n_out, n_in) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    if feedback in DIRECT_MODES:
        shapes += [(sizes[-1], n) for n in sizes[:-2]]
    return shapes


def n_feedback_params(feedback: str, n_layers: int) -> int:
    """Meta-parameters of the mode (``pathways.Pathway.labels``): 3 (Θ^B) for ``plastic``, L − 1
    gates for ``routing``, else 0."""
    return len(feedback_labels(feedback, n_layers))


def feedback_labels(feedback: str, n_layers: int) -> tuple[str, ...]:
    """Labels of the mode's meta-parameters as metrics.jsonl keys them (``pathways.Pathway.labels``):
    ``B:kp``, ``B:decay``, ``B:err`` (Θ^B) or ``gate@0`` … ``gate@<L−2>`` (φ_ℓ, the free parameter
    of the gate of the error e_ℓ of neuron layer ℓ; the gate itself is sigmoid(φ_ℓ))."""
    pathway = REGISTRY.get(feedback)
    return () if pathway is None else pathway.labels(n_layers)


def init_direct(key: jax.Array, sizes: Sequence[int], dtype=jnp.float32) -> Weights:
    """Fixed random direct matrices D_ℓ (n_L, n_ℓ), ℓ = 0 … L−2, Xavier-uniform like B."""
    keys = jax.random.split(key, max(len(sizes) - 2, 1))
    return tuple(xavier_uniform(k, sizes[-1], n, dtype) for k, n in zip(keys, sizes[:-2]))


def gates(phi: jax.Array) -> jax.Array:
    """g = sigmoid(φ): the routing gates (L − 1,) from their free parameters."""
    return jax.nn.sigmoid(phi)


# ----------------------------------------------------------------------------- signals


def feedback_matrices(feedback: str, W: Weights, B: Weights, bp_grad: str = "frozen") -> Weights:
    """The layer-wise matrices that carry errors backwards: W itself for ``bp``, sign(W) ⊙ |B|
    for ``sign``, B_1 … B_L otherwise.

    ``bp_grad`` (``bp`` only) says what a meta-gradient sees: ``"frozen"`` holds B = W constant
    (``stop_gradient``; the published code differentiates through a detached copy of W, so its
    meta-gradient omits the path through the feedback), ``"through"`` differentiates through
    B = W (the exact gradient of the meta-loss). The values, and so the adapted weights, are
    the same either way. ``sign`` has no gradient through sign(W) (zero almost everywhere).
    """
    L = len(W)
    matrices = get(feedback).matrices  # pathways.Pathway.matrices
    if matrices == "W":
        if bp_grad == "frozen":
            return tuple(jax.lax.stop_gradient(w) for w in W)
        if bp_grad == "through":
            return W
        raise ValueError(f"unknown bp_grad {bp_grad!r}; choose one of {BP_GRADS}")
    if matrices == "sign":
        return tuple(jax.lax.stop_gradient(jnp.sign(w)) * jnp.abs(b) for w, b in zip(W, B[:L]))
    return tuple(B[:L])


def teaching_signals(
    act: Activations,
    label: jax.Array,
    Bf: Weights,
    *,
    need_e0: bool = True,
    direct: Weights | None = None,
    g: jax.Array | None = None,
) -> tuple[jax.Array | None, ...]:
    """Errors ``(e_0, ..., e_L)`` for one example (or a batch, on a leading axis).

    Args:
      act: the forward pass.
      label: integer class label (shape () or (batch,)).
      Bf: the layer-wise feedback matrices (``feedback_matrices``), B_l of shape (n_l, n_{l-1}).
      need_e0: compute e_0, the first layer's pre-synaptic error; else it is None.
      direct: the direct matrices D_0 … D_{L−2} (n_L, n_ℓ) (``dfa``, ``routing``); D_{L−1} = B_L.
      g: with ``direct``, the gates (L − 1,) mixing layer-wise (g) and direct (1 − g) signals;
        None with ``direct`` is pure ``dfa``.
    """
    n_out = act.zs[-1].shape[-1]
    e_L = act.ys[-1] - jax.nn.one_hot(label, n_out, dtype=act.ys[-1].dtype)
    e = e_L
    es = [e]
    L = len(Bf)
    for l in range(L - 1, -1, -1):
        if l == 0 and not need_e0:
            es.append(None)
            break
        h = e @ Bf[l]
        if direct is not None and l < L - 1:
            h_direct = e_L @ direct[l]
            h = h_direct if g is None else g[l] * h + (1.0 - g[l]) * h_direct
        e = h * softplus_grad_from_y(act.ys[l])
        es.append(e)
    return tuple(reversed(es))


def signals(
    feedback: str,
    W: Weights,
    B: Weights,
    phi: jax.Array | None,
    act: Activations,
    label: jax.Array,
    *,
    need_e0: bool = True,
    bp_grad: str = "frozen",
) -> tuple[jax.Array | None, ...]:
    """The teaching signals of any mode: W, B the current weights and feedback state, ``phi``
    the mode's meta-parameters (the tail of Θ, ``Rule.feedback_params``; the gates for
    ``routing``), ``act`` the forward pass of W."""
    L = len(W)
    pathway = get(feedback)  # pathways.Pathway: direct (dfa), direct and gated (routing), or neither
    Bf = feedback_matrices(feedback, W, B, bp_grad)
    if pathway.direct and not pathway.gated:
        return teaching_signals(act, label, Bf, need_e0=need_e0, direct=B[L:])
    if pathway.direct:  # one weight layer: no gate (phi is None), e_0 = B_1ᵀ e_1 as in fa and dfa
        g = None if phi is None else gates(phi)
        return teaching_signals(act, label, Bf, need_e0=need_e0, direct=B[L:] if L > 1 else None, g=g)
    return teaching_signals(act, label, Bf, need_e0=need_e0)


def bp_signals(W: Weights, x: jax.Array, label: jax.Array) -> tuple[jax.Array | None, ...]:
    """Backprop teaching signals of weights W for input x (used by the analysis metrics)."""
    return teaching_signals(forward(W, x), label, W, need_e0=False)


# ----------------------------------------------------------------------------- plastic B


def feedback_fused(feedback: str, fused_W: Fused, theta_B: jax.Array | None, e_post: jax.Array,
                   pre: jax.Array) -> Fused:
    """The update of one layer's B_ℓ (``kp``, ``plastic``) as a ``plasticity.Fused``, from that
    layer's update of W (``fused_W``: new W = W ⊙ (keep + Σ a bᵀ) + Σ u vᵀ):

    - ``kp``: W's own factors, B_{t+1} = B_t ⊙ (keep + Σ a bᵀ) + Σ u vᵀ.
    - ``plastic``: B_t + θ^B_kp (KP's step − B_t) − θ^B_decay B_t − θ^B_err e_post preᵀ, i.e.
      keep_B = 1 + θ^B_kp (keep − 1) − θ^B_decay, a_B = θ^B_kp a, u_B = θ^B_kp u and one more
      outer pair (−θ^B_err e_post, pre).

    e_post (n_ℓ,), pre (n_{ℓ−1},): the layer's error and input (``plastic`` only).
    """
    keep, outer, had = fused_W
    if feedback == "kp":
        return fused_W
    if feedback != "plastic":
        raise ValueError(f"feedback mode {feedback!r} has no plastic B")
    k_kp, k_decay, k_err = theta_B[0], theta_B[1], theta_B[2]
    keep_B = 1.0 - k_decay + (0.0 if keep is None else k_kp * (keep - 1.0))
    had_B = tuple((k_kp * a, b) for a, b in had)
    outer_B = tuple((k_kp * u, v) for u, v in outer) + ((-k_err * e_post, pre),)
    return Fused(keep_B, outer_B, had_B)
