"""scripts/feedback_pathways.py: the rules × feedback-modes matrix is trained, skipped when finished,
resumed when not, and reported in its own section of RESULTS.md (the rest of the file untouched).

The first test writes fake run directories (no training) to check the report's numbers and
findings; the second (slow) runs the script end to end on a tiny digits config (two meta-train
subprocesses)."""

import json
import math
import os
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import feedback_pathways as fp  # noqa: E402

from plastic_jax.paper import fmt_ci  # noqa: E402

HEAD = "# Results\n\nintro, kept\n\n"
TAIL = "\n\n## Later section\n\nalso kept\n"
OLD = f"{fp.BEGIN}\nthe old section\n{fp.END}"


def _results(tmp_path, with_markers=True):
    p = tmp_path / "RESULTS.md"
    p.write_text(HEAD + OLD + TAIL if with_markers else HEAD.rstrip() + TAIL)
    return p


# --------------------------------------------------------------------------- the report, from fake runs

#: per mode: the seeds' accuracy, their final Θ beyond θ0, the alignment of the hidden layers
FAKE = {
    "bp": ([0.80, 0.81, 0.82], {}, [0.0, 0.0]),
    "fa": ([0.30, 0.31, 0.32], {}, [80.0, 70.0]),
    "kp": ([0.75, 0.76, 0.77], {}, [20.0, 10.0]),
    "sign": ([0.50, 0.51, 0.52], {}, [40.0, 30.0]),
    "plastic": ([0.29, 0.30, 0.31], {"B:kp": 0.3, "B:decay": -0.02, "B:err": 0.0}, [79.0, 71.0]),
    "routing": ([0.30, 0.31, 0.33], {"gate@0": 2.0, "gate@1": -0.005}, [60.0, 65.0]),
}
TINY = ["--dataset", "digits", "--holdout", "0.5", "--hidden", "16,8", "--M", "3", "--K", "5", "--Q", "2",
        "--episodes", "40", "--seeds", "3", "--analysis-every", "10"]


def _fake_run(st, accs, extra, align, episodes=None):
    """A run directory for the matrix entry ``st`` (its own config.json), as meta-train leaves it."""
    cfg = st.cfg
    os.makedirs(cfg.out)
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(cfg.to_json(), f)
    E = cfg.episodes if episodes is None else episodes
    thetas = []
    with open(os.path.join(cfg.out, "metrics.jsonl"), "w") as f:
        for e in range(E):
            for s, a in enumerate(accs):
                frac = (e + 1) / cfg.episodes
                theta = {"F0": 1e-3 + 0.01 * frac, **{k: v * frac + 1e-3 * s for k, v in extra.items()}}
                rec = {"episode": e, "seed": s, "meta_loss": 1.0, "query_loss": 1.0, "accuracy": a, "skipped": False,
                       "consecutive_skips": 0, "theta": theta}
                if e % cfg.analysis_every == 0 or e == cfg.episodes - 1:
                    rec["alignment"] = [*(x + s for x in align), 0.0]
                    rec["orthonormality"] = [1.0, 1.0, 1.0]
                f.write(json.dumps(rec) + "\n")
                if e == E - 1:
                    thetas.append(theta)
    if E == cfg.episodes:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({"episodes": E, "seeds": list(range(len(accs))), "theta": thetas}, f)
        with open(os.path.join(cfg.out, "wall_seconds.txt"), "w") as f:
            f.write("100\n")


