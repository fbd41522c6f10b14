"""Every setting of a meta-training run, declared once, and everything derived from it.

Each field of ``TrainConfig`` carries its ``Setting`` (``setting(default, help, ...)``): the help
text, the flag name(s), the ``--help`` group, whether ``--resume`` may change it, its validation
(choices, a bound) and whether ``plastic-jax evaluate`` accepts it as an override of a run's
config. From that one declaration come:

- the flags of ``meta-train`` and the shared flags of ``evaluate`` (``add_config_flags``);
- which flags were given on the command line (``given_settings``: every generated flag defaults
  to ``argparse.SUPPRESS``, so a flag is in the namespace exactly when it was given);
- config files (``load_config_file``: TOML or JSON, keys as the field names with ``-`` or ``_``;
  ``TrainConfig.to_json`` / ``from_json``; a run's ``config.json`` is one);
- ``RESUME_MAY_CHANGE``, the type checks (from the real annotations, ``typing.get_type_hints``)
  and the per-setting checks of ``validate``;
- ``LEGACY``: the value a run's config.json written before a setting existed had, used when a
  run is read back (``TrainConfig.from_run_json``), so an old run resumes as it ran.

``validate(cfg, ...)`` checks everything (with the dataset's facts when given) and raises
``ConfigError`` with a one-line message for the first bad value; the CLI turns it into that line
and exit code 2.

**Why argparse generated from the fields, not tyro or jsonargparse.** Both were installed and
tried on a dataclass with these settings (tyro 1.0.17, jsonargparse 4.53.0):

- jsonargparse: ``--hidden 170,130`` is refused ("Expected a <class 'tuple'>", it wants
  ``[170,130]``); flags are spelled with underscores (``--train_classes``, ``--meta_lr``;
  ``--train-classes`` is "unrecognized"); ``--download`` needs a value (``--download true``); a
  flag placed *before* ``--config`` is overridden by the file (``--M 7 --config c.json`` gives
  the file's M); TOML files are not read and a ``meta-lr`` key is "not accepted"; ``--meta-grad``
  cannot name the field ``estimator``; errors span several lines plus a usage block.
- tyro: comma lists and ``--meta-grad`` work (a custom ``PrimitiveConstructorSpec``,
  ``tyro.conf.arg(name=...)``), but every error is a multi-line box (``--M x``: 9 lines) and with
  ``console_outputs=False`` the message is dropped (only ``SystemExit(2)``); an optional value
  (``--resume [RUN_DIR]``, argparse's ``nargs="?"``) has no spelling; it reads no config files
  (the file would still be ours, passed as ``default=``); it cannot host the hand-written
  argparse subcommands (``plot``, ``benchmark``) beside it; and it adds rich, typeguard and
  shtab (import 70 ms against argparse's 2 ms).

Keeping today's flags and one-line errors with either library takes more code than the builder
here (``add_config_flags``, about 40 lines), so the CLI stays argparse, generated from the fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from plastic_jax.atomic import atomic_write_json
from plastic_jax.errors import ConfigError  # noqa: F401 - its home is a leaf; re-exported
from plastic_jax.plasticity import RuleError, parse_terms
from plastic_jax.user_terms import term_parser

# --------------------------------------------------------------------------- the declaration

#: ``Setting.legacy`` of a setting that every run's config.json has
NO_LEGACY: Any = type("NoLegacy", (), {"__repr__": lambda self: "NO_LEGACY"})()


@dataclass(frozen=True)
class Setting:
    """What a ``TrainConfig`` field is, besides its type and default.

    help: the ``--help`` text (the default is appended unless ``show_default`` is False), or a
    function returning it (called when the flags are built; e.g. from the estimator registry).
    group: the ``meta-train --help`` group; None: not a flag (config files only).
    flags: the option strings (default ``--name-with-dashes``).
    resume: may change on ``--resume`` (it does not alter the episodes already run).
    choices: the allowed values, or a function returning them (imported late).
    check: ``value -> None | "must be ..., got ..."`` (the message without the flag).
    evaluate: also a flag of ``plastic-jax evaluate``, overriding the run's config.json.
    legacy: the value of a run whose config.json predates the setting (``NO_LEGACY``: the default).
    noun: how an unknown choice is named in its error ("unknown <noun> 'x'").
    maximum: the largest value of an integer setting (and of each item of an integer list);
    default ``INT_MAX``. Every float setting must be finite in float32 (``check_settings``).
    """

    help: str | Callable[[], str]
    group: str | None = None
    flags: tuple[str, ...] = ()
    resume: bool = False
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    check: Callable[[Any], str | None] | None = None
    evaluate: bool = False
    legacy: Any = NO_LEGACY
    noun: str | None = None
    show_default: bool = True
    metavar: str | Callable[[], str] | None = None
    maximum: int | None = None


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
            **kw: Any) -> Any:
    """A dataclass field with its ``Setting`` (see there for ``kw``)."""
    meta = {"setting": Setting(help=help, **kw)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


#: the largest value of an integer setting unless it declares its own ``maximum`` (XLA's int32)
INT_MAX = 2**31 - 1
#: PRNG seeds are 32-bit: ``jax.random.PRNGKey(2**32)`` is ``PRNGKey(0)``
SEED_MAX = 2**32 - 1
#: meta-training folds the episode index into the seed's key; evaluate's streams sit above it
EPISODES_MAX = 2**31 - 3
#: the largest finite float32
FLOAT32_MAX = 3.4028234663852886e38


def _positive_int(v: Any) -> str | None:
    return None if v > 0 else f"must be a positive integer, got {v!r}"


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be an integer >= {low}, got {v!r}"


def _non_negative_int(v: Any) -> str | None:
    return None if v >= 0 else f"must be a non-negative integer, got {v!r}"


def _positive(v: Any) -> str | None:
    if not v > 0:
        return f"must be positive, got {v}"
    import numpy as np

    return None if np.float32(v) > 0 else f"must be positive in float32, got {v} (rounds to 0)"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else f"must be non-negative, got {v}"


def _finite(v: Any) -> str | None:
    return None if math.isfinite(v) else f"must be finite, got {v!r}"


def _fraction(v: Any) -> str | None:
    return None if 0.0 <= v < 1.0 else f"must be a fraction in [0, 1), got {v}"


def _sizes(v: Any) -> str | None:
    if not v:
        return "must list at least one hidden layer size, e.g. 100,100"
    return None if all(h > 0 for h in v) else f"sizes must be positive, got {list(v)}"


def _non_empty(v: Any) -> str | None:
    return None if v.strip() else "is empty; leave the setting out instead"


def _term_ids(v: Any) -> str | None:
    if not v.strip():
        return "is empty; leave it out to use --rule"
    ids = [t.strip() for t in v.split(",")]
    twice = sorted({t for t in ids if ids.count(t) > 1 and t})
    return f"lists term {twice[0]} twice: {v!r}" if twice else None


def _feedback_modes() -> Sequence[str]:
    from plastic_jax.feedback import FEEDBACK_MODES

    return FEEDBACK_MODES


def _feedback_help() -> str:
    """``--feedback``'s help: every registered pathway with its one-line description."""
    from plastic_jax.pathways import feedback_help

    return feedback_help()


