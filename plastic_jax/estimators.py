"""Interchangeable meta-gradient estimators (docs/METHOD.md §5), all behind one signature::

    estimator(theta, rule, spec, key, ci) -> ((loss, accuracy), grad)

with ``theta`` (R,), ``loss``/``accuracy`` () means over ``spec.meta_batch`` tasks and ``grad``
(R,) = d loss / d theta (the L1 term is added by ``meta.meta_step``). They compute the same
number by different routes:

- ``reverse``: ``jax.value_and_grad`` through the scan. Stores every step's weights
  (T × Σ n_ℓ n_{ℓ-1} floats per task).
- ``reverse-remat``: the same, with ``jax.checkpoint`` over ≈√T segments of the scan: stores
  the weights at the segment boundaries and, during the backward pass, one segment's steps;
  memory O(√T), about one extra forward episode of time.
- ``forward``: forward mode. The scan carries, beside W, the R tangents dW/dθ_r
  (R × Σ n_ℓ n_{ℓ-1} floats) and updates them in one fused pass per layer, built from the rule
  pool's term declarations (``forward_online_step``); memory independent of T, time about
  (1 + c·R) forward episodes with c ≈ 1 (the tangents share the primal's vectors and are updated
  in one batched pass). ``forward_online_step_generic`` is the same step by ``jax.linearize``.
- ``adjoint``: reverse mode without weight snapshots (``adjoint.py``): the forward scan stacks a
  few vectors per step, the backward scan rebuilds W_t from W_{t+1} and applies a hand-written
  vector–Jacobian product of the step. Memory O(T·Σ n_ℓ) vectors, time about 2–4.4 forward
  episodes for any R (docs/PERFORMANCE.md). The gradient is NaN (and a warning says so) when W_t
  cannot be rebuilt (keep + Σ a bᵀ near 0).
- ``auto``: ``forward`` for R ≤ ``AUTO_FORWARD_MAX_R`` (1: the rule ``f0``), else ``adjoint``
  (the cost model and its measurements are in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

from plastic_jax import checks
from plastic_jax.adjoint import adapt_adjoint
from plastic_jax.episode import EpisodeSpec, batch_loss, draw, mean_over_tasks
from plastic_jax.feedback import STATEFUL_MODES, feedback_matrices
from plastic_jax.inner import Rule, online_step, query_loss, state_step
from plastic_jax.network import BETA, Weights, softplus, softplus_grad_from_y
from plastic_jax.plasticity import VECTOR_NAMES, Fused, Vectors, apply_fused, fuse

#: ``auto`` uses forward mode up to this many entries of Θ, the adjoint above. Measured on the
#: EMNIST-sized network, T = 250, meta-batch 1, 2-core CPU (docs/PERFORMANCE.md): forward mode
#: costs about (1 + c·R) forward episodes (f0 2.5–2.9×, bio 4–6×, pool 8.5–14×, per-layer pool
#: 71–80×); the adjoint 2–4.4 of them for any R (f0 1.9–3.8×, bio 2.5–3.5×, pool 3.2–4.3×);
#: reverse and reverse-remat 19–31. So forward mode wins only at R = 1 (it has no backward scan),
#: the adjoint from R = 3 (bio) on; R = 2 (not measured) goes to the adjoint by 1 + c·R ≈ 3.5–4.
AUTO_FORWARD_MAX_R = 1
#: the feedback modes with hand-written forward-mode and adjoint steps; the others go the generic
#: way (``forward_state_step``; ``adjoint.py``'s generic backward)
PLAIN_MODES = ("bp", "fa")
#: ``auto`` for the other modes: generic forward mode up to this many entries of Θ, else
#: ``reverse-remat``. Measured (EMNIST-sized network, T = 250, meta-batch 1, loaded 2-core CPU,
#: one benchmark run; docs/PERFORMANCE.md): forward mode 2.6 forward episodes for f0+kp (R = 1),
#: 10.6 for bio+kp (R = 3), 16 for f0+routing (R = 5), where reverse-remat took 7.4; the generic
#: adjoint (``jax.vjp`` of the step at every step, B rebuilt too) 10.6–129, never the fastest.
GENERIC_FORWARD_MAX_R = 3

# ----------------------------------------------------------------------------- reverse


def reverse_grad(theta, rule: Rule, spec: EpisodeSpec, key, ci):
    """Reverse-mode autodiff through the scan (stores every step's weights)."""
    checks.check_episode("reverse_grad", theta, rule, spec, ci)
    return jax.value_and_grad(batch_loss, has_aux=True)(theta, rule, spec, key, ci)


def remat_segment_length(T: int) -> int:
    """Segment length for ``reverse-remat``: the divisor of T nearest √T when one lies within
    a factor 2 of it, else round(√T) (the remainder then runs as one shorter segment)."""
    root = math.sqrt(T)
    divisors = [d for d in range(1, T + 1) if T % d == 0 and root / 2 <= d <= 2 * root]
    if divisors:
        return min(divisors, key=lambda d: abs(d - root))
    return max(1, round(root))


def adapt_remat(theta, rule: Rule, W: Weights, B: Weights, xs, labels, seg: int | None = None) -> Weights:
    """``inner.adapt`` with ``jax.checkpoint`` around segments of ``seg`` steps.

    xs (T, n_0), labels (T,). Same result as ``adapt``; under reverse-mode differentiation only
    the weights at segment boundaries are stored, and each segment is recomputed once.
    """
    T = xs.shape[0]
    seg = seg or remat_segment_length(T)
    n, rem = divmod(T, seg)

    @jax.checkpoint
    def segment(WB, theta, xs_seg, ys_seg):
        def body(WB, xy):
            return state_step(theta, rule, *WB, *xy), None

        return jax.lax.scan(body, WB, (xs_seg, ys_seg))[0]

    WB = (tuple(W), tuple(B))
    if n:
        xs_main = xs[: n * seg].reshape(n, seg, *xs.shape[1:])
        ys_main = labels[: n * seg].reshape(n, seg)
        WB, _ = jax.lax.scan(lambda WB, xy: (segment(WB, theta, *xy), None), WB, (xs_main, ys_main))
    if rem:
        WB = segment(WB, theta, xs[n * seg :], labels[n * seg :])
    return WB[0]


def remat_batch_loss(theta, rule: Rule, spec, key, ci):
    """``meta.batch_loss`` with the checkpointed scan: (mean loss, mean accuracy)."""

    def per_task(k):
        task, W, B = draw(spec, k, ci, theta.dtype, rule.feedback)
        W = adapt_remat(theta, rule, W, B, task.xs, task.ys)
        return query_loss(W, task.xq, task.yq)

    return mean_over_tasks(per_task, spec, key)


def reverse_remat_grad(theta, rule: Rule, spec, key, ci):
    """Reverse mode through the checkpointed scan: memory O(√T) weight snapshots per task."""
    checks.check_episode("reverse_remat_grad", theta, rule, spec, ci)
    return jax.value_and_grad(remat_batch_loss, has_aux=True)(theta, rule, spec, key, ci)


# ----------------------------------------------------------------------------- forward


def _softmax_jvp(y: jax.Array, dz: jax.Array) -> jax.Array:
    """Tangent of y = softmax(z) for tangents dz (R, n): y ⊙ (dz - (dz·y))."""
    return y * (dz - jnp.sum(dz * y, axis=-1, keepdims=True))


def _t_matvec(dW: jax.Array, v: jax.Array) -> jax.Array:
    """dW (R, n_out, n_in) times v (n_in,) for every tangent: (R, n_out)."""
    R, n_out, n_in = dW.shape
    return (dW.reshape(R * n_out, n_in) @ v).reshape(R, n_out)


def _t_vecmat(u: jax.Array, dW: jax.Array) -> jax.Array:
    """uᵀ dW_r for every tangent: u (n_out,), dW (R, n_out, n_in) -> (R, n_in)."""
    # a batched product over r: an unbatched einsum "o,roi->ri" makes XLA transpose dW first
    return jnp.einsum("ro,roi->ri", jnp.broadcast_to(u, dW.shape[:2]), dW)


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


def _constant_outputs(f: Callable, *args) -> list[bool]:
    """For each output leaf of ``f(*args)``: True when it does not depend on ``args`` (its
    tangent is zero). Read off the traced program, so the test is exact, not numerical."""
    closed = jax.make_jaxpr(f)(*args)
    dep = set(closed.jaxpr.invars)
    for eqn in closed.jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in dep for v in eqn.invars):
            dep.update(eqn.outvars)
    return [isinstance(v, Literal) or v not in dep for v in closed.jaxpr.outvars]


