"""scripts/reproduce.py: the --quick pipeline runs and the RESULTS.md section is replaced in place."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from plastic_jax import rundir
from plastic_jax.paper import report as paper_report

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import reproduce  # noqa: E402


def test_write_section_keeps_what_it_did_not_write(tmp_path):
    p = str(tmp_path / "RESULTS.md")
    with open(p, "w") as f:
        f.write("# Results\n\nintro\n\n## Meta-test on held-out digits classes\n\nkept table\n")
    reproduce.write_section(p, "## Mine\n\nfirst")
    reproduce.write_section(p, "## Mine\n\nsecond")  # replaced, not appended twice
    text = open(p).read()
    assert text.count(reproduce.BEGIN) == 1 and text.count(reproduce.END) == 1
    assert "first" not in text and "second" in text
    assert text.startswith("# Results\n\nintro\n") and "## Meta-test on held-out digits classes\n\nkept table" in text
    with open(p, "a") as f:
        f.write("\n## Added after\n\nalso kept\n")
    reproduce.write_section(p, "third")
    text = open(p).read()
    assert "also kept" in text and "kept table" in text and "third" in text and "second" not in text


def _quick(tmp_path, *extra):
    res, figs = tmp_path / "RESULTS.md", tmp_path / "figures"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), "--quick", "--results", str(res),
         "--figures", str(figs), "--runs", str(tmp_path / "runs"), *extra],
        capture_output=True, text=True, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return res.read_text(), figs


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_quick_reproduce_of_fig3_writes_figures_and_table(tmp_path):
    text, figs = _quick(tmp_path, "--only", "fig3")
    for panel in ("accuracy", "loss", "theta", "alignment"):
        assert (figs / "fig3" / f"{panel}.png").stat().st_size > 1000
        assert (figs / "fig3" / f"{panel}.pdf").exists()
    assert "| f0-bp | f0 | bp |" in text and "| f0-fa | f0 | fa |" in text
    assert "| pool-fa | pool | fa | not run |" in text
    # bp: every layer's alignment angle is 0 (printed as 0.0 [0.0, 0.0])
    bp_row = next(line for line in text.splitlines() if line.startswith("| f0-bp | 0.0"))
    assert bp_row.count("0.0 [0.0, 0.0]") == 3


@pytest.mark.slow
def test_quick_reproduce_runs_every_experiment(tmp_path):
    text, figs = _quick(tmp_path)
    for fig in reproduce.FIGS:
        assert (figs / fig).is_dir()
    assert "not run" not in text
    assert "| ehebb,f0,f0 |" in text and "pool keeps F0, F2, F9" in text


# --------------------------------------------------------------------------- --scale paper

#: scripts/paper_runs.sh as the lead first wrote it (before the matrix moved into reproduce.py):
#: COMMON, then each run's flags; the runs in runs/paper/ were made with exactly these
OLD_COMMON = ["--dataset", "glyphs", "--holdout", "0.21", "--M", "5", "--K", "50", "--Q", "10", "--episodes", "600",
              "--seeds", "5", "--analysis-every", "10", "--checkpoint-every", "25", "--no-progress"]
OLD_RUNS = [
    ("f0-fa", ["--rule", "f0", "--feedback", "fa"]),
    ("f0-bp", ["--rule", "f0", "--feedback", "bp", "--bp-grad", "frozen"]),
    ("bio-fa", ["--rule", "bio", "--feedback", "fa"]),
    ("ehebb-fa", ["--rule", "ehebb", "--feedback", "fa"]),
    ("oja-fa", ["--rule", "oja", "--feedback", "fa"]),
    *[(f"t1-{lr.replace(',', '-')}", ["--layer-rules", lr, "--feedback", "fa", "--hidden", "130,70"])
      for lr in ("f0,f0,f0", "ehebb,f0,f0", "f0,ehebb,f0", "f0,f0,ehebb", "ehebb,ehebb,ehebb")],
    *[(f"pool-fa-{reading}-l1_{l1}", ["--rule", "pool", "--feedback", "fa", "--f5-f8", reading, "--l1", l1,
                                      "--max-skips", "0"])
      for reading in ("matrix", "elementwise") for l1 in ("1", "10", "0.1", "100")],
]


def _paper_args(tmp_path, *extra):
    return reproduce.parse_args(["--scale", "paper", "--runs", str(tmp_path / "runs"), "--figures",
                                 str(tmp_path / "figs"), "--results", str(tmp_path / "R.md"), *extra])


def test_paper_matrix_is_the_old_paper_runs_sh(tmp_path):
    args = _paper_args(tmp_path)
    matrix = reproduce.paper_matrix_of(args)
    assert [r.name for r in matrix] == [n for n, _ in OLD_RUNS]
    for run, (name, flags) in zip(matrix, OLD_RUNS):
        old = reproduce.config_of([*OLD_COMMON, *flags, "--out", str(tmp_path / "runs" / name)])
        new = reproduce.config_of(reproduce.paper_argv(run, args))
        # the one change: --max-skips 0 for every run (the old script gave it to pool only), which a
        # resume may change
        assert new.max_skips == 0
        assert new.to_json() == dataclasses.replace(old, max_skips=0).to_json(), name


def test_paper_matrix_matches_the_runs_on_disk():
    """Every run of the matrix already in runs/paper/ has the config the matrix gives it."""
    args = reproduce.parse_args(["--scale", "paper"])
    checked = 0
    for run in reproduce.paper_matrix_of(args):
        path = os.path.join(ROOT, "runs", "paper", run.name)
        if not os.path.exists(os.path.join(path, "config.json")):
            continue
        args.runs = os.path.join(ROOT, "runs", "paper")
        new = reproduce.config_of(reproduce.paper_argv(run, args))
        assert reproduce.config_differences(rundir.read_config(path), new) == [], run.name
        checked += 1
    if not checked:
        pytest.skip("no paper-scale run in runs/paper/")


def test_pool_variants_name_and_flag_the_runs():
    m = reproduce.paper_matrix(readings=("matrix",), l1s=("1",), variants=("base", "lr_1e-4", "lr_1e-4+clip_10"))
    pool = [r for r in m if r.group == "pool"]
    assert [r.name for r in pool] == ["pool-fa-matrix-l1_1", "pool-fa-matrix-l1_1-lr_1e-4",
                                      "pool-fa-matrix-l1_1-lr_1e-4-clip_10"]
    assert pool[2].flags[-4:] == ("--meta-lr", "1e-4", "--meta-clip", "10")
    with pytest.raises(reproduce.ConfigError):
        reproduce.pool_variant_flags("lr1e-4")


def _bash_paper_runs(tmp_path, *groups, **env):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "paper_runs.sh"), *groups], capture_output=True,
                          text=True, env={**os.environ, "RUNS": str(tmp_path / "runs"), "DRY_RUN": "1",
                                          "PY": sys.executable, **env})


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_paper_runs_sh_is_a_wrapper_over_the_matrix(tmp_path):
    proc = _bash_paper_runs(tmp_path, "fig3")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert [line.split(":")[0] for line in lines] == ["== f0-fa", "== f0-bp"]
    assert "starting" in lines[1] and "meta-train " + " ".join(OLD_COMMON[:-1]) in lines[1]
    assert lines[1].endswith(f"--rule f0 --feedback bp --bp-grad frozen --out {tmp_path / 'runs'}/f0-bp --no-progress")
    proc = _bash_paper_runs(tmp_path, "pool", READINGS="elementwise", POOL_L1="10", POOL_VARIANTS="base clip_1")
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == [
        "== pool-fa-elementwise-l1_10", "== pool-fa-elementwise-l1_10-clip_1"]
    assert _bash_paper_runs(tmp_path, "figs").returncode == 2
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


# ---- fabricated run directories: the states of a run and the report, without training


def _fake_run(cfg, episodes, *, acc=0.5, loss=1.0, align=None, ortho=None, theta=None, summary=True,
              per_seed=None):
    """A run directory of ``cfg`` with ``episodes`` episodes of made-up metrics.

    per_seed: seed index -> dict overriding acc / loss / theta of that seed (loss may be NaN).
    """
    from plastic_jax.config import class_split
    from plastic_jax.experiment import rule_of

    os.makedirs(cfg.out, exist_ok=True)
    train, test = class_split(cfg, reproduce.N_CLASSES[cfg.dataset])
    cfg = dataclasses.replace(cfg, extra={"class_split": {"train": list(train), "test": list(test)}} if test else {})
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(cfg.to_json(), f)
    terms = rule_of(cfg).terms
    L = len(cfg.hidden) + 1
    rng = np.random.default_rng(0)
    with open(os.path.join(cfg.out, "metrics.jsonl"), "w") as f:
        for ep in range(episodes):
            for s in range(cfg.seeds):
                o = (per_seed or {}).get(s, {})
                th = o.get("theta", theta) or {f"F{t}": 0.01 for t in terms}
                ql = o.get("loss", loss)
                rec = {"episode": ep, "seed": cfg.seed + s, "meta_loss": ql, "query_loss": ql,
                       "accuracy": o.get("acc", acc) + 0.01 * rng.standard_normal(),
                       "skipped": bool(o.get("skipped", False)), "consecutive_skips": 0,
                       "theta": {f"F{t}": th.get(f"F{t}", 0.0) * (ep + 1) / episodes for t in terms}}
                if cfg.analysis_every and (ep % cfg.analysis_every == 0 or ep == cfg.episodes - 1):
                    rec["alignment"] = [*(align or [80.0] * (L - 1)), 0.0]
                    rec["orthonormality"] = list(ortho or [10.0] * L)
                f.write(json.dumps(rec) + "\n")
    if summary:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({"episodes": cfg.episodes, "seeds": list(range(cfg.seeds)),
                                 "theta": [theta or {f"F{t}": 0.01 for t in terms}] * cfg.seeds}, f)


def _statuses(tmp_path, *extra):
    args = _paper_args(tmp_path, "--quick", *extra)
    return args, {r.name: reproduce.paper_status(r, args) for r in reproduce.paper_matrix_of(args)}


def test_paper_status_done_partial_conflict_running(tmp_path):
    args, st = _statuses(tmp_path)
    assert {s.state for s in st.values()} == {"missing"}
    assert reproduce.train_command(st["f0-fa"])[-3:] == ["--out", str(tmp_path / "runs" / "f0-fa"), "--no-progress"]
    _fake_run(st["f0-fa"].cfg, args.episodes)
    # checkpoint_every: a setting a resume may change: the resume passes the matrix's
    _fake_run(dataclasses.replace(reproduce.config_of(st["f0-bp"].argv), checkpoint_every=0), 2, summary=False)
    _fake_run(dataclasses.replace(reproduce.config_of(st["bio-fa"].argv), K=5), args.episodes)
    _fake_run(reproduce.config_of(st["oja-fa"].argv), 1, summary=False)
    with open(os.path.join(st["oja-fa"].out, ".lock"), "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    args, st = _statuses(tmp_path)
    assert st["f0-fa"].state == "done" and st["f0-fa"].done == args.episodes
    assert st["f0-bp"].state == "partial" and st["f0-bp"].done == 2
    cmd = reproduce.train_command(st["f0-bp"])
    assert cmd[cmd.index("meta-train"):] == ["meta-train", "--resume", st["f0-bp"].out, "--checkpoint-every", "2",
                                             "--no-progress"]
    assert st["bio-fa"].state == "conflict" and "K = 5 there, 4 in the matrix" in st["bio-fa"].note
    assert st["oja-fa"].state == "running" and f"pid {os.getpid()}" in st["oja-fa"].note
    # a higher --episodes turns a finished run into one to resume
    args, st = _statuses(tmp_path, "--episodes", "5")
    assert st["f0-fa"].state == "partial"
    assert reproduce.train_command(st["f0-fa"])[-3:] == ["--episodes", "5", "--no-progress"]


def test_seed_outcomes_name_the_degenerate_seeds(tmp_path):
    args, st = _statuses(tmp_path)
    pool = st["pool-fa-matrix-l1_1"]
    cfg = dataclasses.replace(reproduce.config_of(pool.argv), seeds=3)
    pool.cfg = dataclasses.replace(pool.cfg, seeds=3)
    _fake_run(cfg, 3, per_seed={1: {"loss": float(np.log(10)), "acc": 0.08, "theta": {"F0": -0.001, "F3": 0.004}},
                                2: {"loss": float("nan"), "acc": 0.1, "skipped": True}})
    run = reproduce.load_run(cfg.out)
    out = reproduce.seed_outcomes(run)
    assert [k for k, _ in out.values()] == ["learned", "collapsed", "diverged"]
    assert "≈ ln 10 = 2.303" in out[1][1] and "3 skipped updates" in out[2][1]
    surv, count = reproduce.survivors(run, [0])
    assert "F0" in surv and count["F0"] == 1


def test_report_only_builds_every_section_from_fabricated_runs(tmp_path, monkeypatch):
    args, st = _statuses(tmp_path)
    E = args.episodes
    spec = {"f0-fa": dict(acc=0.2, align=[85.0, 86.0]), "f0-bp": dict(acc=0.6, align=[0.0, 0.0]),
            "bio-fa": dict(acc=0.6, align=[70.0, 40.0], ortho=[1.0, 1.0, 1.0],
                           theta={"F0": 0.02, "F2": -0.05, "F9": 0.01}),
            "ehebb-fa": dict(acc=0.4, align=[60.0, 30.0]), "oja-fa": dict(acc=0.35, align=[84.0, 80.0],
                                                                         ortho=[1.0, 1.0, 1.0])}
    for name, kw in spec.items():
        _fake_run(st[name].cfg, E, **kw)
    for name in ("t1-f0-f0-f0", "t1-f0-f0-ehebb"):
        _fake_run(st[name].cfg, E)
    _fake_run(st["pool-fa-matrix-l1_1"].cfg, 2, summary=False,
              theta={f"F{t}": (0.02 if t in (0, 2, 9) else 0.0) for t in range(10)})
    (tmp_path / "figs").mkdir()
    cache = {"baselines": {"tasks": 4, "test_classes": [2, 3], "tuning": {}, "rules": [
        {"name": "f0+bp", "feedback": "bp", "mean_accuracy": 0.5, "ci95": [0.4, 0.6], "theta": {"F0": 0.1}},
        {"name": "f0+fa", "feedback": "fa", "mean_accuracy": 0.3, "ci95": [0.2, 0.4], "theta": {"F0": 0.1}}]},
        "runs": {"bio-fa": {"key": {}, "seeds": [
            {"seed_index": i, "mean_accuracy": 0.6 + 0.01 * i, "ci95": [0.5, 0.7],
             "paired": {"f0+bp": [0.1, 0.0, 0.2], "f0+fa": [0.3, 0.2, 0.4]}} for i in range(2)]}}}
    (tmp_path / "figs" / "meta_test.json").write_text(json.dumps(cache))
    drawn = []
    monkeypatch.setattr(paper_report, "plot_runs", lambda runs, out, **kw: drawn.append((out, [r.label for r in runs])))
    assert reproduce.main(["--scale", "paper", "--quick", "--report-only", "--runs", str(tmp_path / "runs"),
                           "--figures", str(tmp_path / "figs"), "--results", str(tmp_path / "R.md")]) == 0
    text = (tmp_path / "R.md").read_text()
    begin, end = reproduce.paper_markers("quick")
    assert text.count(begin) == 1 and text.count(end) == 1
    for head in ("### The runs", "### Fig. 3", "### Fig. 4", "### Fig. S2", "### Figs. 5 and 7", "### Fig. 8",
                 "### Table 1", "### Meta-test", "### The claims, in one table"):
        assert head in text, head
    assert "| f0-fa | fig3 | done |" in text and "| pool-fa-matrix-l1_10 | pool | not started |" in text
    assert "`bash scripts/paper_runs.sh pool`" in text
    assert "**Fig. 3, backprop far above feedback alignment: reproduced.**" in text
    assert "pool-fa-matrix-l1_1 not finished" in text  # an unfinished run makes a verdict provisional
    assert "| t1-f0-ehebb-f0 | not run yet |" not in text and "| f0,ehebb,f0 | not run yet | | |" in text
    assert "| bio-fa | 60.0 [" in text and "| f0-bp | not evaluated yet (`--only metatest`) |" in text
    assert "| pool-fa-matrix-l1_1 | not evaluated (run not finished) |" in text
    assert any(out.endswith(os.path.join("fig4", "pool-fa-matrix-l1_1")) for out, _ in drawn)
    assert ["pool+fa matrix-l1_1", "f0+bp", "f0+fa"] in [labels for out, labels in drawn if out.endswith("fig4")]


@pytest.mark.slow
def test_quick_paper_scale_trains_resumes_evaluates_and_reports(tmp_path):
    common = ["--scale", "paper", "--quick", "--runs", str(tmp_path / "runs"), "--figures", str(tmp_path / "figs"),
              "--results", str(tmp_path / "R.md")]
    script = os.path.join(ROOT, "scripts", "reproduce.py")
    proc = subprocess.run([sys.executable, script, *common, "--only", "fig3,metatest", "--eval-tasks", "4"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== f0-fa: starting" in proc.stdout and "meta-test f0-bp: 2 seed(s)" in proc.stdout
    for panel in ("accuracy", "loss", "theta", "alignment"):
        assert (tmp_path / "figs" / "fig3" / f"{panel}.png").stat().st_size > 1000
    text = (tmp_path / "R.md").read_text()
    assert "| f0-bp | fig3 | done | 3 of 3 |" in text and "| f0-fa | " in text.split("### Meta-test")[1]
    # raised --episodes: resumed from the checkpoint, not restarted
    proc = subprocess.run([sys.executable, script, *common, "--only", "fig3", "--train-only", "--episodes", "4"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== f0-fa: resuming" in proc.stdout and "resuming" in proc.stderr
    assert len(rundir.read_records(str(tmp_path / "runs" / "f0-fa"))) == 4 * 2
    assert len((tmp_path / "runs" / "f0-fa" / "wall_seconds.txt").read_text().split()) == 2
    proc = subprocess.run([sys.executable, script, *common, "--only", "fig3", "--train-only", "--episodes", "4"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "== f0-fa: done" in proc.stdout and "== f0-bp: done" in proc.stdout
