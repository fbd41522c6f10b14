"""Reproduce the paper's experiments (Figs. 3, 4, S2, 5, 7, 8, Table 1, meta-test) and write docs/RESULTS.md.

    .venv/bin/python scripts/reproduce.py --scale paper                # the paper's scale, glyphs (hours)
    .venv/bin/python scripts/reproduce.py --scale paper --report-only  # section + figures from the runs there
    .venv/bin/python scripts/reproduce.py --scale paper --only fig3,metatest
    .venv/bin/python scripts/reproduce.py --scale paper --train-only --only pool   # = bash scripts/paper_runs.sh pool
    .venv/bin/python scripts/reproduce.py                              # the older small digits mode
    .venv/bin/python scripts/reproduce.py --quick --results /tmp/R.md --figures /tmp/f --runs /tmp/r
    .venv/bin/python scripts/reproduce.py --scale paper --quick --results /tmp/R.md --figures /tmp/f --runs /tmp/r

**--scale paper** runs the matrix of ``paper_matrix`` (scripts/paper_runs.sh is a thin wrapper over
``--scale paper --train-only``): the offline 47-class ``glyphs`` data (``--dataset emnist`` where it
is prepared), 10 classes held out, 784-170-130-100-70-47 (Table 1: 784-130-70-47), M = 5, K = 50,
Q = 10, Adam 1e-3, θ0 = 1e-3, 5 seeds, 600 episodes, checkpoints every 25 episodes. Each run is a
``plastic-jax meta-train`` subprocess with exactly paper_runs.sh's flags, so a run already in
``--runs`` (same config.json up to the settings a resume may change) is skipped when finished and
resumed from its checkpoint when not; a run whose config.json differs is left alone and named.
Then the finished runs are meta-tested on the held-out classes (cached in
``FIGURES/meta_test.json``), the figures are drawn (``--figures``, default docs/figures/paper) and
the section between the ``reproduce.py paper-<dataset>`` markers of ``--results`` is replaced.
``--report-only`` trains and evaluates nothing: it reports the runs there are and names the
missing ones with the command that makes them.

**The digits mode** (default ``--scale digits``, older): each experiment one in-process
``meta_train`` run on scikit-learn's digits; its section is between the plain ``reproduce.py``
markers. ``--quick``: CI-sized, a check of the pipeline, not of the science.

This script parses the command line; the work is ``plastic_jax.paper``'s (``pipeline.paper_main``,
``digits.digits_main``), where the matrix, the claims and the figures are.
"""

from __future__ import annotations

import argparse
import sys

from plastic_jax.config import ConfigError
from plastic_jax.paper import (
    BEGIN,
    END,
    FIGURES,
    N_CLASSES,
    PAPER_GROUPS,
    POOL_L1,
    POOL_READINGS,
    config_differences,
    config_of,
    paper_argv,
    paper_markers,
    paper_matrix,
    paper_matrix_of,
    paper_status,
    pool_variant_flags,
    seed_outcomes,
    survivors,
    train_command,
    write_section,
)
from plastic_jax.paper.digits import FIGS, configs, digits_main
from plastic_jax.paper.pipeline import paper_main
from plastic_jax.runs import load_run

