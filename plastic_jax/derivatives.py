"""The learner's step differentiated by hand: each piece's primal, its JVP (forward mode,
``estimators.forward``) and its VJP (the adjoint's backward step, ``adjoint``), side by side.

One online step (``inner.online_step``) is: the forward pass, the teaching signals, the named
vectors the terms read, ``plasticity.fuse`` (the terms: differentiated by ``jax.jvp``/``jax.vjp``,
so user terms need nothing here) and the fused update ``plasticity.apply_fused``. Everything but
``fuse`` is differentiated here by hand, because each pass over a weight-sized array must serve
the primal and every tangent (forward mode: R of them, batched) or carry a cotangent without
recomputing the forward pass (the adjoint). Measured reasons: ``estimators.forward`` and
``adjoint`` docstrings, docs/PERFORMANCE.md.

Indices as in the code: ``W[i]`` (n_{i+1}, n_i) takes y_i to y_{i+1}, i = 0 … L−1 (docs/METHOD.md
§1 writes it W_{i+1}); ``Bf[i]`` is the feedback matrix with W[i]'s shape (``feedback_matrices``:
B_i, or W_i under ``bp``). A dot over a name is a tangent (d/dθ_r, R of them stacked on a leading
axis), a bar a cotangent (dL/d·). g(y) = σ'(z) = 1 − e^{−βy} at y = σ(z), g'(y) = β e^{−βy}.

**Forward pass** (docs/METHOD.md §1; ``forward_pass``, ``forward_pass_jvp``, ``forward_pass_vjp``)::

    primal   z_i = W_i y_i,   y_{i+1} = σ(z_i) (i < L−1),   y_L = softmax(z_{L−1}),   y_0 = x
    JVP      ż_i = W_i ẏ_i + Ẇ_i y_i,   ẏ_{i+1} = σ'(z_i) ⊙ ż_i,   ẏ_L = y_L ⊙ (ż_{L−1} − ż_{L−1}·y_L),   ẏ_0 = 0
    VJP      z̄_i = ȳ_{i+1} ⊙ g(y_{i+1}) (top: y_L ⊙ (ȳ_L − ȳ_L·y_L)) + z̄_i from terms reading z,
             ȳ_i += W_iᵀ z̄_i (i ≥ 1),   W̄_i += z̄_i y_iᵀ

**Teaching signals** (docs/METHOD.md §2; ``signals``, ``signals_jvp``, ``signals_vjp``)::

    primal   e_L = y_L − onehot(c),   h_i = B_iᵀ e_{i+1},   e_i = h_i ⊙ g(y_i)   (i = L−1 … 1; 0 if read)
    JVP      ė_L = ẏ_L,   ḣ_i = B_iᵀ ė_{i+1} (+ Ẇ_iᵀ e_{i+1} where B = W carries a tangent: bp, through),
             ė_i = ḣ_i ⊙ g(y_i) + h_i ⊙ g'(y_i) ⊙ ẏ_i
    VJP      (i = 0 … L−1)  h̄_i = ē_i ⊙ g(y_i),   ȳ_i += ē_i ⊙ h_i ⊙ g'(y_i),   ē_{i+1} += B_i h̄_i,
             B̄_i += e_{i+1} h̄_iᵀ (W̄_i under bp, through);   then ȳ_L += ē_L

**Wᵀpost**, the named vector ``wt_post`` of Oja's term (docs/METHOD.md §3; ``wt_post``, ``wt_post_jvp``,
``wt_post_vjp``)::

    primal   w = W_iᵀ y_{i+1}
    JVP      ẇ = W_iᵀ ẏ_{i+1} + Ẇ_iᵀ y_{i+1}
    VJP      ȳ_{i+1} += W_i w̄,   W̄_i += y_{i+1} w̄ᵀ

**The fused update** (``plasticity.apply_fused``, docs/METHOD.md §3; ``fused_tangent``,
``fused_cotangent``)::

    primal   W' = W ⊙ S + Σ u vᵀ,   S = keep + Σ a bᵀ
    JVP      Ẇ' = Ẇ ⊙ S + W ⊙ (k̇eep + Σ (ȧ bᵀ + a ḃᵀ)) + Σ (u̇ vᵀ + u v̇ᵀ)
    VJP      W̄ = W̄' ⊙ S,   k̄eep = ⟨W̄', W⟩,   ū = W̄' v,   v̄ = W̄'ᵀ u,   ā = (W̄' ⊙ W) b,   b̄ = (W̄' ⊙ W)ᵀ a

σ' appears as sigmoid(βz) in the JVP and as g(y) = 1 − e^{−βy} in the VJP and the primal: equal,
the VJP has only the stored y. The JVPs stack the primal and the R tangents in one product
(``[y; ẏ] @ Wᵀ``), so each pass over W serves all of them. The VJPs take lists of cotangents
with None for zero (nothing computed) and return the updated lists; the weight-sized cotangents
W̄ are left as outer products (vectors) for the caller to add in one pass
(``apply_fused(Ḡ, Fused(keep, those outer products, hadamard))`` in the adjoint).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from plastic_jax.network import BETA, Weights, forward, softplus, softplus_grad_from_y
from plastic_jax.plasticity import Fused

Vec = jax.Array | None


def add_opt(a, b):
    """a + b where None is zero."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _g_prime(y: jax.Array) -> jax.Array:
    """g'(y) = β e^{−βy}, the derivative of g(y) = 1 − e^{−βy} (σ' through the activity)."""
    return BETA * jnp.exp(-BETA * y)


