"""The episode sampler (docs/METHOD.md §4) as a pure JAX function: jit- and vmap-friendly.

M distinct classes are drawn from the allowed ones; for each, K training and Q query examples
without overlap; the M·K training examples are shuffled into one stream. Labels stay global.
"""

from __future__ import annotations

import operator
from collections import Counter
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from plastic_jax import checks
from plastic_jax.data.base import Dataset, Task


class ClassIndex(NamedTuple):
    """Device arrays for sampling.

    x: (N, D) the images; y: (N,) labels;
    index: (C, max_count) example ids per class, padded with 0; count: (C,) valid entries;
    classes: (C_allowed,) the classes tasks may be drawn from.
    """

    x: jax.Array
    y: jax.Array
    index: jax.Array
    count: jax.Array
    classes: jax.Array


def build_class_index(data: Dataset, classes=None) -> ClassIndex:
    """Group example ids by class. ``classes``: the allowed classes (default: all), distinct
    integers in 0..C-1 (C = ``data.n_classes``), at least one.

    Raises ``checks.PlasticJaxError`` for a class outside 0..C-1 (negative included), a class
    listed twice, a non-integer class or an empty list. This runs in Python before any array is
    built, so a ``ClassIndex`` used under ``jax.jit`` (where indexing would silently clamp) always
    holds valid classes.
    """
    if classes is not None:
        classes = check_classes("build_class_index", classes, data.n_classes)
    counts = data.class_counts()
    index = np.zeros((data.n_classes, max(int(counts.max()), 1)), np.int32)
    for c in range(data.n_classes):
        ids = np.flatnonzero(data.y == c)
        index[c, : len(ids)] = ids
    if classes is None:
        classes = np.arange(data.n_classes)
    return ClassIndex(
        jnp.asarray(data.x),
        jnp.asarray(data.y, jnp.int32),
        jnp.asarray(index),
        jnp.asarray(counts, jnp.int32),
        jnp.asarray(np.asarray(classes, np.int32)),
    )


def check_classes(where: str, classes, n_classes: int) -> list[int]:
    """``classes`` as a list of distinct ints in 0..n_classes-1 (at least one); one-line
    ``checks.PlasticJaxError`` otherwise."""
    valid = f"valid classes are 0..{n_classes - 1}"
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        checks.fail(where, f"classes must be a sequence of class ids ({valid}), got {classes!r}")
    if getattr(classes, "ndim", 1) != 1:
        checks.fail(where, f"classes must be a 1-D sequence of class ids ({valid}), got shape {np.shape(classes)}")
    out = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)):
            checks.fail(where, f"class ids must be integers ({valid}), got {c!r}")
        try:
            i = operator.index(c)
        except TypeError:
            checks.fail(where, f"class ids must be integers ({valid}), got {c!r}")
        if not 0 <= i < n_classes:
            checks.fail(where, f"class {i} is outside the dataset's {n_classes} classes ({valid})")
        out.append(i)
    if not out:
        checks.fail(where, f"classes is empty: list at least one class ({valid})")
    dup = sorted(i for i, n in Counter(out).items() if n > 1)
    if dup:
        checks.fail(where, f"class(es) {dup} listed more than once; list each allowed class once ({valid})")
    return out



def check_class_index(where: str, ci: object, spec: Any) -> None:
    """``ci`` (a ``ClassIndex``) can feed tasks of ``spec`` (an ``episode.EpisodeSpec``): data
    dimension sizes[0], labels below sizes[-1], at least M allowed classes, K + Q examples in each
    allowed class; one-line ``checks.PlasticJaxError`` otherwise.

    The shape checks (features, number of classes, number of allowed classes, largest class) run
    always, at trace time under ``jit``. The value checks (allowed classes in range and distinct,
    the smallest allowed class) run only when ``ci.classes`` and ``ci.count`` are concrete (a call
    outside ``jit``); under ``jit`` they are skipped. ``build_class_index`` has already checked
    the allowed classes in Python before building any array.
    """
    if not isinstance(ci, ClassIndex):
        checks.fail(where, f"ci must be a data.ClassIndex (build_class_index(dataset)), got {type(ci).__name__}")
    if len(ci.x.shape) != 2:
        checks.fail(where, f"ci.x must be 2-D (examples, features), got shape {tuple(ci.x.shape)}")
    n0, n_out = spec.sizes[0], spec.sizes[-1]
    if ci.x.shape[1] != n0:
        checks.fail(where, f"the data have {ci.x.shape[1]} features but spec.sizes[0] is {n0}")
    n_classes = ci.index.shape[0]
    if n_classes > n_out:
        checks.fail(where, f"the data have {n_classes} classes (labels 0-{n_classes - 1}) but the network has "
                           f"{n_out} outputs (spec.sizes[-1]); make the last size at least {n_classes}")
    n_allowed = ci.classes.shape[0]
    if spec.M > n_allowed:
        checks.fail(where, f"spec.M = {spec.M} is larger than the {n_allowed} classes tasks may be drawn from")
    need = spec.K + spec.Q
    if need > ci.index.shape[1]:
        checks.fail(where, f"spec.K + spec.Q = {need} is larger than the largest class "
                           f"({ci.index.shape[1]} examples)")
    if checks.is_tracer(ci.count) or checks.is_tracer(ci.classes):
        return  # under jit: the value checks below were done (or not) outside
    classes, count = np.asarray(ci.classes), np.asarray(ci.count)
    bad = sorted({int(c) for c in classes if not 0 <= c < n_classes})
    if bad:
        checks.fail(where, f"ci.classes holds class(es) {bad} outside 0-{n_classes - 1}")
    if len(np.unique(classes)) != len(classes):
        checks.fail(where, "ci.classes lists a class twice")
    smallest = int(count[classes].min())
    if need > smallest:
        c = int(classes[np.argmin(count[classes])])
        checks.fail(where, f"spec.K + spec.Q = {need} is larger than the smallest allowed class "
                           f"(class {c}: {smallest} examples)")

def sample_task(key: jax.Array, ci: ClassIndex, M: int, K: int, Q: int) -> Task:
    """Draw one task; M, K, Q are static. Deterministic for a key."""
    k_cls, k_ex, k_shuf = jax.random.split(key, 3)
    chosen = jax.random.choice(k_cls, ci.classes, (M,), replace=False)

    def pick(k, c):
        # a uniform random permutation of the class's valid examples, padding sorted last
        u = jax.random.uniform(k, (ci.index.shape[1],))
        u = jnp.where(jnp.arange(ci.index.shape[1]) < ci.count[c], u, 2.0)
        return ci.index[c, jnp.argsort(u)[: K + Q]]

    ids = jax.vmap(pick)(jax.random.split(k_ex, M), chosen)  # (M, K+Q)
    train = jax.random.permutation(k_shuf, ids[:, :K].reshape(-1))
    query = ids[:, K:].reshape(-1)
    return Task(ci.x[train], ci.y[train], ci.x[query], ci.y[query])
