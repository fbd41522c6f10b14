"""Interchangeable meta-gradient estimators (docs/METHOD.md §5), all behind one signature::

    estimator(theta, rule, spec, key, ci) -> ((loss, accuracy), grad)

with ``theta`` (R,), ``loss``/``accuracy`` () means over ``spec.meta_batch`` tasks at Θ and
``grad`` (R,) the meta-gradient (the L1 term is added by ``meta.meta_step``).

Each estimator is one module of this package that declares an ``Estimator`` record
(``base.Estimator``: name, function, one-line description, memory model, when ``auto`` picks it,
its extra settings), and ``REGISTRY`` below collects them. Everything else reads the registry: the
``--meta-grad`` choices and help (``config.py``), ``auto`` (``choose_estimator``), the training
memory check (``experiment.check_training_memory``), the benchmark's ``--estimator``, the tests.

- ``reverse`` (``reverse.py``): ``jax.value_and_grad`` through the scan; stores every step's weights.
- ``reverse-remat`` (``remat.py``): the same with ``jax.checkpoint`` over ≈√T segments; memory O(√T).
- ``forward`` (``forward.py``): forward mode, the scan carries the R tangents dW/dθ_r; memory
  independent of T, time about (1 + c·R) forward episodes.
- ``adjoint`` (``adjoint.py``; the machinery in ``plastic_jax/adjoint.py``): reverse mode that
  rebuilds W_t from W_{t+1} instead of storing it; 2–4.4 forward episodes for any R.
- ``es`` (``es.py``): antithetic evolution strategies, the gradient of the Gaussian-smoothed
  meta-loss (not dL/dΘ itself); 2P + 1 forward episodes, for chaotic episodes.
- ``auto``: the estimator whose record's ``auto`` says so for the rule's Θ size and feedback mode
  (``forward`` for R ≤ ``AUTO_FORWARD_MAX_R`` with bp/fa, else ``adjoint``; docs/PERFORMANCE.md).

The first four compute the same number by different routes (they agree to 1e-4 relative in the
tests). Adding an estimator: a module here with its function and its ``ESTIMATOR`` record, one
entry in ``REGISTRY``, and its tests (tests/test_estimators.py checks every exact one against
``jax.grad``); docs/METHOD.md §5 has the checklist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from plastic_jax.episode import check_episode
from plastic_jax.estimators import adjoint, es, forward, remat, reverse
from plastic_jax.estimators.adjoint import adjoint_batch_loss, adjoint_generic_grad, adjoint_grad
from plastic_jax.estimators.base import (
    AUTO_FORWARD_MAX_R,
    GENERIC_FORWARD_MAX_R,
    PLAIN_MODES,
    Estimator,
    n_weights,
)
from plastic_jax.estimators.es import ES_PAIRS, ES_SIGMA, es_grad, es_samples
from plastic_jax.estimators.forward import (
    forward_grad,
    forward_online_step,
    forward_online_step_generic,
    forward_state_step,
    forward_task,
    fused_tangent,
)
from plastic_jax.estimators.remat import adapt_remat, remat_batch_loss, remat_segment_length, reverse_remat_grad
from plastic_jax.estimators.reverse import reverse_grad
from plastic_jax.inner import Rule

#: every estimator by name, in the order of ``--meta-grad``'s choices (after ``auto``)
REGISTRY: dict[str, Estimator] = {m.ESTIMATOR.name: m.ESTIMATOR for m in (reverse, remat, forward, adjoint, es)}

AUTO = "auto"


def choose_estimator(n_theta: int, feedback: str = "fa") -> str:
    """The estimator ``auto`` runs for Θ of ``n_theta`` entries (``Rule.n_theta``) and the feedback
    mode: the one record of ``REGISTRY`` whose ``auto`` says so. Forward mode costs about (1 + c·R)
    forward episodes and grows with R; the adjoint costs 2–4.4 forward episodes whatever R
    (reverse-remat 19–31): crossover between R = 1 and R = 3 (``AUTO_FORWARD_MAX_R``;
    docs/PERFORMANCE.md). The other feedback modes have only the generic steps
    (``GENERIC_FORWARD_MAX_R``, then ``reverse-remat``)."""
    picks = [name for name, rec in REGISTRY.items() if rec.auto is not None and rec.auto(n_theta, feedback)]
    if len(picks) != 1:  # the records' conditions must cover every case exactly once
        raise RuntimeError(f"auto: {len(picks)} estimators claim n_theta={n_theta}, feedback={feedback!r}: {picks}")
    return picks[0]


def auto_grad(theta, rule: Rule, spec, key, ci):
    """``forward`` for a single θ, the ``adjoint`` otherwise (``choose_estimator``)."""
    check_episode("auto_grad", theta, rule, spec, ci)
    return ESTIMATORS[choose_estimator(rule.n_theta, rule.feedback)](theta, rule, spec, key, ci)


#: name -> estimator function (``auto`` first, then ``REGISTRY``'s); each called with the signature
#: alone runs with its options' defaults (``bind`` passes a run's settings)
ESTIMATORS: dict[str, Callable] = {AUTO: auto_grad, **{name: rec.fn for name, rec in REGISTRY.items()}}


def names() -> tuple[str, ...]:
    """The ``--meta-grad`` choices: ``auto`` and every registered estimator."""
    return (AUTO, *REGISTRY)


def resolve(name: str, n_theta: int, feedback: str) -> str:
    """The estimator that runs under ``name`` (``auto``: ``choose_estimator``'s pick)."""
    return choose_estimator(n_theta, feedback) if name == AUTO else name


def options_of(name: str, settings: Any) -> dict[str, Any]:
    """The keyword options of estimator ``name`` (not ``auto``) read from ``settings`` (a
    ``TrainConfig`` or any object with the record's option fields as attributes)."""
    return {kw: getattr(settings, field) for field, kw in REGISTRY[name].options.items()}


def bind(name: str, settings: Any) -> Callable:
    """The estimator function of ``name`` with its options from ``settings`` (``options_of``), as
    ``meta.meta_step`` takes it: ``(theta, rule, spec, key, ci) -> ((loss, accuracy), grad)``."""
    fn = ESTIMATORS[name]
    opts = options_of(name, settings) if name in REGISTRY else {}
    return functools.partial(fn, **opts) if opts else fn


def memory_bytes(name: str, spec: Any, rule: Rule, settings: Any = None) -> int:
    """What one seed's meta-step with estimator ``name`` (``auto`` resolved for ``rule``) keeps in
    memory at once, in bytes (the record's memory model; ``settings``: its options, else their
    defaults). A lower bound: the weight-sized arrays only, float32."""
    rec = REGISTRY[resolve(name, rule.n_theta, rule.feedback)]
    opts = options_of(rec.name, settings) if settings is not None else {}
    return int(rec.memory(spec, rule, **opts))


__all__ = [
    "AUTO", "AUTO_FORWARD_MAX_R", "ES_PAIRS", "ES_SIGMA", "ESTIMATORS", "Estimator", "GENERIC_FORWARD_MAX_R",
    "PLAIN_MODES", "REGISTRY", "adapt_remat", "adjoint_batch_loss", "adjoint_generic_grad", "adjoint_grad",
    "auto_grad", "bind", "choose_estimator", "es_grad", "es_samples", "forward_grad", "forward_online_step",
    "forward_online_step_generic", "forward_state_step", "forward_task", "fused_tangent", "memory_bytes", "n_weights",
    "names", "options_of", "remat_batch_loss", "remat_segment_length", "resolve", "reverse_grad",
    "reverse_remat_grad",
]