def forward_online_step(
    theta: jax.Array,
    rule: Rule,
    W: Weights,
    dW: Weights,
    B: Weights,
    x: jax.Array,
    label: jax.Array,
) -> tuple[Weights, Weights]:
    """``inner.online_step`` and its forward-mode tangents w.r.t. every θ component.

    W_ℓ (n_ℓ, n_{ℓ-1}); dW_ℓ (R, n_ℓ, n_{ℓ-1}) = dW_ℓ/dθ_r stacked over the R entries of Θ.
    x: (n_0,), label: () int. Returns the new (W, dW).

    The forward pass and the teaching signals are differentiated by hand, batched over the R
    tangents, so that each pass over a weight-sized array serves the primal and all R tangents
    (``[y; dy] @ Wᵀ``, ``[e; de] @ B``, ``[post; dpost] @ W``). The plasticity update knows no
    term: ``jax.jvp`` of ``plasticity.fuse`` (the rule pool's declarations) gives the tangents of
    its vectors, and ``fused_tangent`` assembles the weight-sized tangent in one pass.

    Kept because it is faster than the generic ``forward_online_step_generic`` (``jax.linearize``
    of ``online_step``, vmapped over the R directions): measured on the EMNIST-sized network,
    T = 250, meta-batch 1, 2-core CPU (shared; medians, same process), the generic step's
    forward-mode meta-gradient took 1.7× (``f0``), 2.6–5.5× (``bio``) and 2.9–4.9× (``pool``) the
    time of this one, ``fa`` and ``bp``, either F5–F8 reading (docs/PERFORMANCE.md, "Forward mode:
    hand-batched vs generic"): XLA transposes (copies) the batched tangents for the vmapped
    ``y @ Wᵀ`` and ``postᵀ W`` products. This one is as fast as the pre-declaration hand-written
    step (same passes over dW, as many or fewer instructions).
    """
    pool = rule.term_pool
    R = theta.shape[0]
    L = len(W)
    dtheta = jnp.eye(R, dtype=theta.dtype)

    # forward pass; dys[0] is None: the input does not depend on θ
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

    # teaching signals and their tangents (feedback.teaching_signals, differentiated)
    Bf = feedback_matrices(rule.feedback, W, B, rule.bp_grad)
    need_e0 = any(pool[r].needs_e_pre for r in rule.layer_terms[0])
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
        if rule.feedback == "bp" and rule.bp_grad == "through":  # B = W carries a tangent
            dh = dh + _t_vecmat(e, dW[i])
        g = softplus_grad_from_y(ys[i])
        de = dh * g
        if dys[i] is not None:
            de = de + h * (BETA * jnp.exp(-BETA * ys[i])) * dys[i]
        e = h * g
        es.append(e)
        des.append(de)
    es, des = es[::-1], des[::-1]

    terms = rule.terms
    new_W, new_dW = [], []
    for i in range(L):
        lt = rule.layer_terms[i]
        wt_post = dwt_post = None
        if any(pool[r].needs_wt_post for r in lt):
            ww = jnp.concatenate([ys[i + 1][None], dys[i + 1]]) @ W[i]
            wt_post, dwt_post = ww[0], ww[1:] + _t_vecmat(ys[i + 1], dW[i])
        # the layer's named vectors with their tangents; a None tangent: constant (the input)
        prim = dict(zip(VECTOR_NAMES, (ys[i], ys[i + 1], es[i], es[i + 1], zs[i], wt_post)))
        tang = dict(zip(VECTOR_NAMES, (dys[i], dys[i + 1], des[i], des[i + 1], dzs[i], dwt_post)))
        var = [k for k in VECTOR_NAMES if prim[k] is not None and tang[k] is not None]

        def fused_of(th, *vs, _lt=lt, _prim=prim, _var=var, _W=W[i], _i=i):
            vec = Vectors(_W, **dict(_prim, **dict(zip(_var, vs))))
            return fuse(rule.layer_theta(th, _i), terms, _lt, vec, pool)

        args = (theta, *(prim[k] for k in var))

        def jvp(dth, *dvs, _f=fused_of, _args=args):
            return jax.jvp(_f, _args, (dth, *dvs))

        fused, dfused = jax.vmap(jvp, out_axes=(None, 0))(dtheta, *(tang[k] for k in var))
        # a right-hand vector that does not depend on θ (x, at the first layer) has no tangent
        leaves, tree = jax.tree.flatten(dfused)
        const = _constant_outputs(fused_of, *args)
        dfused = jax.tree.unflatten(tree, [None if c else d for c, d in zip(const, leaves)])
        new_W.append(apply_fused(W[i], fused))
        new_dW.append(fused_tangent(W[i], dW[i], fused, dfused))
    return tuple(new_W), tuple(new_dW)


