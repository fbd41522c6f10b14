"""The feedback modes beyond bp/fa (plastic_jax/feedback.py: dfa, sign, kp, plastic, routing).

Teaching signals and online steps against the independent NumPy reference (tests/reference.py:
``mode_errors``, ``mode_state_step``, written from the formulas of feedback.py's docstring), the
modes' equivalences (plastic with Θ^B = 0 is fa, saturated routing gates are fa / dfa, KP keeps
W − B), Θ's layout (the feedback parameters after the plasticity coefficients, not penalised by
L1), every meta-gradient estimator against reverse mode and finite differences, and the errors
for a feedback state B of the wrong shapes.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference as ref

from plastic_jax import checks, estimators
from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, batch_loss, draw
from plastic_jax.estimators import ESTIMATORS, choose_estimator
from plastic_jax.feedback import FEEDBACK_MODES, feedback_shapes, signals
from plastic_jax.inner import adapt_with_feedback, check_weights, initial_theta, make_rule, online_step, state_step
from plastic_jax.meta import l1_penalty, meta_init, meta_step
from plastic_jax.network import forward, init_network

NEW_MODES = ("dfa", "sign", "kp", "plastic", "routing")
SIZES = (20, 9, 7, 5)  # L = 3: two direct matrices D_0, D_1 and two routing gates
L = len(SIZES) - 1
#: the direct matrices D_0 (n_L, n_0), D_1 (n_L, n_1) after B_1 … B_L, written out by hand
DIRECT_SHAPES = [(9, 20), (7, 9), (5, 7), (5, 20), (5, 9)]
#: a tiny episode for the tests that draw one: T = M·K = 12 online steps
SPEC = EpisodeSpec((64, 12, 9, 10), M=3, K=4, Q=2, meta_batch=1)
#: Θ^B = (θ_kp, θ_decay, θ_err) and routing's φ used where a test sets them: all far from 0
#: (and φ's two gates different, sigmoid(φ) ≈ (0.69, 0.35)) so a swapped or ignored entry shows
THETA_B = (0.6, 0.05, 0.3)
PHI = (0.8, -0.6)


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _np(tree):
    return [np.asarray(a) for a in tree]


def _random_state(mode, seed, sizes=SIZES):
    """W and B (``feedback_shapes``) with Gaussian entries, so sign(W) and sign(R) vary."""
    rng = np.random.default_rng(seed)
    W = [rng.normal(scale=0.5, size=(n_out, n_in)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    B = [rng.normal(scale=0.5, size=s) for s in feedback_shapes(mode, sizes)]
    return W, B


def _fparams(mode):
    return {"plastic": np.array(THETA_B), "routing": np.array(PHI)}.get(mode)


@pytest.fixture(scope="module")
def ci():
    return build_class_index(load_dataset("digits"))


@pytest.fixture(scope="module")
def ci64(ci):
    return ci._replace(x=np.asarray(ci.x, np.float64))


def _assert_trees_close(got, want, rtol, what=""):
    """Every matrix within rtol of the largest entry of its reference (a tiny entry has no
    relative scale of its own)."""
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, (what, i, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * max(np.abs(w).max(), 1e-300), err_msg=f"{what} [{i}]")


# ----------------------------------------------------------------------------- shapes


def test_feedback_shapes_written_out():
    assert feedback_shapes("dfa", SIZES) == DIRECT_SHAPES
    assert feedback_shapes("routing", SIZES) == DIRECT_SHAPES
    for mode in ("bp", "fa", "sign", "kp", "plastic"):
        assert feedback_shapes(mode, SIZES) == DIRECT_SHAPES[:L], mode


def test_draw_gives_every_mode_the_same_network(ci):
    # the same key: the same W and B_1 … B_L in every mode; dfa and routing the same D
    key = jax.random.PRNGKey(7)
    _, W_fa, B_fa = draw(SPEC, key, ci, feedback="fa")
    _, _, B_dfa = draw(SPEC, key, ci, feedback="dfa")
    for mode in NEW_MODES:
        _, W, B = draw(SPEC, key, ci, feedback=mode)
        assert [tuple(b.shape) for b in B] == feedback_shapes(mode, SPEC.sizes), mode
        for a, b in zip(W + B[:len(W)], W_fa + B_fa):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=mode)
        if mode == "routing":
            for a, b in zip(B, B_dfa):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- teaching signals


@pytest.mark.parametrize("mode", FEEDBACK_MODES)
@pytest.mark.parametrize("source", ["random", "draw"])
def test_signals_of_one_example_and_a_batch_match_numpy(mode, source, ci64):
    with jax.enable_x64(True):
        rng = np.random.default_rng(FEEDBACK_MODES.index(mode))
        if source == "random":
            W, B = _random_state(mode, 1)
            sizes = SIZES
        else:
            _, W, B = draw(SPEC, jax.random.PRNGKey(3), ci64, jnp.float64, feedback=mode)
            W, B = _np(W), _np(B)
            sizes = SPEC.sizes
        phi = _fparams(mode)
        xs = rng.uniform(size=(4, sizes[0]))
        labels = np.array([0, 3, 1, 4])
        Wj, Bj = _f64(tuple(W)), _f64(tuple(B))
        phij = None if phi is None else jnp.asarray(phi)
        for k in range(len(xs)):  # one example at a time
            got = signals(mode, Wj, Bj, phij, forward(Wj, jnp.asarray(xs[k])), jnp.asarray(labels[k]))
            want = ref.mode_errors(W, B, ref.forward(W, xs[k])[0], labels[k], mode, phi)
            _assert_trees_close(got, want, 1e-12, f"{mode} example {k}")
        # a batch on a leading axis
        got = signals(mode, Wj, Bj, phij, forward(Wj, jnp.asarray(xs)), jnp.asarray(labels))
        for k in range(len(xs)):
            want = ref.mode_errors(W, B, ref.forward(W, xs[k])[0], labels[k], mode, phi)
            _assert_trees_close([g[k] for g in got], want, 1e-12, f"{mode} batch row {k}")
        # without e_0: the same e_1 … e_L
        act0, y0 = forward(Wj, jnp.asarray(xs[0])), jnp.asarray(labels[0])
        short = signals(mode, Wj, Bj, phij, act0, y0, need_e0=False)
        assert short[0] is None
        _assert_trees_close(short[1:], signals(mode, Wj, Bj, phij, act0, y0)[1:], 1e-14, mode)


def test_signal_relations_between_modes():
    # dfa's top hidden error is fa's (D_{L-1} = B_L); its lower ones are not; sign with R = W is bp
    with jax.enable_x64(True):
        W, B = _random_state("dfa", 2)
        W, B = _f64(tuple(W)), _f64(tuple(B))
        x, y = jnp.asarray(np.random.default_rng(0).uniform(size=SIZES[0])), jnp.asarray(2)
        act = forward(W, x)
        e_dfa = signals("dfa", W, B, None, act, y)
        e_fa = signals("fa", W, B[:L], None, act, y)
        np.testing.assert_allclose(np.asarray(e_dfa[L - 1]), np.asarray(e_fa[L - 1]), rtol=1e-14)
        np.testing.assert_array_equal(np.asarray(e_dfa[L]), np.asarray(e_fa[L]))
        assert not np.allclose(np.asarray(e_dfa[L - 2]), np.asarray(e_fa[L - 2]))
        e_sign = signals("sign", W, W, None, act, y)
        e_bp = signals("bp", W, B[:L], None, act, y)
        _assert_trees_close(e_sign, e_bp, 1e-14, "sign with R = W")
        # sign reads the signs of W, the magnitudes of R: flipping R's signs changes nothing
        e_flip = signals("sign", W, tuple(-b for b in B[:L]), None, act, y)
        e_sign_B = signals("sign", W, B[:L], None, act, y)
        _assert_trees_close(e_flip, e_sign_B, 1e-14, "sign with -R")


# ----------------------------------------------------------------------------- one step, one episode

#: (terms, reading): F3 is the decay kp carries into B (keep = 1 − θ_3), the element-wise F6–F8
#: are Hadamard factors W ⊙ (a bᵀ) that kp applies to B too
STEP_RULES = {
    "f0": ((0,), "matrix"),
    "f0-decay": ((0, 3), "matrix"),
    "bio": ((0, 2, 9), "matrix"),
    "pool-elementwise": (tuple(range(10)), "elementwise"),
}


def _step_theta(rule, seed):
    """Coefficients: θ_0 = 0.1, θ_3 = 0.05 (keep 0.95), the others N(0, 0.05²); the feedback
    parameters THETA_B / PHI. Returns (Θ as float64, the per-layer rows for the reference)."""
    rng = np.random.default_rng(seed)
    R = len(rule.terms)
    rows = []
    for _ in range(rule.n_layers if rule.per_layer else 1):
        row = rng.normal(scale=0.05, size=R)
        row[np.array(rule.terms) == 0] = 0.1
        row[np.array(rule.terms) == 3] = 0.05
        rows.append(row)
    fp = _fparams(rule.feedback)
    theta = np.concatenate(rows + ([] if fp is None else [fp]))
    assert theta.shape == (rule.n_theta,)
    return jnp.asarray(theta, jnp.float64), (rows if rule.per_layer else rows * rule.n_layers)


@pytest.mark.parametrize("rule_name", list(STEP_RULES))
@pytest.mark.parametrize("mode", ["kp", "plastic"])
def test_state_step_of_kp_and_plastic_matches_numpy(mode, rule_name):
    terms, reading = STEP_RULES[rule_name]
    with jax.enable_x64(True):
        rule = make_rule(terms, L, mode, f5_f8=reading)
        theta, rows = _step_theta(rule, 3)
        W, B = _random_state(mode, 4)
        x, y = np.random.default_rng(5).uniform(size=SIZES[0]), 3
        got_W, got_B = state_step(theta, rule, _f64(tuple(W)), _f64(tuple(B)), jnp.asarray(x), jnp.asarray(y))
        want_W, want_B = ref.mode_state_step(rows, rule.layer_terms, rule.terms, W, B, x, y, mode,
                                             _fparams(mode), reading)
        _assert_trees_close(got_W, want_W, 1e-12, "W")
        _assert_trees_close(got_B, want_B, 1e-12, "B")
        for b1, b0 in zip(want_B, B):  # B did change
            assert np.abs(b1 - b0).max() > 1e-6
        # online_step is state_step's W
        _assert_trees_close(online_step(theta, rule, _f64(tuple(W)), _f64(tuple(B)), jnp.asarray(x), jnp.asarray(y)),
                            want_W, 1e-12, "online_step")


@pytest.mark.parametrize("mode", FEEDBACK_MODES)
def test_a_short_episode_of_every_mode_matches_numpy(mode):
    # 6 steps of adapt_with_feedback (one scan) against the NumPy loop: sign re-reads sign(W_t) at
    # every step, kp/plastic carry B_t; per-layer coefficients so a layer-shifted row would show
    with jax.enable_x64(True):
        rule = make_rule("bio", L, mode, per_layer=True)
        theta, rows = _step_theta(rule, 6)
        W, B = _random_state(mode, 7)
        rng = np.random.default_rng(8)
        xs, ys = rng.uniform(size=(6, SIZES[0])), rng.integers(0, SIZES[-1], size=6)
        got_W, got_B = adapt_with_feedback(theta, rule, _f64(tuple(W)), _f64(tuple(B)), jnp.asarray(xs),
                                           jnp.asarray(ys))
        want_W, want_B = W, B
        for x, y in zip(xs, ys):
            want_W, want_B = ref.mode_state_step(rows, rule.layer_terms, rule.terms, want_W, want_B, x, y, mode,
                                                 _fparams(mode))
        _assert_trees_close(got_W, want_W, 1e-11, f"{mode} W")
        _assert_trees_close(got_B, want_B, 1e-11, f"{mode} B")
        if mode not in ("kp", "plastic"):
            for a, b in zip(got_B, B):
                np.testing.assert_array_equal(np.asarray(a), b)


def test_kp_step_moves_B_by_W_own_update():
    with jax.enable_x64(True):
        W, B = _random_state("kp", 9)
        W, B = _f64(tuple(W)), _f64(tuple(B))
        x, y = jnp.asarray(np.random.default_rng(10).uniform(size=SIZES[0])), jnp.asarray(1)
        # f0: B_{t+1} − B_t == W_{t+1} − W_t (to rounding: the same increment added to two matrices)
        rule = make_rule("f0", L, "kp")
        W1, B1 = state_step(jnp.array([0.3]), rule, W, B, x, y)
        for w0, w1, b0, b1 in zip(W, W1, B, B1):
            dW, dB = np.asarray(w1 - w0), np.asarray(b1 - b0)
            assert np.abs(dW).max() > 1e-4
            np.testing.assert_allclose(dB, dW, rtol=0, atol=1e-15)
        # with F3's decay θ_3: W − B scales by keep = 1 − θ_3
        rule = make_rule((0, 3), L, "kp")
        W1, B1 = state_step(jnp.array([0.3, 0.2]), rule, W, B, x, y)
        for w0, w1, b0, b1 in zip(W, W1, B, B1):
            np.testing.assert_allclose(np.asarray(w1 - b1), 0.8 * np.asarray(w0 - b0), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("terms,theta3", [("f0", None), ("bio", None), ((0, 3), 0.05)])
def test_kp_episode_keeps_W_minus_B(ci64, terms, theta3):
    # W_T − B_T = (W_0 − B_0) ⊙ Π keep: unchanged without a decay, shrunk by (1 − θ_3)^T with F3
    with jax.enable_x64(True):
        rule = make_rule(terms, L, "kp")
        theta, _ = _step_theta(rule, 11)
        assert theta3 is None or float(theta[1]) == theta3  # _step_theta's θ_3
        task, W0, B0 = draw(SPEC, jax.random.PRNGKey(12), ci64, jnp.float64, feedback="kp")
        WT, BT = adapt_with_feedback(theta, rule, W0, B0, task.xs, task.ys)
        T = task.xs.shape[0]
        factor = 1.0 if theta3 is None else (1.0 - theta3) ** T
        for w0, b0, wT, bT in zip(W0, B0, WT, BT):
            assert np.abs(np.asarray(wT - w0)).max() > 1e-3  # the episode did move W (and B)
            np.testing.assert_allclose(np.asarray(wT - bT), factor * np.asarray(w0 - b0), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- equivalences


def _adapted(rule, theta, key, ci64, draw_mode):
    task, W, B = draw(SPEC, key, ci64, jnp.float64, feedback=draw_mode)
    return adapt_with_feedback(theta, rule, W, B, task.xs, task.ys), B


def test_plastic_with_zero_theta_B_is_fa(ci64):
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(13)
        fa = make_rule("bio", L, "fa")
        theta_fa, _ = _step_theta(fa, 14)
        (W_fa, _), _ = _adapted(fa, theta_fa, key, ci64, "fa")
        plastic = make_rule("bio", L, "plastic")
        theta = jnp.concatenate([theta_fa, jnp.zeros(3)])
        (W_pl, B_pl), B0 = _adapted(plastic, theta, key, ci64, "plastic")
        _assert_trees_close(W_pl, W_fa, 1e-13, "W")
        for a, b in zip(B_pl, B0):  # B never moved
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        # and a non-zero Θ^B does change the run
        (W_pl2, _), _ = _adapted(plastic, theta.at[-1].set(0.3), key, ci64, "plastic")
        assert not np.allclose(np.asarray(W_pl2[0]), np.asarray(W_fa[0]), rtol=1e-6)


def test_routing_with_saturated_gates_is_fa_or_dfa(ci64):
    # float64: sigmoid(40) rounds to 1 exactly, sigmoid(−40) ≈ 4e-18 is below the resolution of
    # the signals, so φ = ±40 is fa / dfa to rounding
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(15)
        fa, dfa, routing = (make_rule("bio", L, m) for m in ("fa", "dfa", "routing"))
        theta_fa, _ = _step_theta(fa, 16)
        (W_fa, _), _ = _adapted(fa, theta_fa, key, ci64, "fa")
        (W_dfa, _), _ = _adapted(dfa, theta_fa, key, ci64, "dfa")
        (W_up, _), _ = _adapted(routing, jnp.concatenate([theta_fa, jnp.full(L - 1, 40.0)]), key, ci64, "routing")
        (W_down, _), _ = _adapted(routing, jnp.concatenate([theta_fa, jnp.full(L - 1, -40.0)]), key, ci64, "routing")
        _assert_trees_close(W_up, W_fa, 1e-13, "φ = +40 vs fa")
        _assert_trees_close(W_down, W_dfa, 1e-13, "φ = −40 vs dfa")
        # fa and dfa do differ on this episode (else the two checks above say nothing)
        assert not np.allclose(np.asarray(W_fa[0]), np.asarray(W_dfa[0]), rtol=1e-6)


# ----------------------------------------------------------------------------- Θ's layout


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("mode", FEEDBACK_MODES)
def test_theta_layout_and_labels(mode, per_layer):
    rule = make_rule("bio", L, mode, per_layer=per_layer)
    n_plastic = 3 * (L if per_layer else 1)
    n_feedback = {"plastic": 3, "routing": L - 1}.get(mode, 0)
    assert (rule.n_plastic, rule.n_feedback) == (n_plastic, n_feedback)
    assert rule.n_theta == rule.n_plastic + rule.n_feedback
    labels = rule.theta_labels()
    assert len(labels) == rule.n_theta
    assert all(lab.startswith("F") for lab in labels[:n_plastic])
    tail = {"plastic": ("B:kp", "B:decay", "B:err"), "routing": ("gate@0", "gate@1")}.get(mode, ())
    assert labels[n_plastic:] == tail
    theta0 = np.asarray(initial_theta(rule))
    assert theta0.shape == (rule.n_theta,)
    np.testing.assert_array_equal(theta0[n_plastic:], 0.0)
    np.testing.assert_allclose(theta0[:n_plastic], np.tile([1e-3, 0, 0], n_plastic // 3))
    th = jnp.arange(rule.n_theta, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(rule.plastic_theta(th)), np.arange(n_plastic))
    fp = rule.feedback_params(th)
    if n_feedback:
        np.testing.assert_array_equal(np.asarray(fp), np.arange(n_plastic, n_plastic + n_feedback))
    else:
        assert fp is None
    for layer in range(L):  # a layer's coefficients never reach into the feedback parameters
        assert np.asarray(rule.layer_theta(th, layer)).max() < n_plastic


@pytest.mark.parametrize("mode", ["plastic", "routing"])
def test_l1_does_not_penalise_the_feedback_parameters(mode):
    rule = make_rule("bio", L, mode)
    theta = jnp.asarray([0.5, -0.25, 0.125] + [2.0, -3.0, 4.0][: rule.n_feedback], jnp.float32)
    pen, sub = l1_penalty(theta, 0.1, rule.n_plastic)
    assert float(pen) == pytest.approx(0.1 * (0.5 + 0.25 + 0.125))
    np.testing.assert_allclose(np.asarray(sub), [0.1, -0.1, 0.1] + [0.0] * rule.n_feedback)
    # through meta_step (estimator: zero meta-gradient, SGD lr 1): only the coefficients move
    ci = build_class_index(load_dataset("digits"))

    def zero_grad(th, rule, spec, key, ci):
        return (jnp.zeros(()), jnp.zeros(())), jnp.zeros_like(th)

    state, m = meta_step(meta_init(theta, optax.sgd(1.0)), jax.random.PRNGKey(0), ci, rule=rule, spec=SPEC,
                         optimizer=optax.sgd(1.0), l1=0.1, estimator=zero_grad)
    np.testing.assert_allclose(np.asarray(state.theta), np.asarray(theta) - np.asarray(sub), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.theta)[rule.n_plastic:], np.asarray(theta)[rule.n_plastic:])
    assert float(m["meta_loss"]) == pytest.approx(float(pen))


# ----------------------------------------------------------------------------- meta-gradients

ALL_ESTIMATORS = ("reverse", "reverse-remat", "forward", "adjoint", "auto")
#: forward mode and the adjoint take the generic routes of the new modes (``forward_state_step``,
#: ``adjoint._state_forward``/``_state_backward``); reverse-remat's checkpointed scan carries B
#: across segments, which matters where B changes (kp, plastic); auto only dispatches to one of
#: them (checked without compiling by ``test_auto_dispatches_on_n_theta``). All five run on every
#: case with the slow tests.
CORE = ("reverse", "forward", "adjoint")
WITH_REMAT = CORE + ("reverse-remat",)
#: XLA's backend (LLVM) optimisation level 0 halves the compile time of these tiny programs (each
#: estimator's compile is 5-12 s on the shared 2-core test machine otherwise); it changes how the
#: program becomes machine code, not the HLO's arithmetic (no fast-math either way), and the
#: programs run in milliseconds
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _case(mode, rule_name, per_layer, names, slow=False):
    tag = f"{mode}-{rule_name}" + ("-per-layer" if per_layer else "") + ("-all" if slow else "")
    return pytest.param(mode, rule_name, per_layer, names, id=tag, marks=[pytest.mark.slow] if slow else [])


#: (mode, rule, per_layer, estimators); f0 rules, a per-layer routing rule and every estimator on
#: every case run with the slow tests
ESTIMATOR_CASES = [
    _case("dfa", "bio", False, CORE),
    _case("sign", "bio", False, CORE),
    _case("kp", "bio", False, WITH_REMAT),
    _case("plastic", "bio", False, WITH_REMAT),
    _case("routing", "bio", False, CORE),
    _case("plastic", "bio", True, CORE),
    *(_case(m, r, False, ALL_ESTIMATORS, slow=True) for r in ("bio", "f0") for m in NEW_MODES),
    *(_case(m, "bio", True, ALL_ESTIMATORS, slow=True) for m in ("plastic", "routing")),
]
#: the cases whose reverse-mode gradient is also checked by finite differences: the two modes
#: with meta-parameters of their own (Θ^B, φ)
FD_CASES = {("plastic", "bio", False), ("routing", "bio", False)}


def _estimator_theta(rule, seed=0):
    """initial_theta, perturbed: θ_0 = 0.1 and the other coefficients N(0, 0.02²) so that W moves
    in 12 steps; Θ^B = THETA_B, φ = PHI (away from 0, gates ≠ ½) so the gradient's feedback
    components are of the same order as the rest and each is checked at its own scale."""
    rng = np.random.default_rng(seed)
    theta = np.asarray(initial_theta(rule, jnp.float64)).copy()
    is_f0 = np.tile(np.array(rule.terms) == 0, rule.n_layers if rule.per_layer else 1)
    theta[: rule.n_plastic] += np.where(is_f0, 0.1, rng.normal(scale=0.02, size=rule.n_plastic))
    fp = _fparams(rule.feedback)
    if fp is not None:
        theta[rule.n_plastic:] += fp
    return jnp.asarray(theta, jnp.float64)


@pytest.mark.parametrize("mode,rule_name,per_layer,names", ESTIMATOR_CASES)
def test_estimators_agree_with_reverse_mode_in_float64(ci64, mode, rule_name, per_layer, names):
    with jax.enable_x64(True):
        rule = make_rule(rule_name, L, mode, per_layer=per_layer)
        theta = _estimator_theta(rule)
        key = jax.random.PRNGKey(21)
        fd = (mode, rule_name, per_layer) in FD_CASES
        h = 1e-5
        # θ ± h e_i, the points of the central differences
        shifts = jnp.concatenate([jnp.eye(rule.n_theta), -jnp.eye(rule.n_theta)]) * h

        # one program for every estimator (and the finite differences' losses): one compile per case
        def program(th, k, c):
            out = {n: ESTIMATORS[n](th, rule, SPEC, k, c) for n in names}
            if fd:
                out["fd"] = jax.vmap(lambda d: batch_loss(th + d, rule, SPEC, k, c)[0])(shifts)
            return out

        out = jax.jit(program, compiler_options=FAST_COMPILE)(theta, key, ci64)
        (want_loss, want_acc), want = out["reverse"]
        want = np.asarray(want)
        assert want.shape == (rule.n_theta,)
        # every component, the feedback parameters' included, is reached, except routing's φ_0
        # under a rule whose first layer reads no e_pre (f0): g_0 only mixes e_0, which nothing
        # reads then, so its gradient is exactly 0
        dead = np.zeros(rule.n_theta, bool)
        if mode == "routing" and not any(rule.term_pool[r].needs_e_pre for r in rule.layer_terms[0]):
            dead[rule.n_plastic] = True
        assert np.all(np.isfinite(want)) and np.all(np.abs(want[~dead]) > 1e-8 * np.abs(want).max()), want
        np.testing.assert_array_equal(want[dead], 0.0)
        # float64 over a 12-step episode: the estimators sum the same products in different
        # orders (forward vs reverse accumulation, the adjoint's rebuilt W_t, B_t); measured
        # ~1e-15 relative per component. 1e-9 per component (plus 1e-12 of the largest, for a
        # component near 0) leaves room for that to grow and is still far below a real
        # discrepancy (dropping B's tangent in forward mode, or B's cotangent in the adjoint, put
        # every component of kp's and plastic's gradient outside it)
        for name in names[1:]:
            (loss, acc), grad = out[name]
            assert float(loss) == pytest.approx(float(want_loss), rel=1e-12), name
            assert float(acc) == float(want_acc), name
            np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-9, atol=1e-12 * np.abs(want).max(),
                                       err_msg=f"{name} vs reverse, {mode} {rule_name} per_layer={per_layer}")
        if "auto" in names:  # the estimator the cost model picks for this Θ
            chosen = choose_estimator(rule.n_theta, rule.feedback)
            np.testing.assert_allclose(np.asarray(out["auto"][1]), np.asarray(out[chosen][1]), rtol=1e-14, atol=0)
        if fd:
            # reverse mode itself against central differences of batch_loss: error O(h²) + O(eps/h)
            # ≈ 1e-10 relative at h = 1e-5; rel 1e-5 leaves room for curvature, far below a wrong
            # path through B or the gates
            losses = np.asarray(out["fd"])
            grad_fd = (losses[: rule.n_theta] - losses[rule.n_theta:]) / (2 * h)
            np.testing.assert_allclose(want, grad_fd, rtol=1e-5, atol=1e-7 * np.abs(grad_fd).max(), err_msg=mode)


@pytest.mark.parametrize("mode", NEW_MODES)
def test_auto_dispatches_on_n_theta(ci, mode, monkeypatch):
    # auto asks the cost model with the whole Θ's size (the feedback parameters count: plastic's
    # Θ^B and routing's gates make f0 a 4- / 3-entry Θ) and the mode, and runs what it names
    asked, called = [], []
    choose = estimators.choose_estimator

    def recording_choose(*args):
        asked.append(args)
        return choose(*args)

    monkeypatch.setattr(estimators, "choose_estimator", recording_choose)
    for name in ALL_ESTIMATORS[:-1]:
        monkeypatch.setitem(ESTIMATORS, name, lambda *a, _n=name: called.append(_n) or _n)
    for rule_name in ("f0", "bio"):
        rule = make_rule(rule_name, L, mode)
        assert rule.n_theta == (1 if rule_name == "f0" else 3) + {"plastic": 3, "routing": L - 1}.get(mode, 0)
        got = ESTIMATORS["auto"](initial_theta(rule), rule, SPEC, jax.random.PRNGKey(0), ci)
        assert asked[-1] == (rule.n_theta, mode)
        assert got == called[-1] == choose(rule.n_theta, mode)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mode", ["dfa", "routing"])
def test_a_feedback_state_without_the_direct_matrices_is_refused(mode):
    rule = make_rule("bio", L, mode)
    W, B = init_network(jax.random.PRNGKey(0), SIZES)  # B_1 … B_L only
    x, y = jnp.ones(SIZES[0]), jnp.asarray(1)
    theta = initial_theta(rule)
    calls = {
        "check_weights": lambda: check_weights("check_weights", rule, W, B),
        "online_step": lambda: online_step(theta, rule, W, B, x, y),
        "adapt": lambda: adapt_with_feedback(theta, rule, W, B, x[None], y[None]),
    }
    for where, call in calls.items():
        with pytest.raises(checks.PlasticJaxError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(f"{where}:"), msg
        assert str(DIRECT_SHAPES) in msg and str(DIRECT_SHAPES[:L]) in msg, msg  # wanted and got
        assert "direct" in msg and "\n" not in msg, msg
    # the direct matrices in the wrong order (D_1 before D_0) are refused too
    D = (jnp.zeros(DIRECT_SHAPES[4]), jnp.zeros(DIRECT_SHAPES[3]))
    with pytest.raises(checks.PlasticJaxError, match=re.escape(str(DIRECT_SHAPES))):
        online_step(theta, rule, W, B + D, x, y)
    # and a layer-wise mode given direct matrices it does not use
    with pytest.raises(checks.PlasticJaxError, match=re.escape(str(DIRECT_SHAPES[:L]))):
        online_step(initial_theta(make_rule("bio", L, "kp")), make_rule("bio", L, "kp"), W,
                    B + D[::-1], x, y)


def test_routing_on_one_weight_layer_has_no_gate_and_equals_fa():
    """L = 1: no hidden layer, so no gate; e_0 = B_1ᵀ e_1 ⊙ σ′ as under fa (the rule reads e_pre)."""
    W, B = init_network(jax.random.PRNGKey(0), (6, 4))
    x, y = jnp.linspace(0.0, 1.0, 6), jnp.asarray(1)
    routing, fa = make_rule("0,2", 1, "routing"), make_rule("0,2", 1, "fa")
    assert routing.n_feedback == 0 and routing.theta_labels() == ("F0", "F2")
    theta = jnp.asarray([0.1, -0.05])
    got = online_step(theta, routing, W, B, x, y)[0]
    want = online_step(theta, fa, W, B, x, y)[0]
    assert float(jnp.max(jnp.abs(got - W[0]))) > 0
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
