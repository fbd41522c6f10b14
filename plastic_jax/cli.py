"""``plastic-jax`` command line: thin subcommands over the library functions.

The settings' flags are generated from ``TrainConfig``'s declaration (``config.add_config_flags``);
every user error (``ConfigError``, a bad flag) ends with one line on stderr and exit code 2, before
anything on disk changes. ``main`` also turns what should never happen into one line: an I/O error
or running out of memory (exit 2), anything else (exit 1, "internal error"; set
``PLASTIC_JAX_TRACEBACK=1`` to see the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

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


#: the published PyTorch code's flags (Shervani-Tabar & Rosenbaum 2023, ``parse_args`` of its
#: ``main.py``, the layout ``scripts/bench_published.py`` drives) that ours spell differently, and
#: what to give here instead; README "Coming from the published code" has the whole table
PUBLISHED_FLAGS: dict[str, str] = {
    "--lamb": "--l1",
    "--lr_meta": "--meta-lr",
    "--a": "--theta0",
    "--vec": "--terms, with term 0 (--vec 2 9 is --terms 0,2,9)",
    "--fbk": "--feedback (sym is bp, fix is fa)",
    "--database": "--dataset",
    "--res": "--out (one directory per run)",
    "--test_name": "--out (one directory per run)",
    "--avg_window": "plastic-jax plot --window",
    "--gpu_mode": "nothing: JAX uses a GPU when its CUDA build is installed",
    "--dim": "nothing: the input size comes from the dataset",
}
#: a token argparse reads as a negative number, not as a flag (argparse's own pattern)
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error`` raises ``UsageError`` (no usage block, no exit);
    ``main`` prints it as one line with exit code 2. Subcommand parsers inherit the class.

    Flags are never abbreviated (``allow_abbrev`` defaults to False here, and subcommand parsers,
    created through this class, get the same default): ``--rul bio`` is an unknown flag, not
    ``--rule bio``. ``parse_args`` explains what argparse calls "unrecognized arguments": an
    unknown flag with the nearest real flags, a value left over after a flag that takes one, and
    points to the help of the subcommand the flag was given to (``commands``: name -> parser).
    """

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)
        self.commands: dict[str, Parser] = {}

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """``argparse``'s, with every leftover token explained in one line (``UsageError``)."""
        argv = list(sys.argv[1:] if args is None else args)
        if self.commands and argv and _is_flag(argv[0]) and argv[0].split("=", 1)[0] not in _options(self):
            self.error(self._before_command(argv[0]))
        ns, extras = self.parse_known_args(argv, namespace)
        sub, sub_argv = self._command_of(ns, argv)
        if extras:
            sub.error(f"unrecognized arguments: {' '.join(extras)}; {leftover_hint(sub, sub_argv, extras)}")
        hint = positional_after_list(sub, sub_argv, ns)
        if hint:
            sub.error(hint)
        return ns

    def _before_command(self, flag: str) -> str:
        """What to say about ``flag`` given before the subcommand (``plastic-jax --rule bio ...``)."""
        name = flag.split("=", 1)[0]
        owners = [c for c, p in self.commands.items() if name in _options(p)]
        if owners:
            return (f"{name} is a flag of {_or(owners)}: put it after the subcommand, e.g. "
                    f"{self.prog} {owners[0]} {name}")
        return f"unrecognized arguments: {name}; {unknown_flag_hint(name, self)}"

    def _command_of(self, ns: argparse.Namespace, argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
        """The parser of the subcommand in ``ns`` (else this one) and the tokens it parsed."""
        name = getattr(ns, "command", None)
        if name in self.commands and name in argv:
            return self.commands[name], argv[argv.index(name) + 1:]
        return self, argv


def _is_flag(token: str) -> bool:
    """Whether argparse reads ``token`` as a flag (an option string), not as a value."""
    return token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags of ``parser`` (``--name`` or ``-n`` -> its action)."""
    return {o: a for a in parser._actions for o in a.option_strings}


def _or(flags: Sequence[str]) -> str:
    return flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " or " + flags[-1]


def nearest_flags(flag: str, known: Sequence[str]) -> list[str]:
    """The real flags nearest to the unknown ``flag``: those it abbreviates, else the closest
    spellings (``difflib``, with ``_`` read as ``-``); at most three."""
    starts = sorted(k for k in known if k.startswith(flag))
    if starts:
        return starts[:3]
    return difflib.get_close_matches(flag.replace("_", "-"), list(known), n=3, cutoff=0.7)


def unknown_flag_hint(flag: str, parser: argparse.ArgumentParser) -> str:
    """What to say about the unknown ``flag`` (``--name`` or ``--name=value``) given to ``parser``:
    the published code's spelling, the flags it abbreviates, or the closest ones."""
    name = flag.split("=", 1)[0]
    if name in PUBLISHED_FLAGS:
        return f"{name} is the published code's flag; here give {PUBLISHED_FLAGS[name]}"
    known = [o for o in _options(parser) if o.startswith("--")]
    if name.replace("_", "-") in known:
        return f"flags are spelled with dashes: {name.replace('_', '-')}"
    near = nearest_flags(name, known)
    if near and near[0].startswith(name):
        return f"flags are not abbreviated: did you mean {_or(near)}?"
    return f"no flag {name}" + (f": did you mean {_or(near)}?" if near else "")


def _most_values(action: argparse.Action) -> int:
    """How many values ``action``'s flag takes at most (0: a switch such as ``--overwrite``)."""
    if action.nargs is None or action.nargs == "?":
        return 1
    return action.nargs if isinstance(action.nargs, int) else 2**31


def _free_positions(parser: argparse.ArgumentParser, argv: list[str]) -> list[int]:
    """The positions in ``argv`` of the values that no flag of ``parser`` takes as its own."""
    options, free, i = _options(parser), [], 0
    while i < len(argv):
        token = argv[i]
        if not _is_flag(token):
            free.append(i)
        elif "=" not in token and token in options:
            n = _most_values(options[token])
            while n and i + 1 < len(argv) and not _is_flag(argv[i + 1]):
                i, n = i + 1, n - 1
        i += 1
    return free


#: a flag, its action and its values (``_after_flag``)
FlagValues = tuple[str, argparse.Action, list[str]]


def _after_flag(parser: argparse.ArgumentParser, argv: list[str], i: int) -> FlagValues | None:
    """The nearest flag before ``argv[i]``, its action and the values from its first one up to
    ``argv[i]`` (None: no known flag before it)."""
    j = i - 1
    while j >= 0 and not _is_flag(argv[j]):
        j -= 1
    if j < 0:
        return None
    flag, eq, inline = argv[j].partition("=")
    action = _options(parser).get(flag)
    if action is None:
        return None
    return flag, action, ([inline] if eq else []) + argv[j + 1:i + 1]


def _takes_list(action: argparse.Action, joined: str) -> bool:
    """Whether ``action``'s one value is a comma-separated list that accepts ``joined``."""
    if action.nargs is not None or not callable(action.type):
        return False
    try:
        value = action.type(joined)
    except (argparse.ArgumentTypeError, TypeError, ValueError):
        return False
    return isinstance(value, tuple) and len(value) > 1


def list_hint(parser: argparse.ArgumentParser, argv: list[str], i: int, *, cover: bool = True) -> str | None:
    """"--hidden takes one comma-separated list: --hidden 170,130" when ``argv[i]`` follows a
    comma-list flag whose items were given with spaces: the longest run of them that the flag
    accepts (``cover``: with ``argv[i]`` among them); None otherwise."""
    end = i
    while end + 1 < len(argv) and not _is_flag(argv[end + 1]):  # every value given with a space
        end += 1
    found = _after_flag(parser, argv, end)
    if found is None:
        return None
    flag, action, values = found
    for k in range(len(values), max(2, len(values) - (end - i) if cover else 2) - 1, -1):
        if _takes_list(action, ",".join(values[:k])):
            return f"{flag} takes one comma-separated list: {flag} {','.join(values[:k])}"
    return None


def stray_value_hint(parser: argparse.ArgumentParser, argv: list[str], i: int) -> str | None:
    """Why the value ``argv[i]`` is left over when it follows a flag and its value(s): the flag
    takes one list, one value, at most one, or none; None when no flag is before it."""
    found = _after_flag(parser, argv, i)
    if found is None:
        return None
    flag, action, values = found
    if action.nargs == 0:
        return f"{argv[i]} follows {flag}, which takes no value"
    if len(values) < 2 or action.nargs not in (None, "?"):
        return None
    how = "at most one value" if action.nargs == "?" else "one value"
    return list_hint(parser, argv, i, cover=False) or f"{argv[i]} follows {flag} {values[0]}, but {flag} takes {how}"


def leftover_hint(parser: argparse.ArgumentParser, argv: list[str], extras: list[str]) -> str:
    """The fix for the tokens ``extras`` that ``parser`` (a subcommand's) could not place: the
    first unknown flag with the nearest real ones, else the flag a stray value followed."""
    flags = [t for t in extras if _is_flag(t)]
    if flags:
        return unknown_flag_hint(flags[0], parser)
    free = _free_positions(parser, argv)
    for token in extras:  # each leftover value at the last position that holds it
        at = [i for i in free if argv[i] == token]
        hint = stray_value_hint(parser, argv, at[-1]) if at else None
        if hint:
            return hint
    stray = next((t for t in extras if not _is_flag(t)), " ".join(extras))
    return f"{stray} is not the value of any flag"


def positional_after_list(parser: argparse.ArgumentParser, argv: list[str], ns: argparse.Namespace) -> str | None:
    """A positional value (e.g. ``evaluate``'s RUN_DIR) that is no existing path and is one more
    item of a comma-list flag given with a space (``--theta 0.05 0.01``): say so; None otherwise."""
    free = _free_positions(parser, argv)
    for action in (a for a in parser._actions if not a.option_strings and isinstance(a.dest, str)):
        value = getattr(ns, action.dest, None)
        for v in value if isinstance(value, list) else [value]:
            at = [i for i in free if argv[i] == v]
            if not isinstance(v, str) or os.path.exists(v) or not at:
                continue
            hint = list_hint(parser, argv, at[0])
            if hint:
                return f"{v} was read as {action.metavar or action.dest.upper()}, but {hint}"
    return None


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
        cfg = dataclasses.replace(cfg, out=default_out(cfg))
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
    lost = summary.get("last100_seeds_without_accuracy", 0)
    print(f"mean query accuracy over the last {n} episodes: {summary['last100_accuracy']:.4f}"
          + (f" (over the seeds with a finite accuracy; {lost} diverged throughout)" if lost else ""))
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


def build_parser() -> Parser:
    """The ``plastic-jax`` parser with every subcommand of ``COMMANDS`` (none abbreviates a flag)."""
    parser = Parser(
        prog="plastic-jax",
        description="Meta-learn biologically plausible plasticity rules (Shervani-Tabar & "
        "Rosenbaum 2023) in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, run) in COMMANDS.items():
        # allow_abbrev is not inherited by subcommand parsers: every one gets it explicitly
        p = sub.add_parser(name, help=help_, description=help_, allow_abbrev=False)
        add_args(p)
        p.set_defaults(run=run)
        parser.commands[name] = p
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
