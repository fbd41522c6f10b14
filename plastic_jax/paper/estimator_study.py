"""Issue 23's experiment: does the smoothed meta-gradient keep every seed at the paper's meta-optimiser?

Each study compares, on the same seeds, data, network and tasks (scripts/seeds20_runs.sh's
settings), arms that differ only in the meta-gradient and the meta-optimiser preset:

- ``es, paper preset``: ``--meta-grad es`` (antithetic ES, σ = 1e-3, 8 pairs) with Adam 1e-3, no
  clipping (scripts/chaos_runs.sh, under ``runs/chaos``);
- ``exact, paper preset``: the exact gradient (``auto``: the adjoint) with the same optimiser;
- ``exact, robust preset``: the exact gradient with the robust preset (relative clipping, rollback).

The arms are compared over the seeds they share and the episodes every arm has reached (a run in
progress is compared at its current episode, and the table says so): per arm the learned,
collapsed and diverged seeds (``paper.diagnose``), the degenerate rate with its 98% Clopper–Pearson
CI, the last-100 accuracy [98% bootstrap CI over seeds], the worst seed's (a seed may learn little
without diverging or collapsing), the skipped updates and the spikes flagged.

    .venv/bin/python -m plastic_jax.paper.estimator_study [--seeds20 runs/seeds20] [--chaos runs/chaos]
        [--write docs/RESULTS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from plastic_jax.paper.diagnose import seed_outcomes
from plastic_jax.paper.markdown import emit_section, fmt_ci, fmt_rate, table
from plastic_jax.paper.presets import Source, load_source
from plastic_jax.plots import Run


@dataclass(frozen=True)
class Arm:
    """One arm of a study: its label, which root it lives under (``seeds20`` or ``chaos``), the run
    directory below it and, for a sweep, its λ."""

    label: str
    root: str
    path: str
    l1: float | None = None


def _arms(run: str, sweep: str | None = None, l1: float | None = None) -> tuple[Arm, ...]:
    es, exact = ("paper-es/" + (sweep or run)), (sweep or run)
    return (Arm("es, paper preset", "chaos", es, l1), Arm("exact, paper preset", "seeds20", "paper/" + exact, l1),
            Arm("exact, robust preset", "seeds20", "robust/" + exact, l1))


#: study name -> its arms
STUDIES: dict[str, tuple[Arm, ...]] = {
    "bio+fa": _arms("bio-fa"),
    "pool+fa, matrix reading, λ = 0.1": _arms("", "pool-fa-matrix-sweep", 0.1),
    "pool+fa, matrix reading, λ = 1": _arms("", "pool-fa-matrix-sweep", 1.0),
}


def restrict(run: Run, records: dict[int, list[dict]], seeds: Sequence[int], last: int) -> tuple[Run, dict]:
    """``run`` and its seeds' ``records`` cut to ``seeds`` and the episodes up to ``last``."""
    rows = [run.seeds.index(s) for s in seeds]
    cols = run.episodes <= last
    an = run.analysis_episodes <= last
    cut = {"seeds": list(seeds), "episodes": run.episodes[cols],
           "accuracy": run.accuracy[rows][:, cols], "meta_loss": run.meta_loss[rows][:, cols],
           "theta": {k: v[rows][:, cols] for k, v in run.theta.items()},
           "telemetry": {k: v[rows][:, cols] for k, v in run.telemetry.items()},
           "analysis_episodes": run.analysis_episodes[an]}
    for k in ("alignment", "orthonormality"):
        a = getattr(run, k)
        cut[k] = None if a is None else a[rows][:, an]
    recs = {s: [r for r in records[s] if r["episode"] <= last] for s in seeds}
    return dataclasses.replace(run, **cut), recs


