"""The feedback modes beyond bp/fa through ``evaluate`` and ``plot``: tiny meta-train runs with
``--feedback routing``, ``plastic`` and ``dfa`` (digits), their Θ labels in metrics.jsonl
(``gate@ℓ``, ``B:kp`` …), evaluate's third baseline ``f0+<mode>`` checked against a NumPy
episode written here, and the theta figure (Θ^B like θ, the gates as sigmoid(φ)).

Cost: three meta-train runs and six compiled evaluation programs (the learned f0 rule and the
f0+<mode> baseline share one: the same rule, Θ shape, tasks and class-index shapes; f0+bp and
f0+fa are compiled once for the three runs; tuning f0+routing reuses the learned routing rule's).
The NumPy episodes draw their tasks once per feedback (``drawn``): JAX's eager draw is slow the
first time.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import reference as ref

from plastic_jax import rundir
from plastic_jax.cli import main
from plastic_jax.data import build_class_index, load_dataset
from plastic_jax.episode import EpisodeSpec, draw
from plastic_jax.evaluate import (
    EVAL_STREAM,
    baseline_note,
    baseline_rule,
    baseline_theta,
    baselines,
    stream_keys,
    task_accuracies,
)
from plastic_jax.feedback import PLASTIC_B_TERMS, feedback_labels
from plastic_jax.inner import initial_theta, make_rule
from plastic_jax.plots import theta_title

M, K, Q, HIDDEN = 5, 3, 2, (6, 5)
SIZES = (64, *HIDDEN, 10)
L = len(SIZES) - 1
TASKS = 8
TRAIN = ["--hidden", ",".join(map(str, HIDDEN)), "--K", str(K), "--Q", str(Q), "--holdout", "0.5",
         "--episodes", "3", "--analysis-every", "0", "--checkpoint-every", "0", "--no-progress"]
#: one query example of one task may flip between float32 and the float64 reference
FLIP = 1.0 / (M * Q * TASKS) + 1e-9
GATES = tuple(f"gate@{l}" for l in range(L - 1))


# ----------------------------------------------------------------------------- no compiles


def test_theta_title_of_every_label():
    assert theta_title("F0") == r"$\theta_{0}$ (F0)"
    assert theta_title("F2@1") == r"$\theta_{2}$, layer 1 (F2@1)"
    assert theta_title("B:kp") == r"$\theta^B_{\mathrm{kp}}$ (B:kp)"
    assert theta_title("B:decay") == r"$\theta^B_{\mathrm{decay}}$ (B:decay)"
    assert theta_title("B:err") == r"$\theta^B_{\mathrm{err}}$ (B:err)"
    assert theta_title("gate@0") == r"gate $g_{0}$ = sigmoid($\phi_{0}$) (gate@0)"
    assert theta_title("gate@12") == r"gate $g_{12}$ = sigmoid($\phi_{12}$) (gate@12)"
    assert theta_title("odd$key") == r"odd\$key"  # not a label: shown as it is, no broken mathtext
    # every title is mathtext matplotlib can draw
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    labels = ("F0", "F2@1", *(f"B:{t}" for t in PLASTIC_B_TERMS), "gate@0", "gate@3", "odd$key")
    for i, t in enumerate(labels):
        fig.add_subplot(1, len(labels), i + 1).set_title(theta_title(t))
    FigureCanvasAgg(fig).draw()


def test_theta_keys_read_back_and_sort_in_the_order_of_theta(tmp_path):
    assert rundir.B_TERMS == PLASTIC_B_TERMS  # rundir spells them out to stay free of JAX
    for feedback, n_layers, per_layer in (("plastic", 3, False), ("routing", 12, False), ("routing", 3, True)):
        rule = make_rule("bio", n_layers, feedback, per_layer=per_layer)
        labels = rule.theta_labels()
        tail = labels[rule.n_plastic:]
        assert tail == feedback_labels(feedback, n_layers) and all(rundir.THETA_KEY.fullmatch(t) for t in labels)
        # the feedback's labels come after the coefficients, in Θ's order (gate@10 after gate@9)
        assert sorted(labels, key=rundir.theta_key_order)[-len(tail):] == list(tail)
    for bad in ("B:foo", "gate@x", "gate@", "G0", "B:kp@1"):
        assert not rundir.THETA_KEY.fullmatch(bad), bad

    def write(theta):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        rec = {"episode": 0, "seed": 0, "accuracy": 0.2, "meta_loss": 1.0, "theta": theta}
        (d / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
        return str(d)

    from plastic_jax.config import ConfigError
    from plastic_jax.plots import load_run

    run = load_run(write({"F0": 0.1, "gate@1": 0.5, "B:err": 0.2, "gate@0": -0.5}))
    assert list(run.theta) == ["F0", "B:err", "gate@0", "gate@1"]
    with pytest.raises(ConfigError, match="not a valid record"):
        load_run(write({"F0": 0.1, "B:foo": 0.0}))


def test_baselines_of_each_mode():
    assert baselines("bp") == baselines("fa") == ("bp", "fa")  # bp/fa runs: the two baselines as before
    for mode in ("dfa", "sign", "kp", "plastic", "routing"):
        assert baselines(mode) == ("bp", "fa", mode)
    for mode, extra in (("fa", 0), ("dfa", 0), ("plastic", 3), ("routing", L - 1)):
        rule = baseline_rule(mode, L)
        theta = baseline_theta(rule, 0.25)
        assert theta.shape == (rule.n_theta,) == (1 + extra,)
        # θ_0, then the mode's own meta-parameters at their initial values (as meta-training starts them)
        np.testing.assert_array_equal(theta, np.asarray(initial_theta(rule, theta0=0.25)))
        assert (baseline_note(rule) == "") == (extra == 0)
    assert "gate@0, gate@1" in baseline_note(baseline_rule("routing", L))
    assert "B:kp, B:decay, B:err" in baseline_note(baseline_rule("plastic", L))


# ----------------------------------------------------------------------------- tiny runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """mode -> run directory, meta-trained on first use (``--feedback mode``)."""
    root = tmp_path_factory.mktemp("fb")
    made = {}

    def get(mode, *extra):
        if mode not in made:
            out = str(root / mode)
            assert main(["meta-train", "--feedback", mode, *TRAIN, *extra, "--out", out]) == 0
            made[mode] = out
        return made[mode]

    return get


def records(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def evaluate(run_dir, tmp_path, *flags):
    js = str(tmp_path / "ev.json")
    assert main(["evaluate", run_dir, "--tasks", str(TASKS), "--json", js, *flags]) == 0
    return json.load(open(js))


SPEC = EpisodeSpec(sizes=SIZES, M=M, K=K, Q=Q)
_DRAWN = {}


def drawn(test_classes, seed, feedback):
    """The evaluation's tasks and initial networks (``episode.draw``) as float64 NumPy arrays:
    one (xs, ys, xq, yq, W, B) per task key, B with the direct matrices for dfa/routing."""
    k = (tuple(test_classes), seed, feedback)
    if k not in _DRAWN:
        ci = build_class_index(load_dataset("digits"), list(test_classes))
        out = []
        for key in stream_keys(seed, EVAL_STREAM, TASKS):
            task, W, B = draw(SPEC, key, ci, jnp.float32, feedback=feedback)
            f64 = [np.asarray(a, np.float64) for a in (task.xs, task.xq)]
            out.append((f64[0], np.asarray(task.ys), f64[1], np.asarray(task.yq),
                        [np.asarray(w, np.float64) for w in W], [np.asarray(b, np.float64) for b in B]))
        _DRAWN[k] = out
    return _DRAWN[k]


def reference_accuracy(episode, theta0, feedback, gates=()):
    """Query accuracy of one task for f0 (W ← W − θ_0 e_post preᵀ), written from feedback.py's
    docstring in NumPy (float64): e_ℓ = (g_ℓ B_{ℓ+1}ᵀ e_{ℓ+1} + (1 − g_ℓ) D_ℓᵀ e_L) ⊙ σ′(y_ℓ)
    for ℓ < L − 1, with g = 1 (fa), 0 (dfa) or the routing gates; the top hidden layer's error is
    fa's. Only the task and the initial W, B, D come from JAX (``drawn``). Returns the accuracy
    and the smallest gap between the top two logits of a query."""
    xs, ys_, xq, yq, W, B = episode
    Bl, D = B[:L], B[L:]
    g = {"fa": [1.0] * (L - 1), "dfa": [0.0] * (L - 1)}.get(feedback, list(gates))
    assert len(g) == L - 1 and len(D) == (0 if feedback == "fa" else L - 1)
    for x, y in zip(xs, ys_):
        ys, _ = ref.forward(W, x)
        e = [None] * (L + 1)
        e[L] = ys[-1] - np.eye(ys[-1].size)[int(y)]
        for l in range(L - 1, 0, -1):  # f0 never reads e_0
            h = Bl[l].T @ e[l + 1]
            if l < L - 1 and D:
                h = g[l] * h + (1.0 - g[l]) * (D[l].T @ e[L])
            e[l] = h * (1.0 - np.exp(-ref.BETA * ys[l]))
        W = [w - theta0 * np.outer(e[i + 1], ys[i]) for i, w in enumerate(W)]
    z = np.sort([ref.forward(W, x)[1][-1] for x in xq], axis=1)
    return ref.query_loss(W, xq, yq)[1], float((z[:, -1] - z[:, -2]).min())


def reference_accuracies(res, theta0, feedback, gates=(), *, margins=False):
    """``reference_accuracy`` on each of the evaluation's tasks, (TASKS,); with ``margins`` also
    the smallest gap between the top two logits of any query."""
    accs, gaps = zip(*(reference_accuracy(ep, theta0, feedback, gates)
                       for ep in drawn(res["test_classes"], res["seed"], feedback)))
    return (np.array(accs), min(gaps)) if margins else np.array(accs)


def program_accuracies(mode, theta, classes, seed, stream=EVAL_STREAM):
    """f0+<mode>'s accuracy on each task of ``stream`` with Θ = ``baseline_theta(θ_0)`` for each
    θ_0 of ``theta``, by the evaluation's own program (the same rule, Θ shape, tasks and class-index
    shapes as ``evaluate``'s f0+<mode> (one θ_0) or tuning (two): no new compile)."""
    rule = baseline_rule(mode, L)
    ci = build_class_index(load_dataset("digits"), list(classes))
    rows = jnp.asarray(np.stack([baseline_theta(rule, t) for t in theta]))
    return np.asarray(task_accuracies(rows, stream_keys(seed, stream, TASKS), ci, rule=rule, spec=SPEC))


