"""The hand derivatives (plastic_jax/derivatives.py) against jax.jvp / jax.vjp of a plain forward pass.

The reference is computed independently: ``network.forward`` and ``feedback.teaching_signals``
(with h_i = B_iᵀ e_{i+1} formed here), differentiated by JAX. Float64 throughout: the hand and
the automatic derivative evaluate the same chain rule in a different order, so they differ by
rounding, a few ulps per operation over a depth of ~10 operations and sums of ≤ 20 terms on this
network: ~1e-14 relative. RTOL = 1e-10 leaves four orders of margin for that, while a wrong or
missing term (an error of order 1 in relative terms) fails by many orders.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax.derivatives import (
    forward_pass,
    forward_pass_jvp,
    forward_pass_vjp,
    fused_cotangent,
    fused_tangent,
    signals,
    signals_jvp,
    signals_vjp,
    wt_post,
    wt_post_jvp,
    wt_post_vjp,
)
from plastic_jax.feedback import teaching_signals
from plastic_jax.network import forward, init_network
from plastic_jax.plasticity import Fused, apply_fused

RTOL = 1e-10
SIZES = (12, 9, 7, 5)
R = 3  # tangent directions
LABEL = jnp.array(3)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _net():
    W, B = init_network(jax.random.PRNGKey(0), SIZES, jnp.float64)
    x = jax.random.uniform(jax.random.PRNGKey(1), (SIZES[0],), jnp.float64)
    return W, B, x


def _plain(W, Bf, x, need_e0):
    """(ys[1:], zs, es, hs) by the library's plain forward pass and teaching signals."""
    act = forward(W, x)
    es = teaching_signals(act, LABEL, Bf, need_e0=need_e0)
    hs = tuple(None if (i == 0 and not need_e0) else es[i + 1] @ Bf[i] for i in range(len(W)))
    return act.ys[1:], act.zs, es, hs


def _close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    scale = max(float(np.max(np.abs(want))), 1e-300)
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * scale)


def _directions(W, key=2):
    keys = jax.random.split(jax.random.PRNGKey(key), len(W))
    return tuple(jax.random.normal(k, (R, *w.shape), w.dtype) for k, w in zip(keys, W))


@pytest.mark.parametrize("need_e0", [False, True])
def test_primal_forward_pass_and_signals_match_the_plain_ones(need_e0):
    W, B, x = _net()
    ys, zs = forward_pass(W, x)
    es, hs = signals(ys, LABEL, B, need_e0)
    want_ys, want_zs, want_es, want_hs = _plain(W, B, x, need_e0)
    for got, want in zip((*ys[1:], *zs), (*want_ys, *want_zs)):
        _close(got, want)
    assert (es[0] is None) == (not need_e0) and (hs[0] is None) == (not need_e0)
    for got, want in zip(es + hs, want_es + want_hs):
        if want is not None:
            _close(got, want)


@pytest.mark.parametrize("through", [False, True], ids=["constant-B", "B-is-W"])
@pytest.mark.parametrize("need_e0", [False, True])
def test_jvp_of_forward_pass_and_signals_matches_jax_jvp(need_e0, through):
    """Tangents w.r.t. W for R directions; with ``through`` the feedback is W itself (bp,
    through) and carries the tangent too."""
    W, B, x = _net()
    dW = _directions(W)
    ys, dys, zs, dzs = forward_pass_jvp(W, dW, x)
    Bf = W if through else B
    es, des = signals_jvp(ys, dys, LABEL, Bf, dW if through else None, need_e0)

    def plain(W_):
        ys_, zs_, es_, _ = _plain(W_, W_ if through else B, x, need_e0)
        return ys_, zs_, tuple(e for e in es_ if e is not None)

    for r in range(R):
        (p_ys, p_zs, p_es), (t_ys, t_zs, t_es) = jax.jvp(plain, (W,), (tuple(d[r] for d in dW),))
        for got, want in zip(ys[1:], p_ys):
            _close(got, want)
        for got, want in zip([d[r] for d in dys[1:]], t_ys):
            _close(got, want)
        for got, want in zip([d[r] for d in dzs], t_zs):
            _close(got, want)
        for got, want in zip([d[r] for d in des if d is not None], t_es):
            _close(got, want)
        assert (des[0] is None) == (not need_e0)