def _t_matvec(dW: jax.Array, v: jax.Array) -> jax.Array:
    """dW (R, n_out, n_in) times v (n_in,) for every tangent: (R, n_out)."""
    R, n_out, n_in = dW.shape
    return (dW.reshape(R * n_out, n_in) @ v).reshape(R, n_out)


def _t_vecmat(u: jax.Array, dW: jax.Array) -> jax.Array:
    """uᵀ dW_r for every tangent: u (n_out,), dW (R, n_out, n_in) -> (R, n_in)."""
    # a batched product over r: an unbatched einsum "o,roi->ri" makes XLA transpose dW first
    return jnp.einsum("ro,roi->ri", jnp.broadcast_to(u, dW.shape[:2]), dW)


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


# ----------------------------------------------------------------------------- the forward pass


def forward_pass(W: Weights, x: jax.Array) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """(ys, zs): ys = (y_0 = x, …, y_L) (n_i,), zs = (z_0, …, z_{L−1}), z_i = W_i y_i (n_{i+1},)
    (``network.forward``)."""
    act = forward(W, x)
    return act.ys, act.zs


def _softmax_jvp(y: jax.Array, dz: jax.Array) -> jax.Array:
    """Tangent of y = softmax(z) for tangents dz (R, n): y ⊙ (dz - (dz·y))."""
    return y * (dz - jnp.sum(dz * y, axis=-1, keepdims=True))


def _softmax_vjp(y: jax.Array, ybar: jax.Array) -> jax.Array:
    """Cotangent of z for y = softmax(z) (n,): y ⊙ (ȳ − ȳ·y) (the Jacobian is symmetric: the
    JVP's formula)."""
    return y * (ybar - jnp.sum(ybar * y))


def forward_pass_jvp(W: Weights, dW: Weights, x: jax.Array) -> tuple[list, list, list, list]:
    """The forward pass and its tangents for R directions: (ys, dys, zs, dzs).

    W_i (n_{i+1}, n_i), dW_i (R, n_{i+1}, n_i), x (n_0,). ys[i] (n_i,), dys[i] (R, n_i) with
    dys[0] None (the input does not depend on θ); zs[i] (n_{i+1},), dzs[i] (R, n_{i+1})."""
    L = len(W)
    ys, dys, zs, dzs = [x], [None], [], []
    for i in range(L):
        if dys[-1] is None:
            z = W[i] @ ys[-1]
            dz = _t_matvec(dW[i], ys[-1])
        else:  # one pass over W for the primal and the R tangents
            zz = jnp.concatenate([ys[-1][None], dys[-1]]) @ W[i].T
            z, dz = zz[0], zz[1:] + _t_matvec(dW[i], ys[-1])
        zs.append(z)
        dzs.append(dz)
        if i == L - 1:
            y = jax.nn.softmax(z)
            dy = _softmax_jvp(y, dz)
        else:
            y = softplus(z)
            dy = jax.nn.sigmoid(BETA * z) * dz
        ys.append(y)
        dys.append(dy)
    return ys, dys, zs, dzs


def forward_pass_vjp(W: Weights, ys, ybar: list, zbar: list) -> tuple[Vec, ...]:
    """Back through the forward pass, top-down: z̄_i per layer (n_{i+1},), None where no
    cotangent reaches z_i. W_i's cotangent gains z̄_i y_iᵀ (left to the caller).

    ys: (y_0, …, y_L); ybar: ȳ_0 … ȳ_L so far (ȳ_0 unused: the input has no cotangent); zbar:
    per layer the cotangent z_i receives directly (terms reading z), or None."""
    ybar = list(ybar)
    L = len(W)
    zbars = [None] * L
    for i in range(L - 1, -1, -1):
        yb = ybar[i + 1]
        if yb is None:
            zb = zbar[i]
        else:
            y = ys[i + 1]
            zb = _softmax_vjp(y, yb) if i == L - 1 else yb * softplus_grad_from_y(y)
            zb = add_opt(zb, zbar[i])
        if zb is None:
            continue
        zbars[i] = zb
        if i > 0:
            ybar[i] = add_opt(ybar[i], zb @ W[i])
    return tuple(zbars)


