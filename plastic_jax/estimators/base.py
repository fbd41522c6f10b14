"""The record every meta-gradient estimator declares (``Estimator``), and the memory arithmetic
the records share. Imports nothing of the estimators themselves, so each estimator's module and
the registry (``plastic_jax.estimators``) can import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# PLAIN_MODES: the feedback modes with hand-written forward-mode and adjoint steps
# (``pathways.Pathway.plain``); the others go the generic way (``forward.forward_state_step``;
# ``plastic_jax/adjoint.py``'s generic backward)
from plastic_jax.pathways import PLAIN_MODES

#: bytes of one float (the estimators run in float32; a float64 run needs twice the estimate)
FLOAT_BYTES = 4
#: ``auto`` uses forward mode up to this many entries of Θ, the adjoint above. Measured on the
#: EMNIST-sized network, T = 250, meta-batch 1, 2-core CPU (docs/PERFORMANCE.md): forward mode
#: costs about (1 + c·R) forward episodes (f0 2.5–2.9×, bio 4–6×, pool 8.5–14×, per-layer pool
#: 71–80×); the adjoint 2–4.4 of them for any R (f0 1.9–3.8×, bio 2.5–3.5×, pool 3.2–4.3×);
#: reverse and reverse-remat 19–31. So forward mode wins only at R = 1 (it has no backward scan),
#: the adjoint from R = 3 (bio) on; R = 2 (not measured) goes to the adjoint by 1 + c·R ≈ 3.5–4.
AUTO_FORWARD_MAX_R = 1
#: ``auto`` for the other modes: generic forward mode up to this many entries of Θ, else
#: ``reverse-remat``. Measured (EMNIST-sized network, T = 250, meta-batch 1, loaded 2-core CPU,
#: one benchmark run; docs/PERFORMANCE.md): forward mode 2.6 forward episodes for f0+kp (R = 1),
#: 10.6 for bio+kp (R = 3), 16 for f0+routing (R = 5), where reverse-remat took 7.4; the generic
#: adjoint (``jax.vjp`` of the step at every step, B rebuilt too) 10.6–129, never the fastest.
GENERIC_FORWARD_MAX_R = 3


def forward_reach(feedback: str) -> int:
    """The largest Θ (entries) ``auto`` gives forward mode under ``feedback``."""
    return AUTO_FORWARD_MAX_R if feedback in PLAIN_MODES else GENERIC_FORWARD_MAX_R


@dataclass(frozen=True)
class Estimator:
    """One meta-gradient estimator, declared once in its own module and collected in
    ``plastic_jax.estimators.REGISTRY``.

    name: the ``--meta-grad`` choice (and the ``ESTIMATORS`` key).
    fn: ``fn(theta, rule, spec, key, ci, **options) -> ((loss, accuracy), grad)``: theta (R,),
        loss and accuracy () means over ``spec.meta_batch`` tasks, grad (R,) the meta-gradient
        without the L1 term (``meta.meta_step`` adds it). Pure, jit- and vmap-friendly.
    description: one line, for ``--help`` and the docs.
    memory: ``memory(spec, rule, **options) -> int``: the bytes one seed's meta-step keeps at once
        (the whole meta-batch; a lower bound, the weight-sized arrays only). The training memory
        check multiplies it by the seeds, the benchmark skips the cases it puts above its limit.
    auto: ``auto(n_theta, feedback) -> bool``: whether ``auto`` picks this estimator for a Θ of
        ``n_theta`` entries and that feedback mode; exactly one record says True for any
        (n_theta, feedback) (``choose_estimator`` checks). None: ``auto`` never picks it.
    auto_note: why ``auto`` picks it where it does (the measurements; docs/PERFORMANCE.md).
    options: settings the estimator takes beyond the signature: ``TrainConfig`` field ->
        keyword argument of ``fn`` and ``memory`` (``bind``, ``options_of``), e.g.
        ``{"es_sigma": "sigma"}``. Their defaults are ``fn``'s keyword defaults.
    benchmark: measured by ``plastic-jax benchmark`` when ``--estimator`` is not given.
    exact: computes dL/dΘ itself (to rounding), so a resumed run may switch between exact ones
        without changing what it optimises.
    lower_memory: what else lowers this estimator's memory, for the memory check's message (it
        always names --hidden, --seeds and --meta-batch), e.g. ``"--es-pairs"``.
    """

    name: str
    fn: Callable[..., Any]
    description: str
    memory: Callable[..., int]
    auto: Callable[[int, str], bool] | None = None
    auto_note: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    benchmark: bool = True
    exact: bool = True
    lower_memory: str = ""


def n_weights(sizes: tuple[int, ...]) -> int:
    """Number of entries of the weight matrices of a network with layer sizes ``sizes``."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def weight_copies_bytes(spec: Any, copies: int) -> int:
    """``copies`` weight-sized float arrays per task, for the ``spec.meta_batch`` tasks: bytes."""
    return FLOAT_BYTES * n_weights(tuple(spec.sizes)) * copies * spec.meta_batch
