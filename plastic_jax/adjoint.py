"""The adjoint meta-gradient: reverse mode without weight snapshots (issue 15).

Every online step changes a layer's weights by a fused update (``plasticity.Fused``)::

    W_{t+1} = W_t ⊙ S_t + Σ u vᵀ,     S_t = keep + Σ a bᵀ,

whose factors (keep, the u, v, a, b vectors) are O(n_post + n_pre) per layer. So the trajectory
W_0 … W_T is determined by W_T and the per-step vectors: W_t = (W_{t+1} − Σ u vᵀ) / S_t rebuilds
it backwards, exactly up to rounding, without storing a weight-sized snapshot per step.

``adapt_adjoint`` is ``inner.adapt`` under a ``jax.custom_vjp``:

- forward: one scan of the online step that also stacks, per step, a few vectors (the residuals)
  and returns W_T. Nothing weight-sized is stacked over T.
- backward: a reverse scan t = T−1 … 0 that carries (W_{t+1}, its cotangent G_{t+1}), rebuilds
  W_t from W_{t+1} and applies the step's vector–Jacobian product.

Two backward steps compute the same numbers:

- ``"generic"``: the stored residuals are the fused factors; the step's VJP is ``jax.vjp`` of
  ``inner.online_step`` w.r.t. (Θ, W_t) at the rebuilt W_t (which recomputes the step's forward
  pass). It is the reference for the fast step (≈ 30× slower than it in one CPU measurement).
- ``"fast"`` (the default): the forward scan keeps the step's activations y_ℓ, pre-activations
  z_ℓ, errors e_ℓ, back-projected errors h_ℓ = Bᵀ e_{ℓ+1} and Wᵀpost (``Residuals``: all vectors,
  packed into one vector per step); the backward step (``_fast_bwd_step``, a list of phases) is
  written by hand (its VJPs of the forward pass, the teaching signals and ``apply_fused`` stand
  beside forward mode's JVPs of the same functions in ``plastic_jax/derivatives.py``): it does not
  recompute the forward pass, uses W_t only in the matrix–vector products that carry cotangents
  backwards, and takes the term declarations through ``jax.vjp`` of ``plasticity.fuse`` w.r.t.
  the named vectors (so user terms and pools need nothing more). dL/dΘ is not accumulated in the
  scan: each step emits its factors' cotangents (vectors) and ``_theta_cotangent`` contracts them
  with d fused / dΘ for all steps at once after the scan (a few large operations instead of R
  small reductions per layer and step; on a CPU at batch size 1 a scan step costs its passes over
  weight-sized arrays plus a fixed overhead per XLA operation). Two more things keep both down:
  the scalar products the terms take (``Vectors.dot``: F5–F8 in the matrix reading) are stored by
  the forward scan, and their cotangents for every layer are summed in one reduction per step
  (``_dot_cotangent_groups``, ``_segment_dots``); and the cotangent of a keep (the decay F3),
  ⟨G_{t+1}, W_t⟩, follows a scalar recurrence instead of a pass over G ⊙ W_t (``_keep_recurrence``).

**Rounding and the guard.** Rebuilding divides by S_t = keep + Σ a bᵀ, so rounding errors grow by
1/|S_t| per step going backwards (keep = 1 − θ_3 < 1 with a decay). The rebuilt W_0 is compared
with the true W_0 (an input) at the end of the backward scan: a relative drift above
``DRIFT_TOL`` sets the cotangents to NaN — ``meta.meta_step`` then skips the update, as for any
non-finite meta-gradient. No warning is issued from inside jit: a host callback would make every
program that uses the adjoint uncacheable (its pointer enters JAX's persistent-cache key), so the
driver says it instead (``rebuild_failure_warning``: a non-finite meta-gradient of a finite
meta-loss). A fallback to ``reverse-remat`` by ``lax.cond`` was not chosen: under
``vmap`` (tasks, seeds) a cond runs both branches, so every step would pay for reverse-remat.
Measured drift (docs/PERFORMANCE.md): ~1e-6 relative with θ_3 = 0 at T = 250 and 2500, ~1e-3 at
θ_3 = 0.03, T = 250, where the gradient still agrees with float32 reverse mode to ~3e-4.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from plastic_jax.derivatives import (
    add_opt,
    forward_pass,
    forward_pass_vjp,
    fused_cotangent,
    signals,
    signals_vjp,
    wt_post,
    wt_post_vjp,
)
from plastic_jax.feedback import STATEFUL_MODES, feedback_matrices
from plastic_jax.inner import Rule, online_step, state_step, step_factors
from plastic_jax.network import Weights
from plastic_jax.pathways import PLAIN_MODES
from plastic_jax.plasticity import Fused, Vectors, apply_fused, constant_outputs, fuse

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
    fW, _ = step_factors(theta, rule, W, B, x, label)
    return tuple(apply_fused(w, f) for w, f in zip(W, fW)), fW


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


def _state_forward(theta, rule: Rule, W: Weights, B: Weights, xs, labels):
    """The modes whose B changes (``kp``, ``plastic``): one scan of ``inner.state_step`` that
    stacks each step's fused factors of W and of B. Returns ((W_T, B_T), factors)."""
    L = len(W)

    def body(WB, xy):
        W_, B_ = WB
        fW, fB = step_factors(theta, rule, W_, B_, *xy)
        new_W = tuple(apply_fused(w, f) for w, f in zip(W_, fW))
        new_B = tuple(apply_fused(b, f) for b, f in zip(B_[:L], fB)) + tuple(B_[L:])
        return (new_W, new_B), (fW, fB)

    return jax.lax.scan(body, (W, B), (xs, labels))


