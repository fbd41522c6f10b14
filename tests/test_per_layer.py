"""Per-layer coefficients (Rule.per_layer, --per-layer-theta): Θ (L·R,), one row per weight layer."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plastic_jax.cli import main
from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec
from plastic_jax.estimators import ESTIMATORS
from plastic_jax.inner import adapt, initial_theta, make_rule
from plastic_jax.network import init_network

TERMS = (0, 2, 3, 9)


def _thetas(rule_shared):
    th = jnp.asarray([0.1, 0.02, 0.01, -0.03], jnp.float32)
    return th, jnp.tile(th, rule_shared.n_layers)


def test_theta_shape_labels_and_start():
    rule = make_rule(TERMS, n_layers=3, per_layer=True)
    assert rule.n_theta == 12 and make_rule(TERMS, n_layers=3).n_theta == 4
    assert rule.theta_labels()[:5] == ("F0@1", "F2@1", "F3@1", "F9@1", "F0@2")
    np.testing.assert_array_equal(np.asarray(initial_theta(rule)), np.tile([1e-3, 0, 0, 0], 3).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(rule.layer_theta(jnp.arange(12.0), 2)), [8, 9, 10, 11])


def test_equal_rows_give_the_same_run():
    shared = make_rule(TERMS, n_layers=3, feedback="fa")
    per = shared._replace(per_layer=True)
    th, th_rows = _thetas(shared)
    W, B = init_network(jax.random.PRNGKey(1), (20, 9, 7, 5))
    xs = jax.random.uniform(jax.random.PRNGKey(2), (25, 20))
    ys = jax.random.randint(jax.random.PRNGKey(3), (25,), 0, 5)
    for a, b in zip(adapt(th, shared, W, B, xs, ys), adapt(th_rows, per, W, B, xs, ys)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("estimator", ["reverse", "adjoint", "forward"])
def test_shared_gradient_is_the_sum_of_the_layers_gradients(estimator):
    ci = build_class_index(load_dataset("digits"))
    spec = EpisodeSpec((64, 16, 12, 10), M=3, K=5, Q=3, meta_batch=2)
    shared = make_rule(TERMS, n_layers=3, feedback="bp", bp_grad="through")
    per = shared._replace(per_layer=True)
    th, th_rows = _thetas(shared)
    key = jax.random.PRNGKey(4)
    est = jax.jit(ESTIMATORS[estimator], static_argnums=(1, 2))
    (loss, acc), g = est(th, shared, spec, key, ci)
    (loss_p, acc_p), g_rows = est(th_rows, per, spec, key, ci)
    assert float(loss_p) == pytest.approx(float(loss), rel=1e-6) and float(acc_p) == pytest.approx(float(acc))
    assert g_rows.shape == (12,)
    summed = np.asarray(g_rows).reshape(3, 4).sum(axis=0)
    np.testing.assert_allclose(summed, np.asarray(g), rtol=1e-4, atol=1e-5 * np.abs(np.asarray(g)).max())
    # and the layers really get different gradients
    rows = np.asarray(g_rows).reshape(3, 4)
    assert not np.allclose(rows[0], rows[1])


TINY = ["--hidden", "16,12", "--M", "3", "--K", "5", "--Q", "2", "--no-progress"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_meta_train_resume_evaluate_and_plot_with_per_layer_theta(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["meta-train", "--rule", "bio", "--per-layer-theta", "--meta-grad", "adjoint", "--holdout", "0.5",
            "--checkpoint-every", "2", "--out", out, *TINY]
    assert main([*args, "--episodes", "2"]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["per_layer_theta"] is True
    labels = {f"F{r}@{layer}" for r in (0, 2, 9) for layer in (1, 2, 3)}
    assert all(set(r["theta"]) == labels for r in _records(out))
    # a resume continues the same Θ layout
    assert main(["meta-train", "--resume", out, "--episodes", "3", "--no-progress"]) == 0
    recs = _records(out)
    assert [r["episode"] for r in recs] == [0, 1, 2] and all(set(r["theta"]) == labels for r in recs)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert set(summary["theta"][0]) == labels

    from plastic_jax.evaluate import evaluate_run

    res = evaluate_run(out, tasks=3, tune_tasks=3, baseline_grid=(0.03,))  # tuning: the evaluation's program
    learned = res["rules"][0]
    assert learned["name"] == "learned" and set(learned["theta"]) == labels
    np.testing.assert_allclose([learned["theta"][k] for k in sorted(labels)],
                               [summary["theta"][0][k] for k in sorted(labels)], rtol=1e-6)

    from plastic_jax.plots import load_run

    run = load_run(out)
    assert set(run.theta) == labels
    assert main(["plot", out, "--out", str(tmp_path / "fig")]) == 0
    assert os.path.exists(str(tmp_path / "fig" / "theta.png"))


def test_resume_cannot_change_per_layer_theta(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["meta-train", "--rule", "f0", "--episodes", "1", "--checkpoint-every", "1", "--out", out, *TINY]) == 0
    capsys.readouterr()
    assert main(["meta-train", "--resume", out, "--episodes", "2", "--per-layer-theta"]) == 2
    err = capsys.readouterr().err
    assert "per-layer-theta" in err and len(err.strip().splitlines()) == 1
