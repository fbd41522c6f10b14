"""plastic_jax.stability and scripts/stability_map.py: the cells' regimes against a direct sensitivity
computation, a diverged cell, the slices' cell order, the ray's edge bracket, the quick mode's JSON and
figure."""

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import stability_map as sm  # noqa: E402

from plastic_jax import stability as st  # noqa: E402
from plastic_jax.data import build_class_index, load_dataset  # noqa: E402
from plastic_jax.episode import EpisodeSpec  # noqa: E402
from plastic_jax.inner import make_rule  # noqa: E402
from plastic_jax.sensitivity import episode_sensitivity, regime  # noqa: E402

#: two hidden layers: with one, even θ0 = 1e8 leaves the weights finite (they grow linearly in θ0)
SPEC = EpisodeSpec((64, 16, 16, 10), M=3, K=5, Q=2)
RULE = make_rule("bio", n_layers=3, feedback="fa")
#: Θ = (θ0, θ2, θ9) of the tiny config: smooth (amplification 10-20), chaotic (6e3 … 8e7, weights
#: finite), diverged (weights overflow)
SMOOTH, CHAOTIC, DIVERGED = (0.01, -0.01, 0.001), (2.0, 0.0, 0.0), (1e8, 0.0, 0.0)


@pytest.fixture(scope="module")
def ci():
    return build_class_index(load_dataset("digits"))


def test_cells_are_classified_as_the_direct_sensitivity_of_their_tasks(ci):
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    thetas = np.array([SMOOTH, CHAOTIC, DIVERGED])
    fn = st.make_evaluator(RULE, SPEC, 1e3)
    res = st.evaluate(fn, thetas, keys, ci, chunk=2)  # two calls, the second padded
    assert res["regime"].shape == (3, 3) and res["amplification"].shape == (3, 3)
    direct = [[episode_sensitivity(jnp.asarray(th, jnp.float32), RULE, SPEC, k, ci) for k in keys] for th in thetas]
    want = np.array([[int(regime(s)) for s in row] for row in direct])
    np.testing.assert_array_equal(res["regime"], want)
    np.testing.assert_array_equal(want, [[0] * 3, [1] * 3, [2] * 3])  # the three Θ are what they claim
    np.testing.assert_array_equal(st.classify(res["amplification"], res["diverged"]), want)  # NumPy twin
    # a smooth episode is not sensitive to rounding: the amplification itself agrees
    np.testing.assert_allclose(res["amplification"][0], [float(s.amplification) for s in direct[0]], rtol=1e-4)
    np.testing.assert_allclose(res["loss"][0], [float(s.loss) for s in direct[0]], rtol=1e-5)
    cells = st.cell_summary(res)
    np.testing.assert_array_equal(cells["regime"], [0, 1, 2])
    assert np.isnan(cells["log10_amplification"][2]) and np.isnan(cells["accuracy"][2])
    assert cells["log10_amplification"][1] > 3 > cells["log10_amplification"][0]
    assert cells["diverged_frac"].tolist() == [0.0, 0.0, 1.0]


def test_a_cell_takes_its_worst_task():
    res = {"amplification": np.array([[10.0, 5e3, np.nan], [10.0, 20.0, 30.0]]),
           "diverged": np.array([[False, False, True], [False, False, False]]),
           "loss": np.ones((2, 3)), "accuracy": np.ones((2, 3))}
    res["regime"] = st.classify(res["amplification"], res["diverged"])
    np.testing.assert_array_equal(res["regime"], [[0, 1, 2], [0, 0, 0]])
    cells = st.cell_summary(res)
    np.testing.assert_array_equal(cells["regime"], [2, 0])
    assert cells["log10_amplification"][0] == pytest.approx(np.median([1.0, np.log10(5e3)]))
    assert cells["chaotic_frac"][0] == pytest.approx(1 / 3)