def _state_backward(theta, rule: Rule, W_T: Weights, B_T: Weights, xs, labels, factors, G_T: Weights,
                    want_B: bool):
    """Reverse scan for ``_state_forward`` (``kp``, ``plastic``: B changes): rebuild W_t and B_t
    from step t+1 and its factors, ``jax.vjp`` of ``inner.state_step`` w.r.t. (Θ, W_t, B_t). B's
    cotangent is carried backwards (the loss reaches B_t through every later W). The modes with
    a constant B take ``_generic_backward``. Returns (W_0 rebuilt, B_0 rebuilt, W_0's cotangent,
    Θ̄, B_0's cotangent)."""
    L = len(W_T)

    def body(carry, inp):
        W_next, B_next, G, th_bar, B_bar = carry
        (fW, fB), x, y = inp
        W_t = tuple(unapply_fused(w, f) for w, f in zip(W_next, fW))
        B_t = tuple(unapply_fused(b, f) for b, f in zip(B_next[:L], fB)) + tuple(B_next[L:])
        _, vjp = jax.vjp(lambda th, W_, B_: state_step(th, rule, W_, B_, x, y), theta, W_t, B_t)
        th_g, G_t, B_bar = vjp((G, B_bar))
        return (W_t, B_t, G_t, th_bar + th_g, B_bar), None

    B_bar0 = tuple(jnp.zeros_like(b) for b in B_T)
    (W_0, B_0, G_0, th_bar, B_bar), _ = jax.lax.scan(
        body, (W_T, B_T, G_T, jnp.zeros_like(theta), B_bar0), (factors, xs, labels), reverse=True)
    return W_0, B_0, G_0, th_bar, B_bar


#: the rebuilt W_0 must match the true W_0 to this relative error (max |ΔW| / max |W|, over the
#: layers), else the task's meta-gradient is NaN (see ``adapt_adjoint``)
DRIFT_TOL = 1e-2
BACKWARDS = ("fast", "generic")


class AdjointRebuildWarning(RuntimeWarning):
    """The backward rebuild of W_t drifted (keep + a bᵀ near 0): the meta-gradient was set to NaN."""


def rebuild_failure_warning(episode: int, who: str) -> None:
    """Issue the ``AdjointRebuildWarning`` for a non-finite adjoint meta-gradient of a finite
    meta-loss (what a failed rebuild gives; the driver calls this once per run)."""
    warnings.warn(
        f"episode {episode}, {who}: the adjoint meta-gradient is not finite while the meta-loss is: the "
        f"weights rebuilt backwards drifted from the true W_0 by more than {DRIFT_TOL:g} (the update's factor "
        "keep + Σ a bᵀ came near 0, e.g. a strong decay θ3), so W_t cannot be recovered from W_(t+1); the "
        "update was not applied. Use --meta-grad reverse-remat for this rule.", AdjointRebuildWarning, stacklevel=2)


