"""The ten plasticity terms F^0 … F^9 (SPEC §3), named rules and the fused update.

For the weights W (n_post, n_pre) of one layer: ``pre`` = y_{l-1}, ``post`` = y_l,
``e_pre`` = e_{l-1}, ``e_post`` = e_l. Each term returns an (n_post, n_pre) matrix built as a
(scaled) outer product; none forms an n×n intermediate.

**Choice (SPEC §3)**: terms 5-8 are read literally as a scalar times an outer product:
F5 = -(1ᵀpost)·e_post preᵀ, F6 = -(postᵀ W e_pre)·post e_preᵀ,
F7 = -(postᵀ W e_pre)·e_post preᵀ, F8 = -(e_postᵀ W pre)·post e_preᵀ.

The rule is data: a tuple of active term ids (static) and Θ, one coefficient per active term.
A rule may differ per layer (``layer_terms``): Θ then has one entry per term of the union of all
layers' terms, and a layer only applies its own terms (a coefficient is shared by every layer
that uses its term).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

N_TERMS = 10
#: terms that read the pre-synaptic error e_pre
NEEDS_E_PRE = frozenset({1, 2, 4, 6, 7, 8})

RULES: dict[str, tuple[int, ...]] = {
    "f0": (0,),
    "pool": tuple(range(N_TERMS)),
    "bio": (0, 2, 9),
    "ehebb": (0, 2),
    "oja": (0, 9),
}


def _outer(a: jax.Array, b: jax.Array) -> jax.Array:
    return a[:, None] * b[None, :]


def F0(W, pre, post, e_pre, e_post):  # noqa: N802 - the paper's names
    return -_outer(e_post, pre)


def F1(W, pre, post, e_pre, e_post):  # noqa: N802
    return -_outer(post, e_pre)


def F2(W, pre, post, e_pre, e_post):  # noqa: N802
    return -_outer(e_post, e_pre)


def F3(W, pre, post, e_pre, e_post):  # noqa: N802
    return -W


def F4(W, pre, post, e_pre, e_post):  # noqa: N802
    return -_outer(jnp.ones_like(post), e_pre)


def F5(W, pre, post, e_pre, e_post):  # noqa: N802
    return -jnp.sum(post) * _outer(e_post, pre)


def F6(W, pre, post, e_pre, e_post):  # noqa: N802
    return -(post @ (W @ e_pre)) * _outer(post, e_pre)


def F7(W, pre, post, e_pre, e_post):  # noqa: N802
    return -(post @ (W @ e_pre)) * _outer(e_post, pre)


def F8(W, pre, post, e_pre, e_post):  # noqa: N802
    return -(e_post @ (W @ pre)) * _outer(post, e_pre)


def F9(W, pre, post, e_pre, e_post):  # noqa: N802
    return _outer(post, pre - post @ W)


#: the pool of terms, indexed by r
TERMS: tuple[Callable[..., jax.Array], ...] = (F0, F1, F2, F3, F4, F5, F6, F7, F8, F9)


class RuleError(ValueError):
    """An unknown rule name or term id."""


def parse_terms(spec: str | Sequence[int]) -> tuple[int, ...]:
    """Term ids from a rule name (``"bio"``), a comma list (``"0,2,9"`` / ``"F0,F2"``) or ints.

    Returns a sorted tuple of distinct ids in 0..9.
    """
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in RULES:
            return RULES[s]
        ids = []
        for tok in s.split(","):
            tok = tok.strip().removeprefix("f")
            if not tok.isdigit():
                raise RuleError(
                    f"unknown rule or term id {spec!r}: use one of {', '.join(RULES)} "
                    f"or comma-separated term ids 0-{N_TERMS - 1}"
                )
            ids.append(int(tok))
    else:
        ids = [int(i) for i in spec]
    bad = [i for i in ids if not 0 <= i < N_TERMS]
    if bad or not ids:
        raise RuleError(f"unknown term id(s) {bad or spec!r}: term ids are 0-{N_TERMS - 1}")
    return tuple(sorted(set(ids)))


def union_terms(layer_terms: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The sorted union of the layers' term ids: the entries of Θ."""
    return tuple(sorted({r for terms in layer_terms for r in terms}))


def dense_update(theta: jax.Array, terms: Sequence[int], W, pre, post, e_pre, e_post) -> jax.Array:
    """Σ_r θ_r F^r evaluated term by term (reference; the training loop uses ``layer_update``).

    theta has one entry per element of ``terms``.
    """
    return sum(theta[i] * TERMS[r](W, pre, post, e_pre, e_post) for i, r in enumerate(terms))


#: terms whose update reads Wᵀ post (F6, F7 through s = postᵀ W e_pre; F9 through Oja's Wᵀ post)
NEEDS_WT_POST = frozenset({6, 7, 9})


