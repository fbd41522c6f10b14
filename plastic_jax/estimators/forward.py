"""``forward``: forward mode over the R entries of Θ; memory independent of T.

The scan carries, beside W, the R tangents dW/dθ_r (R × Σ n_ℓ n_{ℓ-1} floats) and updates them in
one fused pass per layer, built from the rule pool's term declarations (``forward_online_step``);
time about (1 + c·R) forward episodes with c ≈ 1 (the tangents share the primal's vectors and are
updated in one batched pass). ``forward_online_step_generic`` is the same step by
``jax.linearize``; the feedback modes beyond ``bp``/``fa`` take ``forward_state_step`` (generic).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from plastic_jax import episode
from plastic_jax.derivatives import forward_pass_jvp, fused_tangent, signals_jvp, wt_post_jvp
from plastic_jax.episode import EpisodeSpec, mean_over_tasks
from plastic_jax.estimators.base import PLAIN_MODES, Estimator, forward_reach, weight_copies_bytes
from plastic_jax.feedback import STATEFUL_MODES, feedback_matrices
from plastic_jax.inner import Rule, _query_loss, online_step, state_step
from plastic_jax.network import Weights
from plastic_jax.plasticity import VECTOR_NAMES, Vectors, apply_fused, constant_outputs, fuse


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
    (``[y; dy] @ Wᵀ``, ``[e; de] @ B``, ``[post; dpost] @ W``: ``derivatives.forward_pass_jvp``,
    ``signals_jvp``, ``wt_post_jvp``, beside the adjoint's VJPs of the same functions). The
    plasticity update knows no term: ``jax.jvp`` of ``plasticity.fuse`` (the rule pool's
    declarations) gives the tangents of its vectors, and ``fused_tangent`` assembles the
    weight-sized tangent in one pass.

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

    ys, dys, zs, dzs = forward_pass_jvp(W, dW, x)  # dys[0] is None: the input does not depend on θ
    Bf = feedback_matrices(rule.feedback, W, B, rule.bp_grad)
    need_e0 = any(pool[r].needs_e_pre for r in rule.layer_terms[0])
    through = rule.feedback == "bp" and rule.bp_grad == "through"  # B = W carries a tangent
    es, des = signals_jvp(ys, dys, label, Bf, dW if through else None, need_e0)

    terms = rule.terms
    new_W, new_dW = [], []
    for i in range(L):
        lt = rule.layer_terms[i]
        wt_post = dwt_post = None
        if any(pool[r].needs_wt_post for r in lt):
            wt_post, dwt_post = wt_post_jvp(W[i], dW[i], ys[i + 1], dys[i + 1])
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
        const = constant_outputs(fused_of, *args)
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
    episode.check_episode("forward_task", theta, rule, spec, ci)
    return _forward_task(theta, rule, spec, key, ci, step)


def _forward_task(theta, rule: Rule, spec, key, ci, step: Callable = forward_online_step):
    """``forward_task`` without the checks (the caller has made them)."""
    task, W, B = episode._draw(spec, key, ci, theta.dtype, rule.feedback)
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
    loss_fn = lambda W_: _query_loss(W_, task.xq, task.yq)  # noqa: E731
    (loss, acc) = loss_fn(W)

    def dloss(dW_r):
        return jax.jvp(lambda W_: loss_fn(W_)[0], (W,), (dW_r,))[1]

    grad = jax.vmap(dloss)(dW)
    return loss, acc, grad


def forward_grad(theta, rule: Rule, spec, key, ci):
    """Forward mode over the active θ components: memory independent of T."""
    episode.check_episode("forward_grad", theta, rule, spec, ci)
    loss, acc, grad = mean_over_tasks(lambda k: _forward_task(theta, rule, spec, k, ci), spec, key)
    return (loss, acc), grad


def forward_memory(spec: EpisodeSpec, rule: Rule) -> int:
    """W, B and a tangent of W (and its update) per entry of Θ, per task: bytes."""
    return weight_copies_bytes(spec, 2 + 2 * rule.n_theta)


ESTIMATOR = Estimator(
    name="forward",
    fn=forward_grad,
    description="forward mode, the scan carrying dW/dθ_r for every entry of Θ (memory independent of T)",
    memory=forward_memory,
    auto=lambda n_theta, feedback: n_theta <= forward_reach(feedback),
    auto_note="about 1 + c·R forward episodes: the fastest for R ≤ AUTO_FORWARD_MAX_R (bp, fa: no "
              "backward scan) and R ≤ GENERIC_FORWARD_MAX_R (the generic step of the other modes)",
)