def rebuild_drift(W_0: Weights, W_0_rebuilt: Weights) -> jax.Array:
    """max over layers of max |rebuilt − true| / max |true|: () ."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(r - w)) / jnp.max(jnp.abs(w))
                              for w, r in zip(W_0, W_0_rebuilt)]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 6))
def _adapt_adjoint(theta, rule: Rule, W: Weights, B: Weights, xs, labels, backward: str) -> Weights:
    def body(WB, xy):
        return state_step(theta, rule, *WB, *xy), None

    return jax.lax.scan(body, (W, B), (xs, labels))[0][0]


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
    if rule.feedback in STATEFUL_MODES:
        (W_T, B_T), stack = _state_forward(theta, rule, W, B, xs, labels)
        return W_T, (theta, (W, B), (W_T, B_T), B, xs, labels, stack, want_B)
    # the modes beyond PLAIN_MODES (bp, fa) have no fast step: the generic one (a constant B)
    if backward == "generic" or rule.feedback not in PLAIN_MODES:
        W_T, stack = _generic_forward(theta, rule, W, B, xs, labels)
    else:
        W_T, stack = _fast_forward(theta, rule, W, B, xs, labels)
    return W_T, (theta, W, W_T, B, xs, labels, stack, want_B)


def _bwd(rule, backward, res, G_T):
    theta, W_0, W_T, B, xs, labels, stack, want_B = res
    if rule.feedback in STATEFUL_MODES:
        (W_0, B_0), (W_T, B_T) = W_0, W_T
        G_T = tuple(_zeros_if_symbolic(g, w) for g, w in zip(G_T, W_T))
        W_0r, B_0r, G_0, th_bar, B_bar = _state_backward(theta, rule, W_T, B_T, xs, labels, stack, G_T, want_B)
        # the rebuilt B_0 is checked too where B changed (kp, plastic)
        drift = rebuild_drift(W_0 + B_0, W_0r + B_0r)
    else:
        G_T = tuple(_zeros_if_symbolic(g, w) for g, w in zip(G_T, W_T))
        if backward == "generic" or rule.feedback not in PLAIN_MODES:
            W_0r, G_0, th_bar, B_bar = _generic_backward(theta, rule, W_T, B, xs, labels, stack, G_T, want_B)
        else:
            W_0r, G_0, th_bar, B_bar = _fast_backward(theta, rule, W_T, B, xs, labels, stack, G_T, want_B)
        drift = rebuild_drift(W_0, W_0r)
    bad = ~(drift <= DRIFT_TOL)
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
    W_0 by more than ``DRIFT_TOL`` (relative), the cotangents are NaN (the driver then issues an
    ``AdjointRebuildWarning``: ``rebuild_failure_warning``).
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


def _layer_info(rule: Rule, W: Weights) -> tuple[tuple[tuple[tuple[str, ...], ...], bool], ...]:
    """Per layer: the keys of the scalar products its terms take by ``Vectors.dot`` (in the order
    ``fuse`` computes them), and whether its update has a keep that depends on Θ alone and no
    Hadamard pair (then the keep's cotangent ⟨G_{t+1}, W_t⟩ follows a scalar recurrence:
    ``_keep_recurrence``). Read off an abstract evaluation of ``fuse``, once per rule, layer sizes
    and dtype (the forward and the backward scan both ask while tracing)."""
    return _layer_info_of(rule, (W[0].shape[1], *(w.shape[0] for w in W)), jnp.dtype(W[0].dtype))


@functools.lru_cache(maxsize=64)
def _layer_info_of(rule: Rule, n: tuple[int, ...], dtype) -> tuple:
    need_z, need_wt, need_e0 = _layer_needs(rule)
    out = []
    for i in range(len(n) - 1):
        keys = []

        def f(th, pre, post, e_pre, e_post, z, wt, _i=i, _keys=keys):
            v = Vectors(None, pre, post, e_pre if (_i > 0 or need_e0) else None, e_post,
                        z if need_z[_i] else None, wt if need_wt[_i] else None)
            fused = fuse(rule.layer_theta(th, _i), rule.terms, rule.layer_terms[_i], v, rule.term_pool)
            _keys[:] = list(v.dots)
            return fused

        vec = [jax.ShapeDtypeStruct((m,), dtype) for m in (n[i], n[i + 1], n[i], n[i + 1], n[i + 1], n[i])]
        th = jax.ShapeDtypeStruct((rule.n_theta,), dtype)
        fused = jax.eval_shape(f, th, *vec)
        rec = fused.keep is not None and not fused.hadamard
        if rec:  # and the keep depends on Θ alone (its cotangent then never reaches the vectors)
            zeros = [jnp.zeros(v.shape, v.dtype) for v in vec]
            rec = constant_outputs(lambda *vs, _f=f, _th=th: _f(jnp.zeros(_th.shape, _th.dtype), *vs).keep,
                                    *zeros)[0]
        out.append((tuple(keys), rec))
    return tuple(out)


class Residuals(NamedTuple):
    """The vectors the forward scan keeps of one step for the fast backward step; None: not kept.

    Each vector is (n,) for one step or (T, n) stacked over the steps; indices as in
    ``derivatives`` (y_i (n_i,), i = 0 … L; W_i takes y_i to y_{i+1}). The scan stacks them as one
    flat vector per step (``_pack``, in ``_layout``'s order: one dynamic-update-slice per step);
    ``_unpack`` names them again."""

    #: (None, y_1, …, y_L): the activations (y_0 = x is the stream's)
    y: tuple
    #: (e_0, …, e_L): the teaching signals; e_0 where a first-layer term reads e_pre
    e: tuple
    #: (h_0, …, h_{L−1}), h_i = B_iᵀ e_{i+1} (n_i,): i ≥ 1, and h_0 for the keep recurrence with
    #: bp, through (e_1ᵀ W_t h̄ = h_0·h̄)
    h: tuple
    #: per layer z_i = W_i y_i (n_{i+1},) where a term of the layer reads z
    z: tuple
    #: per layer z_i where no term reads it but the keep recurrence needs W_t y_i
    zr: tuple
    #: per layer Wᵀ_i y_{i+1} (n_i,) where a term of the layer reads wt_post
    wt: tuple
    #: per layer {key: s}, the scalar products the terms take (``Vectors.dot(*key)``): () or (T,)
    s: tuple


def _layout(rule: Rule, W: Weights) -> tuple[tuple[tuple, int], ...]:
    """The ``Residuals`` of one step, packed into one flat vector: ((field, layer[, key]), size)
    in order. y_ℓ (ℓ ≥ 1), e_ℓ (ℓ ≥ 0 where computed), h_ℓ = Bᵀ_ℓ e_{ℓ+1} (1 ≤ ℓ < L),
    where a term of layer ℓ reads them z_ℓ = W_ℓ y_ℓ and Wᵀ_ℓ post, and the scalar products the
    terms take (``Vectors.dot``; size 1 each)."""
    need_z, need_wt, need_e0 = _layer_needs(rule)
    L = len(W)
    n = (W[0].shape[1], *(w.shape[0] for w in W))
    out = [(("y", i), n[i]) for i in range(1, L + 1)]
    out += [(("e", i), n[i]) for i in range(0 if need_e0 else 1, L + 1)]
    out += [(("h", i), n[i]) for i in range(1, L)]
    out += [(("z", i), n[i + 1]) for i in range(L) if need_z[i]]
    out += [(("wt", i), n[i]) for i in range(L) if need_wt[i]]
    info = _layer_info(rule, W)
    out += [(("s", i, k), 1) for i, (keys, _) in enumerate(info) for k in keys]
    # for the keep recurrence: W_ℓ y_ℓ where no term reads z, and h_0 = W_0ᵀ e_1 (bp through B = W)
    out += [(("zr", i), n[i + 1]) for i in range(L) if info[i][1] and not need_z[i]]
    if info[0][1] and need_e0 and rule.feedback == "bp" and rule.bp_grad == "through":
        out += [(("h", 0), n[0])]
    return tuple(out)


def _pack(res: Residuals, layout) -> jax.Array:
    """One step's ``Residuals`` as one flat vector (N,), in ``layout``'s order."""
    return jnp.concatenate([res.s[key[1]][key[2]][None] if key[0] == "s" else getattr(res, key[0])[key[1]]
                            for key, _ in layout])


def _unpack(vec: jax.Array, layout) -> Residuals:
    """The ``Residuals`` of ``vec`` (N,) or, stacked, (T, N) (``_pack``'s inverse)."""
    L = sum(1 for key, _ in layout if key[0] == "y")
    f = {"y": [None] * (L + 1), "e": [None] * (L + 1), "h": [None] * L, "z": [None] * L, "zr": [None] * L,
         "wt": [None] * L, "s": [{} for _ in range(L)]}
    o = 0
    for key, n in layout:
        if key[0] == "s":
            f["s"][key[1]][key[2]] = vec[..., o:o + 1][..., 0]
        else:
            f[key[0]][key[1]] = vec[..., o:o + n]
        o += n
    return Residuals(**{k: tuple(v) for k, v in f.items()})


def _layer_vectors(res: Residuals, x: jax.Array, i: int) -> dict:
    """Layer i's named vectors (``plasticity.VECTOR_NAMES``) from the residuals; None: not kept."""
    return {"pre": x if i == 0 else res.y[i], "post": res.y[i + 1], "e_pre": res.e[i], "e_post": res.e[i + 1],
            "z": res.z[i], "wt_post": res.wt[i]}


def _fast_forward(theta, rule: Rule, W: Weights, B: Weights, xs, labels):
    """The online scan, stacking per step one flat vector of ``Residuals`` (``_layout``): O(Σ n_ℓ)
    floats per step, one dynamic-update-slice. Returns (W_T, the stacked vectors (T, N))."""
    pool, terms, L = rule.term_pool, rule.terms, len(W)
    need_z, need_wt, need_e0 = _layer_needs(rule)
    layout = _layout(rule, W)

    def body(W, xy):
        x, label = xy
        ys, zs = forward_pass(W, x)
        Bf = feedback_matrices(rule.feedback, W, B, rule.bp_grad)
        es, hs = signals(ys, label, Bf, need_e0)  # h_0 is kept only where the layout asks for it
        res = Residuals(y=(None, *ys[1:]), e=es, h=hs, z=tuple(z if nz else None for z, nz in zip(zs, need_z)),
                        zr=zs, wt=tuple(wt_post(W[i], ys[i + 1]) if need_wt[i] else None for i in range(L)),
                        s=())
        new_W, dots = [], []
        for i in range(L):
            v = Vectors(W[i], **_layer_vectors(res, x, i))
            new_W.append(apply_fused(W[i], fuse(rule.layer_theta(theta, i), terms, rule.layer_terms[i], v, pool)))
            dots.append(dict(v.dots))
        return tuple(new_W), _pack(res._replace(s=tuple(dots)), layout)

    return jax.lax.scan(body, tuple(W), (xs, labels))


def _segment_dots(groups: list) -> list:
    """[Σ_k a_k · b_k for each group of vector pairs (a_k, b_k)] by one reduction: the products
    of each group laid end to end in one zero-padded row, the rows summed at once (separate
    reductions cost several XLA operations each on CPU). An empty group gives 0."""
    rows = [jnp.concatenate([a * b for a, b in g]) if g else None for g in groups]
    n = max(r.shape[0] for r in rows if r is not None)
    dtype = next(r.dtype for r in rows if r is not None)
    rows = [jnp.zeros((n,), dtype) if r is None else jnp.pad(r, (0, n - r.shape[0])) for r in rows]
    out = jnp.sum(jnp.stack(rows), axis=1)
    return [out[k] for k in range(len(groups))]


def _layer_fuse_fn(rule: Rule, i: int, prim: dict, var: list, theta=None, dots: dict | None = None):
    """``fuse`` of layer i as a function of (Θ, *the variable named vectors), or, given ``theta``,
    of the variable vectors alone (Θ a constant). ``dots``: the scalar products (``Vectors.dot``)
    as constants, not recomputed from the vectors."""
    pool, terms, lt = rule.term_pool, rule.terms, rule.layer_terms[i]

    def f(th, *vs):
        v = Vectors(None, **dict(prim, **dict(zip(var, vs))), dots=dots)
        return fuse(rule.layer_theta(th, i), terms, lt, v, pool)

    if theta is None:
        return f
    return lambda *vs: f(theta, *vs)


def _layer_split(rule: Rule, i: int, vecs: dict):
    """(the constant named vectors, the names of the variable ones) of layer i: the input x
    (``pre`` of the first layer) does not depend on Θ; a vector not computed is None."""
    var = [k for k, v in vecs.items() if v is not None and not (k == "pre" and i == 0)]
    return {k: v for k, v in vecs.items() if k not in var}, var


def _dot_cotangent_groups(rule: Rule, i: int, theta, const_prim: dict, var: list, args: list, dots: dict,
                          const, ct_leaves: list) -> list:
    """For layer i's scalar products s_k = Σ_j Π v_j (``Vectors.dot``): per k, the vector pairs
    whose summed dot products give s̄_k = ⟨factors' cotangent, ∂factors/∂s_k⟩.

    The tangents for the K unit directions come from ``jax.jvp`` of ``fuse``, vmapped
    (element-wise work); the caller sums every layer's groups in one reduction
    (``_segment_dots``: separate reductions, which XLA's CPU backend splits in two each, cost
    several times more at this size) and hands s̄ to ``_add_dot_cotangents``."""
    keys = list(dots)
    f_dots = lambda *ss: _layer_fuse_fn(rule, i, const_prim, var, theta, dict(zip(keys, ss)))(*args)  # noqa: E731
    s0 = [dots[k] for k in keys]
    eye = jnp.eye(len(keys), dtype=s0[0].dtype)
    tang = jax.vmap(lambda *ds: jax.jvp(f_dots, s0, list(ds))[1])(*eye.T)
    # the factors with a cotangent (not ``const``) that depend on a scalar product
    from_dots = [not k for k in constant_outputs(f_dots, *s0)]
    J, c, it = [], [], iter(ct_leaves)
    for t, k, dep in zip(jax.tree.leaves(tang), jax.tree.leaves(const), from_dots):
        if k:
            continue
        ct = next(it)
        if dep:
            J.append(t.reshape(len(keys), -1))
            c.append(ct.reshape(-1))
    return [[(j[k], cc) for j, cc in zip(J, c)] for k in range(len(keys))]


def _add_dot_cotangents(keys: list, sbar: list, var: list, vecs: dict, vb: dict) -> None:
    """Adds to ``vb`` (the named vectors' cotangents) s̄_k ∂s_k/∂v for each scalar product
    s_k = Σ_j Π v_j of ``keys``."""
    for k, key in enumerate(keys):
        for j, name in enumerate(key):
            if name not in var:  # the input x: no cotangent
                continue
            others = [vecs[n] for jj, n in enumerate(key) if jj != j]
            term = sbar[k] if not others else sbar[k] * functools.reduce(jnp.multiply, others)
            vb[name] = add_opt(vb.get(name), term)


class _LayerBack(NamedTuple):
    """Layer i's part of one backward step, before the layers' cotangents meet (``_layer_back``)."""

    #: the step's factors, recomputed from the residuals by ``fuse`` (vectors)
    fused: Fused
    #: W_t rebuilt from W_{t+1} (n_{i+1}, n_i)
    W: jax.Array
    #: the cotangents of the factors that depend on (Θ, the variable vectors), as leaves (vectors)
    ct: list
    #: the pairs (u, G v) for the keep recurrence (``fused_cotangent``), or None
    uu: list | None
    #: the named vectors' cotangents through ``fuse`` (name → (n,)), the scalar products held constant
    vb: dict
    #: (keys, variable names, named vectors, ``_dot_cotangent_groups``) of the layer's scalar
    #: products, or None without any
    dots: tuple | None


def _layer_back(theta, rule: Rule, i: int, res: Residuals, x, W_next: jax.Array, G: jax.Array, q) -> _LayerBack:
    """Layer i's first phases: recompute the step's factors from the residuals (``fuse``), rebuild
    W_t = ``unapply_fused``(W_{t+1}) (n_{i+1}, n_i), the factors' cotangents given G = Ḡ_{t+1}
    (``derivatives.fused_cotangent``; q: ⟨G, W_{t+1}⟩ for the keep recurrence, or None), and
    ``jax.vjp`` through ``fuse`` w.r.t. the named vectors (Θ and the stored scalar products held
    constant; the latter's cotangents are gathered by ``_dot_cotangents``)."""
    vecs = _layer_vectors(res, x, i)
    const_prim, var = _layer_split(rule, i, vecs)
    args = [v for k, v in vecs.items() if k in var]
    dots = res.s[i]
    f_all = _layer_fuse_fn(rule, i, const_prim, var)
    # the scalar products come from the forward scan (constants here)
    f_vec = _layer_fuse_fn(rule, i, const_prim, var, theta, dots)
    fused, vjp = jax.vjp(f_vec, *args)
    tree = jax.tree.structure(fused)
    # which factors depend on (Θ, the variable vectors), the scalar products recomputed
    const = jax.tree.unflatten(tree, constant_outputs(f_all, theta, *args))
    W_i = unapply_fused(W_next, fused)
    ct, uu = fused_cotangent(G, W_i, fused, const, q)
    ct_leaves = [c for c, k in zip(jax.tree.leaves(ct), jax.tree.leaves(const)) if not k]
    vb = dict(zip(var, vjp(ct)))
    groups = None
    if dots:
        groups = (list(dots), var, vecs, _dot_cotangent_groups(rule, i, theta, const_prim, var, args, dots, const,
                                                               ct_leaves))
    return _LayerBack(fused, W_i, ct_leaves, uu, vb, groups)


def _dot_cotangents(layers: list[_LayerBack]) -> list[dict]:
    """Every layer's named vectors' cotangents with the scalar products' added (s̄_k ∂s_k/∂v), the
    s̄ of every layer from one reduction (``_segment_dots``). Returns per layer name → (n,)."""
    vbs = [dict(lb.vb) for lb in layers]
    with_dots = [(i, lb.dots) for i, lb in enumerate(layers) if lb.dots]
    if with_dots:
        sums = iter(_segment_dots([g for _, (*_, groups) in with_dots for g in groups]))
        for i, (keys, var, vecs, groups) in with_dots:
            _add_dot_cotangents(keys, [next(sums) for _ in groups], var, vecs, vbs[i])
    return vbs


def _vector_cotangents(vbs: list[dict], W_t: Weights, ys, res: Residuals):
    """The named vectors' cotangents (per layer name → (n,)) gathered onto the network's vectors:
    (ȳ_0 … ȳ_L, ē_0 … ē_L, per layer z̄_i, per layer W_i's new outer products c dᵀ, per layer the
    pairs whose dot products give cᵀ W_t d); lists, None or [] where nothing arrives. Wᵀpost's
    cotangent w̄ goes back through ``derivatives.wt_post_vjp`` (postᵀ W_t w̄ = (Wᵀpost)·w̄)."""
    L = len(W_t)
    ybar, ebar, zbar = [None] * (L + 1), [None] * (L + 1), [None] * L
    outers, bil = [[] for _ in range(L)], [[] for _ in range(L)]
    for i in range(L):
        vb = vbs[i]
        ybar[i] = add_opt(ybar[i], vb.get("pre"))
        ybar[i + 1] = add_opt(ybar[i + 1], vb.get("post"))
        ebar[i] = add_opt(ebar[i], vb.get("e_pre"))
        ebar[i + 1] = add_opt(ebar[i + 1], vb.get("e_post"))
        zbar[i] = vb.get("z")
        if vb.get("wt_post") is not None:
            post_bar, pair = wt_post_vjp(W_t[i], ys[i + 1], vb["wt_post"])
            ybar[i + 1] = add_opt(ybar[i + 1], post_bar)
            outers[i].append(pair)
            bil[i].append((res.wt[i], vb["wt_post"]))
    return ybar, ebar, zbar, outers, bil


def _weights_cotangent(G: Weights, layers: list[_LayerBack], outers: list[list]) -> Weights:
    """G_t = G ⊙ S + Σ c dᵀ per layer (n_{i+1}, n_i): ``apply_fused`` with the step's keep and
    Hadamard pairs and the cotangent's outer products, one pass over G each."""
    return tuple(apply_fused(g, Fused(lb.fused.keep, tuple(o), lb.fused.hadamard))
                 for g, lb, o in zip(G, layers, outers))


def _keep_recurrence(q: tuple, layers: list[_LayerBack], bil: list[list]) -> tuple[list, tuple]:
    """The keeps' cotangents and q_t, every layer's scalar products in one reduction:
    keep·⟨G_{t+1}, W_t⟩ = q_{t+1} − Σ uᵀ G v, q_t = ⟨G_t, W_t⟩ = that + Σ cᵀ W_t d. Returns (the
    factors' cotangents per layer, the keep's set where the recurrence runs; q_t per layer, ()
    or None)."""
    L = len(layers)
    cts = [list(lb.ct) for lb in layers]
    rec = [i for i in range(L) if layers[i].uu is not None]
    q_t = [None] * L
    if rec:
        sums = _segment_dots([layers[i].uu for i in rec] + [bil[i] for i in rec])
        for k, i in enumerate(rec):
            part = q[i] - sums[k]
            cts[i][0] = part / layers[i].fused.keep  # the keep's cotangent: the first leaf
            q_t[i] = part + sums[len(rec) + k]
    return cts, tuple(q_t)


def _fast_bwd_step(theta, rule: Rule, W_next: Weights, G: Weights, B: Weights, res: Residuals, x, q: tuple):
    """One step of the backward scan, by hand: returns (W_t, G_t, the factors' cotangents, h̄, q_t).

    W_next, G: W_{t+1} and its cotangent Ḡ_{t+1}, per layer (n_{i+1}, n_i); res: the step's
    ``Residuals``; x: the step's input (n_0,). q: per layer ⟨G_{t+1}, W_{t+1}⟩ where the layer's
    update has a keep and no Hadamard pair (else None); the keep's cotangent ⟨G_{t+1}, W_t⟩ and
    the next q_t = ⟨G_t, W_t⟩ follow from it by vector products alone (``_keep_recurrence``,
    with cᵀ W_t d from the stored z, Wᵀpost or h), so no pass over G ⊙ W_t is needed.

    The step's forward pass is not recomputed: its vectors come from the residuals; W_t
    (rebuilt from W_{t+1} and the factors) is only used in the matrix–vector products that carry
    cotangents backwards (W_tᵀ z̄, W_t w̄ for Wᵀpost, B h̄ with bp) and, with keep/Hadamard
    factors, in G ⊙ W_t. The term declarations enter through ``jax.vjp`` of ``plasticity.fuse``
    w.r.t. the named vectors (Θ held constant), so user terms work unchanged. dL/dΘ is not
    accumulated here: the factors' cotangents are returned (vectors) and ``_theta_cotangent``
    contracts them with dfused/dΘ for all steps at once after the scan.

    Per layer the weight-sized work is: one rebuild pass, G [v…] and [u…] G (one product each),
    Σ/products of G ⊙ W_t (keep, Hadamard), W_tᵀ z̄, B h̄, W_t w̄ (Wᵀpost terms only), and one
    pass writing G_t = G ⊙ S + Σ c dᵀ.
    """
    L = len(W_next)
    ys = (x, *res.y[1:])
    # per layer: rebuild W_t, the factors' cotangents, back through fuse to the named vectors
    layers = [_layer_back(theta, rule, i, res, x, W_next[i], G[i], q[i]) for i in range(L)]
    W_t = tuple(lb.W for lb in layers)
    vbs = _dot_cotangents(layers)
    ybar, ebar, zbar, outers, bil = _vector_cotangents(vbs, W_t, ys, res)
    # back through the teaching signals (the errors travelled through W_t under bp)
    bp = rule.feedback == "bp"
    ybar, ebar, hbars = signals_vjp(ys, res.h, W_t if bp else B, ybar, ebar)
    if bp and rule.bp_grad == "through":  # B = W: W_t's cotangent gains e_{i+1} h̄_iᵀ
        for i, hbar in enumerate(hbars):
            if hbar is not None:
                outers[i].append((res.e[i + 1], hbar))
                bil[i].append((res.h[i], hbar))  # e_{i+1}ᵀ W_t h̄ = h_i·h̄
    # back through the forward pass: W_t's cotangent gains z̄_i y_iᵀ
    for i, zbar_i in enumerate(forward_pass_vjp(W_t, ys, ybar, zbar)):
        if zbar_i is not None:
            outers[i].append((zbar_i, ys[i]))
            bil[i].append((zbar_i, res.zr[i] if res.zr[i] is not None else res.z[i]))  # z̄ᵀ W_t y_i = z̄·z_i
    G_t = _weights_cotangent(G, layers, outers)
    cts, q_t = _keep_recurrence(q, layers, bil)
    return W_t, G_t, cts, hbars, q_t


def _layer_theta_vjp(theta, rule: Rule, i: int, vecs: dict, const: list, ct_leaves: list) -> jax.Array:
    """Σ_t ⟨ct_t, d fused_t / dΘ⟩ for layer i: ``jax.vjp`` w.r.t. Θ of ``fuse`` vmapped over the
    steps (``vecs``: the layer's named vectors stacked over T; ``const``: the fused leaves with no
    cotangent, ``ct_leaves``: the others', stacked)."""
    names = [k for k, v in vecs.items() if v is not None]
    f = _layer_fuse_fn(rule, i, {k: None for k, v in vecs.items() if v is None}, names)
    stacked = [vecs[k] for k in names]
    fused, vjp = jax.vjp(lambda th: jax.vmap(f, in_axes=(None,) + (0,) * len(names))(th, *stacked), theta)
    it = iter(ct_leaves)
    leaves = [jnp.zeros_like(v) if c else next(it) for v, c in zip(jax.tree.leaves(fused), const)]
    return vjp(jax.tree.unflatten(jax.tree.structure(fused), leaves))[0]


def _theta_cotangent(theta, rule: Rule, layout, res, xs, cts) -> jax.Array:
    """dL/dΘ = Σ_t Σ_ℓ ⟨cotangent of layer ℓ's factors at step t, d factors / dΘ⟩, for all
    steps at once (few large operations instead of many small ones per step of the scan)."""
    D = _unpack(res, layout)
    th_bar = jnp.zeros_like(theta)
    for i in range(len(rule.layer_terms)):
        vecs = _layer_vectors(D, xs, i)
        const_prim, var = _layer_split(rule, i, vecs)
        one = {k: (None if v is None else v[0]) for k, v in const_prim.items()}
        args = [vecs[k][0] for k in var]
        # the same mask as in the scan (x held constant there)
        const = constant_outputs(_layer_fuse_fn(rule, i, one, var), theta, *args)
        th_bar = th_bar + _layer_theta_vjp(theta, rule, i, vecs, const, cts[i])
    return th_bar


def _fast_backward(theta, rule: Rule, W_T: Weights, B: Weights, xs, labels, res, G_T: Weights, want_B: bool):
    """The reverse scan of ``_fast_bwd_step`` over ``_fast_forward``'s stacked residuals ``res``
    (T, N), then dL/dΘ and, with ``want_B``, B's cotangent. Returns (W_0 rebuilt, G_0, Θ̄, B̄)."""
    layout = _layout(rule, W_T)
    ct_shapes = []  # the factors' cotangents of one step, per layer: their shapes (set while tracing)

    def body(carry, inp):
        W_next, G, q = carry
        d, x = inp
        W_t, G_t, cts, hbars, q_t = _fast_bwd_step(theta, rule, W_next, G, B, d, x, q)
        ct_shapes[:] = [[c.shape for c in layer] for layer in cts]
        # one flat vector per step: a single in-place update of one stacked output
        flat = [c.reshape(-1) for layer in cts for c in layer]
        packed = jnp.concatenate(flat) if flat else jnp.zeros((0,), theta.dtype)
        return (W_t, G_t, q_t), (packed, hbars if want_B else None)

    # ⟨G_T, W_T⟩ for the layers whose keep's cotangent follows the recurrence
    q_T = tuple(jnp.sum(g * w) if rec else None for g, w, (_, rec) in zip(G_T, W_T, _layer_info(rule, W_T)))
    # the residuals as separate stacked vectors: each step slices its own (measured faster than
    # slicing one packed vector per step)
    (W_0, G_0, _), (packed, hbars) = jax.lax.scan(body, (tuple(W_T), tuple(G_T), q_T),
                                                  (_unpack(res, layout), xs), reverse=True)
    cts, o = [], 0
    for layer in ct_shapes:
        cts.append([])
        for shape in layer:
            n = math.prod(shape)
            cts[-1].append(packed[:, o:o + n].reshape(packed.shape[0], *shape))
            o += n
    th_bar = _theta_cotangent(theta, rule, layout, res, xs, cts)
    B_bar = None
    if want_B:
        D = _unpack(res, layout)
        if rule.feedback == "bp":  # B is not read
            B_bar = tuple(jnp.zeros_like(b) for b in B)
        else:  # B̄_i = Σ_t e_{i+1,t} h̄_{i,t}ᵀ: one product over the stacked vectors
            B_bar = tuple(jnp.zeros_like(B[i]) if hbars[i] is None else D.e[i + 1].T @ hbars[i]
                          for i in range(len(B)))
    return W_0, G_0, th_bar, B_bar


def measure_drift(theta, rule: Rule, W: Weights, B: Weights, xs, labels) -> jax.Array:
    """Diagnostic: the relative drift (``rebuild_drift``) of W_0 rebuilt backwards by the fast
    backward scan from the W_T of the forward scan, for one task. ()."""
    W_T, res = _fast_forward(theta, rule, W, B, xs, labels)
    G_T = tuple(jnp.zeros_like(w) for w in W_T)
    W_0r = _fast_backward(theta, rule, W_T, B, xs, labels, res, G_T, False)[0]
    return rebuild_drift(W, W_0r)
