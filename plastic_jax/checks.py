"""The one error type of the public API and the type-free argument checks it shares.

Every public function of the core raises ``PlasticJaxError`` (a ``ValueError``) with a one-line
message ``where: what is wrong`` when its arguments cannot work together. The checks that know a
type live beside it: the rule's (``check_rule``, ``check_theta``, ``check_weights``) in
``inner.py``, the episode's (``check_spec``, ``check_episode``) in ``episode.py``, the class
index's (``check_class_index``) in ``data/sampler.py``, the meta-step's in ``meta.py``, term ids
in ``plasticity.parse_terms``. This module holds what they share and knows none of those types,
so it imports nothing of the package.

Here: ``fail``, ``check_int``, ``check_stream`` (shapes of examples for a network),
``check_finite_theta`` and ``is_tracer``. ``check_finite_theta`` is the one value check: it
refuses a non-finite Θ when Θ is concrete (a call outside ``jit``) and skips a tracer, where
reading values would cost a device round trip or be impossible; ``inner.check_theta`` (hence
every entry point that takes Θ) calls it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np


class PlasticJaxError(ValueError):
    """A public function was called with arguments that cannot work; the message is one line."""


def fail(where: str, msg: str) -> NoReturn:
    """Raise ``PlasticJaxError`` with the one-line message ``where: msg``."""
    raise PlasticJaxError(f"{where}: {msg}")


def is_tracer(x: Any) -> bool:
    """``x`` is a JAX tracer (an abstract value under ``jit``/``vmap``/``grad``): its values cannot be read."""
    import jax

    return isinstance(x, jax.core.Tracer)


def check_int(where: str, name: str, v: Any, low: int) -> int:
    """``v`` as a Python int >= ``low`` (bools and floats refused)."""
    if isinstance(v, bool):
        fail(where, f"{name} must be an integer >= {low}, got {v!r}")
    try:
        i = operator.index(v)
    except TypeError:
        fail(where, f"{name} must be an integer >= {low}, got {v!r}")
    if i < low:
        fail(where, f"{name} must be an integer >= {low}, got {i}")
    return i


def check_finite_theta(where: str, theta: Any, rule: Any = None, name: str = "theta") -> None:
    """Every entry of Θ is finite -- checked only when Θ is concrete (a call outside ``jit``);
    skipped for a tracer, where a non-finite Θ must produce NaN instead (``evaluate.task_accuracies``
    gives NaN accuracy, ``meta.meta_step`` skips the update). ``rule`` (optional, anything with
    ``theta_labels()``) names the bad entries."""
    if is_tracer(theta):
        return
    try:
        v = np.asarray(theta)
    except Exception:  # noqa: BLE001 - not readable as an array: the shape checks say what is wrong
        return
    if not np.issubdtype(v.dtype, np.inexact) or v.size == 0:
        return
    finite = np.isfinite(v)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.reshape(-1))
    labels: list[str] = []
    if rule is not None and hasattr(rule, "theta_labels") and v.ndim == 1:
        with_names = list(rule.theta_labels())
        if len(with_names) == v.shape[0]:
            labels = [str(with_names[i]) for i in bad]
    flat = v.reshape(-1)
    shown = ", ".join(f"{labels[j]}={flat[i]}" if labels else f"[{i}]={flat[i]}" for j, i in enumerate(bad[:4]))
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    fail(where, f"{name} must be finite, got {shown}{more}; a non-finite Θ cannot learn (it only gives NaN)")


def check_stream(where: str, W: Sequence[Any], x: Any, label: Any, stream: bool,
                 names: tuple[str, str] = ("xs", "labels")) -> None:
    """x (n_0,) and label () -- or, for a stream, xs (T, n_0) and labels (T,) -- for the network W."""
    n0, xs, ls = W[0].shape[1], tuple(x.shape), tuple(np.shape(label))
    if stream:
        if len(xs) != 2 or xs[1] != n0:
            fail(where, f"{names[0]} must have shape (N, {n0}) for a network with {n0} inputs, got {xs}")
        if ls != xs[:1]:
            fail(where, f"{names[1]} must have shape {xs[:1]} (one per row of {names[0]}), got {ls}")
    else:
        if xs != (n0,):
            fail(where, f"x must have shape ({n0},) for a network with {n0} inputs, got {xs}")
        if ls != ():
            fail(where, f"label must be a scalar, got shape {ls}")