def test_report_from_fake_runs(tmp_path):
    runs, figs = tmp_path / "runs", tmp_path / "figs"
    argv = ["--runs", str(runs), "--figures", str(figs), *TINY]
    args = fp.parse_args(["--rules", "f0,bio", "--modes", "bp,fa,dfa,sign,kp,plastic,routing", *argv])
    statuses = {st.run.name: st for st in (fp.paper_status(r, args) for r in fp.matrix(args))}
    for mode, (accs, extra, align) in FAKE.items():
        _fake_run(statuses[f"f0-{mode}"], accs, extra, align)
    _fake_run(statuses["f0-dfa"], [0.2, 0.2, 0.2], {}, [85.0, 85.0], episodes=15)  # unfinished
    _fake_run(statuses["bio-fa"], [0.40, 0.41, 0.42], {}, [75.0, 70.0])
    res = _results(tmp_path)
    rules_modes = ["--rules", "f0,bio", "--modes", "bp,fa,dfa,sign,kp,plastic,routing"]
    assert fp.main(["--report-only", "--results", str(res), *rules_modes, *argv]) == 0
    text = res.read_text()
    assert text.startswith(HEAD) and text.endswith(TAIL) and "the old section" not in text
    assert text.count(fp.BEGIN) == 1 and text.count(fp.END) == 1
    sec = text[text.index(fp.BEGIN):text.index(fp.END)]
    assert "## Feedback pathways" in sec and "network 64-16-8-10" in sec and "meta-lr 0.001" in sec
    assert "θ0 = 0.001" in sec and "40 episodes, 3 seeds" in sec
    rows = {line.split(" | ")[0][2:]: line for line in sec.split("### Rule `bio`")[0].splitlines()
            if line.startswith("| ") and not line.startswith("| mode") and not line.startswith("| ---")}
    # accuracy: mean over seeds and plastic_jax.paper's 98% bootstrap CI; the seeds; α of the 2 hidden layers
    assert f"| {fmt_ci(np.array([0.80, 0.81, 0.82]))} | 80.0, 81.0, 82.0 | 1.0, 1.0 |" in rows["bp"]
    assert "| 81.0, 71.0 |" in rows["fa"]  # the seeds at 80, 81, 82 and 70, 71, 72
    assert "done, 100 s" in rows["fa"]
    assert "unfinished: 15 of 40 episodes logged" in rows["dfa"]
    # Θ^B from summary.json (mean over seeds: 0.3 + 0.001), gates as sigmoid(φ) of each seed, then the mean
    assert "θ^B_kp +0.301" in rows["plastic"] and "θ^B_decay -0.019" in rows["plastic"]
    g0 = np.mean([1 / (1 + math.exp(-(2.0 + 1e-3 * s))) for s in range(3)])
    g1 = np.mean([1 / (1 + math.exp(-(-0.005 + 1e-3 * s))) for s in range(3)])
    assert f"g_0 {g0:.3f}, g_1 {g1:.3f} |" in rows["routing"]
    assert "θ0 +0.011" in rows["bp"]
    bio = sec.split("### Rule `bio`")[1].split("### Findings")[0]
    assert "| kp | missing | – |" in bio and "| fa | done" in bio
    assert "Not finished: f0-dfa, bio-bp, bio-dfa" in sec
    findings = sec.split("### Findings")[1]
    assert "above fa's: bp, sign, kp;" in findings and "overlapping fa's: plastic, routing." in findings
    assert "kp's CI lies below bp's (76.0% vs 81.0%, -5.0 points); it covers 90% of the gap" in findings
    assert "sign's CI lies below bp's" in findings and "dfa" not in findings  # unfinished: left out
    assert "smallest first: bp 1.0°, kp 16.0°, sign 36.0°, routing 63.5°" in findings
    assert "a smaller angle than fa's at every hidden layer: bp, sign, kp, routing." in findings
    assert "g_0 = sigmoid(φ) ended at" in findings and "towards the layer-wise (fa) signal" in findings
    assert f"g_1 = sigmoid(φ) ended at {g1:.3f}" in findings and "within 0.01 of its start ½ in every seed" in findings
    assert "θ^B_kp from 0 to +0.301 (positive in all 3 seeds" in findings
    assert "θ^B_err from 0 to +0.001 (positive in 2, negative in 0 of 3 seeds" in findings
    assert "bio against f0 with the same feedback: bio's 98% CI of the last-100-episode accuracy lies above f0's: fa." \
        in findings
    assert "`bio`: only fa has finished: no comparison between modes." in findings
    for f in ("accuracy-f0.png", "accuracy-bio.png", "alignment.png", "meta-params.png"):
        assert (figs / f).stat().st_size > 1000 and f"figs/{f}" in sec
    # again, on a file without markers: the section goes at the end, the rest stays
    res2 = _results(tmp_path, with_markers=False)
    fp.main(["--report-only", "--results", str(res2), *rules_modes, *argv])
    text2 = res2.read_text()
    assert text2.startswith(HEAD.rstrip() + TAIL.rstrip()) and text2.rstrip().endswith(fp.END)
    fp.main(["--report-only", "--results", str(res2), *rules_modes, *argv])
    assert res2.read_text() == text2  # replaced in place, not appended again


