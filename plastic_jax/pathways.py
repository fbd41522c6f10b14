"""The feedback pathways, each declared once (``Pathway``) and collected in ``REGISTRY``.

A pathway is the way teaching signals reach the hidden layers (docs/METHOD.md §9; the signals
themselves are computed by ``plastic_jax.feedback``). Everything that lists or classifies the
pathways reads this registry: ``feedback.FEEDBACK_MODES``, ``DIRECT_MODES``, ``STATEFUL_MODES``,
``estimators.base.PLAIN_MODES`` (and the adjoint's fast path), ``--feedback``'s choices and help,
the meta-parameters' labels (``feedback.feedback_labels``, ``Rule.theta_labels``) and the Θ keys
the run reader accepts (``rundir.THETA_KEY``, built from the plasticity terms' grammar and each
pathway's ``label_pattern``).

Adding a pathway: one ``Pathway`` in ``_BUILTIN`` below (or ``register`` at run time). Its
signals follow from the record (``feedback.feedback_matrices`` and ``feedback.signals`` read
``matrices``, ``direct`` and ``gated``): any combination of B, W or sign(W) ⊙ |B| layer-wise,
with the direct matrices alone (``dfa``) or gated (``routing``). Beyond that: a new branch in
``feedback.signals``; a ``stateful`` one also its update of B in ``feedback.feedback_fused`` (and
the reference in tests/reference.py); a ``plain`` one its hand-written steps
(``estimators.forward``, ``plastic_jax/adjoint.py``).

Imports no JAX (nor anything of plastic_jax): reading a run directory needs none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: the terms of ``plastic`` feedback's Θ^B, in Θ^B's order (``feedback.PLASTIC_B_TERMS``,
#: ``rundir.B_TERMS``)
PLASTIC_B_TERMS = ("kp", "decay", "err")
#: a plasticity coefficient's Θ key: "F<term id>", or "F<term id>@<layer>" (1-based) with
#: --per-layer-theta (groups 1 and 2 of ``theta_key()``)
TERM_KEY = r"F(\d+)(?:@(\d+))?"
#: what may carry a pathway's errors back layer by layer (``Pathway.matrices``)
MATRICES = ("B", "W", "sign")


class PathwayError(ValueError):
    """A pathway declared wrongly (or registered twice)."""


def _no_labels(n_layers: int) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Pathway:
    """One feedback pathway, declared once.

    name: the ``--feedback`` value (``"fa"``). description: one line for ``--feedback``'s help.
    matrices: what carries the errors back layer by layer (``feedback.feedback_matrices``):
    ``"B"`` B_1 … B_L (the default), ``"W"`` the forward weights (``bp``), ``"sign"``
    sign(W) ⊙ |B| re-read from W at every step.
    direct: B carries the direct matrices D_0 … D_{L−2} (n_L, n_ℓ) after B_1 … B_L (drawn with
    the episode, ``feedback.init_direct``); the errors may come straight from e_L.
    gated: (with ``direct``) the meta-parameters are the gates' φ_ℓ mixing the layer-wise and the
    direct signal (``routing``); without, the direct signal alone (``dfa``).
    stateful: B changes during the episode, carried by the scan beside W (``feedback_fused``).
    plain: has hand-written forward-mode and adjoint steps (``estimators.forward``,
    ``plastic_jax/adjoint.py``'s fast path); the others go the generic way.
    labels: ``n_layers -> labels`` of the pathway's meta-parameters in Θ's order (after the
    plasticity coefficients); their number is ``feedback.n_feedback_params``.
    label_pattern: the labels' grammar as a regular expression with exactly one capturing group
    (``B:(kp|decay|err)``, ``gate@(\\d+)``); required with ``labels``. The run reader accepts
    the Θ keys it matches (``rundir.THETA_KEY``).
    label_order: the captured group -> the label's place among the pathway's labels (sorting
    a run's Θ keys, ``rundir.theta_key_order``).
    """

    name: str
    description: str
    matrices: str = "B"
    direct: bool = False
    gated: bool = False
    stateful: bool = False
    plain: bool = False
    labels: Callable[[int], tuple[str, ...]] = _no_labels
    label_pattern: str = ""
    label_order: Callable[[str], int] = int

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", self.name or ""):
            raise PathwayError(f"pathway name {self.name!r} must be lower-case letters, digits, '-' or '_'")
        if not self.description.strip():
            raise PathwayError(f"pathway {self.name!r} needs a one-line description (--feedback's help)")
        if self.matrices not in MATRICES:
            raise PathwayError(f"pathway {self.name!r}: matrices {self.matrices!r} is not one of {MATRICES}")
        if self.gated and not self.direct:
            raise PathwayError(f"pathway {self.name!r}: gates mix the direct signal in: gated needs direct")
        has_labels = self.labels is not _no_labels
        if has_labels != bool(self.label_pattern):
            raise PathwayError(f"pathway {self.name!r}: labels and label_pattern go together")
        if self.label_pattern:
            try:
                groups = re.compile(self.label_pattern).groups
            except re.error as e:
                raise PathwayError(f"pathway {self.name!r}: label_pattern {self.label_pattern!r}: {e}") from None
            if groups != 1:
                raise PathwayError(f"pathway {self.name!r}: label_pattern {self.label_pattern!r} must have "
                                   f"exactly one capturing group, has {groups}")
            for label in self.labels(3):
                if not re.fullmatch(self.label_pattern, label) or re.fullmatch(TERM_KEY, label):
                    raise PathwayError(f"pathway {self.name!r}: label {label!r} must match its label_pattern "
                                       f"{self.label_pattern!r} and not a coefficient's F<id>")

    @property
    def constant_B(self) -> bool:
        """The matrices that carry the errors back are the same at every step of an episode
        (``fa``, ``dfa``, ``routing``); not so when they are W (``bp``), read from W (``sign``)
        or B changes (``stateful``)."""
        return self.matrices == "B" and not self.stateful

    def n_params(self, n_layers: int) -> int:
        """How many meta-parameters the pathway adds to Θ for ``n_layers`` weight layers."""
        return len(self.labels(n_layers))


_BUILTIN = (
    Pathway("bp", "B = W", matrices="W", plain=True),
    Pathway("fa", "fixed random B", plain=True),
    Pathway("dfa", "direct: every layer from the output error", direct=True),
    Pathway("sign", "sign(W)·|random|", matrices="sign"),
    Pathway("kp", "Kolen-Pollack: B gets W's own update", stateful=True),
    Pathway("plastic", "B has its own meta-learned rule Θ^B, logged as "
            + ", ".join(f"B:{t}" for t in PLASTIC_B_TERMS), stateful=True,
            labels=lambda n_layers: tuple(f"B:{t}" for t in PLASTIC_B_TERMS),
            label_pattern="B:(" + "|".join(PLASTIC_B_TERMS) + ")", label_order=PLASTIC_B_TERMS.index),
    Pathway("routing", "a meta-learned gate per layer mixes fa and dfa, logged as gate@<layer>", direct=True,
            gated=True,
            labels=lambda n_layers: tuple(f"gate@{l}" for l in range(n_layers - 1)),
            label_pattern=r"gate@(\d+)"),
)

#: name -> pathway, in ``--feedback``'s order (and the order of the labels' groups in ``theta_key``)
REGISTRY: dict[str, Pathway] = {p.name: p for p in _BUILTIN}
_version = [0]  # bumped by every change of REGISTRY through register / unregister


def register(pathway: Pathway) -> Pathway:
    """Add a pathway to ``REGISTRY`` (last); refuses a name already there."""
    if pathway.name in REGISTRY:
        raise PathwayError(f"feedback pathway {pathway.name!r} is already registered")
    REGISTRY[pathway.name] = pathway
    _version[0] += 1
    return pathway


def unregister(name: str) -> Pathway:
    """Remove a pathway from ``REGISTRY`` (returns it)."""
    pathway = REGISTRY.pop(name)
    _version[0] += 1
    return pathway


@contextmanager
def registered(pathway: Pathway) -> Iterator[Pathway]:
    """``register`` for the duration of a ``with`` block (tests, experiments); restores after."""
    register(pathway)
    try:
        yield pathway
    finally:
        if REGISTRY.get(pathway.name) is pathway:
            unregister(pathway.name)


def get(name: str) -> Pathway:
    """The pathway called ``name``; a ValueError naming the choices otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown feedback mode {name!r}; choose one of {tuple(REGISTRY)}") from None


class Modes(Sequence[str]):
    """The names of the registered pathways with a property, in ``REGISTRY``'s order: a read-only
    tuple-like view (``in``, iteration, ``==`` with a tuple, ``repr`` as a tuple) that follows
    ``register``. Python-level only: read where code is traced, never inside jitted arithmetic."""

    def __init__(self, pick: Callable[[Pathway], bool]) -> None:
        self._pick = pick
        self._cache: tuple[int, tuple[str, ...]] = (-1, ())

    def _names(self) -> tuple[str, ...]:
        if self._cache[0] != _version[0]:
            self._cache = (_version[0], tuple(n for n, p in REGISTRY.items() if self._pick(p)))
        return self._cache[1]

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Modes):
            other = other._names()
        return self._names() == other if isinstance(other, tuple) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._names())

    def __add__(self, other: tuple) -> tuple:
        return self._names() + tuple(other)

    def __radd__(self, other: tuple) -> tuple:
        return tuple(other) + self._names()

    def __repr__(self) -> str:
        return repr(self._names())


