"""Teaching signals (docs/METHOD.md §2) for the feedback modes ``bp`` and ``fa``.

e_L = softmax(z_L) - onehot(label); e_l = (B_{l+1}ᵀ e_{l+1}) ⊙ (1 - exp(-β y_l)) for l = L-1 … 0.
With ``bp`` the feedback matrices are the current forward weights (B = W); with ``fa`` they
are the fixed random matrices drawn at the start of the episode.
"""

from __future__ import annotations

import jax

from plastic_jax.network import Activations, Weights, forward, softplus_grad_from_y

FEEDBACK_MODES = ("bp", "fa")
#: how the meta-gradient treats B = W under ``bp`` (docs/METHOD.md §2)
BP_GRADS = ("frozen", "through")


def feedback_matrices(feedback: str, W: Weights, B: Weights, bp_grad: str = "frozen") -> Weights:
    """The matrices that carry errors backwards: W itself for ``bp``, B for ``fa``.

    ``bp_grad`` (``bp`` only) says what a meta-gradient sees: ``"frozen"`` holds B = W constant
    (``stop_gradient``; the published code differentiates through a detached copy of W, so its
    meta-gradient omits the path through the feedback), ``"through"`` differentiates through
    B = W (the exact gradient of the meta-loss). The values, and so the adapted weights, are
    the same either way.
    """
    if feedback == "bp":
        if bp_grad == "frozen":
            return tuple(jax.lax.stop_gradient(w) for w in W)
        if bp_grad == "through":
            return W
        raise ValueError(f"unknown bp_grad {bp_grad!r}; choose one of {BP_GRADS}")
    if feedback == "fa":
        return B
    raise ValueError(f"unknown feedback mode {feedback!r}; choose one of {FEEDBACK_MODES}")


def teaching_signals(
    act: Activations,
    label: jax.Array,
    Bf: Weights,
    *,
    need_e0: bool = True,
) -> tuple[jax.Array | None, ...]:
    """Errors ``(e_0, ..., e_L)`` for one example (or a batch, on a leading axis).

    Args:
      act: the forward pass.
      label: integer class label (shape () or (batch,)).
      Bf: the feedback matrices (``feedback_matrices``), B_l of shape (n_l, n_{l-1}).
      need_e0: compute e_0, the first layer's pre-synaptic error; else it is None.
    """
    n_out = act.zs[-1].shape[-1]
    e = act.ys[-1] - jax.nn.one_hot(label, n_out, dtype=act.ys[-1].dtype)
    es = [e]
    L = len(Bf)
    for l in range(L - 1, -1, -1):
        if l == 0 and not need_e0:
            es.append(None)
            break
        e = (e @ Bf[l]) * softplus_grad_from_y(act.ys[l])
        es.append(e)
    return tuple(reversed(es))


def bp_signals(W: Weights, x: jax.Array, label: jax.Array) -> tuple[jax.Array | None, ...]:
    """Backprop teaching signals of weights W for input x (used by the analysis metrics)."""
    return teaching_signals(forward(W, x), label, W, need_e0=False)
