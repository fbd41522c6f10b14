"""The paper's claims decided per meta-optimiser preset, from the 20-seed runs.

scripts/seeds20_runs.sh makes every run at both presets (``--preset robust``, the default, and
``--preset paper``; config.json records ``preset``) under ``RUNS/<preset>/<name>``: f0-bp, f0-fa,
bio-fa, ehebb-fa, oja-fa (20 seeds each), pool-fa-elementwise-sweep and pool-fa-matrix-sweep (one
program each: λ ∈ {0.1, 1, 10, 100} × 10 seeds) and pool-fa-elementwise-l1_0.1-s10 (10 more seeds
of element-wise λ = 0.1, seeds 10-19).

A **layout** maps the run names the claims use (``f0-bp``, ``pool-fa-elementwise-l1_0.1`` ...) to
their sources: a run directory, or one (λ, Adam rate) member of a sweep in it; several sources of
one name are one run of all their seeds (the sweep's λ = 0.1 member and the s10 run: 20 seeds).
``seeds20_layout`` is scripts/seeds20_runs.sh's; ``preset_context`` loads a layout with the
existing reader (``plastic_jax.runs``) into a ``PaperContext``; ``claims_table`` decides
every claim of ``figures.CLAIMS`` on each preset's context: one verdict column per preset, each
with the degenerate-seed rate (98% Clopper–Pearson CI, ``stats.proportion_ci``) of the runs it
rests on; ``runs_table`` gives each run's rate per preset.

    .venv/bin/python -m plastic_jax.paper.presets [RUNS]    # default runs/seeds20: the markdown
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from plastic_jax.config import ConfigError
from plastic_jax.paper.claims import Claim, evaluate, verdict_text
from plastic_jax.paper.context import BEST_POOL, POOL, PaperContext, context_from_runs, n_degenerate
from plastic_jax.paper.diagnose import seed_records
from plastic_jax.paper.figures import CLAIMS
from plastic_jax.paper.markdown import fmt_ci, fmt_rate, table
from plastic_jax.runs import CONFIG, Run, load_runs, read_config_dict

#: the presets of scripts/seeds20_runs.sh, in its order
PRESETS = ("robust", "paper")
#: the plain runs of each preset
SEEDS20_RUNS = ("f0-bp", "f0-fa", "bio-fa", "ehebb-fa", "oja-fa")
#: the one-program λ sweeps of each preset (name -> the F5-F8 reading)
SEEDS20_SWEEPS = {"pool-fa-elementwise-sweep": "elementwise", "pool-fa-matrix-sweep": "matrix"}
#: more seeds of one pool setting: directory -> the run name they add to
SEEDS20_MORE = {"pool-fa-elementwise-l1_0.1-s10": "pool-fa-elementwise-l1_0.1"}


@dataclass(frozen=True)
class Source:
    """A run directory (``path``), or the member (``l1``, ``meta_lr``) of a sweep in it (None: the
    run's only one)."""

    path: str
    l1: float | None = None
    meta_lr: float | None = None


#: run name -> its sources (their seeds together make the run)
Layout = Mapping[str, Sequence[Source]]


def _values(v: object) -> list:
    return list(v) if isinstance(v, list) else [v]


def seeds20_layout(root: str, preset: str) -> dict[str, tuple[Source, ...]]:
    """The layout of scripts/seeds20_runs.sh's runs of ``preset`` under ``root`` (those that exist):
    the plain runs by name, each λ (and Adam rate, when a sweep has several) of a sweep as
    ``pool-fa-<reading>-l1_<λ>[-lr_<rate>]``, and the extra seeds added to their setting."""
    base = os.path.join(root, preset)
    out: dict[str, tuple[Source, ...]] = {}
    for n in SEEDS20_RUNS:
        if os.path.exists(os.path.join(base, n, CONFIG)):
            out[n] = (Source(os.path.join(base, n)),)
    for sweep, reading in SEEDS20_SWEEPS.items():
        path = os.path.join(base, sweep)
        if not os.path.exists(os.path.join(path, CONFIG)):
            continue
        cfg = read_config_dict(path)
        lrs = _values(cfg.get("meta_lr"))
        for lam in _values(cfg.get("l1")):
            for lr in lrs:
                name = f"pool-fa-{reading}-l1_{lam:g}" + (f"-lr_{lr:g}" if len(lrs) > 1 else "")
                out[name] = (Source(path, float(lam), float(lr)),)
    for more, name in SEEDS20_MORE.items():
        path = os.path.join(base, more)
        if os.path.exists(os.path.join(path, CONFIG)):
            out[name] = (*out.get(name, ()), Source(path))
    return out


def _close(a: object, b: float | None) -> bool:
    return b is None or (isinstance(a, (int, float)) and math.isclose(float(a), b, rel_tol=1e-9, abs_tol=0.0))


def load_source(src: Source) -> tuple[Run, dict[int, list[dict]], bool]:
    """The run of ``src`` (``runs.load_runs``; a sweep's member by its λ and rate), its seeds'
    records and whether its directory's program has finished."""
    runs = load_runs(src.path)
    if src.l1 is None and src.meta_lr is None and len(runs) == 1:
        run = runs[0]
    else:
        match = [r for r in runs if _close(r.config.get("l1"), src.l1) and _close(r.config.get("meta_lr"), src.meta_lr)]
        if len(match) != 1:
            raise ConfigError(f"{src.path!r}: {len(match)} members with l1 = {src.l1}, meta_lr = {src.meta_lr} "
                              f"(it has {len(runs)})")
        run = match[0]
    return run, seed_records(run), run.finished


def merge_runs(parts: Sequence[Run]) -> Run:
    """One run of the seeds of ``parts`` (distinct seeds, the same Θ labels and layers), over the
    episodes (and analysis episodes) all of them reached, and their records; the first part's path,
    label, config and summary."""
    if len(parts) == 1:
        return parts[0]
    seeds = [s for p in parts for s in p.seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError("runs to merge share seeds: " + ", ".join(p.path for p in parts))
    eps = sorted(set.intersection(*(set(int(e) for e in p.episodes) for p in parts)))

    def at(p: Run, x: np.ndarray) -> np.ndarray:
        """The columns of ``x`` (seeds × the episodes of ``p``) at the common episodes."""
        return x[:, np.isin(p.episodes, eps)]

    an = sorted(set.intersection(*(set(int(e) for e in p.analysis_episodes) for p in parts)))
    labels = list(dict.fromkeys(t for p in parts for t in p.theta))
    theta = {t: np.vstack([at(p, p.theta[t]) if t in p.theta else
                           np.full((len(p.seeds), len(eps)), np.nan) for p in parts]) for t in labels}
    merged = {"seeds": seeds, "episodes": np.array(eps), "theta": theta,
              "accuracy": np.vstack([at(p, p.accuracy) for p in parts]),
              "meta_loss": np.vstack([at(p, p.meta_loss) for p in parts]),
              "analysis_episodes": np.array(an, int), "records": tuple(r for p in parts for r in p.records)}
    for k in ("alignment", "orthonormality"):
        arrays = [getattr(p, k) for p in parts]
        merged[k] = None if any(a is None for a in arrays) or not an else np.concatenate(
            [a[:, np.isin(p.analysis_episodes, an)] for a, p in zip(arrays, parts)])
    keys = set.intersection(*(set(p.telemetry) for p in parts))
    merged["telemetry"] = {k: np.vstack([at(p, p.telemetry[k]) for p in parts]) for k in keys}
    return dataclasses.replace(parts[0], **merged)


def preset_context(layout: Layout, **report: object) -> PaperContext:
    """A ``PaperContext`` of the runs of ``layout`` that exist and have logged an episode (the
    others are left out, named on stderr); ``report``: other fields of ``PaperContext``."""
    runs: dict[str, Run] = {}
    records: dict[str, dict[int, list[dict]]] = {}
    finished: dict[str, bool] = {}
    for name, sources in layout.items():
        try:
            loaded = [load_source(s) for s in sources]
        except ConfigError as e:  # no metrics.jsonl yet, or an empty one
            print(f"{name}: {e}", file=sys.stderr)
            continue
        runs[name] = merge_runs([r for r, _, _ in loaded])
        records[name] = {s: rs for _, recs, _ in loaded for s, rs in recs.items()}
        finished[name] = all(f for _, _, f in loaded)
    return context_from_runs(runs, records=records, finished=finished, **report)


def rests_on(ctx: PaperContext, claim: Claim) -> list[str]:
    """The runs a claim reads that are in ``ctx``, pool runs as ``"<pool>"`` (and the best by name)."""
    out: list[str] = []
    for n in (*claim.needs, *claim.uses):
        if n == BEST_POOL:
            n = ctx.best_pool or ""
        if (n == POOL and ctx.pool or n in ctx.runs) and n not in out:
            out.append(n)
    return out


def degenerate(ctx: PaperContext, names: Sequence[str]) -> tuple[int, int]:
    """Seeds that diverged or collapsed, and all seeds, of the runs ``names``."""
    return (sum(n_degenerate(ctx, n) for n in names), sum(len(ctx.outcomes[n]) for n in names))


def rate_text(ctx: PaperContext, name: str) -> str:
    """``name k of n [lo%, hi%]`` (``"<pool>"``: over every pool run)."""
    names = list(ctx.pool) if name == POOL else [name]
    label = f"pool ({len(names)} settings)" if name == POOL else name
    return f"{label} {fmt_rate(*degenerate(ctx, names))}"


def claims_table(contexts: Mapping[str, PaperContext], claims: Sequence[Claim] = CLAIMS) -> list[str]:
    """The claims with one verdict column per preset (``contexts``: preset -> its context), each
    verdict with the degenerate seeds of the runs it rests on and the 98% CI of their rate; then
    each verdict's evidence."""
    rows, evidence = [], []
    for claim in claims:
        cells = []
        for preset, ctx in contexts.items():
            v = evaluate(claim, ctx)
            if v is None:
                miss = [{POOL: "pool runs", BEST_POOL: "pool runs"}.get(n, n) for n in claim.needs if not ctx.has([n])]
                cells.append("not decided: " + (f"not run ({', '.join(miss)})" if miss else "not on these runs"))
                continue
            cells.append(f"{verdict_text(ctx, v)}; degenerate seeds: "
                         + "; ".join(rate_text(ctx, n) for n in rests_on(ctx, claim)))
            evidence.append(f"- {claim.statement}, {preset}: {v.why}")
        rows.append([claim.statement, claim.paper, *cells])
    return [*table(["claim", "the paper", *(f"{p} preset" for p in contexts)], rows), "",
            "Evidence per preset:", "", *evidence, ""]


def runs_table(contexts: Mapping[str, PaperContext]) -> list[str]:
    """Every run per preset: episodes, last-100 accuracy [98% bootstrap CI], degenerate seeds
    (collapsed, diverged) [98% Clopper–Pearson CI of the rate]."""
    names = list(dict.fromkeys(n for ctx in contexts.values() for n in ctx.runs))
    rows = []
    for n in names:
        cells = []
        for ctx in contexts.values():
            if n not in ctx.runs:
                cells.append("–")
                continue
            r = ctx.runs[n]
            kinds = [k for k, _ in ctx.outcomes[n].values()]
            what = ", ".join(f"{kinds.count(k)} {k}" for k in ("collapsed", "diverged") if kinds.count(k))
            acc = np.asarray(ctx.win[n]["acc"], float)
            lost = int(np.sum(~np.isfinite(acc)))  # no finite accuracy in the window: diverged throughout
            acc = acc[np.isfinite(acc)]
            shown = "–" if not len(acc) else fmt_ci(acc) if len(acc) > 1 else f"{100 * float(acc[0]):.1f}"
            cells.append(f"{len(r.episodes)} of {r.config.get('episodes')}{'' if ctx.finished.get(n) else ' (running)'}"
                         f"; {shown}%" + (f" (over {len(acc)} seeds: {lost} with no finite accuracy)" if lost else "")
                         + "; "
                         f"{fmt_rate(*degenerate(ctx, [n]))}" + (f" ({what})" if what else ""))
        rows.append([n, *cells])
    return table(["run", *(f"{p}: episodes; last-100 accuracy, % [98% CI]; degenerate seeds [98% CI of the rate]"
                           for p in contexts)], rows) + [""]


def preset_section(root: str, presets: Sequence[str] = PRESETS) -> str:
    """The markdown of both tables for scripts/seeds20_runs.sh's runs under ``root``."""
    contexts = {p: preset_context(seeds20_layout(root, p)) for p in presets}
    L = ["### The claims at each preset", "",
         f"From the runs in `{root}/<preset>/` (scripts/seeds20_runs.sh). A degenerate seed diverged or collapsed "
         "to a uniform output (`plastic_jax.paper.diagnose`); its rate's interval is the exact 98% "
         "(Clopper–Pearson) one.", "", *runs_table(contexts), *claims_table(contexts)]
    return "\n".join(L)


#: the markers of the section ``--write`` replaces in a results file (kept in place: the rest is untouched)
BEGIN = "<!-- presets:begin (generated by python -m plastic_jax.paper.presets; edits here are overwritten) -->"
END = "<!-- presets:end -->"


def main(argv: list[str] | None = None) -> int:
    """``python -m plastic_jax.paper.presets [RUNS] [--write FILE]``: print the per-preset section for
    ``RUNS`` (default runs/seeds20), or write it between ``BEGIN`` and ``END`` in FILE."""
    import argparse

    from plastic_jax.paper.markdown import emit_section

    ap = argparse.ArgumentParser(prog="python -m plastic_jax.paper.presets", allow_abbrev=False,
                                 description="the paper's claims decided at each meta-optimiser preset")
    ap.add_argument("runs", nargs="?", default="runs/seeds20",
                    help="scripts/seeds20_runs.sh's RUNS (default: %(default)s)")
    ap.add_argument("--write", metavar="FILE", help="write the section into FILE (e.g. docs/RESULTS.md) between "
                    "its markers, added at the end when absent; default: print it")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isdir(args.runs):
        ap.error(f"no runs directory {args.runs!r}")
    body = preset_section(args.runs)
    emit_section(body, args.write, BEGIN, END, f"the per-preset section of {args.runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