# ----------------------------------------------------------------------------- the teaching signals


def signals(ys, label: jax.Array, Bf: Weights, need_e0: bool) -> tuple[tuple[Vec, ...], tuple[Vec, ...]]:
    """(es, hs) for one example: es = (e_0, …, e_L), e_i (n_i,), e_0 None unless ``need_e0``;
    hs = (h_0, …, h_{L−1}), h_i = B_iᵀ e_{i+1} (n_i,), h_0 None unless ``need_e0``.
    ys: the forward pass (y_0, …, y_L); label () int."""
    L = len(Bf)
    e = ys[-1] - jax.nn.one_hot(label, ys[-1].shape[-1], dtype=ys[-1].dtype)
    es, hs = [None] * L + [e], [None] * L
    for i in range(L - 1, -1, -1):
        if i == 0 and not need_e0:
            break
        h = e @ Bf[i]
        e = h * softplus_grad_from_y(ys[i])
        es[i], hs[i] = e, h
    return tuple(es), tuple(hs)


def signals_jvp(ys, dys, label: jax.Array, Bf: Weights, dBf: Weights | None,
                need_e0: bool) -> tuple[list, list]:
    """The teaching signals and their tangents for R directions: (es, des), e_i (n_i,),
    de_i (R, n_i); e_0, de_0 None unless ``need_e0``.

    ys, dys: ``forward_pass_jvp``'s; dBf: the tangents (R, …) of the feedback matrices where
    they carry one (B = W under bp, through: dW), else None (constant)."""
    L = len(Bf)
    e = ys[-1] - jax.nn.one_hot(label, ys[-1].shape[-1], dtype=ys[-1].dtype)
    de = dys[-1]
    es, des = [e], [de]
    for i in range(L - 1, -1, -1):
        if i == 0 and not need_e0:
            es.append(None)
            des.append(None)
            break
        hh = jnp.concatenate([e[None], de]) @ Bf[i]
        h, dh = hh[0], hh[1:]
        if dBf is not None:
            dh = dh + _t_vecmat(e, dBf[i])
        g = softplus_grad_from_y(ys[i])
        de = dh * g
        if dys[i] is not None:
            de = de + h * _g_prime(ys[i]) * dys[i]
        e = h * g
        es.append(e)
        des.append(de)
    return es[::-1], des[::-1]


def signals_vjp(ys, hs, Bf: Weights, ybar: list, ebar: list) -> tuple[list, list, tuple[Vec, ...]]:
    """Back through the teaching signals, bottom-up: (ȳ, ē, h̄).

    ys: (y_0, …, y_L); hs: ``signals``' h_i (read where ē_i is given, i ≥ 1); Bf: the matrices
    that carried the errors (W_t under bp). ybar, ebar: ȳ_0 … ȳ_L and ē_0 … ē_L so far (None:
    zero). Returns them updated (ē_L moved into ȳ_L) and h̄_i = ē_i ⊙ g(y_i) (n_i,) per layer,
    None where ē_i is; B_i's cotangent (W_i's under bp, through) is e_{i+1} h̄_iᵀ."""
    ybar, ebar = list(ybar), list(ebar)
    L = len(Bf)
    hbars = [None] * L
    for i in range(L):
        if ebar[i] is None:
            continue
        hbar = ebar[i] * softplus_grad_from_y(ys[i])
        if i > 0:
            ybar[i] = add_opt(ybar[i], ebar[i] * hs[i] * _g_prime(ys[i]))
        ebar[i + 1] = add_opt(ebar[i + 1], Bf[i] @ hbar)
        hbars[i] = hbar
    ybar[L] = add_opt(ybar[L], ebar[L])
    return ybar, ebar, tuple(hbars)


# ----------------------------------------------------------------------------- Wᵀpost


def wt_post(W: jax.Array, post: jax.Array) -> jax.Array:
    """Wᵀ post: W (n_post, n_pre), post (n_post,) -> (n_pre,)."""
    return post @ W


