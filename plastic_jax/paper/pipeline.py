"""``scripts/reproduce.py --scale paper`` end to end: train (or not), meta-test, draw, write.

``paper_main`` starts, resumes or skips the runs of the matrix (``status.train_paper``), meta-tests
the finished ones (``metatest.meta_test``), loads them into a ``PaperContext``, draws the figures
(``report.draw_figures``) and replaces the section between the ``reproduce.py paper-<dataset>``
markers of ``--results`` (``report.build_report``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from plastic_jax.config import ConfigError
from plastic_jax.paper.context import load_context
from plastic_jax.paper.figures import FIGURES, PAPER_SELECT
from plastic_jax.paper.markdown import paper_markers, write_section
from plastic_jax.paper.matrix import PAPER_GROUPS, paper_matrix_of
from plastic_jax.paper.metatest import meta_test, read_cache
from plastic_jax.paper.report import build_report, draw_figures
from plastic_jax.paper.status import paper_status, train_paper
from plastic_jax.runs import METRICS


def extra_pool_runs(runs_dir: str, known: set[str]) -> list[str]:
    """Pool runs in ``runs_dir`` outside the matrix (``known``) that have logged something."""
    if not os.path.isdir(runs_dir):
        return []
    return sorted(n for n in os.listdir(runs_dir) if n.startswith("pool-") and n not in known
                  and os.path.exists(os.path.join(runs_dir, n, METRICS)))


def paper_main(args: argparse.Namespace, argv: list[str]) -> int:
    """``--scale paper``: train (unless --report-only), meta-test, draw and write the section.
    Returns the exit status (1 when a run's config.json conflicts with the matrix)."""
    matrix = paper_matrix_of(args)
    statuses = [paper_status(r, args) for r in matrix]
    only = args.only.split(",") if args.only else None
    if only:
        bad = [w for w in only if w not in PAPER_SELECT and w not in FIGURES]
        if bad:
            raise ConfigError(f"--only: unknown {', '.join(bad)}; choose from {', '.join(PAPER_SELECT)}")
    # the groups to train, in the order asked (paper_runs.sh pool fig3 runs pool first)
    order = [g for w in only for g in PAPER_SELECT.get(w, ())] if only else list(PAPER_GROUPS)
    groups = set(order)
    rc = 0
    if not args.report_only:
        chosen = sorted((st for st in statuses if st.run.group in groups), key=lambda st: order.index(st.run.group))
        rc = train_paper(args, chosen)
        if args.dry_run or args.train_only:
            return rc
        statuses = [paper_status(r, args) for r in matrix]
    extra = extra_pool_runs(args.runs, {r.name for r in matrix})
    cache_path = os.path.join(args.figures, "meta_test.json")
    ctx = load_context(statuses, extra, read_cache(cache_path), runs_dir=args.runs, figures=args.figures,
                       results=args.results, argv=argv, quick=args.quick, pool_l1=tuple(args.pool_l1.split()),
                       eval_seeds=args.eval_seeds)
    if not args.report_only and (only is None or "metatest" in only):
        ctx = dataclasses.replace(ctx, cache=meta_test(args, ctx.runs, ctx.best_pool, cache_path))
    figs = [f for f in FIGURES if only is None or f in only or args.report_only
            or any(g in groups for g in PAPER_SELECT.get(f, ()))]
    draw_figures(ctx, figs, window=2 if args.quick else 20)
    begin, end = paper_markers(args.dataset if not args.quick else "quick")
    write_section(args.results, build_report(ctx), begin, end)
    print(f"wrote {args.results}")
    return rc
