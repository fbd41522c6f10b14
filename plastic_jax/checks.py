"""Argument checks for the public entry points, in one place.

Every public function of the core (``make_rule``, ``initial_theta``, ``online_step``, ``adapt``,
``episode.run`` / ``task_loss`` / ``batch_loss``, the meta-gradient estimators, ``meta_init``,
``meta_step``, ``evaluate.task_accuracies``) calls one of these first and raises
``PlasticJaxError`` (a ``ValueError``) with a one-line message when its arguments cannot work
together: a Θ of the wrong length, a rule with more or fewer layers than the network, layer
sizes that do not match the data, a task larger than the data allow.

The checks read **static shapes** and Python values only, so they run at trace time under
``jax.jit`` / ``jax.vmap`` and cost nothing inside a compiled program. The few checks that need
the values of a ``ClassIndex`` (the smallest allowed class, the allowed class ids) run only when
those arrays are concrete (a call outside ``jit``); under ``jit`` they are skipped, and the
shape checks (largest class, number of allowed classes) still run.

**Values.** The same holds for Θ's values: ``check_theta`` (hence every entry point above) refuses
a non-finite Θ (NaN, ±inf) when Θ is concrete (``check_finite_theta``; ``meta_init`` calls it
directly); under ``jit`` / ``vmap`` / ``grad`` Θ is a tracer and the check is skipped, since reading
its values would cost a device round trip or be impossible. There a non-finite Θ must produce NaN,
never a plausible number: ``evaluate.task_accuracies`` gives NaN accuracy for such a Θ (and for any
task whose adapted network's outputs are non-finite), and a ``meta_step`` skips the update. The
allowed classes of ``data.build_class_index`` are checked in Python before any array is built.
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


def _is_tracer(x: Any) -> bool:
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


# ----------------------------------------------------------------------------- rules


def term_ids(where: str, spec: Any, n_pool: int) -> tuple[int, ...]:
    """Term ids from a rule name (``"bio"``), a comma list (``"0,2,9"``, ``"F0,F2"``) or a
    sequence of ints, each in 0..n_pool-1. A string is never read as a sequence of characters."""
    from plastic_jax.plasticity import RULES

    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in RULES:
            return RULES[s]
        tokens = [t.strip().removeprefix("f") for t in s.split(",")]
        if not all(t.isdigit() for t in tokens):
            fail(where, f"unknown rule {spec!r}: use a named rule ({', '.join(RULES)}) or term ids such as "
                         f"'0,2,9' or (0, 2, 9), ids 0-{n_pool - 1}")
        ids = [int(t) for t in tokens]
    else:
        try:
            items = list(spec)
        except TypeError:
            fail(where, f"terms must be a rule name or a sequence of term ids, got {spec!r}")
        ids = []
        for t in items:
            if isinstance(t, bool) or isinstance(t, str):
                fail(where, f"term ids must be integers 0-{n_pool - 1}, got {t!r} in {spec!r}")
            try:
                ids.append(operator.index(t))
            except TypeError:
                fail(where, f"term ids must be integers 0-{n_pool - 1}, got {t!r} in {spec!r}")
    bad = sorted({i for i in ids if not 0 <= i < n_pool})
    if bad:
        fail(where, f"term id(s) {bad} outside the pool of {n_pool} terms (ids 0-{n_pool - 1})")
    return tuple(sorted(set(ids)))


def check_rule(where: str, rule: Any) -> None:
    """``rule`` is an ``inner.Rule`` (as ``make_rule`` builds) with at least one term."""
    from plastic_jax.inner import Rule

    if not isinstance(rule, Rule):
        fail(where, f"rule must be an inner.Rule (build it with make_rule), got {type(rule).__name__}")
    if not rule.layer_terms:
        fail(where, "the rule has no layers")
    if not rule.terms:
        fail(where, "the rule has no terms")


def theta_shape(rule: Any) -> tuple[int, ...]:
    """The shape Θ must have for ``rule``: (``rule.n_theta``,), one entry per term (per layer
    with ``per_layer``)."""
    return (int(getattr(rule, "n_theta", len(rule.terms))),)


def check_theta(where: str, theta: Any, rule: Any) -> None:
    """Θ is a floating array shaped for ``rule`` (one entry per term of ``rule.terms``)."""
    check_rule(where, rule)
    shape, dtype = getattr(theta, "shape", None), getattr(theta, "dtype", None)
    if shape is None or dtype is None:
        fail(where, f"theta must be a JAX or NumPy array, got {type(theta).__name__} "
                     "(use initial_theta(rule) or jnp.asarray)")
    import jax.numpy as jnp

    if not jnp.issubdtype(dtype, jnp.floating):
        fail(where, f"theta must be a floating-point array, got dtype {dtype}")
    want = theta_shape(rule)
    if tuple(shape) != want:
        names = ", ".join(rule.theta_labels() if hasattr(rule, "theta_labels") else (f"F{r}" for r in rule.terms))
        fail(where, f"theta has shape {tuple(shape)} but the rule needs shape {want} (entries {names})")
    check_finite_theta(where, theta, rule)


def check_finite_theta(where: str, theta: Any, rule: Any = None, name: str = "theta") -> None:
    """Every entry of Θ is finite -- checked only when Θ is concrete (a call outside ``jit``);
    skipped for a tracer, where a non-finite Θ must produce NaN instead (module docstring).
    ``rule`` (optional) names the bad entries (``Rule.theta_labels``)."""
    if _is_tracer(theta):
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


# ----------------------------------------------------------------------------- episodes


def check_spec(where: str, spec: Any, rule: Any = None) -> None:
    """``spec`` is an ``EpisodeSpec`` with positive sizes; its network has ``rule``'s layers."""
    from plastic_jax.episode import EpisodeSpec

    if not isinstance(spec, EpisodeSpec):
        fail(where, f"spec must be an episode.EpisodeSpec, got {type(spec).__name__}")
    sizes = spec.sizes
    if not isinstance(sizes, tuple) or len(sizes) < 2:
        fail(where, f"spec.sizes must be a tuple (n_0, ..., n_L) of at least two layer sizes, got {sizes!r}")
    for n in sizes:
        check_int(where, "every layer size in spec.sizes", n, 1)
    for name in ("M", "K", "Q", "meta_batch"):
        check_int(where, f"spec.{name}", getattr(spec, name), 1)
    if rule is not None and rule.n_layers != len(sizes) - 1:
        fail(where, f"the rule has {rule.n_layers} layer(s) but spec.sizes {sizes} makes a network "
                     f"of {len(sizes) - 1} weight layer(s); build the rule with n_layers={len(sizes) - 1}")


