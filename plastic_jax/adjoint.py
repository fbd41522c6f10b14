"""The adjoint meta-gradient: reverse mode without weight snapshots (issue 15).

Every online step changes a layer's weights by a fused update (``plasticity.Fused``)::

    W_{t+1} = W_t ⊙ S_t + Σ u vᵀ,     S_t = keep + Σ a bᵀ,

whose factors (keep, the u, v, a, b vectors) are O(n_post + n_pre) per layer. So the trajectory
W_0 … W_T is determined by W_T and the per-step vectors: W_t = (W_{t+1} − Σ u vᵀ) / S_t rebuilds
it backwards, exactly up to rounding, without storing a weight-sized snapshot per step.

``adapt_adjoint`` is ``inner.adapt`` under a ``jax.custom_vjp``:

- forward: one scan of the online step that also stacks, per step, a few vectors (the residuals)
  and returns W_T. Nothing weight-sized is stacked over T.
- backward: a reverse scan t = T−1 … 0 that carries (W_{t+1}, its cotangent G_{t+1}, dL/dΘ so
  far), rebuilds W_t from W_{t+1} and applies the step's vector–Jacobian product.

Two backward steps compute the same numbers:

- ``"generic"``: the stored residuals are the fused factors; the step's VJP is ``jax.vjp`` of
  ``inner.online_step`` at the rebuilt W_t (which recomputes the step's forward pass). Works for
  any rule; it is the reference for the fast step.
- ``"fast"`` (the default): ... (see ``_fast_bwd_step``).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from plastic_jax.feedback import feedback_matrices, teaching_signals
from plastic_jax.inner import Rule, online_step
from plastic_jax.network import BETA, Weights, forward, softplus_grad_from_y
from plastic_jax.plasticity import Fused, Vectors, apply_fused, fuse

# ----------------------------------------------------------------------------- fused factors


def unapply_fused(W_new: jax.Array, fused: Fused) -> jax.Array:
    """The inverse of ``plasticity.apply_fused``: W = (W_new − Σ u vᵀ) / (keep + Σ a bᵀ),
    one elementwise pass. Exact up to rounding where keep + Σ a bᵀ is far from 0."""
    keep, outer, had = fused
    W = W_new
    for u, v in outer:
        W = W - u[:, None] * v[None, :]
    if had:
        S = 1.0 if keep is None else keep
        for a, b in had:
            S = S + a[:, None] * b[None, :]
        W = W / S
    elif keep is not None:
        W = W / keep
    return W


def step_with_factors(theta, rule: Rule, W: Weights, B: Weights, x, label) -> tuple[Weights, tuple[Fused, ...]]:
    """``inner.online_step`` that also returns each layer's ``Fused`` factors (vectors only)."""
    act = forward(W, x)
    pool = rule.term_pool
    need_e0 = any(pool[r].needs_e_pre for r in rule.layer_terms[0])
    es = teaching_signals(act, label, feedback_matrices(rule.feedback, W, B, rule.bp_grad), need_e0=need_e0)
    new_W, factors = [], []
    for i in range(len(W)):
        v = Vectors(W[i], act.ys[i], act.ys[i + 1], es[i], es[i + 1], act.zs[i])
        f = fuse(rule.layer_theta(theta, i), rule.terms, rule.layer_terms[i], v, pool)
        factors.append(f)
        new_W.append(apply_fused(W[i], f))
    return tuple(new_W), tuple(factors)


# ----------------------------------------------------------------------------- the custom VJP


