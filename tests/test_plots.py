"""``plastic-jax plot``: reading runs and writing the figures (on hand-written run directories)."""

import json
import os
import shutil

import numpy as np
import pytest

from plastic_jax.cli import main
from plastic_jax.config import ConfigError
from plastic_jax.plots import FIGURES, chance_lines, load_run, load_runs, n_outputs, run_label

OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "old_run")  # written before records carried telemetry
#: (episode, seed) of the hand-written spikes and rollbacks of ``_telemetry``
SPIKES, ROLLBACKS = {(7, 1), (20, 0), (21, 2)}, {(21, 2)}


def _telemetry(ep, s):
    """A record's telemetry: norms growing with the episode, spikes (not applied: update norm 0)
    at ``SPIKES``, a rollback at ``ROLLBACKS`` that halves the step scale from then on."""
    spike, back = (ep, s) in SPIKES, (ep, s) in ROLLBACKS
    return {"grad_norm": 1.0 + ep + 10 * s + (1e3 if spike else 0.0),
            "grad_norm_median": None if ep == 0 else 1.0 + ep / 2,
            "update_norm": 0.0 if spike else 1e-3 * (1 + ep), "adam_nu_max": 1e-2 * (1 + s),
            "step_scale": 0.5 if any(e <= ep and t == s for e, t in ROLLBACKS) else 1.0,
            "clipped": ep % 4 == 3, "spike": spike, "rolled_back": back}


def _fake_run(path, *, rule="ehebb", feedback="fa", seeds=(0, 1, 2), episodes=30, layers=3, every=5,
              terms=("F0", "F2"), telemetry=False, sweep=None, config=None):
    """``sweep``: the (l1, meta_lr) combinations of a sweep, each with ``seeds``; combination c's
    accuracy is offset by c (so a mix of members shows in the data). ``config``: more settings of
    config.json."""
    os.makedirs(path)
    combos = sweep or [(0.0, 1e-3)]
    cfg = {"rule": rule, "feedback": feedback, "terms": None, "layer_rules": None, "l1": 0.0, **(config or {})}
    if sweep:
        cfg.update(l1=sorted({c[0] for c in combos}), meta_lr=sorted({c[1] for c in combos}))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    rng = np.random.default_rng(len(path))
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for ep in range(episodes):
            for c, (l1, lr) in enumerate(combos):
                for s in seeds:
                    rec = {"episode": ep, "seed": s, "accuracy": 0.2 + 0.01 * ep + 0.01 * s + c,
                           "meta_loss": 2.0 - 0.01 * ep, "query_loss": 2.0 - 0.01 * ep, "skipped": False,
                           "theta": {t: 1e-3 * (i + 1) * ep + s * 1e-4 for i, t in enumerate(terms)}}
                    if sweep:
                        rec.update(l1=l1, meta_lr=lr)
                    if telemetry:
                        rec.update(_telemetry(ep, s))
                    if ep % every == 0 or ep == episodes - 1:
                        rec["alignment"] = list(rng.uniform(0, 90, layers - 1)) + [0.0]
                        rec["orthonormality"] = list(rng.uniform(0.1, 2, layers))
                    f.write(json.dumps(rec) + "\n")


def _capture(monkeypatch):
    """Keep, per figure written, its visible axes (the figure itself, still open)."""
    import plastic_jax.plots as plots

    figs = {}
    save = plots._save

    def keep(fig, out, name):
        figs[name] = [ax for ax in fig.axes if ax.axison]
        return save(fig, out, name)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_load_run_shapes_and_values(tmp_path):
    p = str(tmp_path / "run")
    _fake_run(p, episodes=12, every=5)
    r = load_run(p)
    assert r.label == "ehebb+fa" and r.seeds == [0, 1, 2]
    assert r.accuracy.shape == (3, 12)
    assert r.accuracy[2, 10] == pytest.approx(0.2 + 0.1 + 0.02)
    assert list(r.theta) == ["F0", "F2"] and r.theta["F2"][1, 4] == pytest.approx(2e-3 * 4 + 1e-4)
    assert list(r.analysis_episodes) == [0, 5, 10, 11]
    assert r.alignment.shape == r.orthonormality.shape == (3, 4, 3)
    assert np.all(r.alignment[:, :, -1] == 0.0)