def _bp_grads() -> Sequence[str]:
    from plastic_jax.feedback import BP_GRADS

    return BP_GRADS


def _f5_f8_readings() -> Sequence[str]:
    from plastic_jax.inner import F5_F8_READINGS

    return F5_F8_READINGS


def _estimators() -> Sequence[str]:
    from plastic_jax.estimators import names

    return names()


def _estimator_metavar() -> str:
    return "{" + ",".join(_estimators()) + "}"


def _estimator_help() -> str:
    """``--meta-grad``'s help: ``auto`` and every registered estimator's one-line description."""
    from plastic_jax.estimators import REGISTRY

    return ("meta-gradient estimator (docs/METHOD.md §5, docs/PERFORMANCE.md): auto (forward mode for a single "
            "coefficient, the adjoint otherwise), " + ", ".join(f"{n} ({r.description})" for n, r in REGISTRY.items()))


def _each(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """``check`` of a value that may be a list of values (a swept setting)."""

    def each(v: Any) -> str | None:
        for x in v if isinstance(v, tuple) else (v,):
            msg = check(x)
            if msg:
                return msg
        if isinstance(v, tuple) and len(set(v)) != len(v):
            return f"lists a value twice: {','.join(map(str, v))}"
        return None

    return each


#: what ``--preset`` sets, for the settings left at None (``preset_values``)
PRESETS: dict[str, dict[str, Any]] = {
    "robust": {"meta_lr": 1e-3, "clip_factor": 3.0, "guard": "rollback"},
    "paper": {"meta_lr": 1e-3, "clip_factor": 0.0, "guard": "skip"},
}
#: the robust preset's Adam rate for rules with any of F5-F8 (pool): one Adam step of 1e-3 on θ5
#: acts on the weights like a step of 0.007-0.03 on θ0, which starts at 0.001 (docs/RESULTS.md)
ROBUST_META_LR_F5_F8 = 1e-4
#: the settings a preset resolves
PRESET_SETTINGS = ("meta_lr", "clip_factor", "guard")


DATA, RULE, META, OUTPUT, RUN = ("task and data", "plasticity rule", "meta-training", "output",
                                 "config, checkpoints, guard, devices")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a meta-training run (the fields' ``Setting`` say what each one is).

    Frozen: a changed config is a new one (``dataclasses.replace(cfg, out=...)``). ``extra`` holds
    the facts a run's config.json records besides its settings (run id, data fingerprint, class
    split: ``rundir.recorded_config``); what a config makes, the class split included, is
    ``experiment.build``'s."""

    dataset: str = setting("digits", "dataset name: digits (runs offline), emnist, glyphs; or the path of "
                           "your own .npz with arrays x (N, D) in [0, 1] and integer labels y", group=DATA,
                           evaluate=True)
    data_dir: str | None = setting(
        None, "where datasets live (emnist: the tfds data dir; default $TFDS_DATA_DIR, else "
        "~/tensorflow_datasets)", group=DATA, evaluate=True)
    split: str | None = setting(
        None, "tfds split for emnist (default: test, 400 images per class, as the published code)",
        group=DATA, evaluate=True)
    download: bool = setting(
        False, "let tfds download and prepare a missing emnist (needs the emnist extra)", group=DATA, evaluate=True)
    holdout: float = setting(
        0.0, "fraction of classes held out for meta-test, chosen by a permutation seeded with --split-seed "
        "(0: no split)", group=DATA, check=_fraction, evaluate=True)
    train_classes: tuple[int, ...] | None = setting(
        None, "explicit meta-training classes, e.g. 0,1,2,3,4 (instead of --holdout)", group=DATA, evaluate=True)
    test_classes: tuple[int, ...] | None = setting(
        None, "explicit held-out classes (default with --train-classes: the others)", group=DATA, evaluate=True)
    split_seed: int = setting(0, "seed of the class permutation behind --holdout", group=DATA, evaluate=True,
                              check=_non_negative_int, maximum=SEED_MAX)
    rule: str = setting("f0", "named rule: f0 {0}, pool {0..9}, bio {0,2,9}, ehebb {0,2}, oja {0,9}", group=RULE)
    terms: str | None = setting(None, "comma-separated term ids, e.g. 0,2,9; overrides --rule", group=RULE,
                                check=_term_ids)
    layer_rules: str | None = setting(
        None, "one rule per weight layer, e.g. f0,ehebb,f0 with --hidden 100,100 (a layer may also be "
        "'+'-joined term ids, e.g. 0+2); overrides --rule and --terms; a term's coefficient is shared by "
        "every layer that uses it", group=RULE, check=_non_empty)
    terms_from: str | None = setting(
        None, "a Python file (my_terms.py) or module name (mypkg.terms) declaring your own plasticity terms "
        "(@plasticity.term): they get ids 10, 11, ... after F0-F9, in the module's order (its POOL or TERMS "
        "sequence if it has one), and --terms/--layer-rules take those ids or the terms' names; the run records "
        "the file's sha256 and refuses a changed file on --resume (plastic_jax/user_terms.py)", group=RULE,
        check=_non_empty, legacy=None, evaluate=True, metavar="FILE_OR_MODULE")
    feedback: str = setting(
        "fa", _feedback_help, group=RULE,
                            choices=_feedback_modes, noun="feedback", evaluate=True)
    bp_grad: str = setting(
        "frozen", "with --feedback bp, whether the meta-gradient holds B = W constant as the paper's "
        "published code does (frozen) or differentiates through B = W (through, the exact gradient)",
        group=RULE, choices=_bp_grads, noun="--bp-grad", legacy="through", metavar="{frozen,through}")
    f5_f8: str = setting(
        "matrix", "the reading of plasticity terms F5-F8: the paper's printed matrix products, a scalar "
        "times an outer product (matrix), or the element-wise reading that keeps every term local "
        "(elementwise)", group=RULE, flags=("--f5-f8",), choices=_f5_f8_readings, noun="--f5-f8",
        legacy="matrix", evaluate=True, metavar="{matrix,elementwise}")
    per_layer_theta: bool = setting(
        False, "give every weight layer its own row of coefficients (Θ has L·R entries, recorded as F<id>@<layer>) "
        "instead of one Θ shared by all layers (the paper's)", group=RULE, legacy=False)
    hidden: tuple[int, ...] = setting((170, 130, 100, 70), "hidden layer sizes", group=RULE, check=_sizes,
                                      evaluate=True)
    episodes: int = setting(600, "meta-training episodes (may be raised on --resume)", group=META,
                            check=_positive_int, resume=True, maximum=EPISODES_MAX)
    M: int = setting(5, "classes per task", group=DATA, check=_positive_int, evaluate=True)
    K: int = setting(50, "training examples per class", group=DATA, check=_positive_int, evaluate=True)
    Q: int = setting(10, "query examples per class", group=DATA, check=_positive_int, evaluate=True)
    preset: str = setting(
        "robust", "the meta-optimiser's defaults: robust (relative clipping, rollback guard; Adam 1e-3, 1e-4 "
        "for rules with F5-F8) or paper (the paper's exact Adam 1e-3, no clipping, the skip guard); a flag "
        "given with it wins; config.json records the resolved values", group=META, choices=tuple(PRESETS),
        noun="--preset", legacy="paper", metavar="{robust,paper}")
    meta_lr: float | tuple[float, ...] | None = setting(
        None, "Adam learning rate; a comma list (1e-3,1e-4) sweeps it in one program (default: from --preset)",
        group=META, check=_each(_positive), show_default=False, metavar="LR[,LR...]")
    l1: float | tuple[float, ...] = setting(
        0.0, "λ of the L1 penalty on Θ; a comma list (0,1,10) sweeps it in one program", group=META,
        check=_each(_non_negative), metavar="L1[,L1...]")
    meta_clip: float = setting(0.0, "clip the meta-gradient (with the L1 subgradient) to this global norm "
                               "before Adam (0: no clipping)", group=META, check=_non_negative)
    clip_factor: float | None = setting(
        None, "clip the meta-gradient's norm at this multiple of the median of the run's last 50 finite "
        "norms (0: off; default: from --preset, robust 3, paper 0)", group=META, check=_non_negative,
        show_default=False, legacy=0.0)
    spike_factor: float = setting(
        100.0, "a meta-gradient norm above this multiple of that median is a spike: flagged in the records, "
        "the progress line and summary.json, and rejected by --guard rollback (0: never)", group=META,
        check=_non_negative, legacy=100.0)
    guard: str | None = setting(
        None, "on a bad meta-update: rollback (reject spikes; on a non-finite update return Θ and Adam's "
        "state to a snapshot 25-50 updates back and halve the step, which recovers over 50 updates) or skip "
        "(hold the last finite Θ; spikes are used); default: from --preset, robust rollback, paper skip",
        group=RUN, choices=("rollback", "skip"), noun="--guard", show_default=False, legacy="skip",
        metavar="{rollback,skip}")
    meta_batch: int = setting(1, "tasks per meta-update, vmapped (1: the paper's)", group=META,
                              check=_positive_int)
    seed: int = setting(0, "random seed (0 … 2^32-1)", group=META, check=_non_negative_int, maximum=SEED_MAX)
    seeds: int = setting(1, "independent runs, seeds --seed … --seed+N-1, vmapped in one program", group=META,
                         check=_positive_int)
    theta0: float = setting(1e-3, "initial θ_0 (the other θ start at 0)", group=RUN, check=_finite)
    estimator: str = setting(
        "auto", _estimator_help, group=META, flags=("--meta-grad",), choices=_estimators,
        noun="meta-gradient estimator", metavar=_estimator_metavar,
        # the episodes already run stay as they ran, so a resumed run may switch: between the exact
        # estimators (the same meta-gradient to float32 rounding) it loses only bitwise identity
        # with an uninterrupted run; to or from es it optimises the smoothed loss from then on
        resume=True)
    # es's settings (plastic_jax/estimators/es.py: ES_SIGMA, ES_PAIRS are these defaults); a run
    # written before them did not use es, so any value reads it back as it ran
    es_sigma: float = setting(
        1e-3, "with --meta-grad es, the standard deviation σ of the Gaussian perturbations of Θ (the "
        "meta-loss is smoothed over N(Θ, σ²I); Θ starts at θ0 = 1e-3 and Adam moves it by ~1e-3 per step)",
        group=META, check=_positive, legacy=1e-3)
    es_pairs: int = setting(
        8, "with --meta-grad es, the antithetic pairs P of perturbations per meta-step (2P+1 forward "
        "episodes)", group=META, check=_positive_int, legacy=8, maximum=2**20)
    analysis_every: int = setting(
        10, "log alignment angles and orthonormality error every N episodes and at the last (0: never)",
        group=META, check=_non_negative_int)
    out: str = setting("runs/default", "run directory (default: runs/<rule>-<feedback>-s<seed>)", group=OUTPUT,
                       resume=True, show_default=False, check=_non_empty)
    tensorboard: bool = setting(
        False, "also write the metrics as TensorBoard event files into RUN_DIR/tensorboard/seed<N> (needs "
        "pip install 'plastic_jax[tensorboard]')", group=OUTPUT, resume=True, legacy=False)
    checkpoint_every: int = setting(
        25, "checkpoint every N episodes into RUN_DIR/checkpoints, and at the end and on Ctrl-C/SIGTERM "
        "(0: none)", group=RUN, check=_at_least(0), resume=True, legacy=0)
    keep_checkpoints: int = setting(2, "newest checkpoints kept, at least 2", group=RUN, check=_at_least(2),
                                    resume=True)
    max_skips: int = setting(
        20, "stop (exit code 3) after N consecutive non-finite meta-updates skipped (0: never)", group=RUN,
        check=_at_least(0), resume=True)
    extra: dict[str, Any] = setting(help="derived facts recorded with the run (the resolved class split)",
                                    factory=dict, resume=True)

    def __post_init__(self) -> None:
        for name, v in preset_values(self).items():  # part of constructing it: the one write to a frozen config
            object.__setattr__(self, name, v)

    @property
    def l1_values(self) -> tuple[float, ...]:
        """The λ of the run (several: a sweep)."""
        return self.l1 if isinstance(self.l1, tuple) else (self.l1,)

    @property
    def meta_lr_values(self) -> tuple[float, ...]:
        """The Adam rates of the run (several: a sweep)."""
        return self.meta_lr if isinstance(self.meta_lr, tuple) else (self.meta_lr,)

    def members(self) -> list[tuple[float, float, int]]:
        """Every (l1, meta_lr, seed) trained by the run, in the order of the vmapped axis:
        λ slowest, then the rate, then the seed."""
        return [(lam, lr, self.seed + s) for lam in self.l1_values for lr in self.meta_lr_values
                for s in range(self.seeds)]

    @property
    def is_sweep(self) -> bool:
        """Whether the run sweeps λ or the Adam rate (more than one combination)."""
        return len(self.l1_values) * len(self.meta_lr_values) > 1

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values (tuples become lists), in field order."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from JSON/TOML values (lists for tuples, an integer for a number); a setting
        left out takes its default. Unknown keys are a ``ConfigError``; types are checked by
        ``check_types`` / ``validate``."""
        unknown = sorted(set(d) - set(SETTINGS))
        if unknown:
            import difflib

            hints = []
            for k in unknown:
                near = difflib.get_close_matches(str(k).replace("-", "_"), list(SETTINGS), n=1, cutoff=0.6)
                hints.append(f"{k} (did you mean {near[0].replace('_', '-')}?)" if near else str(k))
            raise ConfigError(f"unknown config key(s): {', '.join(hints)}")
        d = dict(d)
        for k, v in d.items():
            tp = FIELD_TYPES[k]
            if isinstance(v, list) and _is_tuple(tp):
                v = tuple(float(x) if _tuple_item(tp) is float and _is_int(x) else x for x in v)
                # a list of one swept value is that value (a sweep of one is a single run)
                d[k] = v[0] if len(v) == 1 and float in _alternatives(tp) else v  # validate() checks the items
            elif float in _alternatives(tp) and _is_int(v):
                d[k] = float(v)
        return cls(**d)

    @classmethod
    def from_run_json(cls, d: dict[str, Any]) -> TrainConfig:
        """A run's own config.json: a setting it lacks (written before the setting existed)
        takes the value the run had (``LEGACY``), not today's default."""
        return cls.from_json({**LEGACY, **d})

    def dump(self, path: str) -> None:
        """Write ``to_json()`` to ``path`` (through a temporary file, never half a file)."""

        atomic_write_json(path, self.to_json())


#: name -> Setting, in field order
SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in dataclasses.fields(TrainConfig)}
#: name -> the resolved annotation
FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)
#: settings a resumed run may change (they do not alter the trajectory of the episodes run so far)
RESUME_MAY_CHANGE: tuple[str, ...] = tuple(n for n, s in SETTINGS.items() if s.resume)
#: the values of a run written before a setting existed
LEGACY: dict[str, Any] = {n: s.legacy for n, s in SETTINGS.items() if s.legacy is not NO_LEGACY}


