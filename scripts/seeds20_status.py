"""Where the 20-seed runs of scripts/seeds20_runs.sh stand: per run (and per λ/rate of a sweep),
episodes done, last-100 accuracy over seeds (mean, 98% bootstrap CI), the seeds that did not
learn (98% Clopper–Pearson CI of the rate), and the guard's events.

A seed "did not learn" when, over its last 100 episodes (as in docs/RESULTS.md's diagnoses):
- diverged: its query loss is non-finite in at least half of them, or its last 10 or more
  meta-updates were not applied in a row; or
- collapsed: its median query loss is within 5% of ln C (C output units: a network whose output is
  uniform) and its final θ0 is at most where it started (the pseudo-gradient term switched off).

    .venv/bin/python scripts/seeds20_status.py [RUNS_DIR]       # default runs/seeds20
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from plastic_jax import runs  # noqa: E402
from plastic_jax.stats import bootstrap_ci, proportion_ci  # noqa: E402

N_CLASSES = {"digits": 10, "glyphs": 47, "emnist": 47}


def outcome(recs: list[dict], n_classes: int | None, theta0: float, n: int = 100) -> str:
    """"learned", "diverged" or "collapsed" for one member's records in episode order."""
    last = recs[-min(n, len(recs)):]
    ql = np.array([np.nan if r.get("query_loss") is None else r["query_loss"] for r in last], float)
    fin = ql[np.isfinite(ql)]
    if fin.size <= len(ql) / 2 or int(recs[-1].get("consecutive_skips", 0)) >= 10:
        return "diverged"
    th0 = recs[-1].get("theta", {}).get("F0")
    if n_classes and abs(np.median(fin) - math.log(n_classes)) <= 0.05 * math.log(n_classes) and \
            (th0 is None or th0 <= theta0):
        return "collapsed"
    return "learned"


def status(run_dir: str) -> list[str]:
    """The table's rows of the run in ``run_dir``: one, or one per (λ, rate) of a sweep."""
    if not os.path.isfile(os.path.join(run_dir, runs.METRICS)) or not os.path.getsize(
            os.path.join(run_dir, runs.METRICS)):
        return []  # nothing logged yet
    rows = []
    for run in runs.load_runs(run_dir):
        cfg = run.config
        C = N_CLASSES.get(cfg.get("dataset"))
        by_seed = run.seed_records()
        seeds = sorted(by_seed)
        series = [by_seed[s] for s in seeds]
        eps = min(len(x) for x in series)
        # an episode whose network diverged has a NaN (null) accuracy: averaged over the finite ones
        # and a seed with no finite accuracy in the window is left out of the mean, which says so
        last = [np.array([r["accuracy"] for r in x[eps - min(100, eps):eps]], dtype=float) for x in series]
        acc = np.array([a[np.isfinite(a)].mean() for a in last if np.isfinite(a).any()])
        mean, lo, hi = bootstrap_ci(acc, level=0.98, n_resamples=500)
        over = "" if len(acc) == len(series) else f" (over {len(acc)})"
        kinds = [outcome(x[:eps], C, float(cfg.get("theta0", 1e-3))) for x in series]
        bad = sum(k != "learned" for k in kinds)
        _, blo, bhi = proportion_ci(bad, len(kinds), 0.98)
        ev = {k: sum(bool(r.get(f)) for x in series for r in x) for k, f in
              (("spikes", "spike"), ("rollbacks", "rolled_back"))}
        name = os.path.relpath(run_dir, os.path.dirname(os.path.dirname(run_dir)))
        if run.member:
            name += f" λ={cfg['l1']:g} lr={cfg['meta_lr']:g}"
        what = ", ".join(f"{kinds.count(k)} {k}" for k in ("diverged", "collapsed") if kinds.count(k))
        rows.append(f"| {name} | {cfg.get('preset', 'paper')} | {eps}/{cfg.get('episodes')}"
                    f"{'' if run.finished else ' (running)'} | {len(seeds)} | {100 * float(mean):.1f}% "
                    f"[{100 * float(lo):.1f}, {100 * float(hi):.1f}]{over} | {bad} of {len(kinds)}"
                    f"{' (' + what + ')' if what else ''} [{100 * blo:.0f}%, {100 * bhi:.0f}%] | "
                    f"{ev['spikes']} | {ev['rollbacks']} |")
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = argv[0] if argv else "runs/seeds20"
    dirs = sorted(os.path.dirname(p) for p, _, _ in ((os.path.join(d, "config.json"), 0, 0)
                  for d, _, files in os.walk(root) if "config.json" in files))
    print("| run | preset | episodes | seeds | last-100 accuracy [98% CI] | did not learn [98% CI of the rate] "
          "| spikes | rollbacks |")
    print("|---|---|---|---|---|---|---|---|")
    for d in dirs:
        for row in status(d):
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
