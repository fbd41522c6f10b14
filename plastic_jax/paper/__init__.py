"""The report of the paper reproduction (Shervani-Tabar & Rosenbaum 2023), as a library.

scripts/reproduce.py and scripts/feedback_pathways.py are thin entry points over this package.

Layout:

- ``matrix``: the run matrix (``PaperRun``, ``paper_matrix``, ``paper_argv``, ``config_of``);
- ``status``: where each run stands on disk, and starting/resuming it (``paper_status``, ``train_paper``);
- ``diagnose``: per-seed diagnoses (diverged; collapsed to a uniform output, after a meta-gradient
  spike where the records say so); ``measures``: per-run numbers (windows, survivors, CIs);
- ``context``: ``PaperContext``, the frozen context of loaded runs every section and claim reads;
- ``claims``: ``Claim`` (statement, the paper's value, runs needed, ``decide``), ``Verdict``, ``Figure``;
- ``figures``: one module per figure (fig3, fig4, figS2, fig5, fig7, fig8, table1, metatest),
  each with its ``FIGURE``, ``CLAIMS`` and ``section``; ``figures.CLAIMS`` is the registry;
- ``report``: the section assembled (``build_report``) and the figures drawn (``draw_figures``);
- ``metatest``: the meta-test on held-out classes and its cache; ``pipeline``: ``--scale paper``
  end to end; ``digits``: the older digits mode;
- ``presets``: the claims decided per meta-optimiser preset from the 20-seed runs;
- ``feedback``: the feedback-pathways report; ``markdown``: sections and number formats;
  ``synthetic``: synthetic records and run directories for tests.

To add a claim: a ``Claim`` (and its ``decide``) in the ``CLAIMS`` of the figure module it belongs
to, and its verdict line in that module's ``section``. To add a figure: a new module in
``figures/`` (``FIGURE``, ``CLAIMS``, ``section``) and its entry in ``figures.MODULES``.
"""

from __future__ import annotations

from plastic_jax.paper.claims import Claim, Figure, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import PaperContext, context_from_runs, load_context
from plastic_jax.paper.diagnose import (
    COLLAPSE_TOL,
    DIVERGED_SKIPS,
    N_CLASSES,
    N_INPUTS,
    diagnose_seed,
    seed_diagnoses,
    seed_outcomes,
    seed_records,
    skipped,
)
from plastic_jax.paper.figures import CLAIMS, FIGURES, PAPER_SELECT
from plastic_jax.paper.markdown import BEGIN, END, fmt_ci, fmt_rate, fmt_theta, paper_markers, write_section
from plastic_jax.paper.matrix import (
    META_TEST_RUNS,
    PAPER_GROUPS,
    POOL_L1,
    POOL_READINGS,
    TABLE1,
    PaperRun,
    config_differences,
    config_of,
    paper_argv,
    paper_matrix,
    paper_matrix_of,
    pool_variant_flags,
)
from plastic_jax.paper.measures import (
    SURVIVE_STEPS,
    ci_separated,
    last_window,
    survive_threshold,
    survivors,
    window_means,
)
from plastic_jax.paper.report import build_report, draw_figures
from plastic_jax.paper.status import PaperStatus, lock_holder, paper_status, train_command, train_paper, wall_seconds

__all__ = [
    "BEGIN", "CLAIMS", "COLLAPSE_TOL", "DIVERGED_SKIPS", "END", "FIGURES", "META_TEST_RUNS", "N_CLASSES", "N_INPUTS",
    "PAPER_GROUPS", "PAPER_SELECT", "POOL_L1", "POOL_READINGS", "SURVIVE_STEPS", "TABLE1", "Claim", "Figure",
    "PaperContext", "PaperRun", "PaperStatus", "Verdict", "build_report", "ci_separated", "config_differences",
    "config_of", "context_from_runs", "diagnose_seed", "draw_figures", "evaluate", "fmt_ci", "fmt_rate", "fmt_theta",
    "last_window", "load_context", "lock_holder", "paper_argv", "paper_markers", "paper_matrix", "paper_matrix_of",
    "paper_status", "pool_variant_flags", "seed_diagnoses", "seed_outcomes", "seed_records", "skipped",
    "survive_threshold", "survivors", "train_command", "train_paper", "verdict_line", "wall_seconds",
    "window_means", "write_section",
]
