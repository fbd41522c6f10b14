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
  (R × Σ n_ℓ n_{ℓ-1} floats) and updates them with the same fused rank-≤6 expressions as W;
  memory independent of T, time about (1 + c·R) forward episodes with c < 1 (the tangents share
  the primal's vectors and are updated in one batched pass).
- ``auto``: ``forward`` for R ≤ ``AUTO_FORWARD_MAX_R`` (16, so every rule of the ten-term pool),
  else ``reverse-remat`` (the cost model and its measurements are in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from plastic_jax.episode import EpisodeSpec, batch_loss, draw, mean_over_tasks
from plastic_jax.feedback import feedback_matrices
from plastic_jax.inner import Rule, online_step, query_loss
from plastic_jax.network import BETA, Weights, softplus, softplus_grad_from_y
from plastic_jax.plasticity import NEEDS_E_PRE, NEEDS_WT_POST, apply_factors, layer_factors

#: ``auto`` uses forward mode up to this many active θ components, reverse-remat above. Measured
#: on the EMNIST-sized network, T = 250, 2-core CPU (docs/PERFORMANCE.md): forward mode costs
#: about (1 + 1.2·R) forward episodes; reverse and reverse-remat cost 25-35 of them for any R
#: (they move a weight snapshot per step). The crossover lies near R ≈ 20, so with the pool's
#: ten terms forward mode always wins on CPU; the threshold only matters for larger pools.
AUTO_FORWARD_MAX_R = 16

# ----------------------------------------------------------------------------- reverse


def reverse_grad(theta, rule: Rule, spec: EpisodeSpec, key, ci):
    """Reverse-mode autodiff through the scan (stores every step's weights)."""
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
    def segment(W, theta, B, xs_seg, ys_seg):
        def body(W, xy):
            return online_step(theta, rule, W, B, *xy), None

        return jax.lax.scan(body, W, (xs_seg, ys_seg))[0]

    if n:
        xs_main = xs[: n * seg].reshape(n, seg, *xs.shape[1:])
        ys_main = labels[: n * seg].reshape(n, seg)
        W, _ = jax.lax.scan(lambda W, xy: (segment(W, theta, B, *xy), None), W, (xs_main, ys_main))
    if rem:
        W = segment(W, theta, B, xs[n * seg :], labels[n * seg :])
    return W


def remat_batch_loss(theta, rule: Rule, spec, key, ci):
    """``meta.batch_loss`` with the checkpointed scan: (mean loss, mean accuracy)."""

    def per_task(k):
        task, W, B = draw(spec, k, ci, theta.dtype)
        W = adapt_remat(theta, rule, W, B, task.xs, task.ys)
        return query_loss(W, task.xq, task.yq)

    return mean_over_tasks(per_task, spec, key)


def reverse_remat_grad(theta, rule: Rule, spec, key, ci):
    """Reverse mode through the checkpointed scan: memory O(√T) weight snapshots per task."""
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
    x: (n_0,), label: () int. Returns the new (W, dW). The matrix products are written out by
    hand (batched over the R tangents, so each pass over dW serves all of them); the vector-sized
    pieces (coefficients of the update) go through ``jax.jvp`` of ``plasticity.layer_factors``.
    """
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
    need_e0 = any(r in NEEDS_E_PRE for r in rule.layer_terms[0])
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
        if any(r in NEEDS_WT_POST for r in lt):
            ww = jnp.concatenate([ys[i + 1][None], dys[i + 1]]) @ W[i]
            wt_post, dwt_post = ww[0], ww[1:] + _t_vecmat(ys[i + 1], dW[i])
        # the vector arguments of layer_factors with their tangents; None tangent = constant
        names = ("pre", "post", "e_pre", "e_post", "z", "wt_post")
        prim = dict(zip(names, (ys[i], ys[i + 1], es[i], es[i + 1], zs[i], wt_post)))
        # z only enters through F8's t = e_post·z
        dz = dzs[i] if 8 in lt else None
        tang = dict(zip(names, (dys[i], dys[i + 1], des[i], des[i + 1], dz, dwt_post)))
        var = [k for k in names if prim[k] is not None and tang[k] is not None]

        def factors(th, *vs, _lt=lt, _prim=prim, _var=var):
            args = dict(_prim, **dict(zip(_var, vs)))
            keep, pairs = layer_factors(th, terms, _lt, **args)
            return keep, tuple(u for u, _ in pairs)

        keep, pairs = layer_factors(theta, terms, lt, **prim)

        def tangent(dth, *dvs, _f=factors, _var=var, _prim=prim):
            return jax.jvp(_f, (theta, *(_prim[k] for k in _var)), (dth, *dvs))[1]

        dkeep, dus = jax.vmap(tangent)(dtheta, *(tang[k] for k in var))

        new_W.append(apply_factors(W[i], keep, pairs))
        # d(keep·W + Σ u vᵀ) = keep·dW + dkeep·W + Σ (du vᵀ + u dvᵀ)
        d = dW[i] * keep if keep is not None else dW[i]
        if keep is not None:
            d = d + dkeep[:, None, None] * W[i][None]
        for (u, v), du in zip(pairs, dus):
            d = d + du[:, :, None] * v[None, None, :]
            dv = next((tang[k] for k in ("pre", "e_pre", "wt_post") if prim[k] is v), None)
            if dv is not None:
                d = d + u[None, :, None] * dv[:, None, :]
        new_dW.append(d)
    return tuple(new_W), tuple(new_dW)


def forward_task(theta, rule: Rule, spec, key, ci) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One task by forward mode: (query loss, accuracy, d loss/dθ (R,))."""
    task, W, B = draw(spec, key, ci, theta.dtype)
    R = theta.shape[0]
    dW = tuple(jnp.zeros((R, *w.shape), w.dtype) for w in W)

    def body(carry, xy):
        return forward_online_step(theta, rule, *carry, B, *xy), None

    (W, dW), _ = jax.lax.scan(body, (W, dW), (task.xs, task.ys))
    loss_fn = lambda W_: query_loss(W_, task.xq, task.yq)  # noqa: E731
    (loss, acc) = loss_fn(W)

    def dloss(dW_r):
        return jax.jvp(lambda W_: loss_fn(W_)[0], (W,), (dW_r,))[1]

    grad = jax.vmap(dloss)(dW)
    return loss, acc, grad


def forward_grad(theta, rule: Rule, spec, key, ci):
    """Forward mode over the active θ components: memory independent of T."""
    loss, acc, grad = mean_over_tasks(lambda k: forward_task(theta, rule, spec, k, ci), spec, key)
    return (loss, acc), grad


# ----------------------------------------------------------------------------- auto


def choose_estimator(n_theta: int) -> str:
    """The cost model behind ``auto``: forward mode costs about (1 + c·R) forward episodes
    (c ≈ 1.2 measured) and grows with R; reverse-remat costs a constant ≈ 25-35 forward episodes
    (memory traffic of one weight snapshot per step). Crossover near R ≈ 20 (docs/PERFORMANCE.md)."""
    return "forward" if n_theta <= AUTO_FORWARD_MAX_R else "reverse-remat"


def auto_grad(theta, rule: Rule, spec, key, ci):
    """``forward`` for few active θ components, ``reverse-remat`` otherwise (``choose_estimator``)."""
    return ESTIMATORS[choose_estimator(len(rule.terms))](theta, rule, spec, key, ci)


ESTIMATORS: dict[str, Callable] = {
    "auto": auto_grad,
    "reverse": reverse_grad,
    "reverse-remat": reverse_remat_grad,
    "forward": forward_grad,
}
