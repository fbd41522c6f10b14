"""Feedback pathways (docs/METHOD.md §9): meta-train the rules × feedback modes and report them in RESULTS.md.

    .venv/bin/python scripts/feedback_pathways.py --train-only                 # every run, one after another
    .venv/bin/python scripts/feedback_pathways.py --train-only --rules f0 --modes kp,plastic
    .venv/bin/python scripts/feedback_pathways.py --train-only --dry-run       # what would start or resume
    .venv/bin/python scripts/feedback_pathways.py --report-only                # section + figures from the runs
    .venv/bin/python scripts/feedback_pathways.py                              # both: train, then report
    bash scripts/feedback_runs.sh                                              # = --train-only (RUNS, SEEDS, ...)

**The matrix**: the rules ``--rules`` (default f0, bio) × the feedback modes ``--modes`` (default
bp, fa, dfa, sign, kp, plastic, routing), each one ``plastic-jax meta-train`` subprocess with the
paper-scale flags of ``plastic_jax.paper.paper_argv``: the offline 47-class ``glyphs`` data,
10 classes held out (--holdout 0.21), the paper's network 784-170-130-100-70-47, M = 5, K = 50,
Q = 10, Adam 1e-3, θ0 = 1e-3, ``--episodes`` (300) episodes, ``--seeds`` (3) seeds vmapped,
alignment every 10 episodes, a checkpoint every 25, ``--max-skips 0``, into RUNS/<rule>-<mode>
(``--runs``, default runs/feedback). A finished run is skipped, an unfinished one resumed from its
checkpoint, one whose config.json differs is left alone and named (``plastic_jax.paper``'s
``paper_status`` and ``train_paper``); each invocation's wall seconds are appended to RUN_DIR/wall_seconds.txt.

**The report** (``--report-only``, or after training) replaces the section "Feedback pathways"
between the ``feedback-pathways`` markers of ``--results`` (docs/RESULTS.md; appended at the end
when the markers are absent; the rest of the file is kept) and draws its figures into
``--figures`` (docs/figures/feedback): per rule a table of the modes (last-100-episode accuracy
with its 98% bootstrap CI over seeds, the seeds' accuracies, the alignment angle of each hidden
layer at the end, the final Θ, Θ^B and the routing gates sigmoid(φ)), the missing or unfinished
runs named as such, and findings computed from those numbers (finished runs only):
``plastic_jax.paper.feedback``.

Hidden options for tests (tiny configs): ``--dataset``, ``--data-dir``, ``--holdout``, ``--hidden``,
``--M``, ``--K``, ``--Q``, ``--analysis-every``, ``--checkpoint-every``, ``--extra-flags`` (appended
after a run's own flags: the last flag wins).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from plastic_jax.config import ConfigError
from plastic_jax.paper import PaperRun, paper_status, train_paper, write_section
from plastic_jax.paper.feedback import BEGIN, END, MODES, RULES, FeedbackReport, draw

__all__ = ["BEGIN", "END", "MODES", "RULES", "main", "matrix", "override_flags", "paper_status", "parse_args"]

# =========================================================================== arguments and the matrix


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    out = tuple(w for w in text.replace(",", " ").split() if w)
    bad = [w for w in out if w not in known]
    if bad or not out:
        raise SystemExit(f"feedback_pathways.py: error: --{what}: unknown {', '.join(bad) or '(none given)'}; "
                         f"choose from {', '.join(known)}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``rule_list`` and ``mode_list`` added (checked), ``quick`` False."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rules", default=",".join(RULES), help="rules, comma-separated (default: %(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="feedback modes, comma-separated (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=300, help="episodes per run (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per run, vmapped (default: %(default)s)")
    p.add_argument("--runs", default="runs/feedback", help="where the run directories go (default: %(default)s)")
    p.add_argument("--results", default="docs/RESULTS.md", help="the markdown file to update (default: %(default)s)")
    p.add_argument("--figures", default="docs/figures/feedback", help="where figures go (default: %(default)s)")
    p.add_argument("--window", type=int, default=20, help="moving average of the accuracy figures (default: "
                   "%(default)s episodes)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--train-only", action="store_true", help="only start, resume or skip the runs; no report")
    g.add_argument("--report-only", action="store_true", help="train nothing: write the section and figures "
                   "from the runs in --runs")
    p.add_argument("--dry-run", action="store_true", help="print what would be started or resumed, run nothing")
    # hidden: tiny configs for tests (each appended after the run's paper-scale flags: the last flag wins)
    p.add_argument("--dataset", default="glyphs", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    for flag in ("--holdout", "--hidden", "--M", "--K", "--Q", "--analysis-every", "--checkpoint-every"):
        p.add_argument(flag, default=None, help=argparse.SUPPRESS)
    p.add_argument("--extra-flags", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.rule_list = _names(args.rules, RULES + ("pool", "ehebb", "oja"), "rules")
    args.mode_list = _names(args.modes, MODES, "modes")
    # what plastic_jax.paper.paper_argv reads
    args.quick = False
    return args


def override_flags(args: argparse.Namespace) -> tuple[str, ...]:
    """The hidden options given, as meta-train flags, then --extra-flags."""
    out: list[str] = []
    for flag in ("--holdout", "--hidden", "--M", "--K", "--Q", "--analysis-every", "--checkpoint-every"):
        v = getattr(args, flag.lstrip("-").replace("-", "_"))
        if v is not None:
            out += [flag, str(v)]
    return tuple(out + shlex.split(args.extra_flags))


def matrix(args: argparse.Namespace) -> list[PaperRun]:
    """The runs, rule-major: RUNS/<rule>-<mode> with ``--rule R --feedback F`` (and the overrides)."""
    extra = override_flags(args)
    return [PaperRun(f"{r}-{m}", r, ("--rule", r, "--feedback", m, *extra))
            for r in args.rule_list for m in args.mode_list]


# =========================================================================== main


def main(argv: list[str] | None = None) -> int:
    """Train (unless --report-only), then draw and write the section (unless --train-only)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        statuses = [paper_status(r, args) for r in matrix(args)]
        rc = 0
        if not args.report_only:
            rc = train_paper(args, statuses)
            if args.train_only or args.dry_run:
                return rc
            statuses = [paper_status(r, args) for r in matrix(args)]
    except ConfigError as e:
        print(f"feedback_pathways.py: error: {e}", file=sys.stderr)
        return 2
    rep = FeedbackReport(args, statuses, argv)
    for path in draw(rep):
        print(f"drew {path}", flush=True)
    write_section(args.results, rep.build(), BEGIN, END)
    print(f"wrote {args.results}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
