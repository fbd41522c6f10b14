"""``plastic-jax`` command line: subcommands over the driver functions.

Every user error (``ConfigError``) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from plastic_jax.config import ConfigError, TrainConfig


def _positive_int_list(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``meta-train`` (shared by scripts/meta_train.py)."""
    d = TrainConfig()
    g = p.add_argument_group("task and data")
    g.add_argument("--dataset", default=d.dataset, help="dataset name (default: %(default)s, offline)")
    g.add_argument("--data-dir", default=d.data_dir,
                   help="where datasets live (emnist: the tfds data dir; default $TFDS_DATA_DIR, "
                        "else ~/tensorflow_datasets)")
    add_data_split_args(g)
    g.add_argument("--M", type=int, default=d.M, help="classes per task (default: %(default)s)")
    g.add_argument("--K", type=int, default=d.K, help="training examples per class (default: %(default)s)")
    g.add_argument("--Q", type=int, default=d.Q, help="query examples per class (default: %(default)s)")
    g = p.add_argument_group("plasticity rule")
    g.add_argument("--rule", default=d.rule,
                   help="named rule: f0 {0}, pool {0..9}, bio {0,2,9}, ehebb {0,2}, oja {0,9} "
                        "(default: %(default)s)")
    g.add_argument("--terms", default=d.terms,
                   help="comma-separated term ids, e.g. 0,2,9; overrides --rule")
    g.add_argument("--layer-rules", default=d.layer_rules,
                   help="one rule per weight layer, e.g. f0,ehebb,f0 with --hidden 100,100 (a layer may "
                        "also be '+'-joined term ids, e.g. 0+2); overrides --rule and --terms; a term's "
                        "coefficient is shared by every layer that uses it")
    g.add_argument("--feedback", default=d.feedback,
                   help="teaching-signal pathway: bp (B = W) or fa (fixed random B) (default: %(default)s)")
    g.add_argument("--hidden", type=_positive_int_list, default=d.hidden,
                   help="hidden layer sizes (default: 170,130,100,70)")
    g = p.add_argument_group("meta-training")
    g.add_argument("--episodes", type=int, default=d.episodes, help="meta-training episodes (default: %(default)s)")
    g.add_argument("--meta-lr", type=float, default=d.meta_lr, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--l1", type=float, default=d.l1, help="λ of the L1 penalty on Θ (default: %(default)s)")
    g.add_argument("--meta-batch", type=int, default=d.meta_batch,
                   help="tasks per meta-update, vmapped (default: %(default)s, the paper's)")
    g.add_argument("--meta-grad", dest="estimator", default=d.estimator,
                   choices=("auto", "reverse", "reverse-remat", "forward"),
                   help="meta-gradient estimator: auto picks forward mode for ≤ 16 active terms, "
                        "reverse-remat otherwise (docs/PERFORMANCE.md) (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    g.add_argument("--seeds", type=int, default=d.seeds,
                   help="independent runs, seeds --seed … --seed+N-1, vmapped in one program "
                        "(default: %(default)s)")
    g.add_argument("--analysis-every", type=int, default=d.analysis_every,
                   help="log alignment angles and orthonormality error every N episodes and at the "
                        "last (0: never; default: %(default)s)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="run directory (default: runs/<rule>-<feedback>-s<seed>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_run_args(p)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """--config, checkpoints and resume, the divergence guard, devices (README, "Runs that survive")."""
    d = TrainConfig()
    g = p.add_argument_group("config, checkpoints, guard, devices")
    g.add_argument("--config", metavar="FILE", default=None,
                   help="settings from a TOML (.toml) or JSON file, e.g. a run's config.json; flags "
                        "given on the command line override it")
    g.add_argument("--resume", metavar="RUN_DIR", nargs="?", const="", default=None,
                   help="continue the run in RUN_DIR (default: --out) from its config.json and newest "
                        "usable checkpoint; --episodes may be raised")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="checkpoint every N episodes into RUN_DIR/checkpoints (0: none; default: %(default)s)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints,
                   help="newest checkpoints kept, at least 2 (default: %(default)s)")
    g.add_argument("--max-skips", type=int, default=d.max_skips,
                   help="stop (exit code 3) after N consecutive non-finite meta-updates skipped "
                        "(0: never; default: %(default)s)")
    g.add_argument("--theta0", type=float, default=d.theta0,
                   help="initial θ_0 (the other θ start at 0; default: %(default)s)")
    g.add_argument("--devices", type=int, default=None,
                   help="shard the seeds over the first N local devices (default: all); not part of "
                        "the config, results do not depend on it")


def add_data_split_args(g) -> None:
    """EMNIST split/download and the class-split flags (shared by meta-train and evaluate)."""
    d = TrainConfig()
    g.add_argument("--split", default=d.split,
                   help="tfds split for emnist (default: test, 400 images per class, as the published code)")
    g.add_argument("--download", action="store_true",
                   help="let tfds download and prepare a missing emnist (needs the emnist extra)")
    g.add_argument("--holdout", type=float, default=d.holdout,
                   help="fraction of classes held out for meta-test, chosen by a permutation seeded "
                        "with --split-seed (default: %(default)s, no split)")
    g.add_argument("--train-classes", type=_positive_int_list, default=d.train_classes,
                   help="explicit meta-training classes, e.g. 0,1,2,3,4 (instead of --holdout)")
    g.add_argument("--test-classes", type=_positive_int_list, default=d.test_classes,
                   help="explicit held-out classes (default with --train-classes: the others)")
    g.add_argument("--split-seed", type=int, default=d.split_seed,
                   help="seed of the class permutation behind --holdout (default: %(default)s)")


def given_flags(argv: Sequence[str]) -> set[str]:
    """The argparse destinations given on the command line ``argv`` (not left at their default)."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    a.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: ``--config`` FILE (or, with ``--resume``, the run's config.json), then
    the flags given on the command line (``args._given``; all of them when it is absent)."""
    from plastic_jax.config import check_types, load_config_file

    given = getattr(args, "_given", None)
    resume = getattr(args, "resume", None)
    base: dict = {}
    if resume is not None:
        if getattr(args, "config", None):
            raise ConfigError("--resume takes the run's own config.json; leave out --config")
        run_dir = resume or args.out
        if not run_dir:
            raise ConfigError("--resume needs the run directory: --resume RUN_DIR (or --out RUN_DIR)")
        path = os.path.join(run_dir, "config.json")
        if not os.path.exists(path):
            raise ConfigError(f"--resume: {run_dir!r} holds no run (no config.json)")
        base = load_config_file(path)
        base["out"] = run_dir
    elif getattr(args, "config", None):
        base = load_config_file(args.config)
    cfg = TrainConfig.from_json(base)
    for name in ("checkpoint_every", "keep_checkpoints", "max_skips", "theta0"):
        if hasattr(args, name) and (not base or given is None or name in given):
            setattr(cfg, name, getattr(args, name))
    for name in ("dataset", "data_dir", "M", "K", "Q", "rule", "terms", "feedback", "hidden",
                 "episodes", "meta_lr", "l1", "meta_batch", "estimator", "seed", "seeds", "layer_rules",
                 "analysis_every",
                 "split", "download", "holdout", "train_classes", "test_classes", "split_seed"):
        if hasattr(args, name) and (not base or given is None or name in given):
            setattr(cfg, name, getattr(args, name))
    check_types(cfg)  # (validate() runs them again with the rest) before the label uses them
    label = (cfg.terms.replace(",", "-") if cfg.terms else cfg.rule)
    if cfg.layer_rules:
        label = cfg.layer_rules.replace(",", "-").replace("+", "")
    if args.out:
        cfg.out = args.out
    elif "out" not in base:
        cfg.out = f"runs/{label}-{cfg.feedback}-s{cfg.seed}"
    return cfg


def cmd_meta_train(args: argparse.Namespace) -> int:
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


def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    from plastic_jax.evaluate import add_evaluate_args

    add_evaluate_args(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from plastic_jax.evaluate import cmd_evaluate as run

    return run(args)


def _add_plot_args(p: argparse.ArgumentParser) -> None:
    from plastic_jax.plots import add_plot_args

    add_plot_args(p)


def cmd_plot(args: argparse.Namespace) -> int:
    from plastic_jax.plots import cmd_plot as run

    return run(args)


def _add_benchmark_args(p: argparse.ArgumentParser) -> None:
    from plastic_jax.benchmark import add_benchmark_args

    add_benchmark_args(p)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from plastic_jax.benchmark import cmd_benchmark as run

    return run(args)


#: subcommand name -> (help, add-arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "meta-train": ("meta-learn a plasticity rule's coefficients Θ", add_train_args, cmd_meta_train),
    "evaluate": ("meta-test a learned (or given) Θ on new tasks from held-out classes, against the "
                 "f0+bp and f0+fa baselines", _add_evaluate_args, cmd_evaluate),
    "plot": ("figures (PNG and PDF) of one or several runs: accuracy, loss, Θ, alignment, "
             "orthonormality", _add_plot_args, cmd_plot),
    "benchmark": ("time and memory of meta-training episodes per rule, feedback and meta-gradient "
                  "estimator, against a naive baseline", _add_benchmark_args, cmd_benchmark),
}


def build_parser() -> argparse.ArgumentParser:
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
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        args._given = given_flags(argv)
        return args.run(args)
    except ConfigError as e:
        print(f"plastic-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
