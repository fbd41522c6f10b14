"""``reverse``: ``jax.value_and_grad`` through the scan of the episode.

Stores every step's weights (T × Σ n_ℓ n_{ℓ-1} floats per task); 19–31 forward episodes of time
(docs/PERFORMANCE.md). The plainest route, and the reference the other estimators are tested
against.
"""

from __future__ import annotations

import jax

from plastic_jax.episode import EpisodeSpec, _batch_loss, check_episode
from plastic_jax.estimators.base import Estimator, weight_copies_bytes
from plastic_jax.inner import Rule


def reverse_grad(theta, rule: Rule, spec: EpisodeSpec, key, ci):
    """Reverse-mode autodiff through the scan (stores every step's weights)."""
    check_episode("reverse_grad", theta, rule, spec, ci)
    return jax.value_and_grad(_batch_loss, has_aux=True)(theta, rule, spec, key, ci)


def reverse_memory(spec: EpisodeSpec, rule: Rule) -> int:
    """W, B and a snapshot of W per step of the stream, per task: bytes."""
    return weight_copies_bytes(spec, 2 + spec.M * spec.K)


ESTIMATOR = Estimator(
    name="reverse",
    fn=reverse_grad,
    description="reverse mode through the scan, storing every step's weights (memory O(T))",
    memory=reverse_memory,
    lower_memory="--meta-grad adjoint (the same gradient without weight snapshots)",
)