def arm_row(run: Run, records: dict[int, list[dict]], status: str) -> list[str]:
    """The table cells of one arm (already restricted to the compared seeds and episodes)."""
    kinds = [k for k, _ in seed_outcomes(run, 100, records).values()]
    n_deg = sum(k in ("collapsed", "diverged") for k in kinds)
    with np.errstate(all="ignore"):
        acc = np.nanmean(run.accuracy[:, -100:], axis=1)
    finite = acc[np.isfinite(acc)]
    shown = fmt_ci(finite) if len(finite) > 1 else "–"
    worst = "–" if not len(finite) else f"{100 * float(finite.min()):.1f} (seed {run.seeds[int(np.nanargmin(acc))]})"
    skipped = sum(bool(r.get("skipped")) for rs in records.values() for r in rs)
    spikes = sum(bool(r.get("spike")) for rs in records.values() for r in rs)
    est = str(run.config.get("estimator", "?"))
    if est == "auto":
        from plastic_jax.estimators import resolve

        est = f"auto: {resolve(est, len(run.theta), str(run.config.get('feedback', 'fa')))}"
    return [est, str(run.config.get("preset", "?")), status,
            f"{kinds.count('learned')} / {kinds.count('collapsed')} / {kinds.count('diverged')}",
            fmt_rate(n_deg, len(kinds)), shown, worst, str(skipped), str(spikes)]


def study_table(name: str, arms: Sequence[Arm], roots: dict[str, str]) -> list[str]:
    """The markdown of one study: the arms that exist, over their common seeds and episodes."""
    got = []
    for arm in arms:
        path = os.path.join(roots[arm.root], arm.path)
        if not os.path.exists(os.path.join(path, "metrics.jsonl")):
            continue
        run, records, finished = load_source(Source(path, arm.l1))
        if len(run.episodes):
            got.append((arm, run, records, finished))
    if not got:
        return [f"**{name}**: no run yet.", ""]
    seeds = sorted(set.intersection(*(set(r.seeds) for _, r, _, _ in got)))
    last = int(min(r.episodes[-1] for _, r, _, _ in got))
    if not seeds:
        return [f"**{name}**: the arms share no seed.", ""]
    rows = []
    for arm, run, records, finished in got:
        cut, recs = restrict(run, records, seeds, last)
        status = "finished" if finished else f"running (at episode {int(run.episodes[-1])})"
        rows.append([arm.label, *arm_row(cut, recs, status)])
    planned = max(int(r.config.get("episodes", 0)) for _, r, _, _ in got)
    head = (f"**{name}**: seeds {seeds[0]}–{seeds[-1]} ({len(seeds)}), episodes 0–{last} "
            f"(of {planned}; every arm compared up to the episode all have reached)")
    return [head, "", *table(["arm", "meta-gradient", "preset", "run", "learned / collapsed / diverged",
                              "degenerate [98% CI]", "last-100 accuracy, % [98% CI]", "worst seed, %",
                              "skipped updates", "spikes flagged"], rows), ""]


def study_section(seeds20: str, chaos: str) -> str:
    """The markdown of every study."""
    roots = {"seeds20": seeds20, "chaos": chaos}
    L = [f"Generated by `python -m plastic_jax.paper.estimator_study --seeds20 {seeds20} --chaos {chaos}` "
         "from the runs as they stood (scripts/chaos_runs.sh for es, scripts/seeds20_runs.sh for the exact arms).", ""]
    for name, arms in STUDIES.items():
        L += study_table(name, arms, roots)
    return "\n".join(L)


BEGIN = ("<!-- estimator-study:begin (generated by python -m plastic_jax.paper.estimator_study; "
         "edits here are overwritten) -->")
END = "<!-- estimator-study:end -->"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plastic_jax.paper.estimator_study", allow_abbrev=False,
                                 description="the smoothed meta-gradient against the exact ones, same seeds")
    ap.add_argument("--seeds20", default="runs/seeds20", help="scripts/seeds20_runs.sh's RUNS (default: %(default)s)")
    ap.add_argument("--chaos", default="runs/chaos", help="scripts/chaos_runs.sh's RUNS (default: %(default)s)")
    ap.add_argument("--write", metavar="FILE", help="write the section into FILE between its markers; default: print")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    for d in (args.seeds20, args.chaos):
        if not os.path.isdir(d):
            ap.error(f"no runs directory {d!r}")
    body = study_section(args.seeds20, args.chaos)
    emit_section(body, args.write, BEGIN, END, "the estimator study")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
