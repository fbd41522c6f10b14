"""``plastic-jax evaluate`` end to end on digits, checked against the NumPy reference episode."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import reference as ref

from plastic_jax.cli import main
from plastic_jax.config import TrainConfig, class_split
from plastic_jax.data import build_class_index, load_dataset, sample_task
from plastic_jax.evaluate import EVAL_STREAM, mean_ci95, stream_keys
from plastic_jax.network import init_network

TINY = ["--hidden", "8", "--K", "3", "--Q", "2"]
M, K, Q, HIDDEN = 5, 3, 2, 8


def reference_accuracy(key, ci, theta, terms, feedback, sizes):
    """Query accuracy of one task, the episode run by the literal NumPy reference (float64).

    Only the task data and the initial W, B come from JAX, drawn from the key exactly as
    ``meta.task_loss`` documents: key → (task key, network key).
    """
    k_task, k_net = jax.random.split(key)
    task = sample_task(k_task, ci, M, K, Q)
    W, B = init_network(k_net, sizes)
    W = [np.asarray(w, np.float64) for w in W]
    B = [np.asarray(b, np.float64) for b in B]
    layer_terms = [terms] * len(W)
    for x, y in zip(np.asarray(task.xs, np.float64), np.asarray(task.ys)):
        W = ref.online_step(theta, layer_terms, list(terms), W, B, x, int(y), feedback)
    return ref.query_loss(W, np.asarray(task.xq, np.float64), np.asarray(task.yq))[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as meta-train writes it (config.json with the recorded split, summary.json),
    written directly to keep the test fast; the slow test below runs meta-train itself."""
    out = tmp_path_factory.mktemp("ev") / "run"
    out.mkdir()
    cfg = TrainConfig(rule="bio", holdout=0.5, hidden=(HIDDEN,), K=K, Q=Q, episodes=3, out=str(out))
    train, test = class_split(cfg, 10)
    cfg = dataclasses.replace(cfg, extra={"class_split": {"train": list(train), "test": list(test)}})
    cfg.dump(str(out / "config.json"))
    summary = {"episodes": 3, "seeds": [0], "theta": [{"F0": 0.05, "F2": -0.02, "F9": 0.01}]}
    (out / "summary.json").write_text(json.dumps(summary))
    return str(out)


def test_evaluate_run_end_to_end(run_dir, tmp_path, capsys):
    js = str(tmp_path / "ev.json")
    n = 4
    assert main(["evaluate", run_dir, "--tasks", str(n), "--tune-tasks", "2", "--baseline-grid", "0.03,0.3",
                 "--json", js]) == 0
    printed = capsys.readouterr().out
    res = json.load(open(js))
    assert [r["name"] for r in res["rules"]] == ["learned", "f0+bp", "f0+fa"]
    for name in ("learned", "f0+bp", "f0+fa"):
        assert name in printed

    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    test = cfg["extra"]["class_split"]["test"]
    assert res["test_classes"] == test and res["held_out"]
    assert set(test).isdisjoint(cfg["extra"]["class_split"]["train"])
    learned = res["rules"][0]
    assert learned["theta"] == pytest.approx(summary["theta"][0], rel=1e-6)
    for r in res["rules"]:
        assert r["tasks"] == n and 0.0 <= r["mean_accuracy"] <= 1.0
        lo, hi = r["ci95"]
        assert lo <= r["mean_accuracy"] <= hi
    for name in ("f0+bp", "f0+fa"):
        t = res["baseline_tuning"][name]
        assert t["chosen"] in (0.03, 0.3) and t["chosen"] == t["grid"][int(np.argmax(t["mean_accuracy"]))]
        # tuning drew tasks from the meta-training classes only
        assert set(t["classes"]) == set(cfg["extra"]["class_split"]["train"])

    # every rule's mean equals the NumPy reference episode on the same held-out tasks
    data = load_dataset("digits")
    ci = build_class_index(data, test)
    sizes = (64, HIDDEN, 10)
    keys = stream_keys(0, EVAL_STREAM, n)
    for r in res["rules"]:
        theta = np.array([r["theta"][f"F{t}"] for t in r["terms"]], np.float64)
        accs = [reference_accuracy(k, ci, theta, tuple(r["terms"]), r["feedback"], sizes) for k in keys]
        # float32 vs float64: allow one query example of one task to flip
        assert r["mean_accuracy"] == pytest.approx(np.mean(accs), abs=1.0 / (M * Q * n) + 1e-9), r["name"]