def check_baseline_against_reference(res, mode, gates=()):
    """f0+<mode> in ``res``, task by task, is the NumPy episode with ``mode``'s signal (one query
    example may flip, float32 against float64), and not the one with fa's fixed B: on these tasks
    the two references differ by at least three query examples, so the check tells them apart.
    (θ_0 = 0.1 here: larger θ_0 kill these tiny networks, whose logits then tie and their argmax
    follows rounding; the gap check below would say so.)"""
    base = {r["name"]: r for r in res["rules"]}[f"f0+{mode}"]
    theta0 = base["theta"]["F0"]
    got = program_accuracies(mode, [theta0], res["test_classes"], res["seed"])[0]
    assert base["mean_accuracy"] == pytest.approx(float(got.mean()), abs=1e-6)
    want, gap = reference_accuracies(res, theta0, mode, gates, margins=True)
    assert gap > 1e-4, f"a near tie in the reference (gap {gap:.2g}): pick other tasks or θ_0"
    fa = reference_accuracies(res, theta0, "fa")
    assert np.abs(want - fa).sum() * M * Q >= 3 - 1e-6, (want, fa)
    assert np.abs(got - want).sum() * M * Q <= 1 + 1e-6, (got, want)


def check_common(res, mode, printed):
    """What every evaluation of a ``mode`` run reports: four rules, three paired differences (by
    task and over seeds), all finite; the third baseline f0+<mode> with the mode's initial
    meta-parameters."""
    names = ["f0+bp", "f0+fa", f"f0+{mode}"]
    rules = {r["name"]: r for r in res["rules"]}
    assert [r["name"] for r in res["rules"]] == ["learned", *names]
    for r in res["rules"]:
        lo, hi = r["ci95"]
        assert 0.0 <= r["mean_accuracy"] <= 1.0 and np.isfinite([lo, hi]).all() and lo <= r["mean_accuracy"] <= hi
    base = rules[f"f0+{mode}"]
    assert base["feedback"] == mode and base["terms"] == [0]
    n_extra = len(feedback_labels(mode, L))
    assert list(base["theta"]) == ["F0", *feedback_labels(mode, L)]
    assert list(base["theta"].values())[1:] == [0.0] * n_extra
    assert ("initial values" in base["theta_source"]) == (n_extra > 0)
    assert rules["f0+fa"]["theta_source"] == rules["f0+bp"]["theta_source"]  # no note on bp/fa
    assert [p["name"] for p in res["paired_differences"]] == [f"learned - {b}" for b in names]
    for p in res["paired_differences"]:
        lo, hi = p["ci95"]
        assert np.isfinite([p["mean_difference"], lo, hi]).all() and lo <= p["mean_difference"] <= hi
        # the mean paired difference is the difference of the means (same tasks)
        assert p["mean_difference"] == pytest.approx(
            rules["learned"]["mean_accuracy"] - rules[p["name"].split(" - ")[1]]["mean_accuracy"], abs=1e-6)
    for s in res["per_seed"]:
        assert list(s["differences"]) == names and np.isfinite(list(s["differences"].values())).all()
    over = res["across_seeds"]
    assert [p["name"] for p in over["paired_differences"]] == [f"learned - {b}" for b in names]
    assert all(np.isfinite(p["mean_difference"]) for p in over["paired_differences"])
    for name in ("learned", *names):
        assert f"\n{name} " in printed
    assert f"learned - f0+{mode}:" in printed


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_routing_run_records_gates_and_evaluate_reports_f0_routing(runs, tmp_path, capsys):
    run = runs("routing", "--seeds", "2")
    recs = records(run)
    assert {r["seed"] for r in recs} == {0, 1}
    assert all(list(r["theta"]) == ["F0", *GATES] for r in recs)
    assert any(r["theta"]["gate@1"] != 0.0 for r in recs)  # φ_1 is meta-learned (it gates e_1)
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert all(list(t) == ["F0", *GATES] for t in summary["theta"])
    capsys.readouterr()

    res = evaluate(run, tmp_path, "--baseline-lr", "0.1")
    printed = capsys.readouterr().out
    check_common(res, "routing", printed)
    rules = {r["name"]: r for r in res["rules"]}
    assert len(res["per_seed"]) == 2 and len(res["across_seeds"]["paired_differences"][2]["ci95"]) == 2
    assert rules["learned"]["theta"] is None  # one Θ per seed
    assert list(res["per_seed"][0]["theta"]) == ["F0", *GATES]

    assert res["baseline_tuning"] == {}
    assert [rules[n]["theta"]["F0"] for n in ("f0+bp", "f0+fa", "f0+routing")] == pytest.approx([0.1] * 3)

    # f0+routing is f0 with the routing signal at gates ½, not f0+fa's (the test can tell them apart)
    check_baseline_against_reference(res, "routing", [0.5] * (L - 1))
    # the learned rule: each seed's θ_0 and gates sigmoid(φ_ℓ)
    for s in res["per_seed"]:
        th = s["theta"]
        gates = [1.0 / (1.0 + np.exp(-th[g])) for g in GATES]
        want = reference_accuracies(res, th["F0"], "routing", gates).mean()
        assert s["mean_accuracy"] == pytest.approx(want, abs=FLIP)