@pytest.mark.parametrize("through", [False, True], ids=["constant-B", "B-is-W"])
@pytest.mark.parametrize("need_e0", [False, True])
def test_vjp_of_forward_pass_and_signals_matches_jax_vjp(need_e0, through):
    """Cotangents of every y (ℓ ≥ 1), z and e in; W's and B's cotangents out, formed as the
    adjoint forms them: W̄_i = z̄_i y_iᵀ (+ e_{i+1} h̄_iᵀ where B = W), B̄_i = e_{i+1} h̄_iᵀ."""
    W, B, x = _net()
    L = len(W)
    Bf = W if through else B
    ys, zs = forward_pass(W, x)
    es, hs = signals(ys, LABEL, Bf, need_e0)
    k = iter(jax.random.split(jax.random.PRNGKey(3), 3 * L + 1))
    ybar_in = [None] + [jax.random.normal(next(k), y.shape, y.dtype) for y in ys[1:]]
    zbar_in = [jax.random.normal(next(k), z.shape, z.dtype) for z in zs]
    ebar_in = [None if e is None else jax.random.normal(next(k), e.shape, e.dtype) for e in es]

    ybar, ebar, hbars = signals_vjp(ys, hs, Bf, ybar_in, ebar_in)
    zbars = forward_pass_vjp(W, ys, ybar, zbar_in)
    W_bar = [jnp.outer(zbars[i], ys[i]) for i in range(L)]
    fb_bar = [jnp.zeros_like(Bf[i]) if hbars[i] is None else jnp.outer(es[i + 1], hbars[i]) for i in range(L)]
    if through:
        W_bar = [w + f for w, f in zip(W_bar, fb_bar)]

    def plain(W_, B_):
        ys_, zs_, es_, _ = _plain(W_, W_ if through else B_, x, need_e0)
        return ys_, zs_, tuple(e for e in es_ if e is not None)

    _, vjp = jax.vjp(plain, W, B)
    want_W, want_B = vjp((tuple(ybar_in[1:]), tuple(zbar_in), tuple(e for e in ebar_in if e is not None)))
    for got, want in zip(W_bar, want_W):
        _close(got, want)
    if not through:
        for got, want in zip(fb_bar, want_B):
            _close(got, want)


def test_wt_post_jvp_and_vjp_match_jax():
    W, _, _ = _net()
    w = W[1]
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(4), 4)
    post = jax.random.uniform(k1, (w.shape[0],), w.dtype)
    dW = jax.random.normal(k2, (R, *w.shape), w.dtype)
    dpost = jax.random.normal(k3, (R, w.shape[0]), w.dtype)
    prim, tang = wt_post_jvp(w, dW, post, dpost)
    _close(prim, wt_post(w, post))
    for r in range(R):
        _close(tang[r], jax.jvp(wt_post, (w, post), (dW[r], dpost[r]))[1])
    wbar = jax.random.normal(k4, (w.shape[1],), w.dtype)
    post_bar, (a, b) = wt_post_vjp(w, post, wbar)
    want_W, want_post = jax.vjp(wt_post, w, post)[1](wbar)
    _close(post_bar, want_post)
    _close(jnp.outer(a, b), want_W)


def _fused(w, key, keep=True, had=True):
    ks = iter(jax.random.split(jax.random.PRNGKey(key), 10))
    vec = lambda n: jax.random.normal(next(ks), (n,), w.dtype)  # noqa: E731
    m, n = w.shape
    return Fused(1.0 + 0.1 * vec(1)[0] if keep else None, ((vec(m), vec(n)), (vec(m), vec(n))),
                 ((0.1 * vec(m), 0.1 * vec(n)),) if had else ())


@pytest.mark.parametrize("keep,had", [(True, True), (True, False), (False, True), (False, False)])
def test_fused_tangent_and_cotangent_match_jax(keep, had):
    W, _, _ = _net()
    w = W[1]
    fused = _fused(w, 5, keep, had)
    dfused = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(6), (R, *jnp.shape(a)), w.dtype), fused)
    dW = jax.random.normal(jax.random.PRNGKey(7), (R, *w.shape), w.dtype)
    got = fused_tangent(w, dW, fused, dfused)
    for r in range(R):
        want = jax.jvp(apply_fused, (w, fused), (dW[r], jax.tree.map(lambda d, r=r: d[r], dfused)))[1]
        _close(got[r], want)
    G = jax.random.normal(jax.random.PRNGKey(8), w.shape, w.dtype)
    const = jax.tree.map(lambda _: False, fused)
    ct, uu = fused_cotangent(G, w, fused, const)
    assert uu is None
    want = jax.vjp(lambda f: apply_fused(w, f), fused)[1](G)[0]
    for g, wnt in zip(jax.tree.leaves(ct), jax.tree.leaves(want)):
        _close(g, wnt)