def preset_values(cfg: TrainConfig) -> dict[str, Any]:
    """The values ``cfg.preset`` (``PRESETS``) gives the settings ``cfg`` left at None
    (``PRESET_SETTINGS``; ``TrainConfig`` takes them when it is made); {} for an unknown preset,
    which ``validate`` refuses."""
    values = PRESETS.get(cfg.preset) if isinstance(cfg.preset, str) else None
    if values is None:
        return {}
    out = {}
    for name in PRESET_SETTINGS:
        if getattr(cfg, name) is None:
            v = values[name]
            if name == "meta_lr" and cfg.preset == "robust" and _has_f5_f8(cfg):
                v = ROBUST_META_LR_F5_F8
            out[name] = v
    return out


def _has_f5_f8(cfg: TrainConfig) -> bool:
    try:
        return any(t in (5, 6, 7, 8) for terms in layer_term_sets(cfg) for t in terms)
    except (ConfigError, TypeError, AttributeError):
        return False


def flag_of(name: str) -> str:
    """The (first) command-line flag of setting ``name``."""
    s = SETTINGS[name]
    return s.flags[0] if s.flags else "--" + name.replace("_", "-")


def choices_of(name: str) -> tuple[str, ...] | None:
    """The allowed values of setting ``name`` (None: any value of its type)."""
    c = SETTINGS[name].choices
    return tuple(c() if callable(c) else c) if c is not None else None


