"""The adjoint meta-gradient (plastic_jax/adjoint.py) against plain reverse mode."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from user_terms import USER_POOL  # the test user pool, declared once (tests/user_terms.py)

from plastic_jax.adjoint import AdjointRebuildWarning, adapt_adjoint, unapply_fused
from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss
from plastic_jax.estimators import ESTIMATORS, adjoint_generic_grad
from plastic_jax.inner import adapt, make_rule, query_loss
from plastic_jax.meta import meta_init, meta_step
from plastic_jax.network import init_network
from plastic_jax.plasticity import Fused

POOL = tuple(range(10))

# (terms or layer_terms, feedback, bp_grad, f5_f8, pool, per_layer)
RULES = {
    "f0-fa": ((0,), "fa", "frozen", "matrix", None, False),
    "f0-bp-frozen": ((0,), "bp", "frozen", "matrix", None, False),
    "f0-bp-through": ((0,), "bp", "through", "matrix", None, False),
    "bio-fa": ((0, 2, 9), "fa", "frozen", "matrix", None, False),
    "pool-fa": (POOL, "fa", "frozen", "matrix", None, False),
    "pool-bp-frozen": (POOL, "bp", "frozen", "matrix", None, False),
    "pool-bp-through": (POOL, "bp", "through", "matrix", None, False),
    "pool-elementwise-fa": (POOL, "fa", "frozen", "elementwise", None, False),
    "pool-elementwise-bp-frozen": (POOL, "bp", "frozen", "elementwise", None, False),
    "pool-elementwise-bp-through": (POOL, "bp", "through", "elementwise", None, False),
    "user-pool": ((0, 2, 3, 6, 9, 10, 11), "fa", "frozen", "elementwise", USER_POOL, False),
    # scalar products (v.dot) stored by the forward scan, their cotangents batched in the backward
    "dot-terms": ((0, 5, 8, 12), "fa", "frozen", "matrix", USER_POOL, False),
    "layer-rules": ([(0, 10), (1, 8, 11), tuple(range(12))], "bp", "through", "matrix", USER_POOL, False),
    "pool-per-layer": (POOL, "fa", "frozen", "matrix", None, True),
    "layer-rules-per-layer": ([(0, 3), (0, 2, 9), (5, 6, 7, 8)], "bp", "through", "elementwise", None, True),
}


def _rule(name):
    terms, fb, bp_grad, f5_f8, pool, per_layer = RULES[name]
    kw = {"layer_terms": terms} if isinstance(terms, list) else {"terms": terms, "n_layers": 3}
    return make_rule(**kw, feedback=fb, bp_grad=bp_grad, f5_f8=f5_f8, pool=pool, per_layer=per_layer)


def _theta(rule, dtype, seed=0):
    rng = np.random.default_rng(seed)
    th = np.where(np.array(rule.terms) == 0, 0.1, rng.normal(scale=0.02, size=len(rule.terms)))
    th = np.tile(th, rule.n_layers if rule.per_layer else 1)
    if rule.per_layer:  # the layers' rows differ
        th = th * (1 + 0.3 * rng.normal(size=th.shape))
    return jnp.asarray(th, dtype)


def _problem(dtype, T=30):
    sizes = (20, 9, 7, 5)
    W, B = init_network(jax.random.PRNGKey(1), sizes, dtype)
    xs = jax.random.uniform(jax.random.PRNGKey(2), (T, 20), dtype)
    ys = jax.random.randint(jax.random.PRNGKey(3), (T,), 0, 5)
    xq = jax.random.uniform(jax.random.PRNGKey(4), (8, 20), dtype)
    yq = jnp.arange(8) % 5
    return W, B, xs, ys, xq, yq


def _grads(rule, theta, problem, adapt_fn):
    W, B, xs, ys, xq, yq = problem

    def loss(th, W_, B_):
        return query_loss(adapt_fn(th, rule, W_, B_, xs, ys), xq, yq)[0]

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(theta, W, B)


def _rel_err(got, want):
    return max(float(np.max(np.abs(np.asarray(g) - np.asarray(w))) / max(np.max(np.abs(np.asarray(w))), 1e-300))
               for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)))


#: with the slow tests only: each is the union of paths the default cases take (pool-fa: pool-bp-frozen's
#: terms with pool-per-layer's fa; pool-elementwise-fa: pool-elementwise-bp-frozen's terms with fa;
#: pool-elementwise-bp-through: layer-rules-per-layer's elementwise F5-F8 through B = W)
SLOW_FLOAT64 = ("pool-fa", "pool-elementwise-fa", "pool-elementwise-bp-through")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FLOAT64 else n
                                  for n in RULES])
def test_adjoint_equals_reverse_mode_in_float64(name):
    # dL/dΘ, and the cotangents of W_0 and B, against jax.grad through the plain scan
    with jax.enable_x64(True):
        rule = _rule(name)
        theta = _theta(rule, jnp.float64)
        problem = _problem(jnp.float64)
        want = _grads(rule, theta, problem, adapt)
        assert np.abs(np.asarray(want[0])).max() > 0
        for backward in ("fast", "generic") if name in ("pool-bp-through", "user-pool") else ("fast",):
            got = _grads(rule, theta, problem, functools.partial(adapt_adjoint, backward=backward))
            assert _rel_err(got, want) < 1e-9, (backward, _rel_err(got, want))


# the rules' gradients are checked exactly in float64 above; here the estimator's signature in
# float32 (pool-fa, between bio-fa and pool-per-layer, with the slow tests)
@pytest.mark.parametrize("name", ["f0-bp-through", "bio-fa", pytest.param("pool-fa", marks=pytest.mark.slow),
                                  "pool-elementwise-bp-frozen", "pool-per-layer"])
def test_adjoint_estimator_agrees_with_reverse_in_float32(name):
    # through the estimator signature: vmapped over a meta-batch of 2 tasks, jitted
    ci = build_class_index(load_dataset("digits"))
    terms, fb, bp_grad, f5_f8, pool, per_layer = RULES[name]
    rule = make_rule(terms, n_layers=3, feedback=fb, bp_grad=bp_grad, f5_f8=f5_f8, per_layer=per_layer)
    spec = EpisodeSpec((64, 24, 16, 10), M=3, K=7, Q=3, meta_batch=2)
    theta = _theta(rule, jnp.float32)
    key = jax.random.PRNGKey(3)
    (want_loss, want_acc), want = jax.jit(ESTIMATORS["reverse"], static_argnums=(1, 2))(theta, rule, spec, key, ci)
    (loss, acc), grad = jax.jit(ESTIMATORS["adjoint"], static_argnums=(1, 2))(theta, rule, spec, key, ci)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6)
    assert float(acc) == pytest.approx(float(want_acc), rel=1e-6)
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_generic_backward_agrees_through_the_estimator():
    ci = build_class_index(load_dataset("digits"))
    rule = make_rule((0, 2, 9), n_layers=2, feedback="fa")
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=3, meta_batch=1)
    theta = _theta(rule, jnp.float32)
    key = jax.random.PRNGKey(0)
    _, fast = jax.jit(ESTIMATORS["adjoint"], static_argnums=(1, 2))(theta, rule, spec, key, ci)
    _, generic = jax.jit(adjoint_generic_grad, static_argnums=(1, 2))(theta, rule, spec, key, ci)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(generic), rtol=1e-5, atol=1e-6 * np.abs(generic).max())


def test_adjoint_under_vmap_over_seeds():
    # the driver vmaps the meta-step over seeds: one Θ and one key per seed
    ci = build_class_index(load_dataset("digits"))
    rule = make_rule(POOL, n_layers=2, feedback="bp", f5_f8="elementwise")
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=3, meta_batch=2)
    thetas = jnp.stack([_theta(rule, jnp.float32, s) for s in range(3)])
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    f = functools.partial(ESTIMATORS["adjoint"], rule=rule, spec=spec, ci=ci)
    batched = jax.jit(jax.vmap(lambda th, k: f(th, key=k)))(thetas, keys)[1]
    for s in range(3):
        want = jax.jit(ESTIMATORS["reverse"], static_argnums=(1, 2))(thetas[s], rule, spec, keys[s], ci)[1]
        np.testing.assert_allclose(np.asarray(batched[s]), np.asarray(want), rtol=1e-4,
                                   atol=1e-4 * np.abs(np.asarray(want)).max())


def test_meta_step_with_adjoint_trains():
    ci = build_class_index(load_dataset("digits"))
    rule = make_rule(POOL, n_layers=2, feedback="fa")
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=2, meta_batch=1)
    opt = optax.adam(1e-2)
    step = jax.jit(functools.partial(meta_step, rule=rule, spec=spec, optimizer=opt, l1=0.0,
                                     estimator=ESTIMATORS["adjoint"]))
    theta0 = np.where(np.arange(10) == 0, 0.1, 1e-3).astype(np.float32)
    state = meta_init(jnp.asarray(theta0), opt)
    for k in range(3):
        state, m = step(state, jax.random.PRNGKey(k), ci)
        assert not bool(m["skipped"])
    assert np.all(np.abs(np.asarray(state.theta) - theta0) > 1e-4)  # every coefficient moved


def test_unapply_fused_inverts_apply_fused():
    from plastic_jax.plasticity import apply_fused

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        W = jnp.asarray(rng.normal(size=(4, 3)))
        vec = lambda n: jnp.asarray(rng.normal(size=n))  # noqa: E731
        f = Fused(jnp.asarray(0.9), ((vec(4), vec(3)), (vec(4), vec(3))), ((0.1 * vec(4), vec(3)),))
        np.testing.assert_allclose(np.asarray(unapply_fused(apply_fused(W, f), f)), np.asarray(W), rtol=1e-13)


def test_nothing_weight_sized_is_stacked_over_T():
    # every array a scan stacks over the stream in the adjoint's program is a vector per step
    rule = make_rule(POOL, n_layers=3, feedback="bp", bp_grad="through", f5_f8="elementwise")
    T = 30
    W, B, xs, ys, xq, yq = _problem(jnp.float32, T)
    theta = _theta(rule, jnp.float32)

    def loss(th):
        return query_loss(adapt_adjoint(th, rule, W, B, xs, ys), xq, yq)[0]

    jaxpr = jax.make_jaxpr(jax.grad(loss))(theta)
    stacked = []

    def visit(jpr):
        for eqn in jpr.eqns:
            if eqn.primitive.name == "scan":
                n_carry = eqn.params["num_carry"]
                stacked.extend(v.aval.shape for v in eqn.outvars[n_carry:])
            for sub in jax.core.subjaxprs(jpr) if hasattr(jax.core, "subjaxprs") else ():
                visit(sub)
            for p in eqn.params.values():
                inner = getattr(p, "jaxpr", None)
                if inner is not None:
                    visit(getattr(inner, "jaxpr", inner))

    visit(jaxpr.jaxpr)
    assert stacked, "no scan found"
    assert all(len(s) <= 2 for s in stacked), stacked


def test_ill_conditioned_rebuild_gives_nan():
    # θ_3 = 1: keep = 1 - θ_3 = 0, every step forgets W; W_t cannot be rebuilt from W_{t+1}
    rule = make_rule((0, 3), n_layers=3, feedback="fa")
    W, B, xs, ys, xq, yq = _problem(jnp.float32)

    def loss(th):
        return query_loss(adapt_adjoint(th, rule, W, B, xs, ys), xq, yq)[0]

    bad = jax.jit(jax.grad(loss))(jnp.array([0.1, 1.0]))
    assert np.all(np.isnan(np.asarray(bad)))
    assert np.isfinite(float(jax.jit(loss)(jnp.array([0.1, 1.0]))))  # the loss itself is fine
    # a well-conditioned decay is fine
    good = jax.jit(jax.grad(loss))(jnp.array([0.1, 0.02]))
    want = jax.jit(jax.grad(lambda th: query_loss(adapt(th, rule, W, B, xs, ys), xq, yq)[0]))(jnp.array([0.1, 0.02]))
    np.testing.assert_allclose(np.asarray(good), np.asarray(want), rtol=1e-4)


def test_the_adjoint_program_holds_no_host_callback():
    # a callback's pointer enters JAX's persistent-cache key: such a program is compiled anew by
    # every process (every run, resume and evaluate); the adjoint must stay cacheable
    rule = make_rule((0, 2, 9), n_layers=3, feedback="fa")
    W, B, xs, ys, xq, yq = _problem(jnp.float32)
    text = jax.jit(jax.grad(lambda th: query_loss(adapt_adjoint(th, rule, W, B, xs, ys), xq, yq)[0])).lower(
        jnp.array([0.1, 0.01, 0.01])).as_text()
    assert "callback" not in text


def test_the_driver_warns_once_of_a_failed_rebuild():
    from plastic_jax.config import TrainConfig
    from plastic_jax.train import warn_rebuild_failure

    cfg = TrainConfig(rule="bio", seeds=3)
    ok = {"grad_norm": np.array([1.0, 2.0, 3.0]), "meta_loss": np.array([1.0, 1.0, 1.0])}
    overflow = {"grad_norm": np.array([1.0, np.nan, 3.0]), "meta_loss": np.array([1.0, np.nan, 1.0])}
    rebuild = {"grad_norm": np.array([1.0, 2.0, np.nan]), "meta_loss": np.array([1.0, 1.0, 1.0])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not warn_rebuild_failure(cfg, 0, ok, False)
        assert not warn_rebuild_failure(cfg, 1, overflow, False)  # a diverged episode is no rebuild failure
        assert warn_rebuild_failure(cfg, 2, rebuild, False)
        assert warn_rebuild_failure(cfg, 3, rebuild, True)  # once per run
    hits = [w for w in caught if issubclass(w.category, AdjointRebuildWarning)]
    assert len(hits) == 1 and "episode 2, seed 2" in str(hits[0].message) and "reverse-remat" in str(hits[0].message)


def test_batch_loss_is_unchanged_by_the_custom_vjp():
    ci = build_class_index(load_dataset("digits"))
    rule = make_rule((0, 2, 9), n_layers=2, feedback="fa")
    spec = EpisodeSpec((64, 16, 10), M=3, K=5, Q=3, meta_batch=2)
    theta = _theta(rule, jnp.float32)
    key = jax.random.PRNGKey(1)
    (loss, acc), _ = jax.jit(ESTIMATORS["adjoint"], static_argnums=(1, 2))(theta, rule, spec, key, ci)
    want_loss, want_acc = batch_loss(theta, rule, spec, key, ci)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert float(acc) == pytest.approx(float(want_acc), rel=1e-6)