def test_tuning_f0_routing_keeps_the_gates_at_one_half(runs):
    """``tune_baseline`` for a mode with meta-parameters: rows θ_0 + [0]·n_feedback, the best by
    mean accuracy on the meta-training classes (2 θ_0 × TASKS tasks: the learned 2-seed routing
    rule's program)."""
    from plastic_jax.evaluate import TUNE_STREAM, tune_baseline

    cfg = json.load(open(os.path.join(runs("routing", "--seeds", "2"), "config.json")))
    train = cfg["extra"]["class_split"]["train"]
    ci = build_class_index(load_dataset("digits"), train)
    grid = (0.03, 0.1)
    best, means = tune_baseline("routing", L, SPEC, ci, stream_keys(7, TUNE_STREAM, TASKS), grid)
    assert len(means) == 2 and best == grid[int(np.argmax(means))]
    # each grid value ran f0 with φ = 0 (gates ½): the same accuracies as those rows, task by task
    want = program_accuracies("routing", grid, train, 7, TUNE_STREAM).mean(axis=1)
    np.testing.assert_allclose(means, want, atol=1e-6)


def test_plastic_run_records_theta_B_and_f0_plastic_is_f0_fa(runs, tmp_path, capsys):
    run = runs("plastic")
    labels = ["F0", *(f"B:{t}" for t in PLASTIC_B_TERMS)]
    recs = records(run)
    assert recs and all(list(r["theta"]) == labels for r in recs)
    assert any(r["theta"][b] != 0.0 for r in recs for b in labels[1:])  # Θ^B is meta-learned
    capsys.readouterr()
    res = evaluate(run, tmp_path, "--baseline-lr", "0.1")
    check_common(res, "plastic", capsys.readouterr().out)
    rules = {r["name"]: r for r in res["rules"]}
    assert res["baseline_tuning"] == {}
    assert rules["f0+plastic"]["theta"] == {"F0": pytest.approx(0.1), "B:kp": 0.0, "B:decay": 0.0, "B:err": 0.0}
    # Θ^B = 0 keeps B fixed: f0+plastic is f0+fa, task by task (same tasks, same B)
    assert rules["f0+plastic"]["mean_accuracy"] == rules["f0+fa"]["mean_accuracy"]
    assert rules["f0+plastic"]["ci95"] == rules["f0+fa"]["ci95"]
    diffs = {p["name"]: p for p in res["paired_differences"]}
    assert diffs["learned - f0+plastic"]["ci95"] == diffs["learned - f0+fa"]["ci95"]