#: every pathway (``--feedback``'s choices)
FEEDBACK_MODES = Modes(lambda p: True)
#: pathways whose B carries direct matrices D_0 … D_{L−2} after B_1 … B_L
DIRECT_MODES = Modes(lambda p: p.direct)
#: pathways whose B changes during the episode (carried by the scan beside W)
STATEFUL_MODES = Modes(lambda p: p.stateful)
#: pathways with hand-written forward-mode and adjoint steps
PLAIN_MODES = Modes(lambda p: p.plain)
#: pathways whose feedback matrices are the same at every step of an episode
CONSTANT_B_MODES = Modes(lambda p: p.constant_B)


def feedback_help() -> str:
    """``--feedback``'s help: every registered pathway with its one-line description."""
    items = [f"{n} ({p.description})" for n, p in REGISTRY.items()]
    listed = ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]
    return f"teaching-signal pathway: {listed}; docs/METHOD.md §9"


# ----------------------------------------------------------------------------- Θ keys

_theta_cache: dict[tuple[str, ...], tuple[re.Pattern[str], tuple[str, ...]]] = {}


def _labelled() -> tuple[Pathway, ...]:
    return tuple(p for p in REGISTRY.values() if p.label_pattern)


def theta_key() -> re.Pattern[str]:
    """The grammar of a Θ key (a record's Θ table, ``inner.Rule.theta_labels``): a plasticity
    coefficient (``TERM_KEY``: groups 1, 2) or a pathway's meta-parameter (each labelled pathway's
    ``label_pattern`` in ``REGISTRY``'s order: groups 3, 4, …; plastic's "B:<term>" is group 3,
    routing's "gate@<layer>" group 4)."""
    labelled = _labelled()
    key = tuple(p.label_pattern for p in labelled)
    if key not in _theta_cache:
        pattern = "|".join((TERM_KEY, *(f"(?:{s})" for s in key)))
        _theta_cache[key] = (re.compile(pattern), tuple(p.name for p in labelled))
    return _theta_cache[key][0]


