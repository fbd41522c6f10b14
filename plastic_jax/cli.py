"""``plastic-jax`` command line: thin subcommands over the library functions.

The settings' flags are generated from ``TrainConfig``'s declaration (``config.add_config_flags``);
every user error (``ConfigError``, a bad flag) ends with one line on stderr and exit code 2, before
anything on disk changes. ``main`` also turns what should never happen into one line: an I/O error
or running out of memory (exit 2), anything else (exit 1, "internal error"; set
``PLASTIC_JAX_TRACEBACK=1`` to see the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from plastic_jax.config import (
    DATA,
    META,
    OUTPUT,
    RULE,
    RUN,
    ConfigError,
    TrainConfig,
    add_config_flags,
    check_types,
    default_out,
    given_settings,
    load_config_file,
)


class UsageError(Exception):
    """A command line argparse refuses (unknown flag, bad value); the message is one line."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error`` raises ``UsageError`` (no usage block, no exit);
    ``main`` prints it as one line with exit code 2. Subcommand parsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``meta-train`` (shared by scripts/meta_train.py): every setting, and the run's options."""
    groups = {name: p.add_argument_group(name) for name in (DATA, RULE, META, OUTPUT, RUN)}
    add_config_flags(p, groups=groups)
    g = groups[OUTPUT]
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = groups[RUN]
    g.add_argument("--config", metavar="FILE", default=None,
                   help="settings from a TOML (.toml) or JSON file, e.g. a run's config.json; flags "
                        "given on the command line override it")
    g.add_argument("--resume", metavar="RUN_DIR", nargs="?", const="", default=None,
                   help="continue the run in RUN_DIR (default: --out) from its config.json and newest "
                        "usable checkpoint; --episodes may be raised")
    g.add_argument("--devices", type=int, default=None,
                   help="shard the seeds over the first N local devices (default: all); not part of "
                        "the config, results do not depend on it")