# --------------------------------------------------------------------------- end to end, tiny


def _script(tmp_path, capsys, *argv):
    """The script's main() in this process; its meta-train runs are subprocesses (stdout captured)."""
    capsys.readouterr()
    rc = fp.main(["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "RESULTS.md"), "--figures",
                  str(tmp_path / "figs"), "--dataset", "digits", "--holdout", "0.5", "--hidden", "16", "--M", "3",
                  "--K", "5", "--Q", "2", "--episodes", "4", "--seeds", "2", "--analysis-every", "2",
                  "--extra-flags", "--checkpoint-every 2", *argv])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    return out


# two meta-train subprocesses: about 30 s with the compilation cache warm, 130 s cold on a loaded 2-core machine
@pytest.mark.slow
def test_train_skip_resume_and_report_end_to_end(tmp_path, capsys, monkeypatch):
    # the meta-train subprocesses share the tests' persistent compilation cache (conftest.py)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    runs = tmp_path / "runs"
    out = _script(tmp_path, capsys, "--train-only", "--rules", "f0", "--modes", "fa")
    assert "== f0-fa: starting:" in out and "--rule f0 --feedback fa" in out and "--no-progress" in out
    # the paper's flags first, the tiny overrides after them (the last flag wins)
    assert "--dataset digits --holdout 0.21 --M 5 --K 50 --Q 10 --episodes 4 --seeds 2" in out
    out = _script(tmp_path, capsys, "--train-only", "--rules", "bio", "--modes", "routing")
    assert "== bio-routing: starting:" in out
    for name in ("f0-fa", "bio-routing"):
        assert (runs / name / "summary.json").exists()
        assert len((runs / name / "wall_seconds.txt").read_text().split()) == 1
    # a second --train-only skips the finished run (no new wall-time line)
    out = _script(tmp_path, capsys, "--train-only", "--rules", "f0", "--modes", "fa")
    assert "== f0-fa: done" in out and "starting" not in out
    assert len((runs / "f0-fa" / "wall_seconds.txt").read_text().split()) == 1
    res = _results(tmp_path)
    out = _script(tmp_path, capsys, "--report-only", "--rules", "f0,bio", "--modes", "fa,routing")
    assert "starting" not in out and not (runs / "f0-routing").exists()
    text = res.read_text()
    assert text.startswith(HEAD) and text.endswith(TAIL) and "the old section" not in text
    sec = text[text.index(fp.BEGIN):text.index(fp.END)]
    assert "network 64-16-10" in sec and "M = 3, K = 5, Q = 2; 4 episodes, 2 seeds" in sec
    f0, bio = sec.split("### Rule `f0`")[1].split("### Rule `bio`")
    assert "| fa | done" in f0 and "| routing | missing | – |" in f0
    assert "| fa | missing | – |" in bio and "| routing | done" in bio and "g_0 0." in bio
    assert "Not finished: f0-routing, bio-fa." in sec
    assert "`f0`: only fa has finished" in sec and "`bio`+routing: g_0 = sigmoid(φ) ended at 0." in sec
    assert (tmp_path / "figs" / "accuracy-f0.png").exists() and (tmp_path / "figs" / "meta-params.png").exists()
    # an unfinished run: resumed by --train-only, reported as unfinished
    os.remove(runs / "bio-routing" / "summary.json")
    out = _script(tmp_path, capsys, "--train-only", "--dry-run", "--rules", "f0,bio", "--modes", "routing")
    assert "== bio-routing: resuming (episode 4 of 4 logged): " in out and "--resume" in out
    assert "== f0-routing: starting:" in out and not (runs / "f0-routing").exists()  # a dry run
    _script(tmp_path, capsys, "--report-only", "--rules", "bio", "--modes", "routing")
    sec = res.read_text().split(fp.BEGIN)[1]
    assert "| routing | unfinished: 4 of 4 episodes logged" in sec and "no finished run yet" in sec
