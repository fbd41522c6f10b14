"""``plastic-jax`` command line: thin subcommands over the library functions.

The settings' flags are generated from ``TrainConfig``'s declaration (``config.add_config_flags``);
every user error (``ConfigError``) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
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
        if getattr(args, "config", None):
            raise ConfigError("--resume takes the run's own config.json; leave out --config")
        run_dir = resume or given.get("out")
        if not run_dir:
            raise ConfigError("--resume needs the run directory: --resume RUN_DIR (or --out RUN_DIR)")
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
    from plastic_jax.train import TrainingStopped, meta_train

    cfg = config_from_args(args)
    try:
        summary = meta_train(cfg, progress=not args.no_progress, overwrite=args.overwrite,
                             resume=args.resume is not None, devices=args.devices)
    except TrainingStopped as e:
        print(f"plastic-jax meta-train: {e}", file=sys.stderr)
        return 3
    n = min(100, cfg.episodes)
    print(f"run: {cfg.out}")
    print(f"mean query accuracy over the last {n} episodes: {summary['last100_accuracy']:.4f}")
    if len(summary["seeds"]) > 1:
        lo, hi = summary["last100_accuracy_ci98"]
        print(f"over {len(summary['seeds'])} seeds: 98% bootstrap CI [{lo:.4f}, {hi:.4f}] (500 resamples)")
    for seed, th in zip(summary["seeds"], summary["theta"]):
        print(f"final theta (seed {seed}): " + ", ".join(f"{k}={v:+.5f}" for k, v in th.items()))
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
                 "f0+bp and f0+fa baselines", _lazy("plastic_jax.evaluate", "add_evaluate_args"),
                 _lazy("plastic_jax.evaluate", "cmd_evaluate")),
    "plot": ("figures (PNG and PDF) of one or several runs: accuracy, loss, Θ, alignment, "
             "orthonormality", _lazy("plastic_jax.plots", "add_plot_args"), _lazy("plastic_jax.plots", "cmd_plot")),
    "benchmark": ("time and memory of meta-training episodes per rule, feedback and meta-gradient "
                  "estimator, against a naive baseline", _lazy("plastic_jax.benchmark", "add_benchmark_args"),
                  _lazy("plastic_jax.benchmark", "cmd_benchmark")),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``plastic-jax`` parser with every subcommand of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``plastic-jax`` command line; returns the exit code (2: a ``ConfigError``, one line)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"plastic-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