#: what the tests and docs/RESULTS.md use of this script (the rest is plastic_jax.paper's)
__all__ = ["BEGIN", "END", "FIGS", "N_CLASSES", "ConfigError", "config_differences", "config_of", "configs",
           "load_run", "main", "paper_argv", "paper_markers", "paper_matrix", "paper_matrix_of", "paper_status",
           "parse_args", "pool_variant_flags", "seed_outcomes", "survivors", "train_command", "write_section"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the defaults that depend on --scale, --dataset and --quick filled in."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=("digits", "paper"), default="digits",
                   help="paper: the paper's sizes and the run matrix of scripts/paper_runs.sh; digits: the older "
                        "small mode (default: %(default)s)")
    p.add_argument("--dataset", default=None, help="digits mode: digits (default) or emnist; paper mode: glyphs "
                   "(default, offline) or emnist (where prepared)")
    p.add_argument("--data-dir", default=None, help="where the dataset lives (emnist)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per run (default: 600 at the paper's scale, 300 on digits, 3 with --quick)")
    p.add_argument("--K", type=int, default=50, help="digits mode: training examples per class (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per run, vmapped (default: 5; 2 with --quick)")
    p.add_argument("--l1", type=float, default=1e-3,
                   help="digits mode: λ of the L1 penalty for pool (default: %(default)s)")
    p.add_argument("--analysis-every", type=int, default=10,
                   help="digits mode: alignment/orthonormality every N episodes")
    p.add_argument("--only", default=None,
                   help="comma-separated subset: digits mode " + ",".join(FIGS) + "; paper mode figures "
                        + ",".join(FIGURES) + ", paper_runs.sh groups " + ",".join(PAPER_GROUPS) + ", metatest")
    p.add_argument("--reuse", action="store_true",
                   help="digits mode: keep runs already finished in --runs (same config); paper mode always reuses")
    p.add_argument("--quick", action="store_true",
                   help="tiny CI mode: few episodes, 2 seeds, tiny networks and tasks (checks the pipeline)")
    g = p.add_argument_group("paper mode")
    g.add_argument("--report-only", action="store_true",
                   help="train and evaluate nothing: write the section and figures from the runs in --runs")
    g.add_argument("--train-only", action="store_true",
                   help="only start, resume or skip the runs (scripts/paper_runs.sh); no meta-test, figures, report")
    g.add_argument("--dry-run", action="store_true", help="print what would be started or resumed, run nothing")
    g.add_argument("--pool-l1", default=" ".join(POOL_L1),
                   help="the λ values of the pool sweep, space-separated (default: %(default)s)")
    g.add_argument("--readings", default=" ".join(POOL_READINGS),
                   help="readings of F5-F8 swept for pool (default: %(default)s)")
    g.add_argument("--pool-variants", default="base",
                   help="pool variants, space-separated: base, lr_X (--meta-lr X), clip_X (--meta-clip X), or "
                        "+-joined, e.g. 'base lr_1e-4 clip_10' (default: %(default)s)")
    g.add_argument("--eval-tasks", type=int, default=50, help="meta-test tasks per seed (default: %(default)s)")
    g.add_argument("--eval-seeds", type=int, default=5,
                   help="meta-training seeds meta-tested per run, 0..N-1 (default: %(default)s)")
    p.add_argument("--results", default="docs/RESULTS.md", help="the markdown file to update")
    p.add_argument("--figures", default=None, help="where figures go (default: docs/figures/paper for the paper "
                   "scale with glyphs, docs/figures/paper-<dataset> otherwise; docs/figures on digits)")
    p.add_argument("--runs", default=None, help="where run directories go (default: runs/paper at the paper's "
                   "scale with glyphs, runs/paper-<dataset> otherwise; runs/reproduce on digits)")
    args = p.parse_args(argv)
    paper = args.scale == "paper"
    if args.dataset is None:
        args.dataset = "glyphs" if paper else "digits"
    suffix = "" if args.dataset == "glyphs" else f"-{args.dataset}"
    if args.episodes is None:
        args.episodes = 3 if args.quick and paper else 600 if paper else 300
    if args.seeds is None:
        args.seeds = 2 if args.quick and paper else 5
    if args.figures is None:
        args.figures = f"docs/figures/paper{suffix}" if paper else "docs/figures"
    if args.runs is None:
        args.runs = f"runs/paper{suffix}" if paper else "runs/reproduce"
    if not paper and (args.report_only or args.train_only or args.dry_run):
        p.error("--report-only, --train-only and --dry-run need --scale paper")
    if args.report_only and args.train_only:
        p.error("--report-only and --train-only exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    """``--scale paper`` (``plastic_jax.paper.pipeline.paper_main``) or the digits mode
    (``plastic_jax.paper.digits.digits_main``); the exit status (2: a configuration error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.scale == "digits":
        return digits_main(args, argv)
    try:
        return paper_main(args, argv)
    except ConfigError as e:
        print(f"reproduce.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
