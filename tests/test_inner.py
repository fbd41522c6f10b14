"""The online step, the scan over the stream and the teaching signals against docs/METHOD.md §2-4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from plastic_jax.data import Dataset, build_class_index
from plastic_jax.episode import EpisodeSpec, draw, run
from plastic_jax.feedback import feedback_matrices, teaching_signals
from plastic_jax.inner import adapt, make_rule, online_step, query_loss
from plastic_jax.network import forward, init_network
from plastic_jax.plasticity import PAPER_POOL, Hadamard, Outer, Scale, term

SIZES = (6, 8, 7, 5, 4)


def _net(seed=0, sizes=SIZES):
    W, B = init_network(jax.random.PRNGKey(seed), sizes, jnp.float64)
    return W, B


def _stream(seed, T, sizes=SIZES):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (T, sizes[0])), rng.integers(0, sizes[-1], T)


@pytest.mark.parametrize("feedback", ["bp", "fa"])
@pytest.mark.parametrize("rule", ["f0", "bio", "pool"])
def test_one_online_step_matches_numpy(feedback, rule):
    with jax.enable_x64(True):
        W, B = _net(1)
        r = make_rule(terms={"f0": (0,), "bio": (0, 2, 9), "pool": tuple(range(10))}[rule],
                      n_layers=len(W), feedback=feedback)
        theta = np.random.default_rng(2).normal(scale=0.05, size=len(r.terms))
        xs, ys = _stream(3, 1)
        got = online_step(jnp.asarray(theta), r, W, B, jnp.asarray(xs[0]), jnp.asarray(ys[0]))
        Wn = [np.asarray(w) for w in W]
        Bn = [np.asarray(b) for b in B]
        want = ref.online_step(theta, r.layer_terms, r.terms, Wn, Bn, xs[0], ys[0], feedback)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("feedback", ["bp", "fa"])
@pytest.mark.parametrize("rule", ["bio", "pool", "f5-f8"])
def test_one_online_step_matches_numpy_in_the_elementwise_reading(feedback, rule):
    with jax.enable_x64(True):
        W, B = _net(12)
        terms = {"bio": (0, 2, 9), "pool": tuple(range(10)), "f5-f8": (5, 6, 7, 8)}[rule]
        r = make_rule(terms, n_layers=len(W), feedback=feedback, f5_f8="elementwise")
        theta = np.random.default_rng(13).normal(scale=0.05, size=len(r.terms))
        xs, ys = _stream(14, 1)
        got = online_step(jnp.asarray(theta), r, W, B, jnp.asarray(xs[0]), jnp.asarray(ys[0]))
        want = ref.online_step(theta, r.layer_terms, r.terms, [np.asarray(w) for w in W],
                               [np.asarray(b) for b in B], xs[0], ys[0], feedback, reading="elementwise")
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-12)


# a user's terms, declared here: a presynaptic-activity-gated decay and an error-gated Hebbian term
@term("pre_decay", reads=("post", "pre"), formula="-W ⊙ (1 preᵀ)")
def pre_decay(v):
    return [Hadamard(-jnp.ones_like(v.post), v.pre)]


@term("gated_hebb", reads=("post", "e_post", "pre"), formula="(post ⊙ e_post) preᵀ - W/10")
def gated_hebb(v):
    return [Outer(v.prod("post", "e_post"), v.pre), Scale(-0.1)]


USER_DENSE = {
    10: lambda W, pre, post, e_pre, e_post: -W * pre[None, :],
    11: lambda W, pre, post, e_pre, e_post: np.outer(post * e_post, pre) - 0.1 * W,
}


@pytest.mark.parametrize("reading", ["matrix", "elementwise"])
@pytest.mark.parametrize("feedback", ["bp", "fa"])
def test_adaptation_with_a_user_pool_matches_numpy_loop(feedback, reading):
    with jax.enable_x64(True):
        W, B = _net(15)
        # per layer: the user terms mixed with the paper's (F6 reads e_pre: the first layer needs e_0)
        r = make_rule(layer_terms=[(0, 10), (0, 6, 11), (0, 2, 9, 10, 11), (0, 10)], feedback=feedback,
                      f5_f8=reading, pool=PAPER_POOL + (pre_decay, gated_hebb))
        theta = np.array([0.2, 0.03, 0.05, 0.02, 0.04, 0.01])
        xs, ys = _stream(16, 20)
        got = jax.jit(adapt, static_argnums=1)(jnp.asarray(theta), r, W, B, jnp.asarray(xs), jnp.asarray(ys))
        Wn = [np.asarray(w) for w in W]
        Bn = [np.asarray(b) for b in B]
        for x, y in zip(xs, ys):
            Wn = ref.online_step(theta, r.layer_terms, r.terms, Wn, Bn, x, y, feedback, reading=reading,
                                 extra=USER_DENSE)
        for g, w in zip(got, Wn):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("feedback", ["bp", "fa"])
def test_adaptation_over_a_stream_matches_numpy_loop(feedback):
    with jax.enable_x64(True):
        W, B = _net(4)
        r = make_rule(layer_terms=[(0,), (0, 2), (0, 9), (0, 2, 9)], feedback=feedback)
        theta = np.array([0.2, 0.05, 0.01])
        xs, ys = _stream(5, 30)
        got = jax.jit(adapt, static_argnums=1)(jnp.asarray(theta), r, W, B, jnp.asarray(xs), jnp.asarray(ys))
        Wn = [np.asarray(w) for w in W]
        Bn = [np.asarray(b) for b in B]
        for x, y in zip(xs, ys):
            Wn = ref.online_step(theta, r.layer_terms, r.terms, Wn, Bn, x, y, feedback)
        for g, w in zip(got, Wn):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-9, atol=1e-12)
        xq, yq = _stream(6, 12)
        loss, acc = query_loss(got, jnp.asarray(xq), jnp.asarray(yq))
        want_loss, want_acc = ref.query_loss(Wn, xq, yq)
        np.testing.assert_allclose(float(loss), want_loss, rtol=1e-10)
        assert float(acc) == pytest.approx(want_acc)


def test_bp_errors_equal_autodiff_gradients_wrt_preactivations():
    with jax.enable_x64(True):
        W, _ = _net(7)
        xs, ys = _stream(8, 1)
        x, label = jnp.asarray(xs[0]), int(ys[0])
        act = forward(W, x)
        es = teaching_signals(act, jnp.asarray(label), feedback_matrices("bp", W, W))
        L = len(W)
        for l in range(1, L + 1):
            # the loss as a function of z_l, with the rest of the forward pass from z_l onwards
            def loss_from_z(z, l=l):
                y = z
                for i in range(l, L):
                    y = jax.nn.softplus(10.0 * y) / 10.0
                    y = W[i] @ y
                return -jax.nn.log_softmax(y)[label]

            g = jax.grad(loss_from_z)(act.zs[l - 1])
            np.testing.assert_allclose(np.asarray(es[l]), np.asarray(g), rtol=1e-10, atol=1e-14)


def test_fa_errors_use_the_fixed_feedback_matrices():
    with jax.enable_x64(True):
        W, B = _net(9)
        xs, ys = _stream(10, 1)
        act = forward(W, jnp.asarray(xs[0]))
        es = teaching_signals(act, jnp.asarray(ys[0]), feedback_matrices("fa", W, B))
        want = ref.errors([np.asarray(w) for w in W], [np.asarray(b) for b in B],
                          [np.asarray(y) for y in act.ys], int(ys[0]), "fa")
        for g, w in zip(es, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-14)


def test_episode_draws_network_from_key_and_returns_query_metrics():
    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        data = Dataset("toy", rng.uniform(0, 1, (60, SIZES[0])), np.repeat(np.arange(SIZES[-1]), 15), SIZES[-1])
        ci = build_class_index(data)
        ci = ci._replace(x=jnp.asarray(data.x, jnp.float64))
        spec = EpisodeSpec(SIZES, M=2, K=10, Q=5)
        r = make_rule((0,), n_layers=len(SIZES) - 1, feedback="fa")
        theta = jnp.array([0.1])
        key = jax.random.PRNGKey(3)
        out = run(theta, r, spec, key, ci)
        loss, acc = out.loss, out.accuracy
        task, W0, B0 = draw(spec, key, ci, jnp.float64)
        # the network comes from the second half of the key, the task from the first
        _, k_net = jax.random.split(key)
        for a, b in zip(W0 + B0, sum(init_network(k_net, SIZES, jnp.float64), ())):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        xs, ys, xq, yq = (np.asarray(a) for a in task)
        Wn = [np.asarray(w) for w in W0]
        for x, y in zip(xs, ys):
            Wn = ref.online_step(np.array([0.1]), r.layer_terms, r.terms, Wn, [np.asarray(b) for b in B0], x, y, "fa")
        want_loss, want_acc = ref.query_loss(Wn, xq, yq)
        np.testing.assert_allclose(float(loss), want_loss, rtol=1e-10)
        assert float(acc) == pytest.approx(want_acc)