def test_resumed_run_reads_the_last_record_of_an_episode(tmp_path):
    p = str(tmp_path / "run")
    _fake_run(p, seeds=(0,), episodes=3)
    with open(os.path.join(p, "metrics.jsonl"), "a") as f:  # episode 2 again, as after a resume
        f.write(json.dumps({"episode": 2, "seed": 0, "accuracy": 0.9, "meta_loss": 0.1,
                            "theta": {"F0": 0.0, "F2": 0.0}}) + "\n")
    r = load_run(p)
    assert r.accuracy.shape == (1, 3) and r.accuracy[0, 2] == 0.9


@pytest.mark.parametrize(
    "cfg,label",
    [
        ({"rule": "f0", "feedback": "bp"}, "f0+bp"),
        ({"rule": "f0", "terms": "0,2,9", "feedback": "fa"}, "F{0,2,9}+fa"),
        ({"rule": "f0", "layer_rules": "f0,ehebb,f0", "feedback": "fa"}, "[f0,ehebb,f0]+fa"),
        ({"rule": "pool", "feedback": "fa", "l1": 1e-3}, "pool+fa (L1 0.001)"),
        ({"rule": "ehebb", "feedback": "fa", "per_layer_theta": True}, "ehebb+fa per-layer Θ"),
        ({"rule": "ehebb", "feedback": "fa", "per_layer_theta": False}, "ehebb+fa"),
    ],
)
def test_labels_name_rule_and_feedback(cfg, label):
    assert run_label(cfg) == label


def _legends(monkeypatch):
    """Keep, per figure drawn, the texts of each visible axes' legend (the figure's own legend
    last, when it has one), and the title of the first axes; the figures are not written."""
    import plastic_jax.plots as plots

    figs, titles = {}, {}

    def keep(fig, out, name):
        figs[name] = [[t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
                      for ax in fig.axes if ax.axison]
        figs[name] += [[t.get_text() for t in leg.get_texts()] for leg in fig.legends]
        titles[name] = fig.axes[0].get_title()
        return []

    monkeypatch.setattr(plots, "_save", keep)
    return figs, titles


POOL = tuple(f"F{i}" for i in range(10))
PER_LAYER = ("F0@1", "F2@1", "F0@2", "F2@2")


@pytest.mark.parametrize(
    "a,b,want",
    [  # (config, Θ keys) of two overlaid runs, and their labels
        (({}, ("F0", "F2")), ({"per_layer_theta": True}, PER_LAYER), ["ehebb+fa", "ehebb+fa per-layer Θ"]),
        (({"rule": "pool", "f5_f8": "elementwise"}, POOL), ({"rule": "pool"}, POOL),  # absent: matrix
         ["pool+fa F5–F8 elementwise", "pool+fa F5–F8 matrix"]),
        (({"preset": "robust"}, ("F0", "F2")), ({}, ("F0", "F2")),  # absent: the paper's, as before presets
         ["ehebb+fa robust preset", "ehebb+fa paper preset"]),
        (({"preset": "paper"}, ("F0", "F2")), ({}, ("F0", "F2")), ["ehebb+fa (a)", "ehebb+fa (b)"]),
        # ehebb has no F5-F8: their reading tells nothing apart; the directories do
        (({"f5_f8": "elementwise"}, ("F0", "F2")), ({"f5_f8": "matrix"}, ("F0", "F2")),
         ["ehebb+fa (a)", "ehebb+fa (b)"]),
        (({"rule": "pool", "f5_f8": "elementwise", "preset": "robust"}, POOL), ({"preset": "robust"}, ("F0", "F2")),
         ["pool+fa", "ehebb+fa"]),
    ],
)
def test_overlaid_runs_that_differ_get_different_labels(tmp_path, monkeypatch, a, b, want):
    """per-layer Θ, the F5–F8 reading (of rules with F5–F8), the preset: spelled out when the
    overlaid runs differ in them; a run alone keeps its short label, and one given by hand stays."""
    for name, (cfg, terms) in zip("ab", (a, b)):
        _fake_run(str(tmp_path / name), seeds=(0,), episodes=4, terms=terms, config=cfg)
    figs, _ = _legends(monkeypatch)
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["plot", *dirs, "--out", str(tmp_path / "f")]) == 0
    assert figs["accuracy"][0][:2] == [f"{w} (n=1 seed)" for w in want]
    assert main(["plot", dirs[0], "--out", str(tmp_path / "g")]) == 0
    assert figs["accuracy"][0][0] == run_label(json.load(open(os.path.join(dirs[0], "config.json")))) + " (n=1 seed)"
    assert main(["plot", *dirs, "--label", "x", "--label", "y", "--out", str(tmp_path / "h")]) == 0
    assert figs["accuracy"][0][:2] == ["x (n=1 seed)", "y (n=1 seed)"]