def forward_online_step_generic(
    theta: jax.Array,
    rule: Rule,
    W: Weights,
    dW: Weights,
    B: Weights,
    x: jax.Array,
    label: jax.Array,
) -> tuple[Weights, Weights]:
    """``forward_online_step`` by ``jax.linearize`` of ``inner.online_step`` w.r.t. (θ, W),
    the linear map ``vmap``-ed over the R directions (dθ = e_r, dW_r): the same numbers, no
    hand-written derivative at all (slower on CPU; see ``forward_online_step``). Shapes as there.

    ``bp_grad`` needs no care: ``feedback_matrices`` stops the gradient through B = W for
    ``"frozen"`` and lets the tangent flow for ``"through"``.
    """
    step = lambda th, W_: online_step(th, rule, W_, B, x, label)  # noqa: E731
    new_W, tangent = jax.linearize(step, theta, W)
    directions = jnp.eye(theta.shape[0], dtype=theta.dtype)
    return new_W, jax.vmap(tangent)(directions, dW)


def forward_state_step(
    theta: jax.Array,
    rule: Rule,
    W: Weights,
    B: Weights,
    dW: Weights,
    dB: Weights | None,
    x: jax.Array,
    label: jax.Array,
) -> tuple[Weights, Weights, Weights, Weights | None]:
    """``inner.state_step`` and its forward-mode tangents, by ``jax.linearize`` vmapped over the
    R directions (the generic route, for the feedback modes beyond ``bp``/``fa``). dW as in
    ``forward_online_step``; dB (R, …) stacks B's tangents under ``kp``/``plastic`` (B changes
    with Θ there), None for the modes whose B is constant. Returns (W, B, dW, dB) updated."""
    directions = jnp.eye(theta.shape[0], dtype=theta.dtype)
    if dB is None:
        step = lambda th, W_: state_step(th, rule, W_, B, x, label)[0]  # noqa: E731
        new_W, tangent = jax.linearize(step, theta, W)
        return new_W, B, jax.vmap(tangent)(directions, dW), None
    step = lambda th, W_, B_: state_step(th, rule, W_, B_, x, label)  # noqa: E731
    (new_W, new_B), tangent = jax.linearize(step, theta, W, B)
    new_dW, new_dB = jax.vmap(tangent)(directions, dW, dB)
    return new_W, new_B, new_dW, new_dB


