"""``adjoint``: reverse mode without weight snapshots (the machinery: ``plastic_jax/adjoint.py``).

The forward scan stacks a few vectors per step, the backward scan rebuilds W_t from W_{t+1} and
applies a hand-written vector–Jacobian product of the step. Memory O(T·Σ n_ℓ) vectors, time about
2–4.4 forward episodes for any R (docs/PERFORMANCE.md). The gradient is NaN (and the driver warns)
when W_t cannot be rebuilt (keep + Σ a bᵀ near 0).
"""

from __future__ import annotations

import jax

from plastic_jax import episode
from plastic_jax.adjoint import adapt_adjoint
from plastic_jax.episode import EpisodeSpec, mean_over_tasks
from plastic_jax.estimators.base import AUTO_FORWARD_MAX_R, PLAIN_MODES, Estimator, weight_copies_bytes
from plastic_jax.inner import Rule, _query_loss


def adjoint_batch_loss(theta, rule: Rule, spec, key, ci, backward: str = "fast"):
    """``meta.batch_loss`` with ``adjoint.adapt_adjoint``: (mean loss, mean accuracy)."""
    episode.check_episode("adjoint_batch_loss", theta, rule, spec, ci)
    return _adjoint_batch_loss(theta, rule, spec, key, ci, backward)


def _adjoint_batch_loss(theta, rule: Rule, spec, key, ci, backward: str = "fast"):
    """``adjoint_batch_loss`` without the checks (the caller has made them)."""

    def per_task(k):
        task, W, B = episode._draw(spec, k, ci, theta.dtype, rule.feedback)
        W = adapt_adjoint(theta, rule, W, B, task.xs, task.ys, backward)
        return _query_loss(W, task.xq, task.yq)

    return mean_over_tasks(per_task, spec, key)


def adjoint_grad(theta, rule: Rule, spec, key, ci):
    """Reverse mode by the adjoint scan (``adjoint.py``): rebuilds W_t backwards from W_{t+1}
    and the step's stored vectors; memory O(T·Σ n_ℓ) vectors, no weight snapshots."""
    episode.check_episode("adjoint_grad", theta, rule, spec, ci)
    return jax.value_and_grad(_adjoint_batch_loss, has_aux=True)(theta, rule, spec, key, ci)


def adjoint_generic_grad(theta, rule: Rule, spec, key, ci):
    """``adjoint_grad`` with the generic backward step (``jax.vjp`` of ``online_step``); the
    reference for the fast step, not registered in ``ESTIMATORS``."""
    episode.check_episode("adjoint_generic_grad", theta, rule, spec, ci)
    return jax.value_and_grad(_adjoint_batch_loss, has_aux=True)(theta, rule, spec, key, ci, "generic")


def adjoint_memory(spec: EpisodeSpec, rule: Rule) -> int:
    """W, B, W_0, the rebuilt W_t and its cotangent, per task (the per-step vectors are small): bytes."""
    return weight_copies_bytes(spec, 5)


ESTIMATOR = Estimator(
    name="adjoint",
    fn=adjoint_grad,
    description="reverse mode rebuilding W_t backwards instead of storing it (memory O(T) vectors)",
    memory=adjoint_memory,
    auto=lambda n_theta, feedback: feedback in PLAIN_MODES and n_theta > AUTO_FORWARD_MAX_R,
    auto_note="2–4.4 forward episodes for any R with bp and fa (f0 1.9–3.8, bio 2.5–3.5, pool 3.2–4.3): "
              "faster than forward mode from R = 3 (bio) on; R = 2 (not measured) by 1 + c·R ≈ 3.5–4",
)