def test_dfa_run_evaluate_f0_dfa_matches_the_direct_signal(runs, tmp_path, capsys):
    run = runs("dfa")
    assert all(list(r["theta"]) == ["F0"] for r in records(run))  # dfa has no meta-parameters of its own
    capsys.readouterr()
    res = evaluate(run, tmp_path, "--baseline-lr", "0.1")
    check_common(res, "dfa", capsys.readouterr().out)
    rules = {r["name"]: r for r in res["rules"]}
    assert rules["f0+dfa"]["theta"] == {"F0": pytest.approx(0.1)}
    check_baseline_against_reference(res, "dfa")
    assert rules["f0+fa"]["mean_accuracy"] == pytest.approx(reference_accuracies(res, 0.1, "fa").mean(), abs=FLIP)


def test_plot_draws_theta_B_like_theta_and_the_gates_as_sigmoid(runs, tmp_path, monkeypatch):
    import plastic_jax.plots as plots

    routing, plastic = runs("routing", "--seeds", "2"), runs("plastic")
    figs = {}
    save = plots._save

    def keep(fig, out, name):
        figs[name] = [(ax.get_title(), [np.asarray(line.get_ydata(), float) for line in ax.get_lines()],
                       [line.get_linestyle() for line in ax.get_lines()], ax.get_ylim())
                      for ax in fig.axes if ax.axison]
        return save(fig, out, name)

    monkeypatch.setattr(plots, "_save", keep)
    out = str(tmp_path / "figs")
    assert main(["plot", routing, plastic, "--out", out, "--window", "2"]) == 0
    assert os.path.isfile(os.path.join(out, "theta.png")) and os.path.isfile(os.path.join(out, "theta.pdf"))
    panels = {title: rest for title, *rest in figs["theta"]}
    labels = ["F0", *(f"B:{t}" for t in PLASTIC_B_TERMS), *GATES]
    assert [title for title, *_ in figs["theta"]] == [theta_title(t) for t in labels]

    # a gate panel: the seeds' mean of sigmoid(φ) per episode, in [0, 1], a dashed line at ½
    recs = records(routing)
    episodes = sorted({r["episode"] for r in recs})
    for gate in GATES:
        lines, styles, ylim = panels[theta_title(gate)]
        phi = np.array([[r["theta"][gate] for r in recs if r["episode"] == e] for e in episodes])
        want = (1.0 / (1.0 + np.exp(-phi))).mean(axis=1)
        assert any(len(y) == len(want) and np.allclose(y, want, atol=1e-6) for y in lines), gate
        assert "--" in styles and any(np.allclose(y, 0.5) for y, s in zip(lines, styles) if s == "--")
        assert ylim[0] >= -0.05 and ylim[1] <= 1.05
    # Θ^B: the raw coefficient, like θ, with the zero line
    recs = records(plastic)
    lines, styles, _ = panels[theta_title("B:kp")]
    want = np.array([r["theta"]["B:kp"] for r in recs])
    assert any(len(y) == len(want) and np.allclose(y, want, atol=1e-9) for y in lines)
    assert any(np.allclose(y, 0.0) for y in lines) and "--" not in styles
