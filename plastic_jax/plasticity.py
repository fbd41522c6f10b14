"""The plasticity pool as data (docs/METHOD.md §3): terms declared once, the fused update built from them.

For the weights W (n_post, n_pre) of one layer: ``pre`` = y_{l-1}, ``post`` = y_l,
``e_pre`` = e_{l-1}, ``e_post`` = e_l. A plasticity **term** F^r is declared once, in the paper's
form, as a short list of **factors** on these named vectors:

- ``Outer(u, v)``: the matrix u vᵀ, u (n_post,), v (n_pre,);
- ``Scale(c)``: c·W, c a scalar;
- ``Hadamard(a, b)``: W ⊙ (a bᵀ), a (n_post,), b (n_pre,).

A ``Term`` records its name, the vectors it reads and a function ``factors(v)`` of a per-layer
namespace ``Vectors`` (``v.pre``, ``v.post``, ``v.e_pre``, ``v.e_post``, ``v.z`` = W pre,
``v.wt_post`` = Wᵀ post, ``v.prod(...)`` for element-wise products and ``v.dot(...)`` for scalar
products). A **pool** is a tuple of
terms; a rule's term ids index into it. Everything else is derived from the declarations:

- ``fuse`` / ``layer_update``: the training loop's update. The θ_r-weighted factors of a layer's
  active terms are grouped: outer products sharing a right-hand vector (the same named vector
  object) become one pair with the left vectors summed, the scales one ``keep``, the Hadamard
  factors sharing b one pair; ``apply_fused`` evaluates ``W ⊙ (keep + Σ a bᵀ) + Σ u vᵀ`` as one
  elementwise expression (one pass over W). No n×n intermediate is ever formed.
- ``dense_update`` / ``Term.__call__``: the reference, term by term, building each matrix.
- the meta-gradient estimators (``estimators/``) differentiate ``layer_update`` itself.

**Choice (docs/METHOD.md §3): the reading of F5–F8.** The default ``"matrix"`` reading takes the printed
matrix products literally, a scalar times an outer product:
F5 = -(1ᵀpost)·e_post preᵀ, F6 = -(postᵀ W e_pre)·post e_preᵀ,
F7 = -(postᵀ W e_pre)·e_post preᵀ, F8 = -(e_postᵀ W pre)·post e_preᵀ.
The ``"elementwise"`` reading keeps every term local (ΔW_jk depends on entry j of post/e_post,
entry k of pre/e_pre and W_jk only):
F5_jk = -e_post,j post_j pre_k, F6_jk = -post_j² W_jk e_pre,k²,
F7_jk = -e_post,j post_j W_jk e_pre,k pre_k, F8_jk = -post_j e_post,j W_jk pre_k e_pre,k.
Under the element-wise reading **F7 and F8 coincide** (the same product of the same five
factors); both are kept so that term ids mean the same in either reading.

A rule may differ per layer (``layer_terms``): Θ then has one entry per term of the union of all
layers' terms, and a layer only applies its own terms (a coefficient is shared by every layer
that uses its term).

Adding a term (see docs/METHOD.md §3)::

    @term("pre_decay", reads=("pre",), formula="-W ⊙ (1 preᵀ)")
    def pre_decay(v):
        return [Hadamard(-jnp.ones_like(v.post), v.pre)]

    rule = make_rule((0, 10), pool=PAPER_POOL + (pre_decay,))
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from plastic_jax.checks import PlasticJaxError

# ----------------------------------------------------------------------------- factors


class Outer(NamedTuple):
    """The matrix u vᵀ: u (n_post,), v (n_pre,). Factors sharing the object ``v`` are fused."""

    u: jax.Array
    v: jax.Array


class Scale(NamedTuple):
    """The matrix c·W, c a scalar."""

    c: jax.Array | float


class Hadamard(NamedTuple):
    """The matrix W ⊙ (a bᵀ): a (n_post,), b (n_pre,). Factors sharing the object ``b`` are fused."""

    a: jax.Array
    b: jax.Array


Factor = Outer | Scale | Hadamard

#: the named per-layer vectors a term may read
VECTOR_NAMES = ("pre", "post", "e_pre", "e_post", "z", "wt_post")


class TermError(ValueError):
    """A malformed term, or a term that reads a vector it did not declare."""


class Vectors:
    """The per-layer namespace a term's ``factors`` reads.

    Attributes: ``pre`` (n_pre,), ``post`` (n_post,), ``e_pre`` (n_pre,) or None (the first layer
    when no active term needs it), ``e_post`` (n_post,), ``z`` (n_post,) = W pre, ``wt_post``
    (n_pre,) = Wᵀ post. ``z`` and ``wt_post`` are computed on first use (``wt_post`` costs a
    pass over W) and then cached, so every term sees the same object. ``prod(*names)`` is the
    element-wise product of named vectors, also cached (``prod("e_pre", "pre")`` and
    ``prod("pre", "e_pre")`` are the same object), so element-wise terms can share, and fuse
    on, a derived vector. ``dot(*names)`` is the scalar Σ_j Π_names v_j (one name: its sum),
    cached the same way; ``dots`` may hand in precomputed values (the adjoint's backward scan
    passes the forward scan's, so that it does not recompute the reductions).
    """

    def __init__(
        self,
        W: jax.Array,
        pre: jax.Array,
        post: jax.Array,
        e_pre: jax.Array | None,
        e_post: jax.Array,
        z: jax.Array | None = None,
        wt_post: jax.Array | None = None,
        dots: dict[tuple[str, ...], jax.Array] | None = None,
    ) -> None:
        self._W = W
        self.pre, self.post, self.e_pre, self.e_post = pre, post, e_pre, e_post
        self._z, self._wt_post = z, wt_post
        self._prods: dict[tuple[str, ...], jax.Array] = {}
        self._dots: dict[tuple[str, ...], jax.Array] = dict(dots or {})

    @property
    def z(self) -> jax.Array:
        if self._z is None:
            self._z = self._W @ self.pre
        return self._z

    @property
    def wt_post(self) -> jax.Array:
        if self._wt_post is None:
            self._wt_post = self.post @ self._W
        return self._wt_post

    def prod(self, *names: str) -> jax.Array:
        """Element-wise product of the named vectors (all n_pre or all n_post long), cached."""
        key = tuple(sorted(names))
        if key not in self._prods:
            out = getattr(self, key[0])
            for n in key[1:]:
                out = out * getattr(self, n)
            self._prods[key] = out
        return self._prods[key]

    def dot(self, *names: str) -> jax.Array:
        """The scalar Σ_j Π_names v_j (``dot("wt_post", "e_pre")`` = (Wᵀpost)·e_pre; one name:
        ``dot("post")`` = 1ᵀpost), cached by the sorted names. (); names from ``VECTOR_NAMES``."""
        key = dot_key(names)
        if key not in self._dots:
            vs = [getattr(self, n) for n in key]
            if len(vs) == 1:
                self._dots[key] = jnp.sum(vs[0])
            elif len(vs) == 2:
                self._dots[key] = vs[0] @ vs[1]
            else:
                self._dots[key] = jnp.sum(self.prod(*key))
        return self._dots[key]

    @property
    def dots(self) -> dict[tuple[str, ...], jax.Array]:
        """The scalar products computed (or handed in) so far, by key (``dot_key``)."""
        return dict(self._dots)


def dot_key(names: Sequence[str]) -> tuple[str, ...]:
    """The cache key of ``Vectors.dot(*names)``: the sorted names (checked)."""
    bad = [n for n in names if n not in VECTOR_NAMES]
    if bad or not names:
        raise TermError(f"dot() takes named vectors from {VECTOR_NAMES}, got {tuple(names)}")
    return tuple(sorted(names))


class _TermView:
    """What one term sees of a ``Vectors``: only the vectors it declares (else ``TermError``)."""

    def __init__(self, vectors: Vectors, term: Term) -> None:
        self._vectors, self._term = vectors, term

    def _check(self, name: str) -> None:
        if name in VECTOR_NAMES and name not in self._term.reads:
            raise TermError(f"term {self._term.name!r} reads {name!r} but declares "
                            f"reads={sorted(self._term.reads)}")

    def __getattr__(self, name: str):
        self._check(name)
        value = getattr(self._vectors, name)
        if value is None:
            raise TermError(f"term {self._term.name!r}: vector {name!r} is not available")
        return value

    def prod(self, *names: str) -> jax.Array:
        for n in names:
            self._check(n)
        return self._vectors.prod(*names)

    def dot(self, *names: str) -> jax.Array:
        for n in names:
            self._check(n)
        return self._vectors.dot(*names)


@dataclass(frozen=True)
class Term:
    """One plasticity term F^r, declared once.

    name: a label (``"F0"``). factors: ``factors(v) -> [Outer | Scale | Hadamard, ...]``, with
    ``v`` a ``Vectors`` restricted to ``reads``; F^r is the sum of its factors' matrices.
    reads: the named vectors it reads (``VECTOR_NAMES``; ``"e_pre"`` makes the first layer's
    teaching signal e_0 be computed). formula: the paper's formula, for humans.

    Hashable (the function by identity), so pools of terms can be jit static arguments.
    Calling a term, ``F(W, pre, post, e_pre, e_post)``, builds its dense (n_post, n_pre) matrix.
    """

    name: str
    factors: Callable[[Vectors], Sequence[Factor]]
    reads: frozenset[str]
    formula: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", frozenset(self.reads))
        bad = self.reads - set(VECTOR_NAMES)
        if bad:
            raise TermError(f"term {self.name!r} reads unknown vectors {sorted(bad)}; "
                            f"choose from {VECTOR_NAMES}")

    @property
    def needs_e_pre(self) -> bool:
        return "e_pre" in self.reads

    @property
    def needs_wt_post(self) -> bool:
        return "wt_post" in self.reads

    def factors_of(self, v: Vectors) -> tuple[Factor, ...]:
        """The factors of this term on the layer vectors ``v`` (checked against ``reads``)."""
        out = tuple(self.factors(_TermView(v, self)))
        for f in out:
            if not isinstance(f, (Outer, Scale, Hadamard)):
                raise TermError(f"term {self.name!r} returned {type(f).__name__}; "
                                "factors must be Outer, Scale or Hadamard")
        return out

    def __call__(self, W: jax.Array, pre: jax.Array, post: jax.Array, e_pre: jax.Array | None,
                 e_post: jax.Array) -> jax.Array:
        """The dense (n_post, n_pre) matrix F^r, factor by factor (reference)."""
        return sum_dense(W, self.factors_of(Vectors(W, pre, post, e_pre, e_post)))


def term(name: str, reads: Sequence[str], formula: str = "") -> Callable[[Callable], Term]:
    """Decorator: ``@term("F0", reads=("e_post", "pre"))`` turns ``factors(v)`` into a ``Term``."""

    def wrap(factors: Callable[[Vectors], Sequence[Factor]]) -> Term:
        return Term(name, factors, frozenset(reads), formula or (factors.__doc__ or "").strip())

    return wrap


def dense_factor(W: jax.Array, f: Factor) -> jax.Array:
    """The (n_post, n_pre) matrix of one factor."""
    if isinstance(f, Outer):
        return f.u[:, None] * f.v[None, :]
    if isinstance(f, Scale):
        return f.c * W
    return W * (f.a[:, None] * f.b[None, :])


def sum_dense(W: jax.Array, factors: Sequence[Factor]) -> jax.Array:
    """Σ of the factors' dense matrices: (n_post, n_pre)."""
    out = jnp.zeros_like(W)
    for f in factors:
        out = out + dense_factor(W, f)
    return out


# ----------------------------------------------------------------------------- the paper's pool
# Each term in the paper's form (docs/METHOD.md §3); s = postᵀ W e_pre = (Wᵀ post)·e_pre, t = e_postᵀ W pre.


@term("F0", reads=("e_post", "pre"), formula="-e_post preᵀ")
def F0(v):  # noqa: N802 - the paper's names
    return [Outer(-v.e_post, v.pre)]


@term("F1", reads=("post", "e_pre"), formula="-post e_preᵀ")
def F1(v):  # noqa: N802
    return [Outer(-v.post, v.e_pre)]


@term("F2", reads=("e_post", "e_pre"), formula="-e_post e_preᵀ")
def F2(v):  # noqa: N802
    return [Outer(-v.e_post, v.e_pre)]


@term("F3", reads=(), formula="-W")
def F3(v):  # noqa: N802
    return [Scale(-1.0)]


@term("F4", reads=("post", "e_pre"), formula="-1 e_preᵀ")
def F4(v):  # noqa: N802
    return [Outer(-jnp.ones_like(v.post), v.e_pre)]


@term("F5", reads=("e_post", "post", "pre"), formula="-e_post 1ᵀ post preᵀ = -(1ᵀpost)·e_post preᵀ")
def F5(v):  # noqa: N802
    return [Outer(-v.dot("post") * v.e_post, v.pre)]


@term("F6", reads=("post", "e_pre", "wt_post"), formula="-post postᵀ W e_pre e_preᵀ = -(postᵀ W e_pre)·post e_preᵀ")
def F6(v):  # noqa: N802
    return [Outer(-v.dot("wt_post", "e_pre") * v.post, v.e_pre)]


@term("F7", reads=("e_post", "post", "e_pre", "pre", "wt_post"),
      formula="-e_post postᵀ W e_pre preᵀ = -(postᵀ W e_pre)·e_post preᵀ")
def F7(v):  # noqa: N802
    return [Outer(-v.dot("wt_post", "e_pre") * v.e_post, v.pre)]


@term("F8", reads=("post", "pre", "e_post", "e_pre", "z"),
      formula="-post preᵀ Wᵀ e_post e_preᵀ = -(e_postᵀ W pre)·post e_preᵀ")
def F8(v):  # noqa: N802
    return [Outer(-v.dot("e_post", "z") * v.post, v.e_pre)]


@term("F9", reads=("post", "pre", "wt_post"), formula="post preᵀ - post postᵀ W = post (pre - Wᵀ post)ᵀ (Oja)")
def F9(v):  # noqa: N802
    return [Outer(v.post, v.pre), Outer(-v.post, v.wt_post)]


# the element-wise reading of F5–F8 (local: entry jk reads only j-th and k-th entries and W_jk)


@term("F5", reads=("e_post", "post", "pre"), formula="F5_jk = -e_post,j post_j pre_k")
def F5_elementwise(v):  # noqa: N802
    return [Outer(-v.prod("e_post", "post"), v.pre)]


@term("F6", reads=("post", "e_pre"), formula="F6_jk = -post_j² W_jk e_pre,k²")
def F6_elementwise(v):  # noqa: N802
    return [Hadamard(-v.prod("post", "post"), v.prod("e_pre", "e_pre"))]


@term("F7", reads=("e_post", "post", "e_pre", "pre"), formula="F7_jk = -e_post,j post_j W_jk e_pre,k pre_k")
def F7_elementwise(v):  # noqa: N802
    return [Hadamard(-v.prod("e_post", "post"), v.prod("e_pre", "pre"))]


# element-wise, F8 is the same matrix as F7 (kept so that ids mean the same in both readings);
# it reads the same cached products, so the fused update merges the two into one pair
@term("F8", reads=("post", "e_post", "pre", "e_pre"), formula="F8_jk = -post_j e_post,j W_jk pre_k e_pre,k (= F7)")
def F8_elementwise(v):  # noqa: N802
    return [Hadamard(-v.prod("post", "e_post"), v.prod("pre", "e_pre"))]


Pool = tuple[Term, ...]

#: the paper's ten terms, F5–F8 in the matrix reading (the default)
PAPER_POOL: Pool = (F0, F1, F2, F3, F4, F5, F6, F7, F8, F9)
#: the paper's ten terms, F5–F8 in the element-wise reading
ELEMENTWISE_POOL: Pool = (F0, F1, F2, F3, F4, F5_elementwise, F6_elementwise, F7_elementwise,
                          F8_elementwise, F9)
#: the reading name -> the paper's pool in that reading
PAPER_POOLS: dict[str, Pool] = {"matrix": PAPER_POOL, "elementwise": ELEMENTWISE_POOL}
#: the pool of terms of the matrix reading, indexed by r (each callable: the dense matrix)
TERMS = PAPER_POOL

N_TERMS = len(PAPER_POOL)
#: terms of the paper's pool that read the pre-synaptic error e_pre (the same in both readings)
NEEDS_E_PRE = frozenset(r for r, t in enumerate(PAPER_POOL) if t.needs_e_pre)
#: terms of the paper's pool (matrix reading) whose update reads Wᵀ post (F6, F7, F9)
NEEDS_WT_POST = frozenset(r for r, t in enumerate(PAPER_POOL) if t.needs_wt_post)

RULES: dict[str, tuple[int, ...]] = {
    "f0": (0,),
    "pool": tuple(range(N_TERMS)),
    "bio": (0, 2, 9),
    "ehebb": (0, 2),
    "oja": (0, 9),
}


def with_reading(pool: Sequence[Term], reading: str) -> Pool:
    """``pool`` with the paper's F5–F8 in the given reading (``"matrix"`` or ``"elementwise"``).

    Wherever a term of the paper's pool in either reading sits, it is replaced by the same term in
    ``reading``; every other term (a user's) is kept. So ``PAPER_POOL + (my_term,)`` follows the
    rule's ``f5_f8`` setting like the paper's pool does.
    """
    if reading not in PAPER_POOLS:
        raise ValueError(f"unknown F5-F8 reading {reading!r}; choose one of {tuple(PAPER_POOLS)}")
    target = PAPER_POOLS[reading]
    swap = {}
    for other in PAPER_POOLS.values():
        swap.update({a: b for a, b in zip(other, target)})
    return tuple(swap.get(t, t) for t in pool)


class RuleError(PlasticJaxError):
    """An unknown rule or term id (a ``PlasticJaxError``, hence a ``ValueError``)."""


def parse_terms(spec: str | Sequence[int], n_pool: int = N_TERMS, *, where: str | None = None,
                empty_ok: bool = False) -> tuple[int, ...]:
    """Term ids from a rule name (``"bio"``: ``RULES``), a comma list (``"0,2,9"`` / ``"F0,F2"``) or
    a sequence of ints: a sorted tuple of distinct ids in 0..n_pool-1 (default: the paper's ten).

    A string is never read as a sequence of characters, and a bool, float or string in a sequence
    is not an id. Raises ``RuleError`` (one line) otherwise, and for an empty sequence unless
    ``empty_ok`` (a layer of ``make_rule(layer_terms=...)`` may have no terms). ``where`` (the
    public function parsing, e.g. ``"make_rule"``) prefixes the message as every
    ``PlasticJaxError`` is, and words it for a function's argument rather than a setting.
    """
    last = n_pool - 1

    def bad(config_msg: str, api_msg: str) -> NoReturn:
        raise RuleError(config_msg if where is None else f"{where}: {api_msg}")

    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in RULES:
            return RULES[s]
        tokens = [t.strip().removeprefix("f") for t in s.split(",")]
        if not all(t.isdigit() for t in tokens):
            bad(f"unknown rule or term id {spec!r}: use one of {', '.join(RULES)} "
                f"or comma-separated term ids 0-{last}",
                f"unknown rule {spec!r}: use a named rule ({', '.join(RULES)}) or term ids such as "
                f"'0,2,9' or (0, 2, 9), ids 0-{last}")
        ids = [int(t) for t in tokens]
    else:
        try:
            items = list(spec)
        except TypeError:
            bad(f"unknown rule or term id {spec!r}: give a rule name or a sequence of term ids 0-{last}",
                f"terms must be a rule name or a sequence of term ids, got {spec!r}")
        ids = []
        for t in items:
            i = _term_id(t)
            if i is None:
                bad(f"unknown term id {t!r} in {spec!r}: term ids are 0-{last}",
                    f"term ids must be integers 0-{last}, got {t!r} in {spec!r}")
            ids.append(i)
    out_of_pool = sorted({i for i in ids if not 0 <= i < n_pool})
    if out_of_pool or not (ids or empty_ok):
        bad(f"unknown term id(s) {out_of_pool or spec!r}: term ids are 0-{last}",
            f"term id(s) {out_of_pool} outside the pool of {n_pool} terms (ids 0-{last})" if out_of_pool
            else f"no term ids in {spec!r}")
    return tuple(sorted(set(ids)))


def _term_id(t: object) -> int | None:
    """``t`` as a term id (an int, a NumPy integer, ...), or None for anything else (a bool, a
    float, a string)."""
    if isinstance(t, bool):
        return None
    try:
        return operator.index(t)
    except TypeError:
        return None


def union_terms(layer_terms: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The sorted union of the layers' term ids: the entries of Θ."""
    return tuple(sorted({r for terms in layer_terms for r in terms}))


# ----------------------------------------------------------------------------- the update


def dense_update(
    theta: jax.Array,
    terms: Sequence[int],
    W: jax.Array,
    pre: jax.Array,
    post: jax.Array,
    e_pre: jax.Array | None,
    e_post: jax.Array,
    *,
    pool: Sequence[Term] = PAPER_POOL,
) -> jax.Array:
    """Σ_r θ_r F^r evaluated term by term, each F^r a dense (n_post, n_pre) matrix (reference;
    the training loop uses ``layer_update``). theta has one entry per element of ``terms``."""
    return sum(theta[i] * pool[r](W, pre, post, e_pre, e_post) for i, r in enumerate(terms))


class Fused(NamedTuple):
    """A layer's update fused: new W = W ⊙ (keep + Σ a bᵀ) + Σ u vᵀ.

    keep: () or None (= 1). outer: pairs (u (n_post,), v (n_pre,)), one per distinct right-hand
    vector. hadamard: pairs (a (n_post,), b (n_pre,)), one per distinct b.
    """

    keep: jax.Array | None
    outer: tuple[tuple[jax.Array, jax.Array], ...]
    hadamard: tuple[tuple[jax.Array, jax.Array], ...]


def fuse(
    theta: jax.Array,
    terms: Sequence[int],
    layer_terms: Sequence[int],
    v: Vectors,
    pool: Sequence[Term] = PAPER_POOL,
) -> Fused:
    """Collect the θ_r-weighted factors of the layer's terms and group them.

    Outer factors with the same right-hand vector object (``v.pre``, ``v.e_pre``, ``v.wt_post``,
    a cached ``v.prod``) become one pair with their left vectors summed; every Scale adds to one
    ``keep``; Hadamard factors with the same b become one pair. For the paper's pool (matrix
    reading) that is ΔW = a preᵀ + b e_preᵀ + c (Wᵀ post)ᵀ - θ_3 W: rank ≤ 3.

    Args:
      theta: (len(terms),) coefficients for the union ``terms``.
      terms: the term ids Θ is indexed by (static).
      layer_terms: the ids this layer applies (static), a subset of ``terms``.
      v: the layer's vectors. pool: the terms the ids index into (static).
    """
    keep = None
    outer: dict[int, list] = {}  # id(v) -> [Σ θ u, v]
    had: dict[int, list] = {}  # id(b) -> [Σ θ a, b]
    for r in layer_terms:
        th = theta[terms.index(r)]
        for f in pool[r].factors_of(v):
            if isinstance(f, Scale):
                keep = (1.0 if keep is None else keep) + th * f.c
            else:
                left, right = f
                groups = outer if isinstance(f, Outer) else had
                g = groups.get(id(right))
                if g is None:
                    groups[id(right)] = [th * left, right]
                else:
                    g[0] = g[0] + th * left
    return Fused(keep, tuple(map(tuple, outer.values())), tuple(map(tuple, had.values())))


def apply_fused(W: jax.Array, fused: Fused) -> jax.Array:
    """W ⊙ (keep + Σ a bᵀ) + Σ u vᵀ as one elementwise expression: XLA fuses it into a single
    pass over W (a stacked (n_post, k) @ (k, n_pre) product would cost an extra pass on CPU)."""
    keep, outer, had = fused
    if had:
        scale = 1.0 if keep is None else keep
        for a, b in had:
            scale = scale + a[:, None] * b[None, :]
        new_W = W * scale
    else:
        new_W = W if keep is None else W * keep
    for u, v in outer:
        new_W = new_W + u[:, None] * v[None, :]
    return new_W


def constant_outputs(f: Callable, *args) -> list[bool]:
    """For each output leaf of ``f(*args)``: True when it does not depend on ``args`` (its
    tangent and cotangent are zero). Read off the traced program, so the test is exact, not
    numerical. The meta-gradient estimators ask it which of a ``fuse``'s factors depend on Θ or
    the step's vectors (forward mode: ``estimators.forward``; the adjoint: ``adjoint.py``)."""
    closed = jax.make_jaxpr(f)(*args)
    dep = set(closed.jaxpr.invars)
    for eqn in closed.jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in dep for v in eqn.invars):
            dep.update(eqn.outvars)
    return [isinstance(v, Literal) or v not in dep for v in closed.jaxpr.outvars]


def layer_update(
    theta: jax.Array,
    terms: Sequence[int],
    layer_terms: Sequence[int],
    W: jax.Array,
    pre: jax.Array,
    post: jax.Array,
    e_pre: jax.Array | None,
    e_post: jax.Array,
    z: jax.Array | None = None,
    *,
    pool: Sequence[Term] = PAPER_POOL,
) -> jax.Array:
    """The new weights W + Σ_{r in layer_terms} θ_r F^r, fused (``fuse``, ``apply_fused``).

    One step costs O(n_post · n_pre): one pass over W, plus one matrix-vector product (Wᵀ post)
    when an active term reads ``wt_post``.

    Args:
      theta: (len(terms),) coefficients for the union ``terms``.
      terms: the term ids Θ is indexed by (static).
      layer_terms: the ids this layer applies (static), a subset of ``terms``.
      W: (n_post, n_pre). pre: (n_pre,). post: (n_post,). e_pre: (n_pre,) or None when no
      active term needs it. e_post: (n_post,). z: (n_post,) = W pre, or None (computed if read).
      pool: the terms the ids index into (static; default the paper's, matrix reading).

    Returns:
      (n_post, n_pre).
    """
    v = Vectors(W, pre, post, e_pre, e_post, z)
    return apply_fused(W, fuse(theta, terms, layer_terms, v, pool))