def forward_task(
    theta, rule: Rule, spec, key, ci, step: Callable = forward_online_step
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One task by forward mode: (query loss, accuracy, d loss/dθ (R,)); ``step`` is
    ``forward_online_step`` or ``forward_online_step_generic`` (``bp``, ``fa``); the other
    feedback modes always take ``forward_state_step``."""
    task, W, B = draw(spec, key, ci, theta.dtype, rule.feedback)
    R = theta.shape[0]
    dW = tuple(jnp.zeros((R, *w.shape), w.dtype) for w in W)

    if rule.feedback in PLAIN_MODES:
        def body(carry, xy):
            return step(theta, rule, *carry, B, *xy), None

        (W, dW), _ = jax.lax.scan(body, (W, dW), (task.xs, task.ys))
    else:
        dB = tuple(jnp.zeros((R, *b.shape), b.dtype) for b in B) if rule.feedback in STATEFUL_MODES else None

        def body(carry, xy):
            return forward_state_step(theta, rule, *carry, *xy), None

        (W, B, dW, dB), _ = jax.lax.scan(body, (W, tuple(B), dW, dB), (task.xs, task.ys))
    loss_fn = lambda W_: query_loss(W_, task.xq, task.yq)  # noqa: E731
    (loss, acc) = loss_fn(W)

    def dloss(dW_r):
        return jax.jvp(lambda W_: loss_fn(W_)[0], (W,), (dW_r,))[1]

    grad = jax.vmap(dloss)(dW)
    return loss, acc, grad


def forward_grad(theta, rule: Rule, spec, key, ci):
    """Forward mode over the active θ components: memory independent of T."""
    checks.check_episode("forward_grad", theta, rule, spec, ci)
    loss, acc, grad = mean_over_tasks(lambda k: forward_task(theta, rule, spec, k, ci), spec, key)
    return (loss, acc), grad


# ----------------------------------------------------------------------------- adjoint


def adjoint_batch_loss(theta, rule: Rule, spec, key, ci, backward: str = "fast"):
    """``meta.batch_loss`` with ``adjoint.adapt_adjoint``: (mean loss, mean accuracy)."""

    def per_task(k):
        task, W, B = draw(spec, k, ci, theta.dtype, rule.feedback)
        W = adapt_adjoint(theta, rule, W, B, task.xs, task.ys, backward)
        return query_loss(W, task.xq, task.yq)

    return mean_over_tasks(per_task, spec, key)


def adjoint_grad(theta, rule: Rule, spec, key, ci):
    """Reverse mode by the adjoint scan (``adjoint.py``): rebuilds W_t backwards from W_{t+1}
    and the step's stored vectors; memory O(T·Σ n_ℓ) vectors, no weight snapshots."""
    checks.check_episode("adjoint_grad", theta, rule, spec, ci)
    return jax.value_and_grad(adjoint_batch_loss, has_aux=True)(theta, rule, spec, key, ci)


def adjoint_generic_grad(theta, rule: Rule, spec, key, ci):
    """``adjoint_grad`` with the generic backward step (``jax.vjp`` of ``online_step``); the
    reference for the fast step, not registered in ``ESTIMATORS``."""
    return jax.value_and_grad(adjoint_batch_loss, has_aux=True)(theta, rule, spec, key, ci, "generic")


# ----------------------------------------------------------------------------- auto


def choose_estimator(n_theta: int, feedback: str = "fa") -> str:
    """The cost model behind ``auto``, for Θ of ``n_theta`` entries (``Rule.n_theta``) and the
    feedback mode: forward mode costs about (1 + c·R) forward episodes and grows with R; the
    adjoint costs 2–4.4 forward episodes whatever R (reverse-remat 19–31). Crossover between
    R = 1 and R = 3 (``AUTO_FORWARD_MAX_R``; docs/PERFORMANCE.md). The other feedback modes have
    only the generic steps (``GENERIC_FORWARD_MAX_R``)."""
    if feedback not in PLAIN_MODES:
        return "forward" if n_theta <= GENERIC_FORWARD_MAX_R else "reverse-remat"
    return "forward" if n_theta <= AUTO_FORWARD_MAX_R else "adjoint"


def auto_grad(theta, rule: Rule, spec, key, ci):
    """``forward`` for a single θ, the ``adjoint`` otherwise (``choose_estimator``)."""
    checks.check_episode("auto_grad", theta, rule, spec, ci)
    return ESTIMATORS[choose_estimator(rule.n_theta, rule.feedback)](theta, rule, spec, key, ci)


ESTIMATORS: dict[str, Callable] = {
    "auto": auto_grad,
    "reverse": reverse_grad,
    "reverse-remat": reverse_remat_grad,
    "forward": forward_grad,
    "adjoint": adjoint_grad,
}