def given_flags(argv: Sequence[str]) -> set[str]:
    """The settings given on the command line ``argv`` (a ``meta-train`` command line)."""
    return set(given_settings(build_parser().parse_args(argv)))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: ``--config`` FILE (or, with ``--resume``, the run's config.json), then
    the settings given on the command line (even when they repeat a default)."""
    from plastic_jax import rundir

    given = given_settings(args)
    resume = getattr(args, "resume", None)
    base: dict = {}
    if resume is not None:
        if getattr(args, "overwrite", False):
            raise ConfigError("--resume continues a run and --overwrite replaces it; give one of them")
        if getattr(args, "config", None):
            raise ConfigError("--resume takes the run's own config.json; leave out --config")
        run_dir = resume or given.get("out")
        if not run_dir:
            raise ConfigError("--resume needs the run directory: --resume RUN_DIR (or --out RUN_DIR)")
        if resume and given.get("out") not in (None, resume):
            raise ConfigError(f"--resume {resume!r} and --out {given['out']!r} name different directories; a run "
                              "resumes where it is: leave out --out")
        base = {**rundir.read_config(run_dir).to_json(), "out": run_dir}
    elif getattr(args, "config", None):
        base = load_config_file(args.config)
    cfg = TrainConfig.from_json({**base, **given})
    check_types(cfg)  # (validate() runs them again with the rest) before default_out uses them
    if "out" not in given and "out" not in base:
        cfg.out = default_out(cfg)
    return cfg


def cmd_meta_train(args: argparse.Namespace) -> int:
    """``plastic-jax meta-train``: train, print the summary; 3 when the divergence guard stopped."""
    from plastic_jax.train import TrainingInterrupted, TrainingStopped, meta_train

    cfg = config_from_args(args)
    try:
        summary = meta_train(cfg, progress=not args.no_progress, overwrite=args.overwrite,
                             resume=args.resume is not None, devices=args.devices)
    except TrainingInterrupted as e:  # records, checkpoint and summary.json are written
        print(e, file=sys.stderr)
        return e.exit_code
    except TrainingStopped as e:
        print(f"plastic-jax meta-train: {e}", file=sys.stderr)
        return 3
    n = min(100, cfg.episodes)
    print(f"run: {cfg.out}")
    print(f"mean query accuracy over the last {n} episodes: {summary['last100_accuracy']:.4f}")
    if "combinations" in summary:
        for c in summary["combinations"]:
            ci = c["last100_accuracy_ci98"]
            print(f"  l1 {c['l1']:g}, meta_lr {c['meta_lr']:g}: {c['last100_accuracy']:.4f}"
                  + (f" [98% CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    elif len(summary["seeds"]) > 1:
        lo, hi = summary["last100_accuracy_ci98"]
        print(f"over {len(summary['seeds'])} seeds: 98% bootstrap CI [{lo:.4f}, {hi:.4f}] (500 resamples)")
    members = summary.get("members") or [{"seed": s} for s in summary["seeds"]]
    for m, th in zip(members, summary["theta"]):
        who = ", ".join(f"{k} {v:g}" for k, v in m.items())
        print(f"final theta ({who}): " + ", ".join(f"{k}={v:+.5f}" for k, v in th.items()))
    ev = summary.get("events") or {}
    flagged = {k: sum(v) for k, v in ev.items() if k in ("spikes", "rollbacks") and sum(v)}
    if flagged:
        print("guard: " + ", ".join(f"{n} {k}" for k, n in flagged.items()) + " (per member in summary.json 'events')")
    return 0


def _lazy(module: str, name: str) -> Callable:
    """``module.name``, imported when called (keeps ``plastic-jax --help`` fast)."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


#: subcommand name -> (help, add-arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "meta-train": ("meta-learn a plasticity rule's coefficients Θ", add_train_args, cmd_meta_train),
    "evaluate": ("meta-test a learned (or given) Θ on new tasks from held-out classes, against the "
                 "f0+bp and f0+fa baselines (and f0 with the run's own feedback for the other modes)",
                 _lazy("plastic_jax.evaluate", "add_evaluate_args"),
                 _lazy("plastic_jax.evaluate", "cmd_evaluate")),
    "plot": ("figures (PNG and PDF) of one or several runs: accuracy, loss, Θ, alignment, "
             "orthonormality", _lazy("plastic_jax.plots", "add_plot_args"), _lazy("plastic_jax.plots", "cmd_plot")),
    "benchmark": ("time and memory of meta-training episodes per rule, feedback and meta-gradient "
                  "estimator, against a naive baseline", _lazy("plastic_jax.benchmark", "add_benchmark_args"),
                  _lazy("plastic_jax.benchmark", "cmd_benchmark")),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``plastic-jax`` parser with every subcommand of ``COMMANDS``."""
    parser = Parser(
        prog="plastic-jax",
        description="Meta-learn biologically plausible plasticity rules (Shervani-Tabar & "
        "Rosenbaum 2023) in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (whitespace, newlines included, collapsed)."""
    return " ".join(str(e).split()) if str(e).strip() else type(e).__name__


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``plastic-jax`` command line; returns the exit code.

    0: done; 2: a bad command line, setting or file, an I/O error, out of memory (one line on
    stderr); 3: the divergence guard stopped meta-training; 1: an internal error (one line; the
    traceback with ``PLASTIC_JAX_TRACEBACK=1``); 130: interrupted.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    name = f"plastic-jax {args.command}"
    if args.command in ("meta-train", "evaluate"):
        from plastic_jax.cache import enable_compilation_cache

        enable_compilation_cache()  # the second run of a command skips XLA compilation (plastic_jax/cache.py)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("PLASTIC_JAX_TRACEBACK"):
            raise
        if isinstance(e, OSError):
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            print(f"{name}: error: I/O error{where}: {e.strerror or _one_line(e)}", file=sys.stderr)
            return 2
        if _out_of_memory(e):
            print(f"{name}: error: out of memory ({_one_line(e)}); lower the sizes (--hidden, --seeds, "
                  "--meta-batch, --tasks)", file=sys.stderr)
            return 2
        print(f"{name}: internal error: {type(e).__name__}: {_one_line(e)} (a bug: please report it; "
              "PLASTIC_JAX_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