def check_class_index(where: str, ci: Any, spec: Any) -> None:
    """``ci`` (a ``ClassIndex``) can feed tasks of ``spec``: data dimension sizes[0], labels
    below sizes[-1], at least M allowed classes, K + Q examples in each allowed class."""
    from plastic_jax.data.sampler import ClassIndex

    if not isinstance(ci, ClassIndex):
        fail(where, f"ci must be a data.ClassIndex (build_class_index(dataset)), got {type(ci).__name__}")
    if len(ci.x.shape) != 2:
        fail(where, f"ci.x must be 2-D (examples, features), got shape {tuple(ci.x.shape)}")
    n0, n_out = spec.sizes[0], spec.sizes[-1]
    if ci.x.shape[1] != n0:
        fail(where, f"the data have {ci.x.shape[1]} features but spec.sizes[0] is {n0}")
    n_classes = ci.index.shape[0]
    if n_classes > n_out:
        fail(where, f"the data have {n_classes} classes (labels 0-{n_classes - 1}) but the network has "
                     f"{n_out} outputs (spec.sizes[-1]); make the last size at least {n_classes}")
    n_allowed = ci.classes.shape[0]
    if spec.M > n_allowed:
        fail(where, f"spec.M = {spec.M} is larger than the {n_allowed} classes tasks may be drawn from")
    need = spec.K + spec.Q
    if need > ci.index.shape[1]:
        fail(where, f"spec.K + spec.Q = {need} is larger than the largest class ({ci.index.shape[1]} examples)")
    if _is_tracer(ci.count) or _is_tracer(ci.classes):
        return  # under jit: the value checks below were done (or not) outside
    classes, count = np.asarray(ci.classes), np.asarray(ci.count)
    bad = sorted({int(c) for c in classes if not 0 <= c < n_classes})
    if bad:
        fail(where, f"ci.classes holds class(es) {bad} outside 0-{n_classes - 1}")
    if len(np.unique(classes)) != len(classes):
        fail(where, "ci.classes lists a class twice")
    smallest = int(count[classes].min())
    if need > smallest:
        c = int(classes[np.argmin(count[classes])])
        fail(where, f"spec.K + spec.Q = {need} is larger than the smallest allowed class "
                     f"(class {c}: {smallest} examples)")