class _ThetaKey:
    """``theta_key()`` as a constant that follows ``register``: ``THETA_KEY.fullmatch(key)``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(theta_key(), name)

    def __repr__(self) -> str:
        return repr(theta_key())


#: the Θ-key grammar of the registered pathways (``theta_key()``; ``rundir.THETA_KEY``)
THETA_KEY: Any = _ThetaKey()


def label_owner(key: str) -> tuple[str, str] | None:
    """The pathway a Θ key belongs to and the key's captured part (``("routing", "3")`` for
    ``gate@3``); None for a plasticity coefficient or a key of no pathway."""
    m = theta_key().fullmatch(key)
    if m is None or m.group(1) is not None:
        return None
    for i, p in enumerate(_labelled()):
        if m.group(3 + i) is not None:
            return p.name, m.group(3 + i)
    return None


def theta_key_order(key: str) -> tuple[int, int]:
    """Sort key of a Θ key: the coefficients by term id, then layer (a shared Θ has layer 0);
    after them each labelled pathway's in ``REGISTRY``'s order (plastic's Θ^B in
    ``PLASTIC_B_TERMS``' order, then routing's gates by layer, …); anything else last."""
    m = theta_key().fullmatch(key)
    if m is None:
        return (1 << 40, 0)
    if m.group(1) is not None:
        return (int(m.group(1)), int(m.group(2) or 0))
    for i, p in enumerate(_labelled()):
        if m.group(3 + i) is not None:
            return ((i + 1) << 28, p.label_order(m.group(3 + i)))
    return (1 << 40, 0)  # unreachable: one group matched