def test_rule_by_hand_without_split_warns_and_matches_the_baseline(tmp_path, capsys):
    js = str(tmp_path / "ev.json")
    assert main(["evaluate", "--terms", "0", "--feedback", "bp", "--theta", "0.1", "--baseline-lr", "0.1",
                 "--tasks", "3", *TINY, "--json", js]) == 0
    err = capsys.readouterr().err
    assert "warning: the run has no class split" in err
    res = json.load(open(js))
    rules = {r["name"]: r for r in res["rules"]}
    assert res["test_classes"] == list(range(10)) and not res["held_out"]
    # the same rule and θ on the same task keys gives the same accuracies as f0+bp
    assert rules["given"]["mean_accuracy"] == rules["f0+bp"]["mean_accuracy"]
    diff = {p["name"]: p for p in res["paired_differences"]}["given - f0+bp"]
    assert diff["mean_difference"] == 0.0 and diff["ci95"] == [0.0, 0.0]


def test_mean_ci95_is_the_t_interval():
    x = np.array([0.2, 0.4, 0.5, 0.9, 0.3, 0.6, 0.7, 0.4])
    m, (lo, hi) = mean_ci95(x)
    sd = np.sqrt(((x - x.mean()) ** 2).sum() / 7)
    half = 2.364624 * sd / np.sqrt(8)  # t_{0.975, 7} from a printed table
    assert m == pytest.approx(0.5)
    assert lo == pytest.approx(m - half, abs=1e-6) and hi == pytest.approx(m + half, abs=1e-6)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--terms", "0,2", "--theta", "0.1"], "--theta has 1 value(s) but the rule has 2 term(s)"),
        (["--terms", "0", "--theta", "0.1", "--tasks", "1"], "--tasks must be at least 2"),
        (["--terms", "0"], "give a RUN_DIR"),
        (["--terms", "0", "--theta", "0.1", "--test-classes", "1,2,3"], "--M 5 is larger than the 3 held-out"),
        (["--terms", "0", "--theta", "0.1", "--baseline-lr", "-1"], "--baseline-lr must be positive"),
    ],
)
def test_bad_evaluate_input_exits_2_with_one_line(args, message, capsys):
    assert main(["evaluate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err



@pytest.mark.slow
def test_meta_train_then_evaluate(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["meta-train", "--rule", "bio", "--holdout", "0.5", "--episodes", "3", *TINY, "--out", out,
                 "--no-progress"]) == 0
    js = str(tmp_path / "ev.json")
    assert main(["evaluate", out, "--tasks", "4", "--tune-tasks", "2", "--json", js]) == 0
    res = json.load(open(js))
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert res["rules"][0]["theta"] == pytest.approx(summary["theta"][0], rel=1e-6)
    assert res["held_out"] and len(res["test_classes"]) == 5


def test_evaluate_run_is_a_library_function_equal_to_the_cli(run_dir, tmp_path):
    from plastic_jax.evaluate import evaluate_run

    js = str(tmp_path / "ev.json")
    assert main(["evaluate", run_dir, "--tasks", "4", "--tune-tasks", "2", "--baseline-grid", "0.03,0.3",
                 "--f5-f8", "matrix", "--json", js]) == 0
    res = evaluate_run(run_dir, tasks=4, tune_tasks=2, baseline_grid=(0.03, 0.3))
    assert json.loads(json.dumps(res)) == json.load(open(js))


@pytest.fixture(scope="module")
def three_seed_run(tmp_path_factory):
    """A run of 3 seeds (config.json and summary.json written directly, as ``run_dir``)."""
    out = tmp_path_factory.mktemp("ev3") / "run"
    out.mkdir()
    cfg = TrainConfig(rule="bio", holdout=0.5, hidden=(HIDDEN,), K=K, Q=Q, episodes=3, seeds=3, seed=7, out=str(out))
    train, test = class_split(cfg, 10)
    cfg = dataclasses.replace(cfg, extra={"class_split": {"train": list(train), "test": list(test)}})
    cfg.dump(str(out / "config.json"))
    thetas = [{"F0": 0.05, "F2": -0.02, "F9": 0.01}, {"F0": 0.1, "F2": 0.0, "F9": 0.0},
              {"F0": 0.02, "F2": 0.01, "F9": -0.01}]
    (out / "summary.json").write_text(json.dumps({"episodes": 3, "seeds": [7, 8, 9], "theta": thetas}))
    return str(out)


def test_evaluate_every_seed_with_an_interval_over_seeds(three_seed_run, tmp_path, capsys):
    js = str(tmp_path / "ev.json")
    assert main(["evaluate", three_seed_run, "--tasks", "4", "--tune-tasks", "2", "--baseline-grid", "0.03,0.3",
                 "--json", js]) == 0
    captured = capsys.readouterr()
    assert "evaluate: learned on 4 tasks × 3 seeds … (" in captured.err  # progress on stderr
    assert "evaluate: tuning θ_0 of f0+bp" in captured.err
    res = json.load(open(js))
    assert [p["seed"] for p in res["per_seed"]] == [7, 8, 9]
    assert res["per_seed"][1]["theta"] == pytest.approx({"F0": 0.1, "F2": 0.0, "F9": 0.0})
    means = [p["mean_accuracy"] for p in res["per_seed"]]
    over = res["across_seeds"]
    assert over["seeds"] == 3 and over["mean_accuracy"] == pytest.approx(np.mean(means))
    m, (lo, hi) = mean_ci95(np.array(means))
    assert over["ci95"] == pytest.approx([lo, hi])
    learned = res["rules"][0]
    assert learned["name"] == "learned" and learned["seeds"] == 3
    assert learned["mean_accuracy"] == pytest.approx(np.mean(means))
    assert "over 3 meta-training seed(s)" in captured.out
    # --seed-index: that seed only, and no interval over seeds
    assert main(["evaluate", three_seed_run, "--seed-index", "1", "--tasks", "4", "--tune-tasks", "2",
                 "--baseline-grid", "0.03,0.3", "--json", js]) == 0
    one = json.load(open(js))
    assert [p["seed"] for p in one["per_seed"]] == [8] and one["across_seeds"]["ci95"] is None
    assert one["rules"][0]["mean_accuracy"] == pytest.approx(means[1])


def test_a_theta_given_by_hand_is_called_given(tmp_path):
    js = str(tmp_path / "ev.json")
    assert main(["evaluate", "--terms", "0", "--feedback", "bp", "--theta", "0.1", "--baseline-lr", "0.1",
                 "--tasks", "3", *TINY, "--json", js]) == 0
    res = json.load(open(js))
    assert [r["name"] for r in res["rules"]] == ["given", "f0+bp", "f0+fa"]
    assert res["per_seed"] == [] and res["across_seeds"] is None


# --- the headline interval: a two-way bootstrap over seeds and tasks ------------------------------


def two_way_bootstrap_reference(acc, n_resamples, level=0.98, seed=0):
    """The bootstrap of ``seeds_tasks_ci`` written plainly, one resample and one cell at a time,
    from its documented draws: N task indices from default_rng([seed, 0]) and S seed indices
    from default_rng([seed, 1]) per resample; the mean over every drawn seed × drawn task."""
    acc = np.atleast_2d(np.asarray(acc, np.float64))
    n_seeds, n_tasks = acc.shape
    task_draws = np.random.default_rng([seed, 0]).integers(0, n_tasks, (n_resamples, n_tasks))
    seed_draws = np.random.default_rng([seed, 1]).integers(0, n_seeds, (n_resamples, n_seeds))
    means = []
    for tasks, seeds in zip(task_draws, seed_draws):
        total = 0.0
        for s in seeds:
            for t in tasks:
                total += acc[s, t]
        means.append(total / (n_seeds * n_tasks))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return np.array(means), (lo, hi)


def task_bootstrap_reference(accs, n_resamples, level=0.98, seed=0):
    """A plain percentile bootstrap over tasks (one seed): resample the tasks, take the mean."""
    accs = np.asarray(accs, np.float64)
    draws = np.random.default_rng([seed, 0]).integers(0, len(accs), (n_resamples, len(accs)))
    return tuple(np.quantile(accs[draws].mean(axis=1), [(1 - level) / 2, (1 + level) / 2]))


def test_seeds_tasks_ci_equals_the_plain_two_way_bootstrap():
    from plastic_jax.evaluate import seeds_tasks_ci, seeds_tasks_resamples

    acc = np.random.default_rng(3).random((3, 7))
    means, (lo, hi) = two_way_bootstrap_reference(acc, 300)
    assert seeds_tasks_resamples(acc, 300) == pytest.approx(means, abs=1e-12)
    m, ci = seeds_tasks_ci(acc, n_resamples=300)
    assert m == pytest.approx(acc.mean()) and ci == pytest.approx((lo, hi), abs=1e-12)


def test_the_bootstrap_variance_counts_seeds_and_tasks():
    """Var of the resampled means = mean(r²)/S + mean(c²)/N + mean(e²)/(S·N) for the two-way
    decomposition acc = mean + r_s + c_t + e_st (seed, task, residual effects); a bootstrap over
    tasks alone would miss mean(r²)/S, a nested one (tasks drawn per seed) would divide the task
    part by S."""
    from plastic_jax.evaluate import seeds_tasks_resamples

    rng = np.random.default_rng(0)
    S, N = 4, 30
    seeds = np.array([-0.12, -0.03, 0.04, 0.11])[:, None]
    acc = 0.5 + seeds + rng.normal(0, 0.1, (1, N)) + rng.normal(0, 0.03, (S, N))
    g = acc.mean()
    r, c = acc.mean(axis=1) - g, acc.mean(axis=0) - g
    e = acc - g - r[:, None] - c[None, :]
    exact = (r**2).mean() / S + (c**2).mean() / N + (e**2).mean() / (S * N)
    var = seeds_tasks_resamples(acc, 40_000, seed=5).var()
    assert var == pytest.approx(exact, rel=0.05)  # sampling error of 40000 resamples: about 1%
    assert (r**2).mean() / S > 0.5 * exact  # the seeds' part is most of it here


def test_with_one_seed_the_interval_is_the_bootstrap_over_tasks():
    from plastic_jax.evaluate import seeds_tasks_ci

    accs = np.random.default_rng(1).random(25)
    expected = task_bootstrap_reference(accs, 2000)
    assert seeds_tasks_ci(accs)[1] == pytest.approx(expected, abs=1e-12)
    assert seeds_tasks_ci(accs[None, :])[1] == pytest.approx(expected, abs=1e-12)
    # seeds that agree task by task: resampling them changes nothing
    assert seeds_tasks_ci(np.tile(accs, (4, 1)))[1] == pytest.approx(expected, abs=1e-12)


def test_seeds_with_different_means_widen_the_interval():
    from plastic_jax.evaluate import seeds_tasks_ci

    tasks = np.random.default_rng(2).normal(0, 0.05, 40)
    acc = np.array([0.3, 0.5, 0.7])[:, None] + tasks[None, :]  # the same tasks, different seed means
    m, (lo, hi) = seeds_tasks_ci(acc)
    _, (lo_t, hi_t) = seeds_tasks_ci(acc.mean(axis=0))  # over tasks only, of the seed-averaged accuracy
    assert m == pytest.approx(0.5 + tasks.mean())
    assert hi - lo > 5 * (hi_t - lo_t)
    assert lo < lo_t < hi_t < hi


def test_evaluate_reports_the_interval_over_seeds_and_tasks(three_seed_run, tmp_path, capsys):
    """The learned rule's ci98 is the two-way bootstrap of its seeds × tasks accuracies, computed
    here again from ``task_accuracies`` and the plain reference; the baselines' is over tasks."""
    import jax.numpy as jnp

    from plastic_jax.evaluate import CI98_INTERVAL, run_config, task_accuracies
    from plastic_jax.experiment import build

    js = str(tmp_path / "ev.json")
    assert main(["evaluate", three_seed_run, "--tasks", "4", "--tune-tasks", "2", "--baseline-grid", "0.03,0.3",
                 "--json", js]) == 0
    printed = capsys.readouterr().out
    assert "98% CI over seeds and tasks (3 seeds × 4 tasks" in printed
    res = json.load(open(js))
    assert res["ci98_interval"] == CI98_INTERVAL and "98% CI over seeds and tasks" in CI98_INTERVAL
    assert res["interval"] == "95% t-interval over tasks"  # the earlier keys are kept as they were

    cfg = run_config(three_seed_run)
    exp = build(cfg)
    data, rule, spec = exp.data, exp.rule, exp.spec
    ci = build_class_index(data, exp.test_classes)
    assert exp.test_classes == class_split(cfg, data.n_classes)[1]
    summary = json.load(open(os.path.join(three_seed_run, "summary.json")))
    thetas = np.array([[t[k] for k in ("F0", "F2", "F9")] for t in summary["theta"]], np.float32)
    keys = stream_keys(0, EVAL_STREAM, 4)
    each = np.asarray(task_accuracies(jnp.asarray(thetas), keys, ci, rule=rule, spec=spec))
    learned = res["rules"][0]
    assert learned["mean_accuracy"] == pytest.approx(each.mean())
    assert learned["ci98"] == pytest.approx(two_way_bootstrap_reference(each, 2000)[1], abs=1e-9)
    m, (lo, hi) = mean_ci95(each.mean(axis=0))
    assert learned["ci95"] == pytest.approx([lo, hi])  # unchanged: the t-interval over tasks
    for r in res["rules"][1:]:
        lo, hi = r["ci98"]
        assert lo <= r["mean_accuracy"] <= hi
    for p in res["paired_differences"]:
        assert len(p["ci98"]) == 2 and len(p["ci95"]) == 2


def test_the_table_of_results_without_ci98_still_prints():
    """Results written before ``ci98`` existed (e.g. an older --json) print with their 95% CI."""
    from plastic_jax.evaluate import format_table

    rule = {"name": "learned", "tasks": 2, "feedback": "fa", "mean_accuracy": 0.5, "ci95": [0.4, 0.6],
            "theta": {"F0": 0.1}, "theta_source": "given"}
    res = {"dataset": "digits", "rules": [rule], "M": 5, "K": 3, "Q": 2, "test_classes": [0, 1], "held_out": True,
           "paired_differences": [], "per_seed": [], "across_seeds": None}
    table = format_table(res)
    assert "95% CI" in table and "[0.4000, 0.6000]" in table and "98%" not in table