def check_episode(where: str, theta: Any, rule: Any, spec: Any, ci: Any) -> None:
    """Everything an episode needs: Θ for the rule, the rule for the network, the data for both."""
    check_theta(where, theta, rule)
    check_spec(where, spec, rule)
    check_class_index(where, ci, spec)


# ----------------------------------------------------------------------------- the inner loop


def check_weights(where: str, rule: Any, W: Sequence[Any], B: Sequence[Any] | None = None) -> None:
    """W (and B) are one (n_l, n_{l-1}) matrix per layer of ``rule``, chained."""
    if not isinstance(W, (tuple, list)):
        fail(where, f"W must be a tuple of weight matrices, got {type(W).__name__}")
    if len(W) != rule.n_layers:
        fail(where, f"the rule has {rule.n_layers} layer(s) but W has {len(W)} weight matrices")
    shapes = [tuple(w.shape) for w in W]
    if any(len(s) != 2 for s in shapes) or any(a[0] != b[1] for a, b in zip(shapes, shapes[1:])):
        fail(where, f"W must be chained (n_l, n_(l-1)) matrices, got shapes {shapes}")
    if B is not None:
        from plastic_jax.feedback import DIRECT_MODES, feedback_shapes

        feedback = getattr(rule, "feedback", "fa")
        sizes = [shapes[0][1]] + [s[0] for s in shapes]
        want = feedback_shapes(feedback, sizes)
        if not isinstance(B, (tuple, list)) or [tuple(b.shape) for b in B] != want:
            got = [tuple(b.shape) for b in B] if isinstance(B, (tuple, list)) else type(B).__name__
            what = (f"W's shapes then the direct matrices (feedback {feedback!r}: draw them with "
                    "episode.draw or feedback.init_direct)" if feedback in DIRECT_MODES else "W's shapes")
            fail(where, f"B must match {what} {want}, got {got}")


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


# ----------------------------------------------------------------------------- meta-training


def check_meta_step(where: str, state: Any, rule: Any, spec: Any, ci: Any, optimizer: Any, l1: Any,
                    estimator: Any) -> None:
    """The arguments of ``meta.meta_step``."""
    from plastic_jax.meta import MetaState

    if not isinstance(state, MetaState):
        fail(where, f"state must be a meta.MetaState (meta_init(theta, optimizer)), got {type(state).__name__}")
    check_episode(where, state.theta, rule, spec, ci)
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        fail(where, f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if not callable(estimator):
        fail(where, f"estimator must be a meta-gradient function (e.g. estimators.ESTIMATORS['auto']), "
                     f"got {estimator!r}")
    if isinstance(l1, (int, float)) and not (l1 >= 0):
        fail(where, f"l1 must be >= 0, got {l1}")