def wt_post_jvp(W: jax.Array, dW: jax.Array, post: jax.Array, dpost: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Wᵀpost (n_pre,), its tangents (R, n_pre)): one pass over W for both; dW (R, n_post,
    n_pre), dpost (R, n_post)."""
    ww = jnp.concatenate([post[None], dpost]) @ W
    return ww[0], ww[1:] + _t_vecmat(post, dW)


def wt_post_vjp(W: jax.Array, post: jax.Array, wbar: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """(post's cotangent W w̄ (n_post,), W's cotangent as the outer pair (post, w̄))."""
    return W @ wbar, (post, wbar)


# ----------------------------------------------------------------------------- the fused update


def fused_tangent(W: jax.Array, dW: jax.Array, fused: Fused, dfused: Fused) -> jax.Array:
    """Tangents of ``plasticity.apply_fused(W, fused)`` for R directions, in one elementwise pass.

    With new W = W ⊙ S + Σ u vᵀ, S = keep + Σ a bᵀ:
    d(new W) = dW ⊙ S + W ⊙ (dkeep + Σ (da bᵀ + a dbᵀ)) + Σ (du vᵀ + u dvᵀ).

    W (n_post, n_pre); dW (R, n_post, n_pre); ``dfused`` has ``fused``'s structure with a leading
    R axis (dkeep (R,), du (R, n_post), dv (R, n_pre), …); a None leaf of a vector tangent
    means zero (a constant). Returns (R, n_post, n_pre).
    """
    keep, outer, had = fused
    dkeep, douter, dhad = dfused
    d = dW
    if had or keep is not None:
        S = 1.0 if keep is None else keep
        dS = 0.0 if dkeep is None else dkeep[:, None, None]
        for (a, b), (da, db) in zip(had, dhad):
            S = S + a[:, None] * b[None, :]
            if da is not None:
                dS = dS + da[:, :, None] * b[None, None, :]
            if db is not None:
                dS = dS + a[None, :, None] * db[:, None, :]
        d = dW * S + W * dS
    for (u, v), (du, dv) in zip(outer, douter):
        if du is not None:
            d = d + du[:, :, None] * v[None, None, :]
        if dv is not None:
            d = d + u[None, :, None] * dv[:, None, :]
    return d


def fused_cotangent(G: jax.Array, W: jax.Array, fused: Fused, const: Fused, q_next=None):
    """The cotangent of ``fused``'s factors, given G = dL/d(apply_fused(W, fused)) (n_post, n_pre).

    keep: Σ G ⊙ W; an outer pair (u, v): (G v, Gᵀ u); a Hadamard pair (a, b): ((G ⊙ W) b,
    (G ⊙ W)ᵀ a). ``const`` has ``fused``'s structure with True where a leaf depends neither on Θ
    nor on the variable vectors: its cotangent is zero (not computed). W's own cotangent,
    G ⊙ S, is the caller's (one pass with the other outer products it gains).

    With ``q_next`` = ⟨G, W_{t+1}⟩ given (a keep and no Hadamard pair) the keep's cotangent ⟨G, W⟩
    comes from it without a pass over G ⊙ W: W_{t+1} = keep·W + Σ u vᵀ gives
    keep·⟨G, W⟩ = q_next − Σ uᵀ G v. The keep's cotangent is then left 0 here, and the pairs
    (u, G v) are returned for the caller to form it. Returns (the cotangent, the pairs or None)."""
    keep, outer, had = fused
    ckeep, couter, chad = const
    zero = jnp.zeros_like
    rec = q_next is not None
    # outer: one G @ [v…] and one [u…] @ G (G v for every pair with the recurrence)
    need_u = [j for j, (cu, _) in enumerate(couter) if rec or not cu]
    need_v = [j for j, (_, cv) in enumerate(couter) if not cv]
    ubar = dict(zip(need_u, _stack_matvec(G, [outer[j][1] for j in need_u])))
    vbar = dict(zip(need_v, _stack_vecmat([outer[j][0] for j in need_v], G)))
    outer_ct = tuple((zero(u) if cu else ubar[j], vbar.get(j, zero(v)))
                     for j, ((u, v), (cu, _)) in enumerate(zip(outer, couter)))
    keep_ct, had_ct, uu = None, (), None
    if rec:  # the keep's cotangent is set by the caller, from uu = [(u, G v)…]
        uu = [(outer[j][0], ubar[j]) for j in need_u]
        keep_ct = zero(keep)
    elif keep is not None or had:
        P = G * W
        need_a = [j for j, (ca, _) in enumerate(chad) if not ca]
        need_b = [j for j, (_, cb) in enumerate(chad) if not cb]
        # Σ P = 1ᵀ (P 1): one more column of the product P [b…] instead of a pass over P
        sum_col = keep is not None and not ckeep
        cols = _stack_matvec(P, [had[j][1] for j in need_a] + ([jnp.ones_like(W[0])] if sum_col else []))
        abar = dict(zip(need_a, cols))
        bbar = dict(zip(need_b, _stack_vecmat([had[j][0] for j in need_b], P)))
        had_ct = tuple((abar.get(j, zero(a)), bbar.get(j, zero(b))) for j, (a, b) in enumerate(had))
        if keep is not None:
            keep_ct = zero(keep) if ckeep else jnp.sum(cols[-1])
    return Fused(keep_ct, outer_ct, had_ct), uu