def test_sweep_members_alike_but_for_the_preset_keep_their_lambda_and_rate(tmp_path, monkeypatch):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a, seeds=(0,), episodes=4, sweep=[(0.0, 1e-3), (1.0, 1e-3)], config={"preset": "robust"})
    _fake_run(b, seeds=(0,), episodes=4)
    figs, _ = _legends(monkeypatch)
    assert main(["plot", a, b, "--out", str(tmp_path / "f")]) == 0
    assert figs["accuracy"][0][:3] == ["ehebb+fa robust preset λ=0 lr=0.001 (n=1 seed)",
                                       "ehebb+fa robust preset λ=1 lr=0.001 (n=1 seed)",
                                       "ehebb+fa paper preset (n=1 seed)"]


@pytest.mark.parametrize(
    "terms_b,cfg_b",
    [
        (PER_LAYER, {"per_layer_theta": True}),  # no Θ key in common
        (("F2",), {"terms": "2"}),  # not in the first panel (F0)
        (("F2", "F9"), {"terms": "2,9"}),
    ],
)
def test_every_run_drawn_is_in_the_theta_legend(tmp_path, monkeypatch, terms_b, cfg_b):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a, episodes=4, terms=("F0", "F2"))
    _fake_run(b, seeds=(0,), episodes=4, terms=terms_b, config=cfg_b)
    figs, _ = _legends(monkeypatch)
    assert main(["plot", a, b, "--out", str(tmp_path / "f")]) == 0
    label_b = run_label(json.load(open(os.path.join(b, "config.json"))))
    assert figs["theta"][0] == ["ehebb+fa (n=3 seeds)", f"{label_b} (n=1 seed)"]
    assert all(leg == [] for leg in figs["theta"][1:])  # one legend, in the first panel