# --------------------------------------------------------------------------- types


def _alternatives(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)


def _is_tuple(tp: Any) -> bool:
    return any(typing.get_origin(a) is tuple for a in _alternatives(tp))


def _tuple_item(tp: Any) -> Any:
    """The item type of the tuple alternative of ``tp`` (int or float)."""
    return next(typing.get_args(a)[0] for a in _alternatives(tp) if typing.get_origin(a) is tuple)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def type_ok(v: Any, tp: Any) -> bool:
    """Whether ``v`` is a value of the annotation ``tp`` (str, bool, int, float, tuple[int, ...],
    dict, and unions of them with None)."""
    for alt in _alternatives(tp):
        origin = typing.get_origin(alt) or alt
        if alt is type(None) and v is None:
            return True
        if alt is bool and isinstance(v, bool) or alt is int and _is_int(v) or alt is str and isinstance(v, str):
            return True
        if alt is float and (_is_int(v) or isinstance(v, float)):
            return True
        if origin is tuple and isinstance(v, (tuple, list)):
            item = typing.get_args(alt)[0]
            if all(_is_int(x) or item is float and isinstance(x, float) for x in v):
                return True
        if origin is dict and isinstance(v, dict):
            return True
    return False


_TYPE_WORDS = {str: "a string", bool: "true or false", int: "an integer", float: "a number",
               type(None): "null", dict: "a table"}


