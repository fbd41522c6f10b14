"""Alignment angles and orthonormality error (docs/METHOD.md §6) against NumPy evaluations of their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from plastic_jax.data import build_class_index, load_dataset, sample_task
from plastic_jax.episode import EpisodeSpec
from plastic_jax.inner import adapt, make_rule
from plastic_jax.metrics import alignment_angles, angle_deg, episode_analysis, orthonormality_errors
from plastic_jax.network import init_network

SIZES = (64, 16, 12, 10)


@pytest.mark.parametrize(
    "u,v,deg",
    [
        ([1.0, 0.0], [0.0, 1.0], 90.0),
        ([1.0, 0.0], [1.0, 1.0], 45.0),
        ([1.0, 0.0], [-1.0, 0.0], 180.0),
        ([2.0, 0.0, 0.0], [5.0, 0.0, 0.0], 0.0),
        ([1.0, 0.0], [-1.0, 3.0**0.5], 120.0),
        ([1.0, 1.0, 0.0], [0.0, 1.0, 1.0], 60.0),
    ],
)
def test_angle_on_hand_built_vectors(u, v, deg):
    assert float(angle_deg(jnp.array(u), jnp.array(v))) == pytest.approx(deg, abs=1e-4)


def test_angle_is_accurate_for_nearly_parallel_vectors():
    # 1e-4 rad apart: arccos of a float32 cosine would return 0 or ~0.03°, the exact value is 0.00573°
    u = jnp.array([1.0, 0.0])
    v = jnp.array([np.cos(1e-4), np.sin(1e-4)], jnp.float32)
    assert float(angle_deg(u, v)) == pytest.approx(np.degrees(1e-4), rel=1e-3)


@pytest.fixture(scope="module")
def adapted():
    """One fa episode on digits with the bio rule, so that W has moved away from its init."""
    data = load_dataset("digits")
    ci = build_class_index(data)
    task = sample_task(jax.random.PRNGKey(3), ci, 3, 8, 4)
    rule = make_rule([0, 2, 9], n_layers=3, feedback="fa")
    theta = jnp.array([0.05, 0.02, 0.01])
    W, B = init_network(jax.random.PRNGKey(4), SIZES)
    W = adapt(theta, rule, W, B, task.xs, task.ys)
    return W, B, task


def _np(W):
    return [np.asarray(w, np.float64) for w in W]


def test_alignment_against_numpy(adapted):
    W, B, task = adapted
    xq, yq = np.asarray(task.xq, np.float64), np.asarray(task.yq)
    Wn, Bn = _np(W), _np(B)
    e_fa = [ref.errors(Wn, Bn, ref.forward(Wn, x)[0], y, "fa") for x, y in zip(xq, yq)]
    e_bp = [ref.errors(Wn, Bn, ref.forward(Wn, x)[0], y, "bp") for x, y in zip(xq, yq)]
    want = []
    for l in range(1, len(W) + 1):
        a = np.mean([e[l] for e in e_fa], axis=0)
        b = np.mean([e[l] for e in e_bp], axis=0)
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        want.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    got = np.asarray(alignment_angles(W, B, "fa", task.xq, task.yq))
    assert got.shape == (len(W),)
    assert got[-1] == pytest.approx(0.0, abs=1e-3)  # α_L = 0: both use e_L = softmax - onehot
    assert np.all(np.asarray(want[:-1]) > 1.0)  # random feedback: the hidden errors disagree
    np.testing.assert_allclose(got, want, atol=0.05)  # float32 vs float64, angles of tens of degrees


def test_bp_feedback_has_zero_alignment_angle_at_every_layer(adapted):
    W, B, task = adapted
    got = np.asarray(alignment_angles(W, B, "bp", task.xq, task.yq))
    np.testing.assert_allclose(got, 0.0, atol=1e-3)


def test_orthonormality_against_numpy(adapted):
    W, _, task = adapted
    Wn = _np(W)
    want = []
    for l, w in enumerate(Wn):
        errs = []
        for x in np.asarray(task.xq, np.float64):
            ys, _ = ref.forward(Wn, x)
            d = w @ ys[l] - w @ w.T @ ys[l + 1]
            errs.append(np.linalg.norm(d) ** 2)
        want.append(np.mean(errs))
    got = np.asarray(orthonormality_errors(W, task.xq))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_orthonormal_linear_layer_has_zero_error():
    # if W Wᵀ = I and y_ℓ = W y_{ℓ-1} (linear), the error is 0; a softplus layer is not linear,
    # so check the formula's algebra directly on an orthonormal W with y_ℓ := W y_{ℓ-1}
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 4)))
    w = q.T  # (4, 6), rows orthonormal
    x = np.random.default_rng(1).normal(size=6)
    y = w @ x
    assert np.linalg.norm(w @ x - w @ w.T @ y) < 1e-12


def test_episode_analysis_reuses_the_meta_steps_episode():
    """Its accuracy equals the accuracy of meta.batch_loss on the same key and Θ."""
    from plastic_jax.episode import batch_loss

    data = load_dataset("digits")
    ci = build_class_index(data)
    spec = EpisodeSpec(SIZES, 3, 6, 4, meta_batch=2)
    rule = make_rule([0], n_layers=3, feedback="fa")
    theta = jnp.array([0.05])
    key = jax.random.PRNGKey(11)
    _, acc = batch_loss(theta, rule, spec, key, ci)
    out = episode_analysis(theta, rule, spec, key, ci)
    assert float(out["accuracy"]) == pytest.approx(float(acc), abs=1e-6)
    assert out["alignment"].shape == (3,) and out["orthonormality"].shape == (3,)
