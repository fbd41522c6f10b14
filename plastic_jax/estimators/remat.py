"""``reverse-remat``: reverse mode with ``jax.checkpoint`` over ≈√T segments of the scan.

Stores the weights at the segment boundaries and, during the backward pass, one segment's steps:
memory O(√T), about one extra forward episode of time over ``reverse``. ``auto`` takes it for
the feedback modes without hand-written steps when Θ is too large for forward mode.
"""

from __future__ import annotations

import math

import jax

from plastic_jax.episode import EpisodeSpec, _draw, check_episode, mean_over_tasks
from plastic_jax.estimators.base import GENERIC_FORWARD_MAX_R, PLAIN_MODES, Estimator, weight_copies_bytes
from plastic_jax.inner import Rule, _query_loss, state_step
from plastic_jax.network import Weights


def remat_segment_length(T: int) -> int:
    """Segment length for ``reverse-remat``: the divisor of T nearest √T when one lies within
    a factor 2 of it, else round(√T) (the remainder then runs as one shorter segment)."""
    root = math.sqrt(T)
    divisors = [d for d in range(1, T + 1) if T % d == 0 and root / 2 <= d <= 2 * root]
    if divisors:
        return min(divisors, key=lambda d: abs(d - root))
    return max(1, round(root))


def adapt_remat(theta, rule: Rule, W: Weights, B: Weights, xs, labels, seg: int | None = None) -> Weights:
    """``inner.adapt`` with ``jax.checkpoint`` around segments of ``seg`` steps.

    xs (T, n_0), labels (T,). Same result as ``adapt``; under reverse-mode differentiation only
    the weights at segment boundaries are stored, and each segment is recomputed once.
    """
    T = xs.shape[0]
    seg = seg or remat_segment_length(T)
    n, rem = divmod(T, seg)

    @jax.checkpoint
    def segment(WB, theta, xs_seg, ys_seg):
        def body(WB, xy):
            return state_step(theta, rule, *WB, *xy), None

        return jax.lax.scan(body, WB, (xs_seg, ys_seg))[0]

    WB = (tuple(W), tuple(B))
    if n:
        xs_main = xs[: n * seg].reshape(n, seg, *xs.shape[1:])
        ys_main = labels[: n * seg].reshape(n, seg)
        WB, _ = jax.lax.scan(lambda WB, xy: (segment(WB, theta, *xy), None), WB, (xs_main, ys_main))
    if rem:
        WB = segment(WB, theta, xs[n * seg :], labels[n * seg :])
    return WB[0]


def remat_batch_loss(theta, rule: Rule, spec, key, ci):
    """``meta.batch_loss`` with the checkpointed scan: (mean loss, mean accuracy)."""
    check_episode("remat_batch_loss", theta, rule, spec, ci)
    return _remat_batch_loss(theta, rule, spec, key, ci)


def _remat_batch_loss(theta, rule: Rule, spec, key, ci):
    """``remat_batch_loss`` without the checks (the caller has made them)."""

    def per_task(k):
        task, W, B = _draw(spec, k, ci, theta.dtype, rule.feedback)
        W = adapt_remat(theta, rule, W, B, task.xs, task.ys)
        return _query_loss(W, task.xq, task.yq)

    return mean_over_tasks(per_task, spec, key)


def reverse_remat_grad(theta, rule: Rule, spec, key, ci):
    """Reverse mode through the checkpointed scan: memory O(√T) weight snapshots per task."""
    check_episode("reverse_remat_grad", theta, rule, spec, ci)
    return jax.value_and_grad(_remat_batch_loss, has_aux=True)(theta, rule, spec, key, ci)


def remat_memory(spec: EpisodeSpec, rule: Rule) -> int:
    """W, B, the segment boundaries and one segment's steps, per task: bytes."""
    T = spec.M * spec.K
    seg = remat_segment_length(T) if T < 10**6 else int(T**0.5)  # (the divisor search is O(T))
    return weight_copies_bytes(spec, 2 + T // seg + seg)


ESTIMATOR = Estimator(
    name="reverse-remat",
    fn=reverse_remat_grad,
    description="reverse mode over checkpointed segments of about √T steps (memory O(√T))",
    memory=remat_memory,
    lower_memory="--meta-grad adjoint (the same gradient without weight snapshots)",
    auto=lambda n_theta, feedback: feedback not in PLAIN_MODES and n_theta > GENERIC_FORWARD_MAX_R,
    auto_note="the feedback modes without hand-written steps, above GENERIC_FORWARD_MAX_R entries of Θ: "
              "7.4 forward episodes for f0+routing (R = 5), where generic forward mode took 16",
)
