"""``plastic-jax`` command line: subcommands over the driver functions.

Every user error (``ConfigError``) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
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
    g.add_argument("--data-dir", default=d.data_dir, help="where datasets live (sources that need one)")
    g.add_argument("--M", type=int, default=d.M, help="classes per task (default: %(default)s)")
    g.add_argument("--K", type=int, default=d.K, help="training examples per class (default: %(default)s)")
    g.add_argument("--Q", type=int, default=d.Q, help="query examples per class (default: %(default)s)")
    g = p.add_argument_group("plasticity rule")
    g.add_argument("--rule", default=d.rule,
                   help="named rule: f0 {0}, pool {0..9}, bio {0,2,9}, ehebb {0,2}, oja {0,9} "
                        "(default: %(default)s)")
    g.add_argument("--terms", default=d.terms,
                   help="comma-separated term ids, e.g. 0,2,9; overrides --rule")
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
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="run directory (default: runs/<rule>-<feedback>-s<seed>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig()
    for name in ("dataset", "data_dir", "M", "K", "Q", "rule", "terms", "feedback", "hidden",
                 "episodes", "meta_lr", "l1", "meta_batch", "seed"):
        if hasattr(args, name):
            setattr(cfg, name, getattr(args, name))
    label = (args.terms.replace(",", "-") if args.terms else args.rule)
    cfg.out = args.out or f"runs/{label}-{args.feedback}-s{args.seed}"
    return cfg


def cmd_meta_train(args: argparse.Namespace) -> int:
    from plastic_jax.train import meta_train

    cfg = config_from_args(args)
    summary = meta_train(cfg, progress=not args.no_progress, overwrite=args.overwrite)
    n = min(100, cfg.episodes)
    print(f"run: {cfg.out}")
    print(f"mean query accuracy over the last {n} episodes: {summary['last100_accuracy']:.4f}")
    for seed, th in zip(summary["seeds"], summary["theta"]):
        print(f"final theta (seed {seed}): " + ", ".join(f"{k}={v:+.5f}" for k, v in th.items()))
    return 0


#: subcommand name -> (help, add-arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "meta-train": ("meta-learn a plasticity rule's coefficients Θ", add_train_args, cmd_meta_train),
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
