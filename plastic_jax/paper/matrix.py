"""The run matrix of the paper-scale reproduction: every run's name, paper_runs.sh group and flags.

scripts/paper_runs.sh is a thin wrapper over ``scripts/reproduce.py --scale paper --train-only``;
this module is the one source of truth for the runs' flags, names and groups. ``paper_argv``
turns a ``PaperRun`` into the ``plastic-jax meta-train`` command line, ``config_of`` into the
config that command runs with.

The functions that take ``args`` read these attributes of it (an ``argparse.Namespace`` of
scripts/reproduce.py or scripts/feedback_pathways.py): ``dataset``, ``data_dir``, ``episodes``,
``seeds``, ``quick``, ``runs`` (and ``readings``, ``pool_l1``, ``pool_variants`` for
``paper_matrix_of``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from plastic_jax.config import RESUME_MAY_CHANGE, ConfigError, TrainConfig

#: the settings every paper-scale run shares (scripts/paper_runs.sh's COMMON, in its order)
PAPER_HOLDOUT = "0.21"
PAPER_ANALYSIS_EVERY = "10"
PAPER_CHECKPOINT_EVERY = "25"
#: groups of paper_runs.sh, in the order it runs them
PAPER_GROUPS = ("fig3", "rules", "table1", "pool")
#: λ values and readings of F5-F8 of the pool sweep (paper_runs.sh's POOL_L1 and READINGS); the λ
#: strings are kept as given, they name the run directories (pool-fa-matrix-l1_0.1)
POOL_L1 = ("1", "10", "0.1", "100")
POOL_READINGS = ("matrix", "elementwise")
#: Table 1: a 3-layer network (3 weight matrices) with F0 or eHebb per layer
TABLE1 = ["f0,f0,f0", "ehebb,f0,f0", "f0,ehebb,f0", "f0,f0,ehebb", "ehebb,ehebb,ehebb"]
#: Table 1's hidden sizes: 784-130-70-47
T1_HIDDEN = "130,70"
#: CI-sized overrides of --scale paper --quick (appended after a run's own flags: the last flag wins)
PAPER_QUICK = ("--dataset", "digits", "--holdout", "0.5", "--M", "3", "--K", "4", "--Q", "2",
               "--hidden", "10,8", "--analysis-every", "1", "--checkpoint-every", "2")
#: runs meta-tested on the held-out classes (and the best pool run)
META_TEST_RUNS = ("f0-bp", "f0-fa", "bio-fa", "ehebb-fa", "oja-fa")


def t1_name(layer_rules: str) -> str:
    """The run name of a Table 1 row: ``f0,ehebb,f0`` -> ``t1-f0-ehebb-f0``."""
    return f"t1-{layer_rules.replace(',', '-')}"


@dataclass(frozen=True)
class PaperRun:
    """One run of the matrix: its directory name, its paper_runs.sh group, its own flags."""

    name: str
    group: str
    flags: tuple[str, ...]


def pool_variant_flags(variant: str) -> tuple[str, ...]:
    """Flags of a pool variant: ``base`` (none), or ``+``-joined ``lr_X`` (--meta-lr X) and
    ``clip_X`` (--meta-clip X), e.g. ``lr_1e-4+clip_10``."""
    if variant == "base":
        return ()
    flags: list[str] = []
    for part in variant.split("+"):
        key, _, value = part.partition("_")
        try:
            float(value)
        except ValueError:
            key = ""
        if key not in ("lr", "clip"):
            raise ConfigError(f"pool variant {variant!r}: expected base, lr_X, clip_X or lr_X+clip_Y")
        flags += ["--meta-lr" if key == "lr" else "--meta-clip", value]
    return tuple(flags)


def paper_matrix(readings: tuple[str, ...] = POOL_READINGS, l1s: tuple[str, ...] = POOL_L1,
                 variants: tuple[str, ...] = ("base",)) -> list[PaperRun]:
    """Every paper-scale run, in paper_runs.sh's order (groups fig3, rules, table1, pool)."""
    runs = [
        PaperRun("f0-fa", "fig3", ("--rule", "f0", "--feedback", "fa")),
        PaperRun("f0-bp", "fig3", ("--rule", "f0", "--feedback", "bp", "--bp-grad", "frozen")),
        PaperRun("bio-fa", "rules", ("--rule", "bio", "--feedback", "fa")),
        PaperRun("ehebb-fa", "rules", ("--rule", "ehebb", "--feedback", "fa")),
        PaperRun("oja-fa", "rules", ("--rule", "oja", "--feedback", "fa")),
    ]
    runs += [PaperRun(t1_name(lr), "table1", ("--layer-rules", lr, "--feedback", "fa", "--hidden", T1_HIDDEN))
             for lr in TABLE1]
    for reading in readings:
        for l1 in l1s:
            for v in variants:
                flags = ("--rule", "pool", "--feedback", "fa", "--f5-f8", reading, "--l1", l1)
                suffix = "" if v == "base" else "-" + v.replace("+", "-")
                runs.append(PaperRun(f"pool-fa-{reading}-l1_{l1}{suffix}", "pool", flags + pool_variant_flags(v)))
    return runs


def paper_matrix_of(args: argparse.Namespace) -> list[PaperRun]:
    """``paper_matrix`` of the command line's ``--readings``, ``--pool-l1`` and ``--pool-variants``."""
    return paper_matrix(tuple(args.readings.split()), tuple(args.pool_l1.split()), tuple(args.pool_variants.split()))


def paper_argv(run: PaperRun, args: argparse.Namespace) -> list[str]:
    """The ``meta-train`` command line of ``run`` (without ``--no-progress``): paper_runs.sh's.

    It differs from the first paper_runs.sh's only in ``--max-skips 0`` for every run (that one gave
    it to pool alone), a setting a resume may change: its runs are reused or resumed as they are."""
    argv = ["--dataset", args.dataset, "--holdout", PAPER_HOLDOUT, "--M", "5", "--K", "50", "--Q", "10",
            "--episodes", str(args.episodes), "--seeds", str(args.seeds),
            "--analysis-every", PAPER_ANALYSIS_EVERY, "--checkpoint-every", PAPER_CHECKPOINT_EVERY,
            # never stop: a seed whose update goes non-finite keeps its last finite Θ (its updates are
            # skipped) and the other seeds go on; the report names the diverged seed (first used for
            # pool; oja-fa's guard stop at episode 307, one seed of five, made it every run's)
            "--max-skips", "0"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    argv += run.flags
    if args.quick:
        argv += PAPER_QUICK
    return argv + ["--out", os.path.join(args.runs, run.name)]


def config_of(argv: list[str]) -> TrainConfig:
    """The config ``plastic-jax meta-train ARGV`` runs with (the CLI's own parser and defaults)."""
    from plastic_jax.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["meta-train", *argv]))


def config_differences(old: TrainConfig, new: TrainConfig, *, resumable: bool = False) -> list[str]:
    """Settings where ``old`` and ``new`` differ: those a resume may not change (``resumable``:
    only those it may, without out and extra)."""
    o, n = old.to_json(), new.to_json()
    keep = (lambda k: k in RESUME_MAY_CHANGE and k not in ("out", "extra")) if resumable else \
        (lambda k: k not in RESUME_MAY_CHANGE)
    return [k for k, v in n.items() if keep(k) and o.get(k) != v]
