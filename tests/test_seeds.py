"""--seeds (vmap over seeds), the bootstrap summary, --layer-rules and --analysis-every, end to end."""

import json
import os

import numpy as np
import pytest

from plastic_jax.cli import main
from plastic_jax.stats import bootstrap_ci, moving_average

TINY = ["--hidden", "12", "--M", "3", "--K", "5", "--Q", "3", "--no-progress"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_three_seeds_equal_three_single_seed_runs(tmp_path):
    # forward mode, not auto's adjoint: the three single-seed runs are one program, and the
    # adjoint's (a host callback in it) never enters the persistent compilation cache
    args = ["meta-train", "--rule", "ehebb", "--meta-grad", "forward", "--episodes", "3", "--analysis-every", "2",
            *TINY]
    assert main([*args, "--seeds", "3", "--seed", "5", "--out", str(tmp_path / "multi")]) == 0
    multi = _records(str(tmp_path / "multi"))
    assert sorted({r["seed"] for r in multi}) == [5, 6, 7]
    assert len(multi) == 3 * 3
    for s in (5, 6, 7):
        out = str(tmp_path / f"s{s}")
        assert main([*args, "--seed", str(s), "--out", out]) == 0
        single = _records(out)
        mine = [r for r in multi if r["seed"] == s]
        assert [r["episode"] for r in mine] == [r["episode"] for r in single] == [0, 1, 2]
        for a, b in zip(mine, single):
            # vmap over seeds batches the same float32 operations differently (XLA may fuse and sum
            # in another order), so values agree to float32 rounding, amplified a little by the
            # 15-step unroll and Adam: rtol 1e-4. Accuracy counts 9 query examples: a rounding
            # difference could only flip one prediction, so at most 1/9 apart; here they match.
            for k in ("meta_loss", "query_loss", "accuracy"):
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
            assert a["theta"].keys() == b["theta"].keys()
            for k in a["theta"]:
                assert a["theta"][k] == pytest.approx(b["theta"][k], rel=1e-4, abs=1e-7)
            assert ("alignment" in a) == ("alignment" in b) == (a["episode"] in (0, 2))
            if "alignment" in a:
                np.testing.assert_allclose(a["alignment"], b["alignment"], rtol=1e-3, atol=1e-3)
                np.testing.assert_allclose(a["orthonormality"], b["orthonormality"], rtol=1e-3)
    # the seeds really differ
    assert len({r["meta_loss"] for r in multi if r["episode"] == 0}) == 3
    summary = json.load(open(tmp_path / "multi" / "summary.json"))
    per_seed = summary["last100_accuracy_per_seed"]
    assert summary["last100_accuracy"] == pytest.approx(np.mean(per_seed))
    lo, hi = summary["last100_accuracy_ci98"]
    assert min(per_seed) - 1e-12 <= lo <= summary["last100_accuracy"] <= hi <= max(per_seed) + 1e-12


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_all_f0_layer_rules_equal_the_shared_f0_rule():
    """--layer-rules f0,f0,f0 gives the rule of --rule f0: same terms per layer, same Θ entries,
    and so the same meta-loss and meta-gradient."""
    import jax
    import jax.numpy as jnp

    from plastic_jax.config import TrainConfig, layer_term_sets
    from plastic_jax.data import build_class_index, load_dataset
    from plastic_jax.episode import EpisodeSpec
    from plastic_jax.estimators import reverse_grad
    from plastic_jax.inner import Rule

    per_layer = Rule(layer_term_sets(TrainConfig(layer_rules="f0,f0,f0", hidden=(12, 10))), "fa")
    shared = Rule(layer_term_sets(TrainConfig(rule="f0", hidden=(12, 10))), "fa")
    assert per_layer.layer_terms == shared.layer_terms == ((0,), (0,), (0,))
    assert per_layer.terms == shared.terms == (0,)
    ci = build_class_index(load_dataset("digits"))
    spec = EpisodeSpec((64, 12, 10, 10), 3, 5, 3)
    theta, key = jnp.array([0.05]), jax.random.PRNGKey(2)
    (la, _), ga = reverse_grad(theta, per_layer, spec, key, ci)
    (lb, _), gb = reverse_grad(theta, shared, spec, key, ci)
    assert float(la) == float(lb) and np.array_equal(ga, gb)


def test_mixed_layer_rules_with_bp_log_the_union_of_terms_and_zero_alignment(tmp_path):
    out = str(tmp_path / "mixed")
    assert main(["meta-train", "--episodes", "2", "--layer-rules", "f0,ehebb,0+9", "--hidden", "12,10",
                 "--feedback", "bp", "--analysis-every", "1", "--M", "3", "--K", "5", "--Q", "3",
                 "--no-progress", "--out", out]) == 0
    recs = _records(out)
    assert json.load(open(os.path.join(out, "config.json")))["layer_rules"] == "f0,ehebb,0+9"
    for r in recs:
        assert set(r["theta"]) == {"F0", "F2", "F9"}
        assert len(r["alignment"]) == len(r["orthonormality"]) == 3
        np.testing.assert_allclose(r["alignment"], 0.0, atol=1e-3)  # bp: e_ℓ is the backprop error
        assert all(v >= 0 for v in r["orthonormality"])


def test_layer_rules_of_the_wrong_length_is_a_one_line_error(tmp_path, capsys):
    assert main(["meta-train", "--episodes", "1", "--layer-rules", "f0,ehebb", "--hidden", "12,10",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--layer-rules names 2 rule(s) but the network has 3 weight layers" in err and "\n" not in err


def test_negative_analysis_every_is_rejected(tmp_path, capsys):
    assert main(["meta-train", "--episodes", "1", "--analysis-every", "-1", *TINY,
                 "--out", str(tmp_path / "r")]) == 2
    assert "--analysis-every must be a non-negative integer" in capsys.readouterr().err


# --- the bootstrap on known cases ------------------------------------------------------------


def test_bootstrap_ci_matches_the_normal_theory_width():
    """For n iid values the bootstrap mean has standard deviation ≈ s/√n (s: the ddof=0 std), so
    a 98% interval is ≈ mean ± 2.326 s/√n. 500 resamples estimate the 1% quantiles with a few
    percent of noise; 15% tolerance on the half-width."""
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    mean, lo, hi = bootstrap_ci(x, level=0.98, n_resamples=500)
    half = 2.3263 * x.std() / np.sqrt(len(x))
    assert mean == pytest.approx(x.mean())
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.15 * half)


def test_bootstrap_ci_two_values_spans_them():
    """Two seeds a, b: resampled means are a (p = 1/4), (a+b)/2 (1/2), b (1/4); the 1% and 99%
    quantiles of 500 draws are a and b (P(no a in 500 draws) = (3/4)^500 ≈ 0)."""
    mean, lo, hi = bootstrap_ci(np.array([0.2, 0.6]))
    assert (mean, lo, hi) == pytest.approx((0.4, 0.2, 0.6))


def test_bootstrap_ci_constant_is_a_point_and_one_seed_has_no_interval():
    assert bootstrap_ci(np.full(5, 0.7)) == pytest.approx((0.7, 0.7, 0.7))
    mean, lo, hi = bootstrap_ci(np.array([0.3]))
    assert mean == pytest.approx(0.3) and np.isnan(lo) and np.isnan(hi)


def test_bootstrap_ci_is_scipys_percentile_bootstrap_with_the_documented_semantics():
    """scipy.stats.bootstrap(method="percentile") is the hand-written definition: indices drawn
    once for all episodes (rng.integers(0, n, (B, n))), the ((1-level)/2, (1+level)/2) quantiles."""
    x = np.random.default_rng(3).normal(size=(7, 5))
    mean, lo, hi = bootstrap_ci(x, level=0.98, n_resamples=500, seed=11)
    idx = np.random.default_rng(11).integers(0, 7, size=(500, 7))
    means = x[idx].mean(axis=1)
    np.testing.assert_allclose(lo, np.quantile(means, 0.01, axis=0), rtol=1e-12)
    np.testing.assert_allclose(hi, np.quantile(means, 0.99, axis=0), rtol=1e-12)
    np.testing.assert_allclose(mean, x.mean(axis=0))


def test_bootstrap_ci_over_seeds_of_curves():
    curves = np.stack([np.arange(6.0) + s for s in range(4)])  # (seeds, episodes)
    mean, lo, hi = bootstrap_ci(curves, axis=0)
    assert mean.shape == lo.shape == hi.shape == (6,)
    np.testing.assert_allclose(mean, np.arange(6.0) + 1.5)
    # a shift by s per seed: the band has the same width at every episode
    np.testing.assert_allclose(hi - lo, (hi - lo)[0])
    assert np.all(lo < mean) and np.all(mean < hi)


def test_moving_average_against_a_loop():
    x = np.random.default_rng(0).normal(size=(2, 13))
    got = moving_average(x, 4)
    want = np.array([[row[max(0, t - 3): t + 1].mean() for t in range(13)] for row in x])
    np.testing.assert_allclose(got, want)


def test_a_one_seed_summary_has_no_interval():
    from plastic_jax.config import TrainConfig
    from plastic_jax.train import summarize

    cfg = TrainConfig(seeds=1, episodes=3)
    s = summarize(cfg, np.array([[0.2], [0.4], [0.6]]), np.zeros((1, 2), np.float32), (0, 2), None)
    assert s["last100_accuracy_ci98"] is None and s["last100_accuracy"] == pytest.approx(0.4)
    two = summarize(TrainConfig(seeds=2, episodes=1), np.array([[0.2, 0.6]]), np.zeros((2, 2), np.float32), (0, 2),
                    None)
    assert two["last100_accuracy_ci98"] == pytest.approx([0.2, 0.6])


def test_a_seed_that_diverged_throughout_is_counted_not_averaged_in():
    from plastic_jax.config import TrainConfig
    from plastic_jax.train import summarize

    nan = np.nan
    accs = np.array([[0.2, 0.5, nan], [nan, 0.7, nan], [0.4, 0.6, nan]])  # (episodes, seeds)
    s = summarize(TrainConfig(seeds=3, episodes=3), accs, np.zeros((3, 2), np.float32), (0, 2), None)
    assert s["last100_accuracy_per_seed"][:2] == pytest.approx([0.3, 0.6])  # an overflowed episode left out
    assert np.isnan(s["last100_accuracy_per_seed"][2]) and s["last100_seeds_without_accuracy"] == 1
    assert s["last100_accuracy"] == pytest.approx(0.45)  # over the two seeds with a finite accuracy
    assert s["last100_accuracy_ci98"] == pytest.approx([0.3, 0.6])
    sweep = summarize(TrainConfig(seeds=3, episodes=3, l1=(0.0, 1.0)), np.concatenate([accs, accs[:, :1] * 0 + 0.5], 1)
                      [:, [0, 1, 2, 3, 3, 3]], np.zeros((6, 2), np.float32), (0, 2), None)
    assert [c["last100_seeds_without_accuracy"] for c in sweep["combinations"]] == [1, 0]
    assert [c["last100_accuracy"] for c in sweep["combinations"]] == pytest.approx([0.45, 0.5])