def _type_words(tp: Any) -> str:
    return " or ".join(f"a list of {'numbers' if typing.get_args(a)[0] is float else 'integers'}"
                       if typing.get_origin(a) is tuple
                       else _TYPE_WORDS.get(typing.get_origin(a) or a, str(a)) for a in _alternatives(tp))


def check_types(cfg: TrainConfig) -> None:
    """Raise ``ConfigError`` for the first setting whose value has the wrong type."""
    for name, tp in FIELD_TYPES.items():
        v = getattr(cfg, name)
        if not type_ok(v, tp):
            raise ConfigError(f"{name} ({flag_of(name)}) must be {_type_words(tp)}, got {v!r}")


# --------------------------------------------------------------------------- CLI and files


def _int_list(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _float_list(s: str) -> float | tuple[float, ...]:
    """A number, or a comma list of numbers (a swept setting): ``1e-3`` or ``1e-3,1e-4``."""
    try:
        vals = tuple(float(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {s!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {s!r}")
    return vals[0] if len(vals) == 1 else vals


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


def add_config_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None, *,
                     group: Any = None, groups: dict[str, Any] | None = None,
                     help_suffix: str | None = None) -> list[str]:
    """Add the flags of the settings ``names`` (default: every setting with a group) to ``parser``.

    Each flag defaults to ``argparse.SUPPRESS``: a setting is in the parsed namespace exactly when
    its flag was given (see ``given_settings``). ``group``: add them all to this argument group;
    else each goes to its setting's group, taken from ``groups`` (name -> argument group) or
    created on ``parser``. ``help_suffix`` replaces the "(default: ...)" of the help ("": none). Returns the
    names added.
    """
    groups = {} if groups is None else groups
    added = []
    for name in names if names is not None else [n for n, s in SETTINGS.items() if s.group]:
        s, tp = SETTINGS[name], FIELD_TYPES[name]
        default = TrainConfig.__dataclass_fields__[name].default
        if group is not None:
            g = group
        else:
            g = groups.get(s.group) or groups.setdefault(s.group, parser.add_argument_group(s.group))
        text = s.help() if callable(s.help) else s.help
        if help_suffix is not None:
            text += f" ({help_suffix})" if help_suffix else ""
        elif s.show_default and not (default is None or default is False or default is dataclasses.MISSING):
            text += f" (default: {_show(default)})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if tp is bool:
            kw["action"] = "store_true"
        else:
            alts = [a for a in _alternatives(tp) if a is not type(None)]
            kw["type"] = (_float_list if _tuple_item(tp) is float else _int_list) if _is_tuple(tp) else alts[0]
            kw["metavar"] = s.metavar() if callable(s.metavar) else s.metavar
        g.add_argument(*(s.flags or ("--" + name.replace("_", "-"),)), **kw)
        added.append(name)
    return added


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the flags of ``add_config_flags``)."""
    return {n: v for n, v in vars(args).items() if n in SETTINGS}


#: the largest config file read (a few settings; a bigger "file" is something else, e.g. /dev/zero)
CONFIG_FILE_MAX_BYTES = 16 * 2**20


def _json_value(name: str, v: Any) -> Any:
    """A JSON/TOML value of setting ``name`` as ``TrainConfig.from_json`` stores it (a list of an
    integer-list or number-list setting as a tuple, an integer of a float setting as a float)."""
    tp = FIELD_TYPES[name]
    if isinstance(v, list) and _is_tuple(tp):
        v = tuple(float(x) if _tuple_item(tp) is float and _is_int(x) else x for x in v)
        return v[0] if len(v) == 1 and float in _alternatives(tp) else v
    if float in _alternatives(tp) and _is_int(v):
        return float(v)
    return v


def setting_error(name: str, v: Any) -> str | None:
    """What is wrong with the value ``v`` of setting ``name`` on its own (type, bound, choices,
    the setting's check; ``check_settings`` of one setting), or None; ``v`` as ``from_json`` stores it."""
    tp = FIELD_TYPES[name]
    if not type_ok(v, tp):
        return f"{name} ({flag_of(name)}) must be {_type_words(tp)}, got {v!r}"
    msg = _generic_check(name, v)
    if msg:
        return f"{flag_of(name)} {msg}"
    s = SETTINGS[name]
    allowed = choices_of(name)
    if allowed is not None and v not in allowed:
        return f"unknown {s.noun or flag_of(name)} {v!r}; choose one of {', '.join(allowed)}"
    if s.check is not None and v is not None:
        msg = s.check(v)
        if msg:
            return f"{flag_of(name)} {msg}"
    return None


def check_file_settings(d: dict[str, Any], where: str) -> None:
    """Refuse the settings ``d`` read from a file (``where`` names it in the message) when a key is
    unknown or a value is bad on its own, whatever the command line overrides: a file's bad value
    is an error in the file even when a flag replaces it."""
    unknown = {k: v for k, v in d.items() if k not in SETTINGS}
    if unknown:
        try:  # from_json's message for them (with its suggestions)
            TrainConfig.from_json(unknown)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        raise ConfigError(f"{where}: unknown config key(s): {', '.join(map(str, sorted(unknown)))}")
    for name, v in d.items():
        msg = setting_error(name, _json_value(name, v))
        if msg:
            raise ConfigError(f"{where}: {msg}")


def load_config_file(path: str) -> dict[str, Any]:
    """The settings in a TOML (``.toml``) or JSON file (anything else) as a dict; keys may use ``-``.

    A run's ``config.json`` is such a file. Only a regular file is read (a FIFO or a device such as
    /dev/zero is refused before it is opened), of at most ``CONFIG_FILE_MAX_BYTES``. Every key and
    every value is checked on its own (``check_file_settings``) here, so a bad value in the file is
    refused even when a flag overrides it; the settings together are checked by ``validate``.
    """
    import os
    import stat

    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read --config {path!r}: {getattr(e, 'strerror', None) or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"cannot read --config {path!r}: it is a directory; give a TOML or JSON file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"cannot read --config {path!r}: not a regular file (a FIFO, device or socket); "
                          "give a TOML or JSON file")
    if st.st_size > CONFIG_FILE_MAX_BYTES:
        raise ConfigError(f"cannot read --config {path!r}: it is {st.st_size} bytes, more than a config file's "
                          f"{CONFIG_FILE_MAX_BYTES} (a TOML or JSON table of settings)")
    try:
        with open(path, "rb") as f:
            raw = f.read(CONFIG_FILE_MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read --config {path!r}: {e.strerror or e}") from None
    if len(raw) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError(f"cannot read --config {path!r}: more than a config file's {CONFIG_FILE_MAX_BYTES} bytes")
    try:
        if path.endswith(".toml"):
            import tomllib

            d = tomllib.loads(raw.decode())
        else:
            d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path!r} does not parse: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"--config {path!r} does not parse: nested too deeply") from None
    if not isinstance(d, dict):
        raise ConfigError(f"--config {path!r} must hold a table of settings, got {type(d).__name__}")
    d = {str(k).replace("-", "_"): v for k, v in d.items()}
    check_file_settings(d, f"--config {path!r}")
    return d


def default_out(cfg: TrainConfig) -> str:
    """The run directory when none is given: ``runs/<rule>-<feedback>-s<seed>``, or, when that
    exists already, the first free ``…-2``, ``…-3`` (the same command run twice keeps both runs)."""
    import os

    label = cfg.terms.replace(",", "-") if cfg.terms else cfg.rule
    if cfg.layer_rules:
        label = cfg.layer_rules.replace(",", "-").replace("+", "")
    base = f"runs/{label}-{cfg.feedback}-s{cfg.seed}"
    out, n = base, 1
    while os.path.lexists(out):
        n += 1
        out = f"{base}-{n}"
    return out


# --------------------------------------------------------------------------- validation


def layer_term_sets(cfg: TrainConfig) -> tuple[tuple[int, ...], ...]:
    """The active term ids of every weight layer, from ``layer_rules``, ``terms`` or ``rule``."""
    n_layers = len(cfg.hidden) + 1
    parse = parse_terms
    if cfg.terms_from:  # a user's pool: ids from 10 on, and the terms' names (plastic_jax/user_terms.py)
        parse = term_parser(cfg)
    try:
        if cfg.layer_rules:
            parts = [p.strip() for p in cfg.layer_rules.split(",")]
            if len(parts) != n_layers:
                raise ConfigError(
                    f"--layer-rules names {len(parts)} rule(s) but the network has {n_layers} "
                    f"weight layers (hidden sizes {list(cfg.hidden)})"
                )
            return tuple(parse(p.replace("+", ",")) for p in parts)
        terms = parse(cfg.terms if cfg.terms else cfg.rule)
    except RuleError as e:
        raise ConfigError(str(e)) from None
    return (terms,) * n_layers


def class_split(cfg: TrainConfig, n_classes: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The (meta-training, held-out) classes of a run; held-out is None without a split.

    - ``--holdout f``: the classes 0..C-1 are permuted by ``numpy.random.default_rng(split_seed)``;
      the first round(f·C) of the permutation are held out, the rest are for meta-training
      (both returned sorted). Digits with f = 0.5 and split seed 0: 5 and 5 classes.
    - ``--train-classes`` / ``--test-classes``: as given; a side left out is the complement of
      the other.
    Assumes ``validate`` has accepted the settings.
    """
    import numpy as np

    everything = tuple(range(n_classes))
    if cfg.train_classes is None and cfg.test_classes is None:
        if not cfg.holdout:
            return everything, None
        perm = np.random.default_rng(cfg.split_seed).permutation(n_classes)
        n_test = int(np.floor(cfg.holdout * n_classes + 0.5))
        return tuple(sorted(int(c) for c in perm[n_test:])), tuple(sorted(int(c) for c in perm[:n_test]))
    train = cfg.train_classes
    test = cfg.test_classes
    if train is None:
        train = tuple(c for c in everything if c not in set(test))
    if test is None:
        test = tuple(c for c in everything if c not in set(train))
    return tuple(sorted(train)), tuple(sorted(test))


def _check_class_split(cfg: TrainConfig, n_classes: int | None) -> None:
    """The class-split part of ``validate``."""
    explicit = cfg.train_classes is not None or cfg.test_classes is not None
    if explicit and cfg.holdout:
        raise ConfigError("use either --holdout or --train-classes/--test-classes, not both")
    for flag, classes in (("--train-classes", cfg.train_classes), ("--test-classes", cfg.test_classes)):
        if classes is None:
            continue
        if len(classes) == 0:
            raise ConfigError(f"{flag} is empty")
        if len(set(classes)) != len(classes):
            raise ConfigError(f"{flag} lists a class twice: {list(classes)}")
        if n_classes is not None and any(not 0 <= c < n_classes for c in classes):
            raise ConfigError(f"{flag} {list(classes)} has classes outside 0..{n_classes - 1}")
    if cfg.train_classes is not None and cfg.test_classes is not None:
        both = sorted(set(cfg.train_classes) & set(cfg.test_classes))
        if both:
            raise ConfigError(f"class(es) {both} are in both --train-classes and --test-classes")
    if n_classes is None or not (explicit or cfg.holdout):
        return
    train, test = class_split(cfg, n_classes)
    for side, classes in (("meta-training", train), ("held-out", test)):
        if len(classes) < cfg.M:
            how = f"--holdout {cfg.holdout}" if cfg.holdout else "the class lists"
            raise ConfigError(
                f"--M {cfg.M} is larger than the {len(classes)} {side} classes that {how} leaves "
                f"of the dataset's {n_classes}; lower --M or change the split"
            )


def _generic_check(name: str, v: Any) -> str | None:
    """The checks every setting of a type gets: integers within ``maximum`` (default ``INT_MAX``),
    floats finite in float32, strings without NUL characters."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, tuple) and v and all(isinstance(x, float) for x in v) or isinstance(v, float):
        for x in v if isinstance(v, tuple) else (v,):
            if not math.isfinite(x):
                return f"must be finite, got {x!r}"
            if abs(x) > FLOAT32_MAX:
                return f"must be finite in float32 (|x| <= 3.4e38), got {x!r}"
    elif isinstance(v, int) or isinstance(v, tuple):
        top = SETTINGS[name].maximum or INT_MAX
        for x in v if isinstance(v, tuple) else (v,):
            if abs(x) > top:
                return f"must be at most {top}, got {x}"
    elif isinstance(v, str) and "\x00" in v:
        return "must not contain a NUL character"
    return None


def check_settings(cfg: TrainConfig) -> None:
    """The per-setting checks declared with the fields: type, choices, bound (``_generic_check``
    first, then the setting's own)."""
    check_types(cfg)
    for name in SETTINGS:
        msg = setting_error(name, getattr(cfg, name))
        if msg:
            raise ConfigError(msg)


def validate(cfg: TrainConfig, n_classes: int | None = None, min_class_count: int | None = None,
             n_allowed_classes: int | None = None) -> None:
    """Raise ``ConfigError`` for the first bad value. Dataset-dependent checks run when the
    dataset facts are given."""
    check_settings(cfg)
    if cfg.seed + cfg.seeds - 1 > SEED_MAX:
        raise ConfigError(f"--seed {cfg.seed} with --seeds {cfg.seeds} reaches seed {cfg.seed + cfg.seeds - 1}, "
                          f"beyond {SEED_MAX} (PRNG seeds are 32-bit)")
    layer_term_sets(cfg)
    from plastic_jax.data import SOURCES, SPLIT_SOURCES

    if cfg.split is not None and cfg.dataset in SOURCES and cfg.dataset not in SPLIT_SOURCES:
        raise ConfigError(f"--split applies to {', '.join(sorted(SPLIT_SOURCES))}; {cfg.dataset} has no splits")
    _check_class_split(cfg, n_classes)
    if n_allowed_classes is not None and cfg.M > n_allowed_classes:
        raise ConfigError(
            f"--M {cfg.M} is larger than the {n_allowed_classes} classes available to draw tasks from"
        )
    if n_classes is not None and cfg.M > n_classes:
        raise ConfigError(f"--M {cfg.M} is larger than the dataset's {n_classes} classes")
    if min_class_count is not None and cfg.K + cfg.Q > min_class_count:
        raise ConfigError(
            f"--K + --Q = {cfg.K + cfg.Q} is larger than the smallest class ({min_class_count} examples)"
        )
