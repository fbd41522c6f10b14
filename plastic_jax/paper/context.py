"""The frozen context every section, claim and figure of the paper report reads.

``PaperContext`` holds the loaded runs (``plastic_jax.runs.Run``) by name, each seed's records,
the seeds' outcomes (``diagnose.seed_outcomes``), the per-seed window means, which runs finished,
and what the report needs of the command line (where the figures are, the meta-test cache, the
matrix's statuses). It is built once (``load_context`` from the matrix on disk, or
``context_from_runs`` from runs already in memory: a per-preset layout, synthetic runs in tests)
and never changed; the functions below are the small questions the sections ask of it.

Run names are the matrix's (``f0-bp``, ``bio-fa``, ``pool-fa-elementwise-l1_0.1`` ...); a claim
may also name ``"<pool>"`` (every pool run) and ``"<best pool>"`` (the most accurate of them).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plastic_jax.config import ConfigError
from plastic_jax.paper.diagnose import N_CLASSES, N_INPUTS, seed_outcomes, seed_records
from plastic_jax.paper.markdown import fmt_ci
from plastic_jax.paper.matrix import POOL_L1
from plastic_jax.paper.measures import hidden, window_means
from plastic_jax.paper.status import PaperStatus
from plastic_jax.runs import METRICS, Run, load_run

POOL = "<pool>"
BEST_POOL = "<best pool>"


@dataclass(frozen=True)
class PaperContext:
    """Everything the paper report reads, loaded once.

    runs: name -> Run; records: name -> seed -> that seed's records in episode order; outcomes:
    name -> seed -> (kind, text) (``diagnose.seed_outcomes``); win: name -> the per-seed means of
    ``measures.window_means`` plus ``acc_l`` (the accuracy of the seeds that learned), with
    alignment and orthonormality over the seeds that learned (all seeds when none did);
    finished: name -> whether the run has ended; pool: the pool runs, in order; best_pool: the
    most accurate of them over all seeds; dataset: the runs' dataset. The rest is what the
    report's text needs: the matrix's ``statuses`` (empty outside the matrix), pool runs found
    beside the matrix (``extra_pool``), the meta-test ``cache``, the ``figures`` directory and its
    path relative to the results file (``rel``), the runs directory, the command line's
    arguments (``argv``), ``quick``, the λ values of the sweep (``pool_l1``), the meta-test's
    ``eval_seeds`` and the held-out classes.
    """

    runs: Mapping[str, Run]
    records: Mapping[str, Mapping[int, list[dict]]]
    outcomes: Mapping[str, Mapping[int, tuple[str, str]]]
    win: Mapping[str, Mapping[str, Any]]
    finished: Mapping[str, bool]
    pool: tuple[str, ...]
    best_pool: str | None
    dataset: str
    statuses: tuple[PaperStatus, ...] = ()
    extra_pool: tuple[str, ...] = ()
    cache: Mapping[str, Any] = field(default_factory=dict)
    figures: str = ""
    rel: str = ""
    runs_dir: str = ""
    argv: tuple[str, ...] = ()
    quick: bool = False
    pool_l1: tuple[str, ...] = POOL_L1
    eval_seeds: int = 5
    test_classes: tuple[int, ...] = ()

    @property
    def by_name(self) -> dict[str, PaperStatus]:
        """The matrix's statuses by run name."""
        return {st.run.name: st for st in self.statuses}

    def resolve(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` with ``"<pool>"`` and ``"<best pool>"`` replaced by the runs they stand for."""
        out: list[str] = []
        for n in names:
            if n == POOL:
                out += self.pool
            elif n == BEST_POOL:
                out += [self.best_pool] if self.best_pool else []
            else:
                out.append(n)
        return tuple(out)

    def has(self, names: Iterable[str]) -> bool:
        """Whether every run of ``names`` has logged an episode (``"<pool>"``: at least one pool run)."""
        return all((bool(self.pool) if n in (POOL, BEST_POOL) else n in self.runs) for n in names)


def _win_of(run: Run, outcomes: Mapping[int, tuple[str, str]]) -> dict[str, Any]:
    """``window_means`` of ``run``, with ``acc_l`` and alignment/orthonormality over the seeds that
    learned (all seeds when none did)."""
    w: dict[str, Any] = window_means(run)
    idx = [i for i, s in enumerate(run.seeds) if outcomes[s][0] == "learned"]
    idx = idx or list(range(len(run.seeds)))
    w["acc_l"] = w["acc"][idx]
    for k in ("align", "orth"):
        if w[k] is not None:
            w[k] = w[k][idx]
    return w




def context_from_runs(runs: Mapping[str, Run], *, records: Mapping[str, Mapping[int, list[dict]]] | None = None,
                      finished: Mapping[str, bool] | None = None, dataset: str | None = None,
                      **report: Any) -> PaperContext:
    """A context of runs already loaded (by name, pool runs named ``pool-...``).

    ``records``: each run's records by seed (default: read from its directory, ``diagnose.seed_records``);
    ``finished``: whether each has ended (default: ``Run.finished``, its summary.json without ``stopped``);
    ``dataset``: default the first run's; ``report``: the other fields of ``PaperContext``."""
    recs = {n: (records[n] if records is not None and n in records else seed_records(r)) for n, r in runs.items()}
    outcomes = {n: seed_outcomes(r, records=recs[n]) for n, r in runs.items()}
    win = {n: _win_of(r, outcomes[n]) for n, r in runs.items()}
    pool = tuple(n for n in runs if n.startswith("pool-"))
    best = max(pool, key=lambda n: float(win[n]["acc"].mean())) if pool else None
    done = {n: (finished[n] if finished is not None and n in finished else r.finished)
            for n, r in runs.items()}
    if dataset is None:
        dataset = str(next(iter(runs.values())).config.get("dataset", "digits")) if runs else "digits"
    return PaperContext(runs=dict(runs), records=recs, outcomes=outcomes, win=win, finished=done, pool=pool,
                        best_pool=best, dataset=dataset, **report)


def load_context(statuses: list[PaperStatus], extra_pool: list[str], cache: Mapping[str, Any], *, runs_dir: str,
                 figures: str, results: str, argv: list[str], quick: bool = False,
                 pool_l1: tuple[str, ...] = POOL_L1, eval_seeds: int = 5) -> PaperContext:
    """The context of the matrix's runs in ``runs_dir`` (``statuses``) and the pool runs beside
    it (``extra_pool``); a run whose metrics.jsonl is still empty is left out (named on stderr)."""
    from plastic_jax.config import class_split

    by_name = {st.run.name: st for st in statuses}
    runs: dict[str, Run] = {}
    for st in statuses:
        if os.path.exists(os.path.join(st.out, METRICS)):
            try:
                runs[st.run.name] = load_run(st.out)
            except ConfigError as e:  # an empty metrics.jsonl: the run has just started
                print(f"{st.run.name}: {e}", file=sys.stderr)
    extra = tuple(n for n in extra_pool if n not in by_name)
    for n in extra:
        runs[n] = load_run(os.path.join(runs_dir, n))
    for n in runs:  # the legend names the reading, λ and variant
        if n.startswith("pool-"):
            runs[n] = dataclasses.replace(runs[n], label=n.replace("pool-fa-", "pool+fa "))
    finished = {n: by_name[n].state == "done" for n in runs if n in by_name}
    c0 = statuses[0].cfg
    return context_from_runs(
        runs, finished={**{n: r.finished for n, r in runs.items() if n not in by_name}, **finished},
        dataset=c0.dataset, statuses=tuple(statuses), extra_pool=extra, cache=dict(cache), figures=figures,
        rel=os.path.relpath(figures, os.path.dirname(os.path.abspath(results))), runs_dir=runs_dir,
        argv=tuple(argv), quick=quick, pool_l1=tuple(pool_l1), eval_seeds=eval_seeds,
        test_classes=tuple(class_split(c0, N_CLASSES.get(c0.dataset, 0))[1] or ()))


# --------------------------------------------------------------------------- questions the sections ask


def learned_seeds(ctx: PaperContext, name: str) -> list[int]:
    """The seeds of run ``name`` that learned."""
    return [s for s, (k, _) in ctx.outcomes[name].items() if k == "learned"]


def n_degenerate(ctx: PaperContext, name: str) -> int:
    """How many seeds of run ``name`` diverged or collapsed."""
    return sum(k != "learned" for k, _ in ctx.outcomes[name].values())


def outcome_counts(ctx: PaperContext, name: str) -> str:
    """``learned / collapsed / diverged`` seed counts of run ``name`` (``–`` when it has not run)."""
    if name not in ctx.outcomes:
        return "–"
    kinds = [k for k, _ in ctx.outcomes[name].values()]
    return f"{kinds.count('learned')} / {kinds.count('collapsed')} / {kinds.count('diverged')}"


def episodes_note(ctx: PaperContext, name: str) -> str:
    """`` (in progress: n of E episodes)`` for a run that has not finished, else ``""``."""
    r = ctx.runs[name]
    E = int(r.config.get("episodes", 0))
    n = len(r.episodes)
    if ctx.finished.get(name):
        return ""
    st = ctx.by_name.get(name)
    how = "interrupted" if st is not None and st.state == "partial" else "in progress"
    return f" ({how}: {n} of {E} episodes)"


def acc_text(ctx: PaperContext, name: str) -> str:
    """Run ``name``'s last-100 accuracy, ``mean [98% CI]`` in %, and whether it is unfinished."""
    if name not in ctx.runs:
        return "not run yet"
    return fmt_ci(ctx.win[name]["acc"]) + episodes_note(ctx, name)


def mean_pct(ctx: PaperContext, name: str) -> str:
    """Run ``name``'s mean last-100 accuracy in %, over the seeds with a finite one: a seed that
    diverged throughout the window has none, and the text then says over how many it is."""
    a = np.asarray(ctx.win[name]["acc"], float)
    fin = np.isfinite(a)
    if fin.all():
        return f"{100 * a.mean():.1f}%"
    if not fin.any():
        return "no finite accuracy"
    return f"{100 * a[fin].mean():.1f}% (over the {int(fin.sum())} of {len(a)} seeds with a finite accuracy)"


def learned_acc(ctx: PaperContext, name: str) -> str:
    """Mean last-100 accuracy of the seeds of ``name`` that learned, when some did not."""
    out = ctx.outcomes[name]
    idx = [i for i, s in enumerate(ctx.runs[name].seeds) if out[s][0] == "learned"]
    if len(idx) == len(out) or not idx:
        return ""
    return f" ({len(idx)} of {len(out)} seeds learned; they average {100 * ctx.win[name]['acc'][idx].mean():.1f}%)"


def hidden_alpha(ctx: PaperContext, name: str) -> str:
    """The mean hidden-layer alignment angle of run ``name`` and its deepest hidden layer's."""
    al = ctx.win[name]["align"] if name in ctx.win else None
    if al is None:
        return "–"
    return f"{hidden(al).mean():.1f}° (deepest hidden layer {hidden(al)[:, -1].mean():.1f}°)"


def unless_degenerate(ctx: PaperContext, verdict: str, name: str) -> str:
    """``verdict``, turned from "reproduced" into "partly (k of n seeds degenerate)" when seeds
    of run ``name`` diverged or collapsed."""
    k = n_degenerate(ctx, name)
    if verdict != "reproduced" or not k:
        return verdict
    return f"partly ({k} of {len(ctx.win[name]['acc'])} seeds degenerate)"


def reaches(ctx: PaperContext, name: str, target: str = "f0-bp", tol: float = 0.05) -> tuple[str, str]:
    """Whether ``name``'s accuracy reaches ``target``'s (within ``tol``): a verdict and why.

    Over the seeds that learned; a run some of whose seeds are degenerate is at best "partly"."""
    w, b = ctx.win[name], ctx.win[target]
    n_bad = len(w["acc"]) - len(w["acc_l"]) if len(w["acc_l"]) < len(w["acc"]) else 0
    if not any(k == "learned" for k, _ in ctx.outcomes[name].values()):
        n_bad = len(w["acc"])
    gap = 100 * (w["acc_l"].mean() - b["acc"].mean())
    ok = gap >= -100 * tol
    fin = np.isfinite(w["acc"])  # a seed without a finite accuracy in the window diverged throughout
    over_all = (f"{100 * w['acc'].mean():.1f}% over all {len(w['acc'])} seeds" if fin.all() else
                f"{100 * w['acc'][fin].mean():.1f}% over the {int(fin.sum())} of {len(w['acc'])} seeds with a "
                f"finite accuracy" if fin.any() else f"no finite accuracy in any of {len(w['acc'])} seeds")
    why = (f"{name}: {over_all}"
           + (f", {100 * w['acc_l'].mean():.1f}% over the {len(w['acc_l'])} that learned" if n_bad else "")
           + f", against {target}'s {100 * b['acc'].mean():.1f}% ({gap:+.1f} points; reaching means within "
           f"{100 * tol:.0f} points)")
    verdict = ("not reproduced" if not ok or n_bad == len(w["acc"]) else
               f"partly ({n_bad} of {len(w['acc'])} seeds degenerate)" if n_bad else "reproduced")
    return verdict, why


def missing(ctx: PaperContext, names: Iterable[str]) -> list[str]:
    """The runs of ``names`` that have not logged an episode."""
    return [n for n in names if n not in ctx.runs]


def ours_header(ctx: PaperContext) -> str:
    """The header of a (quantity, the paper's, ours) table."""
    d = ctx.dataset
    return f"| quantity | paper (EMNIST) | ours ({d}{', offline' if d in ('glyphs', 'digits') else ''}) |"


def compact(ctx: PaperContext, rows: list[tuple[str, str, str]]) -> list[str]:
    """A table of (quantity, the paper's, ours) rows."""
    return [ours_header(ctx), "| --- | --- | --- |", *(f"| {a} | {b} | {c} |" for a, b, c in rows), ""]


def sizes(ctx: PaperContext, name: str) -> str:
    """The network of run ``name`` of the matrix, e.g. 784-170-130-100-70-47."""
    st = ctx.by_name.get(name)
    if st is not None:
        dataset, hid = st.cfg.dataset, tuple(st.cfg.hidden)
    else:
        c = ctx.runs[name].config
        dataset, hid = c.get("dataset", ctx.dataset), tuple(c.get("hidden", ()))
    return "-".join(map(str, (N_INPUTS.get(dataset, "?"), *hid, N_CLASSES.get(dataset, "?"))))


def figure_links(ctx: PaperContext, fig: str, panels: Iterable[str]) -> str:
    """Markdown images of the panels of figure ``fig`` drawn in ``ctx.figures`` (or a note)."""
    have = [p for p in panels if os.path.exists(os.path.join(ctx.figures, fig, f"{p}.png"))]
    if not have:
        return f"(figure {fig}: not drawn yet)"
    return " ".join(f"![{fig} {p}]({ctx.rel}/{fig}/{p}.png)" for p in have)


def hidden_mean(ctx: PaperContext, name: str) -> float:
    """Mean alignment angle of run ``name`` over its hidden layers and the seeds that learned."""
    return float(hidden(ctx.win[name]["align"]).mean())