def test_the_theta_legend_says_when_a_panel_is_short_of_seeds(tmp_path, monkeypatch):
    a = str(tmp_path / "a")
    _fake_run(a, episodes=4, terms=("F0", "F2"))
    recs = [json.loads(x) for x in open(os.path.join(a, "metrics.jsonl"))]
    recs[5]["theta"]["F2"] = None  # a non-finite value, in the second panel only
    with open(os.path.join(a, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    figs, _ = _legends(monkeypatch)
    assert main(["plot", a, "--out", str(tmp_path / "f")]) == 0
    assert figs["theta"][0] == ["ehebb+fa (n=3 seeds) (fewer finite at some points)"]


def test_every_run_drawn_is_in_the_telemetry_legend(tmp_path, monkeypatch):
    """A run whose records lack the gradient norm is not in panel (a), but is drawn in the others."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a, episodes=25, telemetry=True)
    _fake_run(b, rule="f0", feedback="bp", terms=("F0",), seeds=(0,), episodes=25, telemetry=True)
    recs = [json.loads(x) for x in open(os.path.join(b, "metrics.jsonl"))]
    with open(os.path.join(b, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps({k: v for k, v in r.items() if k != "grad_norm"}) + "\n" for r in recs)
    figs, _ = _legends(monkeypatch)
    assert main(["plot", b, a, "--out", str(tmp_path / "f")]) == 0
    assert figs["telemetry"][-1] == ["f0+bp (n=1 seed)", "ehebb+fa (n=3 seeds)", "spike", "rolled back"]


def test_seed_counts_are_spelled_out(tmp_path, monkeypatch):
    """No "1/3 seeds": the title says each run has its own n (in the legend), a point short of
    seeds says how many were finite."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a, episodes=8)
    _fake_run(b, seeds=(0,), episodes=8, rule="f0", terms=("F0",))
    _with_nan(a, seed=1, episode=3, key="accuracy")
    figs, titles = _legends(monkeypatch)
    assert main(["plot", a, b, "--window", "1", "--out", str(tmp_path / "f")]) == 0
    assert titles["accuracy"] == ("mean over each run's n seeds (n = 1 or 3, in the legend), "
                                  "98% bootstrap band over seeds where n > 1")
    assert "1/3" not in titles["accuracy"]
    assert figs["accuracy"][0][:2] == ["ehebb+fa (n=3 seeds; at 1 point only 2 of 3 finite)", "f0+fa (n=1 seed)"]
    assert main(["plot", a, "--out", str(tmp_path / "g")]) == 0
    assert titles["accuracy"] == "mean over 3 seeds, 98% bootstrap band over seeds"
    assert main(["plot", b, "--out", str(tmp_path / "h")]) == 0
    assert titles["accuracy"] == "one seed per run"


@pytest.mark.parametrize(
    "cfg,C",
    [
        ({"dataset": "digits"}, 10),
        ({"dataset": "glyphs"}, 47),
        ({"dataset": "emnist", "extra": {"class_split": {"train": [0, 1], "test": [2]}}}, 47),
        ({"dataset": "/data/mine.npz", "extra": {"class_split": {"train": [0, 2, 3], "test": [1, 4, 5]}}}, 6),
        ({"dataset": "/data/mine.npz", "extra": {"class_split": {"train": [0, 2, 3], "test": [1, 4, 5]}},
          "train_classes": [0, 2, 3], "test_classes": [1, 4, 5]}, None),  # both by hand: maybe not all classes
        ({"dataset": "/data/mine.npz", "extra": {}}, None),
        ({}, None),
    ],
)
def test_n_outputs_is_the_dataset_class_count(cfg, C):
    assert n_outputs(cfg) == C


def test_chance_lines_are_1_over_M_and_1_over_C_and_say_which():
    assert chance_lines([{"M": 5, "dataset": "digits"}]) == [
        (0.2, ":", "1/M = 0.2: guessing among a task's 5 classes"),
        (0.1, "-.", "1/C = 0.1: untrained argmax over all 10 outputs")]
    assert chance_lines([{"M": 5, "dataset": "x.npz"}]) == [(0.2, ":", "1/M = 0.2: guessing among a task's 5 classes")]
    assert [y for y, *_ in chance_lines([{"M": 5, "dataset": "glyphs"}, {"M": 3, "dataset": "digits"}])] == \
        pytest.approx([1 / 3, 1 / 5, 1 / 10, 1 / 47])
    (line,) = chance_lines([{"M": 10, "dataset": "digits"}])  # M = C: one line
    assert line == (0.1, ":", "1/M = 0.1: guessing among a task's 10 classes; "
                              "1/C = 0.1: untrained argmax over all 10 outputs")
    assert chance_lines([{"M": True}, {"M": "5"}, {}]) == []


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_plot_overlays_runs_into_png_and_pdf(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a, telemetry=True)
    _fake_run(b, rule="f0", feedback="bp", terms=("F0",), seeds=(0,))
    out = str(tmp_path / "figs")
    assert main(["plot", a, b, "--out", out, "--window", "5"]) == 0
    printed = capsys.readouterr().out.split()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            p = os.path.join(out, f"{name}.{ext}")
            assert p in printed and os.path.getsize(p) > 1000
        with open(os.path.join(out, f"{name}.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        with open(os.path.join(out, f"{name}.pdf"), "rb") as f:
            assert f.read(5) == b"%PDF-"


def test_plot_without_analysis_skips_those_figures(tmp_path):
    a = str(tmp_path / "a")
    _fake_run(a, every=10**9, episodes=3)
    for line in open(os.path.join(a, "metrics.jsonl")).readlines():
        assert "alignment" not in json.loads(line) or json.loads(line)["episode"] in (0, 2)
    # strip the analysis keys entirely
    recs = [json.loads(x) for x in open(os.path.join(a, "metrics.jsonl"))]
    with open(os.path.join(a, "metrics.jsonl"), "w") as f:
        for r in recs:
            r.pop("alignment", None)
            r.pop("orthonormality", None)
            f.write(json.dumps(r) + "\n")
    assert main(["plot", a]) == 0
    names = sorted(os.listdir(os.path.join(a, "figures")))
    assert names == sorted(f"{n}.{e}" for n in ("accuracy", "loss", "theta") for e in ("png", "pdf"))


def test_plot_of_a_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no run" in err and "\n" not in err


def _with_nan(path, *, seed=1, episode=10, key="meta_loss"):
    recs = [json.loads(x) for x in open(os.path.join(path, "metrics.jsonl"))]
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for r in recs:
            if r["seed"] == seed and r["episode"] == episode:
                r[key] = float("nan")
            f.write(json.dumps(r) + "\n")  # json writes NaN, and reads it back


def _reference_mean(x, window):
    """Independent reference: per seed, the mean of the finite values of each trailing window;
    then the NaN-skipping mean over seeds."""
    S, E = x.shape
    sm = np.full((S, E), np.nan)
    for s in range(S):
        for t in range(E):
            w = x[s, max(0, t - window + 1):t + 1]
            w = w[np.isfinite(w)]
            if w.size:
                sm[s, t] = w.mean()
    return np.nanmean(sm, axis=0)


def test_a_nan_in_one_seed_does_not_sink_the_mean(tmp_path, capsys):
    from plastic_jax.plots import nan_moving_average, seed_band

    p = str(tmp_path / "run")
    _fake_run(p, episodes=30)
    _with_nan(p, seed=1, episode=10)
    r = load_run(p)
    assert np.isnan(r.meta_loss[1, 10]) and np.isfinite(r.meta_loss).sum() == r.meta_loss.size - 1
    for window in (1, 5):
        sm = nan_moving_average(r.meta_loss, window, axis=1)
        mean, lo, hi, n = seed_band(sm)
        ref = _reference_mean(r.meta_loss, window)
        np.testing.assert_allclose(mean, ref, rtol=1e-12)
        assert np.all(np.isfinite(mean[10:])) and np.all(lo <= mean + 1e-12) and np.all(mean <= hi + 1e-12)
        # window 1: the NaN episode rests on 2 of 3 seeds; wider windows skip it inside the window
        assert list(np.flatnonzero(n < 3)) == ([10] if window == 1 else [])
    # where every seed is finite the band is the plain bootstrap over seeds
    from plastic_jax.stats import bootstrap_ci

    clean = np.delete(r.meta_loss, 10, axis=1)
    m0, lo0, hi0 = bootstrap_ci(clean, axis=0, level=0.98, n_resamples=500)
    m1, lo1, hi1, _ = seed_band(clean)
    np.testing.assert_array_equal(lo0, lo1)
    np.testing.assert_array_equal(hi0, hi1)

    out = str(tmp_path / "figs")
    assert main(["plot", p, "--out", out, "--window", "1"]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(lines) == 1 and p in lines[0] and "meta_loss" in lines[0]
    assert "1 non-finite value(s) in 1 of 3 seed(s)" in lines[0] and "1 of 30 plotted points" in lines[0]


def test_nan_moving_average_skips_nan_and_inf_and_huge_values_do_not_leak():
    from plastic_jax.plots import nan_moving_average

    x = np.array([1.0, np.nan, 3.0, np.inf, 1e30, 2.0, 2.0, 2.0])
    got = nan_moving_average(x, 2)
    want = [1.0, 1.0, 3.0, 3.0, 1e30, 5e29, 2.0, 2.0]
    np.testing.assert_allclose(got, want)
    assert np.isnan(nan_moving_average(np.array([np.nan, np.nan, 1.0]), 2)[0])
    with pytest.raises(ValueError):
        nan_moving_average(x, 0)


def test_labels_chance_and_90_degree_lines_mathtext_and_seed_counts(tmp_path, monkeypatch):
    """--label per run; chance lines at 1/M and 1/C on accuracy and a 90° line on alignment; no panel for
    the output layer's alignment (α_L = 0); mathtext titles; the seeds behind each band in the legend."""
    import plastic_jax.plots as plots

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a)
    _fake_run(b, seeds=(0,))
    for p in (a, b):
        cfg = json.load(open(os.path.join(p, "config.json")))
        json.dump({**cfg, "M": 5, "dataset": "digits"}, open(os.path.join(p, "config.json"), "w"))
    figs = {}
    save = plots._save

    def keep(fig, out, name):
        figs[name] = [([t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
                       ax.get_title(), [tuple(line.get_ydata()) for line in ax.get_lines()], ax.get_ylabel())
                      for ax in fig.axes if ax.axison]
        return save(fig, out, name)

    monkeypatch.setattr(plots, "_save", keep)
    assert main(["plot", a, b, "--label", "first", "--label", "second", "--out", str(tmp_path / "f")]) == 0
    legend, _, lines, _ = figs["accuracy"][0]
    assert legend == ["first (n=3 seeds)", "second (n=1 seed)", "1/M = 0.2: guessing among a task's 5 classes",
                      "1/C = 0.1: untrained argmax over all 10 outputs"]
    assert (0.2, 0.2) in lines and (0.1, 0.1) in lines
    assert len(figs["alignment"]) == 2  # 3 layers, the output layer's α_3 = 0 is not drawn
    legend, title, lines, ylabel = figs["alignment"][0]
    assert (90.0, 90.0) in lines and ylabel == r"$\alpha_\ell$ (degrees)" and title == r"layer $\ell = 1$"
    assert figs["theta"][0][1] == r"$\theta_{0}$ (F0)"
    assert main(["plot", a, b, "--label", "only one", "--out", str(tmp_path / "g")]) == 2


def test_telemetry_is_read_per_seed_and_episode(tmp_path):
    p = str(tmp_path / "run")
    _fake_run(p, episodes=25, telemetry=True)
    r = load_run(p)
    assert sorted(r.telemetry) == sorted(("grad_norm", "grad_norm_median", "update_norm", "adam_nu_max",
                                          "step_scale", "clipped", "spike", "rolled_back"))
    assert all(v.shape == (3, 25) for v in r.telemetry.values())
    # the flags are 0/1, at exactly the episodes written
    for key, where in (("spike", SPIKES), ("rolled_back", ROLLBACKS)):
        assert set(np.unique(r.telemetry[key])) <= {0.0, 1.0}
        got = {(int(r.episodes[j]), r.seeds[i]) for i, j in zip(*np.nonzero(r.telemetry[key]))}
        assert got == where
    np.testing.assert_array_equal(r.telemetry["clipped"][0], [float(e % 4 == 3) for e in range(25)])
    assert r.telemetry["grad_norm"][1, 7] == 1e3 + 1 + 7 + 10 and r.telemetry["update_norm"][1, 7] == 0.0
    assert r.telemetry["grad_norm"][2, 4] == 1 + 4 + 20 and r.telemetry["adam_nu_max"][2, 4] == pytest.approx(3e-2)
    assert np.isnan(r.telemetry["grad_norm_median"][:, 0]).all()  # null for the first episode
    assert np.isfinite(r.telemetry["grad_norm_median"][:, 1:]).all()
    np.testing.assert_array_equal(r.telemetry["step_scale"][2], [1.0] * 21 + [0.5] * 4)


def test_a_missing_telemetry_key_is_nan_and_a_bad_value_one_line(tmp_path):
    p = str(tmp_path / "run")
    _fake_run(p, episodes=3, seeds=(0,), telemetry=True)
    recs = [json.loads(x) for x in open(os.path.join(p, "metrics.jsonl"))]
    for r in recs:  # a run without a guard records no step scale and no flags of it
        for k in ("step_scale", "spike", "rolled_back", "clipped", "grad_norm_median"):
            r.pop(k)
    recs[1].pop("grad_norm")
    with open(os.path.join(p, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    t = load_run(p).telemetry
    assert np.isnan(t["step_scale"]).all() and np.isnan(t["spike"]).all()
    np.testing.assert_array_equal(t["grad_norm"][0], [1.0, np.nan, 3.0])
    recs[2]["spike"] = "yes"
    with open(os.path.join(p, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    with pytest.raises(ConfigError, match="episode 2, seed 0 has 'spike'") as e:
        load_run(p)
    assert "\n" not in str(e.value)


def test_telemetry_figure_marks_spikes_and_rollbacks(tmp_path, monkeypatch):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _fake_run(a, episodes=25, telemetry=True)
    _fake_run(b, rule="f0", feedback="bp", terms=("F0",), seeds=(0,))  # no telemetry: not in that figure
    figs = _capture(monkeypatch)
    out = str(tmp_path / "f")
    assert main(["plot", a, b, "--out", out]) == 0
    assert os.path.getsize(os.path.join(out, "telemetry.png")) > 1000
    assert os.path.getsize(os.path.join(out, "telemetry.pdf")) > 1000
    axes = figs["telemetry"]
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "(a) meta-gradient norm before clipping" and "Adam" in titles[1]
    assert "applied update" in titles[2] and "step multiplier" in titles[3]
    assert [ax.get_yscale() for ax in axes] == ["log", "log", "log", "linear"]
    (legend,) = axes[0].figure.legends  # below the panels
    assert [t.get_text() for t in legend.get_texts()] == ["ehebb+fa (n=3 seeds)", "spike", "rolled back"]
    lines = axes[0].get_lines()
    assert [ln.get_label() for ln in lines if not ln.get_label().startswith("_")] == ["ehebb+fa (n=3 seeds)"]
    assert len([ln for ln in lines if ln.get_marker() not in ("x", "|")]) == 3  # one line per seed
    (x_marks,) = [ln for ln in lines if ln.get_marker() == "x"]
    got = sorted(zip(x_marks.get_xdata(), x_marks.get_ydata()))
    assert got == sorted((e, 1e3 + 1 + e + 10 * s) for e, s in SPIKES)
    (ticks,) = [ln for ln in lines if ln.get_marker() == "|"]
    assert list(ticks.get_xdata()) == sorted(e for e, _ in ROLLBACKS)
    # update norm 0 (a spike, not applied) is a gap on the log axis, not a line to the floor
    gaps = [np.flatnonzero(np.isnan(ln.get_ydata())).tolist() for ln in axes[2].get_lines()]
    assert gaps == [sorted(e for e, t in SPIKES if t == s) for s in (0, 1, 2)]


def test_no_telemetry_figure_for_a_run_without_it(tmp_path, monkeypatch):
    run = str(tmp_path / "old_run")
    shutil.copytree(OLD_RUN, run)
    r = load_run(run)
    assert r.telemetry == {} and r.member == "" and r.seeds == [0, 1]
    figs = _capture(monkeypatch)
    out = str(tmp_path / "f")
    assert main(["plot", run, "--out", out]) == 0
    assert "telemetry" not in figs and {"accuracy", "loss", "theta"} <= set(figs)
    assert not [n for n in os.listdir(out) if n.startswith("telemetry")]


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_a_sweep_plots_each_combination_as_a_run(tmp_path, monkeypatch):
    p = str(tmp_path / "sweep")
    _fake_run(p, seeds=(0, 1), episodes=6, sweep=[(0.0, 1e-3), (1.0, 1e-3)], telemetry=True)
    runs = load_runs(p)
    assert [r.label for r in runs] == ["ehebb+fa λ=0 lr=0.001", "ehebb+fa λ=1 lr=0.001"]
    assert [r.seeds for r in runs] == [[0, 1], [0, 1]]
    assert [(r.config["l1"], r.config["meta_lr"]) for r in runs] == [(0.0, 1e-3), (1.0, 1e-3)]
    for c, r in enumerate(runs):  # each combination's own records, not a mix
        assert r.accuracy.shape == (2, 6)
        np.testing.assert_allclose(r.accuracy[1], [0.2 + 0.01 * e + 0.01 + c for e in range(6)])
        assert r.telemetry["grad_norm"].shape == (2, 6)
    with pytest.raises(ConfigError, match="sweep of 2"):
        load_run(p)
    figs = _capture(monkeypatch)
    assert main(["plot", p, "--out", str(tmp_path / "f")]) == 0
    for name in ("accuracy", "loss", "theta", "telemetry"):
        ax = figs[name][0]
        legend = [t.get_text() for t in (ax.figure.legends[0] if name == "telemetry" else ax.get_legend()).get_texts()]
        assert legend[:2] == ["ehebb+fa λ=0 lr=0.001 (n=2 seeds)", "ehebb+fa λ=1 lr=0.001 (n=2 seeds)"], name
    assert main(["plot", p, "--label", "mine", "--out", str(tmp_path / "g")]) == 0
    legend = [t.get_text() for t in figs["accuracy"][0].get_legend().get_texts()]
    assert legend == ["mine λ=0 lr=0.001 (n=2 seeds)", "mine λ=1 lr=0.001 (n=2 seeds)"]


def test_an_older_run_resumed_with_member_keys_is_one_run(tmp_path):
    """Records before and after records named their member (l1, meta_lr): the older ones are the
    run's λ and rate, not a combination of their own."""
    p = str(tmp_path / "run")
    _fake_run(p, seeds=(0,), episodes=4)
    with open(os.path.join(p, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"episode": 4, "seed": 0, "l1": 0.0, "meta_lr": 1e-3, "accuracy": 0.9,
                            "meta_loss": 0.1, "theta": {"F0": 0.0, "F2": 0.0}}) + "\n")
    (r,) = load_runs(p)
    assert r.label == "ehebb+fa" and r.accuracy.shape == (1, 5) and r.accuracy[0, 4] == 0.9


def test_a_failed_figure_write_leaves_the_earlier_figure_whole(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plastic_jax import plots

    out = str(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    plots._save(fig, out, "accuracy")
    before = {e: open(os.path.join(out, f"accuracy.{e}"), "rb").read() for e in ("png", "pdf")}

    def half_then_fail(self, f, **kw):  # a disk that fills up mid-write
        f.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(fig), "savefig", half_then_fail)
    with pytest.raises(OSError):
        plots._save(fig, out, "accuracy")
    assert {e: open(os.path.join(out, f"accuracy.{e}"), "rb").read() for e in ("png", "pdf")} == before
    assert sorted(os.listdir(out)) == ["accuracy.pdf", "accuracy.png"]  # no temporary file left
    plt.close(fig)