def layer_factors(
    theta: jax.Array,
    terms: Sequence[int],
    layer_terms: Sequence[int],
    pre: jax.Array,
    post: jax.Array,
    e_pre: jax.Array | None,
    e_post: jax.Array,
    z: jax.Array,
    wt_post: jax.Array | None,
) -> tuple[jax.Array | None, tuple[tuple[jax.Array, jax.Array], ...]]:
    """The update of one layer as ``W + Σ_r θ_r F^r = keep·W + Σ_j u_j v_jᵀ``.

    Grouping the outer products by their right-hand vector,

        ΔW = a preᵀ + b e_preᵀ + c (Wᵀ post)ᵀ - θ_3 W,

    with a = -(θ0 + θ5 Σpost + θ7 s) e_post + θ9 post,
         b = -(θ1 + θ6 s + θ8 t) post - θ2 e_post - θ4 1,  c = -θ9 post,
         s = postᵀ W e_pre = (Wᵀ post)·e_pre,  t = e_postᵀ W pre = e_post·z.

    Only vectors go in and out (the matrix-vector product Wᵀ post is an argument), so the
    function is cheap to differentiate: forward-mode meta-gradients (``estimators.py``) push
    tangents through it with ``jax.jvp``.

    Args:
      theta: (len(terms),) coefficients for the union ``terms``.
      terms: the term ids Θ is indexed by (static).
      layer_terms: the ids this layer applies (static), a subset of ``terms``.
      pre: (n_pre,). post: (n_post,). e_pre: (n_pre,) or None when no active term needs it.
      e_post: (n_post,). z: (n_post,) = W pre. wt_post: (n_pre,) = Wᵀ post, or None when
      no term of ``NEEDS_WT_POST`` is active.

    Returns:
      ``keep``: () = 1 - θ_3, or None without F3; ``pairs``: up to three (u (n_post,), v (n_pre,)).
    """
    th = {r: theta[terms.index(r)] for r in layer_terms}
    zero = jnp.zeros((), theta.dtype)
    s = wt_post @ e_pre if (6 in th or 7 in th) else zero
    t = e_post @ z if 8 in th else zero

    pairs = []
    if any(r in th for r in (0, 5, 7, 9)):
        ca = -(th.get(0, zero) + th.get(5, zero) * jnp.sum(post) + th.get(7, zero) * s)
        pairs.append((ca * e_post + th.get(9, zero) * post, pre))
    if any(r in th for r in (1, 2, 4, 6, 8)):
        b = -(th.get(1, zero) + th.get(6, zero) * s + th.get(8, zero) * t) * post
        b = b - th.get(2, zero) * e_post - th.get(4, zero)
        pairs.append((b, e_pre))
    if 9 in th:
        pairs.append((-th[9] * post, wt_post))
    keep = 1.0 - th[3] if 3 in th else None
    return keep, tuple(pairs)


def apply_factors(
    W: jax.Array, keep: jax.Array | None, pairs: Sequence[tuple[jax.Array, jax.Array]]
) -> jax.Array:
    """keep·W + Σ_j u_j v_jᵀ as one elementwise expression (XLA fuses it into a single pass
    over W; a stacked (n_post, 3) @ (3, n_pre) product would cost an extra pass on CPU)."""
    new_W = W * keep if keep is not None else W
    for u, v in pairs:
        new_W = new_W + u[:, None] * v[None, :]
    return new_W


def layer_update(
    theta: jax.Array,
    terms: Sequence[int],
    layer_terms: Sequence[int],
    W: jax.Array,
    pre: jax.Array,
    post: jax.Array,
    e_pre: jax.Array | None,
    e_post: jax.Array,
    z: jax.Array,
) -> jax.Array:
    """The new weights W + Σ_{r in layer_terms} θ_r F^r, fused into one rank-≤3 update.

    See ``layer_factors`` for the grouping; one step costs O(n_post · n_pre) with a single
    extra matrix-vector product (Wᵀ post) when any of F6, F7, F9 is active.

    Args:
      theta: (len(terms),) coefficients for the union ``terms``.
      terms: the term ids Θ is indexed by (static).
      layer_terms: the ids this layer applies (static), a subset of ``terms``.
      W: (n_post, n_pre). pre: (n_pre,). post: (n_post,). e_pre: (n_pre,) or None when no
      active term needs it. e_post: (n_post,). z: (n_post,) = W pre.
    """
    wt_post = post @ W if any(r in NEEDS_WT_POST for r in layer_terms) else None  # (n_pre,)
    keep, pairs = layer_factors(theta, terms, layer_terms, pre, post, e_pre, e_post, z, wt_post)
    return apply_factors(W, keep, pairs)