def test_a_huge_theta0_is_diverged_not_chaotic(ci):
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    res = st.evaluate(st.make_evaluator(RULE, SPEC, 1e3), np.array([DIVERGED]), keys, ci, chunk=1)
    assert res["diverged"].all() and (res["regime"] == 2).all()
    assert st.cell_summary(res)["regime"].tolist() == [2]


def test_axes_are_even_in_their_scale():
    a = st.Axis("F0", 1e-3, 1.0, "log")
    np.testing.assert_allclose(np.log10(a.edges(3)), [-3, -2, -1, 0])
    np.testing.assert_allclose(np.log10(a.centers(3)), [-2.5, -1.5, -0.5])
    s = st.Axis("F2", -1.0, 1.0, "symlog", linthresh=1e-3)
    c = s.centers(5)
    assert c[2] == pytest.approx(0.0, abs=1e-12) and c[0] == pytest.approx(-c[-1]) and (np.diff(c) > 0).all()


def test_classify_is_strict_at_the_threshold_and_diverged_wins():
    amp = np.array([1e3, 1e3 + 1, np.inf, np.nan, 5.0, 5.0])
    div = np.array([False, False, False, False, False, True])
    np.testing.assert_array_equal(st.classify(amp, div), [0, 1, 1, 1, 0, 2])
    np.testing.assert_array_equal(st.classify(amp.reshape(2, 3), div.reshape(2, 3), threshold=4.0),
                                  [[1, 1, 1], [1, 1, 2]])


def test_slice_cells_are_row_major_over_y_then_x():
    xa, ya = st.Axis("F0", 1e-3, 1.0, "log"), st.Axis("F9", -0.1, 0.3, "symlog")
    fixed = {"F0": 0.5, "F2": -0.02, "F9": 0.7}
    th = st.slice_thetas(xa, ya, 3, fixed, st.TERM_INDEX)
    want = [[x, -0.02, y] for y in ya.centers(3) for x in xa.centers(3)]  # θ2 held, y the slow index
    np.testing.assert_array_equal(th, want)


def test_flags_override_the_median_learned_theta():
    learned = [{"run": "r", "seed": s, "theta": [0.01 * (s + 1), -0.1 * s, 0.002]} for s in range(3)]
    fixed, src = st.fixed_values(learned, {"F0": None, "F2": None, "F9": 0.5})
    assert fixed == pytest.approx({"F0": 0.02, "F2": -0.1, "F9": 0.5})
    assert "F9 from --fixed-theta9" in src and "F0 from" not in src
    assert st.fixed_values([], {})[0] == st.FALLBACK_FIXED


def _threshold_evaluator(edge: float, calls: list[int]):
    """An evaluator stand-in: every task of a cell is chaotic when x_scale·θ0 > ``edge`` (amplification
    1000·x_scale·θ0); records the number of cells of each call (padding included)."""

    def fn(thetas, keys, x_scale, ci):
        th0 = np.asarray(thetas, np.float64)[:, 0] * float(x_scale)
        calls.append(len(th0))
        tile = lambda v: np.repeat(v[:, None], len(keys), axis=1)  # noqa: E731
        return {"amplification": tile(1e3 * th0), "regime": tile((th0 > edge).astype(int))}

    return fn