def _zeros_if_symbolic(ct, like):
    if isinstance(ct, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros(like.shape, like.dtype)
    return ct


def _generic_forward(theta, rule: Rule, W: Weights, B: Weights, xs, labels):
    def body(W, xy):
        new_W, factors = step_with_factors(theta, rule, W, B, *xy)
        return new_W, factors

    return jax.lax.scan(body, W, (xs, labels))


def _generic_backward(theta, rule: Rule, W_T: Weights, B: Weights, xs, labels, factors, G_T: Weights,
                      want_B: bool):
    """Reverse scan: rebuild W_t, ``jax.vjp`` of ``online_step`` w.r.t. (Θ, W_t[, B])."""

    def body(carry, inp):
        W_next, G, th_bar, B_bar = carry
        fused_t, x, y = inp
        W_t = tuple(unapply_fused(w, f) for w, f in zip(W_next, fused_t))
        if want_B:
            _, vjp = jax.vjp(lambda th, W_, B_: online_step(th, rule, W_, B_, x, y), theta, W_t, B)
            th_g, G_t, B_g = vjp(G)
            B_bar = tuple(a + b for a, b in zip(B_bar, B_g))
        else:
            _, vjp = jax.vjp(lambda th, W_: online_step(th, rule, W_, B, x, y), theta, W_t)
            th_g, G_t = vjp(G)
        return (W_t, G_t, th_bar + th_g, B_bar), None

    B_bar0 = tuple(jnp.zeros_like(b) for b in B) if want_B else ()
    (W_0, G_0, th_bar, B_bar), _ = jax.lax.scan(
        body, (W_T, G_T, jnp.zeros_like(theta), B_bar0), (factors, xs, labels), reverse=True)
    return W_0, G_0, th_bar, B_bar


#: the rebuilt W_0 must match the true W_0 to this relative error (max |ΔW| / max |W|, over the
#: layers), else the task's meta-gradient is NaN (see ``adapt_adjoint``)
DRIFT_TOL = 1e-2
BACKWARDS = ("fast", "generic")


class AdjointRebuildWarning(RuntimeWarning):
    """The backward rebuild of W_t drifted (keep + a bᵀ near 0): the meta-gradient was set to NaN."""


def _report_drift(bad, drift):
    bad, drift = np.asarray(bad), np.asarray(drift)
    if np.any(bad):
        warnings.warn(
            f"adjoint meta-gradient: the weights rebuilt backwards drifted from the true W_0 by "
            f"{float(np.max(drift)):.2g} (relative; tolerance {DRIFT_TOL:g}): the update's factor "
            "keep + Σ a bᵀ came near 0, so W_t cannot be recovered from W_(t+1); this task's "
            "meta-gradient is NaN (meta_step skips the update). Use --meta-grad reverse-remat for "
            "this rule.", AdjointRebuildWarning, stacklevel=2)


def rebuild_drift(W_0: Weights, W_0_rebuilt: Weights) -> jax.Array:
    """max over layers of max |rebuilt − true| / max |true|: () ."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(r - w)) / jnp.max(jnp.abs(w))
                              for w, r in zip(W_0, W_0_rebuilt)]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 6))
def _adapt_adjoint(theta, rule: Rule, W: Weights, B: Weights, xs, labels, backward: str) -> Weights:
    def body(W, xy):
        return online_step(theta, rule, W, B, *xy), None

    return jax.lax.scan(body, W, (xs, labels))[0]


def _is_primal(p) -> bool:
    return isinstance(p, jax.custom_derivatives.CustomVJPPrimal)


def _value(tree):
    return jax.tree.map(lambda p: p.value, tree, is_leaf=_is_primal)


def _perturbed(tree) -> bool:
    return any(p.perturbed for p in jax.tree.leaves(tree, is_leaf=_is_primal))


def _fwd(theta, rule, W, B, xs, labels, backward):
    if _perturbed(xs):
        raise NotImplementedError("adapt_adjoint differentiates w.r.t. theta, W and B, not the stream xs")
    want_B = _perturbed(B)
    theta, W, B, xs, labels = map(_value, (theta, W, B, xs, labels))
    if backward == "generic":
        W_T, stack = _generic_forward(theta, rule, W, B, xs, labels)
    else:
        W_T, stack = _fast_forward(theta, rule, W, B, xs, labels)
    return W_T, (theta, W, W_T, B, xs, labels, stack, want_B)


def _bwd(rule, backward, res, G_T):
    theta, W_0, W_T, B, xs, labels, stack, want_B = res
    G_T = tuple(_zeros_if_symbolic(g, w) for g, w in zip(G_T, W_T))
    if backward == "generic":
        W_0r, G_0, th_bar, B_bar = _generic_backward(theta, rule, W_T, B, xs, labels, stack, G_T, want_B)
    else:
        W_0r, G_0, th_bar, B_bar = _fast_backward(theta, rule, W_T, B, xs, labels, stack, G_T, want_B)
    drift = rebuild_drift(W_0, W_0r)
    bad = ~(drift <= DRIFT_TOL)
    # a non-finite W_T (a diverged episode: its loss is not finite either) is no rebuild failure
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in W_T]))
    jax.debug.callback(_report_drift, bad & finite, drift)
    nan = jnp.asarray(jnp.nan, th_bar.dtype)
    th_bar = jnp.where(bad, nan, th_bar)
    G_0 = tuple(jnp.where(bad, nan, g) for g in G_0)
    return th_bar, G_0, (B_bar if want_B else None), None, None


_adapt_adjoint.defvjp(_fwd, _bwd, symbolic_zeros=True)


def adapt_adjoint(theta, rule: Rule, W: Weights, B: Weights, xs, labels, backward: str = "fast") -> Weights:
    """``inner.adapt`` (same W_T) whose reverse-mode derivative is the adjoint scan.

    Differentiable w.r.t. theta and W (the cotangent of W_0 comes for free) and B; the stream
    xs, labels is data (differentiating w.r.t. it raises). ``backward``: ``"fast"`` or
    ``"generic"`` (the module docstring). When the weights rebuilt backwards drift from the true
    W_0 by more than ``DRIFT_TOL`` (relative), the cotangents are NaN and an
    ``AdjointRebuildWarning`` is issued (from inside jit, by ``jax.debug.callback``).
    """
    if backward not in BACKWARDS:
        raise ValueError(f"unknown adjoint backward {backward!r}; choose one of {BACKWARDS}")
    return _adapt_adjoint(theta, rule, tuple(W), tuple(B), xs, labels, backward)


# ----------------------------------------------------------------------------- the fast step


def _layer_needs(rule: Rule):
    """Per layer: (reads z, reads wt_post); and whether e_0 is computed."""
    pool = rule.term_pool
    need_z = tuple(any("z" in pool[r].reads for r in lt) for lt in rule.layer_terms)
    need_wt = tuple(any(pool[r].needs_wt_post for r in lt) for lt in rule.layer_terms)
    need_e0 = any(pool[r].needs_e_pre for r in rule.layer_terms[0])
    return need_z, need_wt, need_e0


def _fast_forward(theta, rule: Rule, W: Weights, B: Weights, xs, labels):
    """The online scan, stacking per step the vectors the backward step reads (``_Residuals``):
    y_1 … y_L, e_0 (if used) … e_L, h_ℓ = Bᵀ_ℓ e_{ℓ+1} (ℓ ≥ 1), z_ℓ and Wᵀ_ℓ post where a term
    reads them. O(Σ n_ℓ) floats per step."""
    pool, terms, L = rule.term_pool, rule.terms, len(W)
    need_z, need_wt, need_e0 = _layer_needs(rule)

    def body(W, xy):
        x, label = xy
        act = forward(W, x)
        ys, zs = act.ys, act.zs
        Bf = feedback_matrices(rule.feedback, W, B, rule.bp_grad)
        e = ys[-1] - jax.nn.one_hot(label, ys[-1].shape[-1], dtype=ys[-1].dtype)
        es, hs = [e], [None] * L
        for i in range(L - 1, -1, -1):
            if i == 0 and not need_e0:
                es.append(None)
                break
            h = e @ Bf[i]
            e = h * softplus_grad_from_y(ys[i])
            hs[i] = h if i > 0 else None
            es.append(e)
        es = es[::-1]
        wts = [ys[i + 1] @ W[i] if need_wt[i] else None for i in range(L)]
        new_W = []
        for i in range(L):
            v = Vectors(W[i], ys[i], ys[i + 1], es[i], es[i + 1], zs[i], wts[i])
            new_W.append(apply_fused(W[i], fuse(rule.layer_theta(theta, i), terms, rule.layer_terms[i], v, pool)))
        res = (tuple(ys[1:]), tuple(es), tuple(hs), tuple(z if n else None for z, n in zip(zs, need_z)), tuple(wts))
        return tuple(new_W), res

    return jax.lax.scan(body, tuple(W), (xs, labels))


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _stack_matvec(M: jax.Array, vs: list) -> list:
    """[M @ v for v in vs] as one product M @ [v_1 … v_k]."""
    if not vs:
        return []
    if len(vs) == 1:
        return [M @ vs[0]]
    out = M @ jnp.stack(vs, axis=1)
    return [out[:, j] for j in range(len(vs))]


def _stack_vecmat(us: list, M: jax.Array) -> list:
    """[u @ M for u in us] as one product [u_1; …; u_k] @ M."""
    if not us:
        return []
    if len(us) == 1:
        return [us[0] @ M]
    out = jnp.stack(us) @ M
    return [out[j] for j in range(len(us))]


def _fused_cotangent(G: jax.Array, W: jax.Array, fused: Fused, const: Fused) -> Fused:
    """The cotangent of ``fused``'s factors, given G = dL/d(apply_fused(W, fused)).

    keep: Σ G ⊙ W; an outer pair (u, v): (G v, Gᵀ u); a Hadamard pair (a, b): ((G ⊙ W) b,
    (G ⊙ W)ᵀ a). ``const`` has ``fused``'s structure with True where a leaf does not depend on the
    differentiated inputs: its cotangent is zero (not computed)."""
    keep, outer, had = fused
    ckeep, couter, chad = const
    zero = jnp.zeros_like
    # outer: one G @ [v…] and one [u…] @ G
    need_u = [j for j, (cu, _) in enumerate(couter) if not cu]
    need_v = [j for j, (_, cv) in enumerate(couter) if not cv]
    ubar = dict(zip(need_u, _stack_matvec(G, [outer[j][1] for j in need_u])))
    vbar = dict(zip(need_v, _stack_vecmat([outer[j][0] for j in need_v], G)))
    outer_ct = tuple((ubar.get(j, zero(u)), vbar.get(j, zero(v))) for j, (u, v) in enumerate(outer))
    keep_ct, had_ct = None, ()
    if keep is not None or had:
        P = G * W
        need_a = [j for j, (ca, _) in enumerate(chad) if not ca]
        need_b = [j for j, (_, cb) in enumerate(chad) if not cb]
        abar = dict(zip(need_a, _stack_matvec(P, [had[j][1] for j in need_a])))
        bbar = dict(zip(need_b, _stack_vecmat([had[j][0] for j in need_b], P)))
        had_ct = tuple((abar.get(j, zero(a)), bbar.get(j, zero(b))) for j, (a, b) in enumerate(had))
        if keep is not None:
            keep_ct = zero(keep) if ckeep else jnp.sum(P)
    return Fused(keep_ct, outer_ct, had_ct)


def _layer_fuse_fn(rule: Rule, i: int, prim: dict, var: list):
    """``fuse`` of layer i as a function of (Θ, *the variable named vectors)."""
    pool, terms, lt = rule.term_pool, rule.terms, rule.layer_terms[i]

    def f(theta, *vs):
        v = Vectors(None, **dict(prim, **dict(zip(var, vs))))
        return fuse(rule.layer_theta(theta, i), terms, lt, v, pool)

    return f


def _fast_bwd_step(theta, rule: Rule, W_next: Weights, G: Weights, B: Weights, res, x, label):
    """One step of the backward scan, by hand: returns (W_t, G_t, dL/dΘ of this step, h̄).

    The step's forward pass is not recomputed: its vectors come from the residuals ``res``; W_t
    (rebuilt from W_{t+1} and the factors) is only used in the matrix–vector products that carry
    cotangents backwards (W_tᵀ z̄, W_t w̄ for Wᵀpost, B h̄ with bp) and, with keep/Hadamard
    factors, in G ⊙ W_t. The term declarations enter through ``jax.vjp`` of ``plasticity.fuse``
    on vectors, so user terms work unchanged. Per layer the weight-sized work is: one rebuild
    pass, G [v…] and [u…] G (one product each), Σ/products of G ⊙ W_t (keep, Hadamard), W_tᵀ z̄,
    B h̄, W_t w̄ (Wᵀpost terms only), and one pass writing G_t = G ⊙ S + Σ c dᵀ.
    """
    from plastic_jax.estimators import _constant_outputs

    ys_, es, hs, zs, wts = res
    ys = (x, *ys_)
    L = len(W_next)
    bp = rule.feedback == "bp"
    ybar = [None] * (L + 1)
    ebar = [None] * (L + 1)
    zbar = [None] * L
    outers = [[] for _ in range(L)]  # the cotangent's new outer products c dᵀ per layer
    th_bar = jnp.zeros_like(theta)
    fused_all, W_t = [], []
    for i in range(L):
        prim = {"pre": ys[i], "post": ys[i + 1], "e_pre": es[i], "e_post": es[i + 1], "z": zs[i],
                "wt_post": wts[i]}
        var = [k for k, v in prim.items() if v is not None and not (k == "pre" and i == 0)]
        f = _layer_fuse_fn(rule, i, {k: v for k, v in prim.items() if k not in var}, var)
        args = (theta, *(prim[k] for k in var))
        fused, vjp = jax.vjp(f, *args)
        const = jax.tree.unflatten(jax.tree.structure(fused), _constant_outputs(f, *args))
        W_i = unapply_fused(W_next[i], fused)
        ct = _fused_cotangent(G[i], W_i, fused, const)
        th_i, *vbars = vjp(ct)
        th_bar = th_bar + th_i
        vb = dict(zip(var, vbars))
        ybar[i] = _add(ybar[i], vb.get("pre"))
        ybar[i + 1] = _add(ybar[i + 1], vb.get("post"))
        ebar[i] = _add(ebar[i], vb.get("e_pre"))
        ebar[i + 1] = _add(ebar[i + 1], vb.get("e_post"))
        zbar[i] = vb.get("z")
        if vb.get("wt_post") is not None:  # wt_post = Wᵀ post
            ybar[i + 1] = _add(ybar[i + 1], W_i @ vb["wt_post"])
            outers[i].append((ys[i + 1], vb["wt_post"]))
        fused_all.append(fused)
        W_t.append(W_i)

    # teaching signals, bottom-up: e_i = h_i ⊙ g(y_i), h_i = Bᵀ_i e_{i+1}, e_L = y_L − onehot
    hbars = [None] * L
    for i in range(0 if es[0] is not None else 1, L):
        if ebar[i] is None:
            continue
        hbar = ebar[i] * softplus_grad_from_y(ys[i])
        if i > 0:
            ybar[i] = _add(ybar[i], ebar[i] * hs[i] * (BETA * jnp.exp(-BETA * ys[i])))
        ebar[i + 1] = _add(ebar[i + 1], (W_t[i] if bp else B[i]) @ hbar)
        if bp and rule.bp_grad == "through":
            outers[i].append((es[i + 1], hbar))
        hbars[i] = hbar
    ybar[L] = _add(ybar[L], ebar[L])

    # the forward pass, top-down: z_i = W_i y_i, y_{i+1} = σ(z_i) (softmax at the top)
    for i in range(L - 1, -1, -1):
        yb = ybar[i + 1]
        if yb is None:
            zb = zbar[i]
        else:
            y = ys[i + 1]
            zb = y * (yb - jnp.sum(yb * y)) if i == L - 1 else yb * softplus_grad_from_y(y)
            zb = _add(zb, zbar[i])
        if zb is None:
            continue
        outers[i].append((zb, ys[i]))
        if i > 0:
            ybar[i] = _add(ybar[i], zb @ W_t[i])

    G_t = tuple(apply_fused(G[i], Fused(fused_all[i].keep, tuple(outers[i]), fused_all[i].hadamard))
                for i in range(L))
    return tuple(W_t), G_t, th_bar, tuple(hbars)


def _fast_backward(theta, rule: Rule, W_T: Weights, B: Weights, xs, labels, res, G_T: Weights, want_B: bool):
    def body(carry, inp):
        W_next, G, th_bar = carry
        r, x, y = inp
        W_t, G_t, th_i, hbars = _fast_bwd_step(theta, rule, W_next, G, B, r, x, y)
        return (W_t, G_t, th_bar + th_i), (hbars if want_B else None)

    (W_0, G_0, th_bar), hbars = jax.lax.scan(body, (tuple(W_T), tuple(G_T), jnp.zeros_like(theta)),
                                             (res, xs, labels), reverse=True)
    B_bar = None
    if want_B:
        es = res[1]
        if rule.feedback == "bp":  # B is not read
            B_bar = tuple(jnp.zeros_like(b) for b in B)
        else:  # B̄_i = Σ_t e_{i+1,t} h̄_{i,t}ᵀ: one product over the stacked vectors
            B_bar = tuple(jnp.zeros_like(B[i]) if hbars[i] is None else es[i + 1].T @ hbars[i]
                          for i in range(len(B)))
    return W_0, G_0, th_bar, B_bar


def measure_drift(theta, rule: Rule, W: Weights, B: Weights, xs, labels) -> jax.Array:
    """Diagnostic: the relative drift (``rebuild_drift``) of W_0 rebuilt backwards by the fast
    backward scan from the W_T of the forward scan, for one task. ()."""
    W_T, res = _fast_forward(theta, rule, W, B, xs, labels)
    G_T = tuple(jnp.zeros_like(w) for w in W_T)
    W_0r = _fast_backward(theta, rule, W_T, B, xs, labels, res, G_T, False)[0]
    return rebuild_drift(W, W_0r)
