"""What is measured (docs/METHOD.md §6): alignment angles and orthonormality error of adapted weights.

Both are evaluated on an episode's query set, after online adaptation:

- ``alignment_angles``: for every weight layer ℓ = 1 … L, the angle in degrees between e_ℓ
  computed with the run's feedback matrices and e_ℓ computed with backprop feedback (B = W, the
  adapted weights), each averaged over the query set first. α_L = 0 by construction (both use
  e_L = softmax(z_L) − onehot).
- ``orthonormality_errors``: for every weight layer, ‖W_ℓ y_{ℓ-1} − W_ℓ W_ℓᵀ y_ℓ‖² averaged over
  the query set (W_ℓ y_{ℓ-1} and W_ℓ W_ℓᵀ y_ℓ are both (n_ℓ,)). For ℓ = L, y_L = softmax(z_L).

``episode_analysis`` re-runs the forward episode of a meta-training step (same key, same Θ as
the step, i.e. the pre-update Θ) and returns these per layer, averaged over the meta-batch. With
``sensitivity`` (the default, what meta-training logs) the re-run carries the tangent of the
weights along the fixed unit direction v = all ones / √R (``sensitivity.tangent_episode``, about
two forward episodes' work instead of one) and also returns the episode's perturbation
amplification growth_T / growth_1 (mean and max over the meta-batch) and whether any task of it
was chaotic (``sensitivity.is_chaotic``: amplification > 1e3, overflowed or diverged).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec, run
from plastic_jax.feedback import bp_signals, signals
from plastic_jax.inner import Rule, query_loss
from plastic_jax.network import Weights, forward


def angle_deg(u: jax.Array, v: jax.Array, eps: float = 1e-30) -> jax.Array:
    """Angle in degrees between vectors u and v (last axis); 0 … 180.

    Kahan's form 2·atan2(‖û − v̂‖, ‖û + v̂‖) with û = u/‖u‖: accurate for nearly parallel and
    nearly opposite vectors, where ``arccos`` of the cosine loses half the digits.
    """
    uh = u / jnp.sqrt(jnp.sum(u * u, axis=-1, keepdims=True) + eps)
    vh = v / jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + eps)
    d = jnp.sqrt(jnp.sum((uh - vh) ** 2, axis=-1))
    s = jnp.sqrt(jnp.sum((uh + vh) ** 2, axis=-1))
    return jnp.degrees(2.0 * jnp.arctan2(d, s))


def alignment_angles(W: Weights, B: Weights, feedback: str, xq: jax.Array, yq: jax.Array,
                     phi: jax.Array | None = None) -> jax.Array:
    """α_ℓ for ℓ = 1 … L, shape (L,), in degrees.

    W, B: adapted weights and the episode's feedback state at the end of the episode (B changes
    under ``kp``/``plastic``); xq (N, n_0), yq (N,); phi: the mode's meta-parameters
    (``Rule.feedback_params``; the routing gates), None for the other modes. The run's signals
    are those of its own mode (``feedback.signals``); backprop's go through the same W.
    """
    if feedback == "routing" and phi is None:
        raise ValueError("alignment_angles: feedback 'routing' needs phi, the gates' parameters")
    act = forward(W, xq)
    e_run = signals(feedback, W, B, phi, act, yq, need_e0=False)
    e_bp = bp_signals(W, xq, yq)
    return jnp.stack([angle_deg(a.mean(axis=0), b.mean(axis=0)) for a, b in zip(e_run[1:], e_bp[1:])])


def orthonormality_errors(W: Weights, xq: jax.Array) -> jax.Array:
    """‖W_ℓ y_{ℓ-1} − W_ℓ W_ℓᵀ y_ℓ‖² averaged over the query set xq (N, n_0); shape (L,)."""
    ys = forward(W, xq).ys
    errs = []
    for l, w in enumerate(W):
        pre, post = ys[l], ys[l + 1]  # (N, n_{l-1}), (N, n_l)
        d = pre @ w.T - (post @ w) @ w.T  # (N, n_l)
        errs.append(jnp.mean(jnp.sum(d * d, axis=-1)))
    return jnp.stack(errs)


def episode_analysis(
    theta: jax.Array, rule: Rule, spec: EpisodeSpec, key: jax.Array, ci: ClassIndex, sensitivity: bool = True,
    threshold: float | None = None,
) -> dict[str, jax.Array]:
    """Re-run the episode(s) of one meta-step (the same key and tasks as ``episode.mean_over_tasks``)
    and measure them.

    Returns ``{"alignment": (L,), "orthonormality": (L,), "accuracy": ()}``, each the mean over
    the ``spec.meta_batch`` tasks drawn from ``key``. Pass the Θ the meta-step was given (the
    pre-update Θ): then ``accuracy`` is the one the step logged for this episode.

    ``sensitivity`` adds ``"amplification"`` () and ``"amplification_max"`` (), the mean and the
    max over the tasks of ``sensitivity.episode_sensitivity(theta, …, task_key).amplification``
    along v = all ones / √R (NaN or inf where a task's tangent overflowed or it diverged), and
    ``"chaotic"`` () bool, whether any task is chaotic (``sensitivity.is_chaotic`` at
    ``threshold``, default ``sensitivity.CHAOS_THRESHOLD``). The adapted weights are then those of
    the tangent episode (the same ops as ``episode.run``).
    """
    from plastic_jax import sensitivity as sens

    thr = sens.CHAOS_THRESHOLD if threshold is None else threshold

    def measures(W, B, task) -> dict[str, jax.Array]:
        return {
            "alignment": alignment_angles(W, B, rule.feedback, task.xq, task.yq, rule.feedback_params(theta)),
            "orthonormality": orthonormality_errors(W, task.xq),
        }

    def one(k):
        if not sensitivity:
            out = run(theta, rule, spec, k, ci)
            return {**measures(out.W, out.B, out.task), "accuracy": out.accuracy}
        ep = sens.tangent_episode(theta, rule, spec, k, ci)
        s = sens.sensitivity_of(ep)
        return {**measures(ep.W, ep.B, ep.task), "accuracy": query_loss(ep.W, ep.task.xq, ep.task.yq)[1],
                "amplification": s.amplification, "chaotic": sens.is_chaotic(s, thr)}

    per = jax.vmap(one)(jax.random.split(key, spec.meta_batch))  # episode.mean_over_tasks' task keys
    out = {k: jnp.mean(per[k], axis=0) for k in ("alignment", "orthonormality", "accuracy")}
    if sensitivity:
        out["amplification"] = jnp.mean(per["amplification"])
        out["amplification_max"] = jnp.max(per["amplification"])
        out["chaotic"] = jnp.any(per["chaotic"])
    return out