def test_the_ray_brackets_the_factor_where_a_cell_turns_non_smooth():
    calls: list[int] = []
    fn = _threshold_evaluator(1.0, calls)
    factors = st.ray_factors(16.0)
    np.testing.assert_allclose(factors, 2 ** (np.arange(9) / 2))
    thetas = np.array([[0.3, 0.0, 0.0], [2.0, 0.0, 0.0], [0.01, 0.0, 0.0]])
    inside, at_1, never = st.ray_edges(fn, thetas, factors, np.zeros((2, 2)), None, 1.0, chunk=8, refine=3)
    # θ0 = 0.3 turns at c = 1/0.3: on the ladder between 2^(3/2) and 4, then 3 bisections in log c
    assert inside["ladder_bracket"] == pytest.approx([2 ** 1.5, 4.0])
    lo, hi = inside["edge_bracket"]
    assert lo < 1 / 0.3 < hi and hi / lo == pytest.approx(2 ** (1 / 16))
    assert inside["edge_factor"] == pytest.approx(math.sqrt(lo * hi))
    assert inside["regimes"] == ["smooth"] * 4 + ["chaotic"] + [None] * 4  # not climbed past the edge
    assert inside["amplification_at_1"] == pytest.approx([300.0, 300.0])
    assert at_1["regime_at_1"] == "chaotic" and at_1["ladder_bracket"] == [None, 1.0] and at_1["edge_factor"] is None
    assert at_1["regimes"][1:] == [None] * 8
    assert never["edge_bracket"] == [16.0, None] and never["regimes"] == ["smooth"] * 9
    # one padded call of the three Θ per rung while some Θ is smooth, then one per bisection of the one
    # closed bracket (a single Θ is not padded)
    assert calls == [3] * 9 + [1] * 3
    # scaled inputs move the edge: x_scale 2 halves it; the EMNIST scale (rounded) joins the list once
    calls.clear()
    scaled = st.input_scale_edges(fn, [0.3, 0.0, 0.0], [2.0, 1.0], 2.00001, factors, np.zeros((2, 2)), None, 8, 3)
    assert [r["scale"] for r in scaled] == [1.0, 2.0] and [r["emnist_energy"] for r in scaled] == [False, True]
    assert scaled[0]["edge_bracket"] == pytest.approx(inside["edge_bracket"])
    assert scaled[1]["edge_bracket"][0] < 1 / 0.6 < scaled[1]["edge_bracket"][1]


def _fake_run(path):
    """A finished run of two seeds whose Θ walks from the initial Θ to (0.01, −0.01·(s+1), 0.001)."""
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"rule": "bio", "feedback": "fa", "theta0": 1e-3}, f)
    finals = {s: {"F0": 0.01, "F2": -0.01 * (s + 1), "F9": 0.001} for s in (0, 1)}
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for ep in range(4):
            for s in (0, 1):
                th = {k: v * (ep + 1) / 4 for k, v in finals[s].items()}
                f.write(json.dumps({"episode": ep, "seed": s, "accuracy": 0.5, "meta_loss": 1.0, "theta": th}) + "\n")
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump({"seeds": [0, 1], "theta": [finals[0], finals[1]], "last100_accuracy_per_seed": [0.5, None]}, f)


def test_quick_mode_writes_the_grid(tmp_path):
    run = str(tmp_path / "bio-fa")
    _fake_run(run)
    out, path = str(tmp_path / "figs"), str(tmp_path / "map.json")
    assert sm.main(["--quick", "--out", out, "--json", path, "--runs", run, "--traj-seeds", "1"]) == 0
    with open(path) as f:
        d = json.load(f)
    assert d["setup"]["grid"] == 3 and d["setup"]["tasks_per_cell"] == 2 and d["runs"] == [run]
    assert d["fixed"] == pytest.approx({"F0": 0.01, "F2": -0.015, "F9": 0.001})  # median over the two seeds
    assert [sl["name"] for sl in d["slices"]] == ["F0xF2", "F0xF9"]
    for sl in d["slices"]:
        assert sl["shape"] == [3, 3] and np.array(sl["regime"]).shape == (3, 3)
        assert set(np.ravel(sl["regime"])) <= {0, 1, 2}
        assert np.array(sl["amplification_tasks"], dtype=float).shape == (3, 3, 2)
        assert np.array(sl["log10_amplification"], dtype=float).shape == (3, 3)
        assert len(sl["x"]["values"]) == 3 and len(sl["y"]["edges"]) == 4
        assert sum(sl["fractions"].values()) == pytest.approx(1.0)
    assert os.path.getsize(os.path.join(out, "stability_map_slices.png")) > 1000
    traj = st.read_trajectories(run)
    assert sorted(traj) == [0, 1] and traj[1].shape == (5, 3)
    np.testing.assert_allclose(traj[1][0], [1e-3, 0.0, 0.0])
    np.testing.assert_allclose(traj[1][-1], [0.01, -0.02, 0.001])
