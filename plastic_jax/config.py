"""Run configuration and its validation, all in one place.

``TrainConfig`` holds every setting of a meta-training run; ``validate(cfg, data)`` checks it
against the dataset and raises ``ConfigError`` with a one-line message for the first bad value.
The CLI turns a ``ConfigError`` into that message and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from plastic_jax.plasticity import RuleError, parse_terms


class ConfigError(ValueError):
    """A bad setting; the message is one line meant for the user."""


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    split: str | None = None  # tfds split of emnist; None: the source's default ("test")
    download: bool = False  # let tfds download and prepare a missing dataset (needs TensorFlow)
    holdout: float = 0.0  # fraction of classes held out for meta-test (see ``class_split``)
    train_classes: tuple[int, ...] | None = None  # explicit meta-training classes
    test_classes: tuple[int, ...] | None = None  # explicit held-out (meta-test) classes
    split_seed: int = 0  # seed of the class permutation behind --holdout
    rule: str = "f0"
    terms: str | None = None  # comma-separated term ids; overrides ``rule``
    layer_rules: str | None = None  # comma-separated rule names or "+"-joined ids, one per layer
    feedback: str = "fa"
    hidden: tuple[int, ...] = (170, 130, 100, 70)
    episodes: int = 600
    M: int = 5
    K: int = 50
    Q: int = 10
    meta_lr: float = 1e-3
    l1: float = 0.0
    meta_batch: int = 1
    seed: int = 0
    seeds: int = 1
    theta0: float = 1e-3
    estimator: str = "auto"  # meta-gradient estimator (estimators.ESTIMATORS); see docs/PERFORMANCE.md
    analysis_every: int = 10  # alignment/orthonormality every N episodes (0: never)
    out: str = "runs/default"
    checkpoint_every: int = 0  # save a checkpoint every N episodes (0: no checkpoints)
    keep_checkpoints: int = 2  # newest checkpoints kept (>= 2, so a damaged newest has a fallback)
    max_skips: int = 20  # stop after N consecutive skipped (non-finite) meta-updates (0: never)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        for k in ("train_classes", "test_classes"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        d = dict(d)
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if isinstance(v, list) and types[k].startswith("tuple"):
                d[k] = tuple(v)  # JSON and TOML arrays; validate() checks the items
            elif types[k] == "float" and isinstance(v, int) and not isinstance(v, bool):
                d[k] = float(v)
        return cls(**d)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=2)


def load_config_file(path: str) -> dict[str, Any]:
    """The settings in a TOML (``.toml``) or JSON file (anything else) as a dict; keys may use ``-``.

    A run's ``config.json`` is such a file. Keys and types are checked by ``TrainConfig.from_json``
    and ``validate``.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read --config {path!r}: {e.strerror or e}") from None
    try:
        if path.endswith(".toml"):
            import tomllib

            d = tomllib.loads(raw.decode())
        else:
            d = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path!r} does not parse: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"--config {path!r} must hold a table of settings, got {type(d).__name__}")
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def _type_ok(v: Any, ann: str) -> bool | None:
    """Whether ``v`` fits the annotation string ``ann`` (None: an annotation this does not know)."""
    results = []
    for alt in (a.strip() for a in ann.split("|")):
        if alt == "None":
            ok = v is None
        elif alt == "str":
            ok = isinstance(v, str)
        elif alt == "bool":
            ok = isinstance(v, bool)
        elif alt == "int":
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif alt == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif alt == "tuple[int, ...]":
            ok = isinstance(v, (tuple, list)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        elif alt.startswith("dict["):
            ok = isinstance(v, dict)
        else:
            return None
        results.append(ok)
    return any(results)


_TYPE_WORDS = {"str": "a string", "bool": "true or false", "int": "an integer", "float": "a number",
               "tuple[int, ...]": "a list of integers", "None": "null"}


def check_types(cfg: TrainConfig) -> None:
    """Raise ``ConfigError`` for the first setting whose value has the wrong type."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        ok = _type_ok(v, str(f.type))
        if ok is False:
            want = " or ".join(_TYPE_WORDS.get(a.strip(), a.strip()) for a in str(f.type).split("|"))
            raise ConfigError(f"{f.name} (--{f.name.replace('_', '-')}) must be {want}, got {v!r}")


def layer_term_sets(cfg: TrainConfig) -> tuple[tuple[int, ...], ...]:
    """The active term ids of every weight layer, from ``layer_rules``, ``terms`` or ``rule``."""
    n_layers = len(cfg.hidden) + 1
    try:
        if cfg.layer_rules:
            parts = [p.strip() for p in cfg.layer_rules.split(",")]
            if len(parts) != n_layers:
                raise ConfigError(
                    f"--layer-rules names {len(parts)} rule(s) but the network has {n_layers} "
                    f"weight layers (hidden sizes {list(cfg.hidden)})"
                )
            return tuple(parse_terms(p.replace("+", ",")) for p in parts)
        terms = parse_terms(cfg.terms if cfg.terms else cfg.rule)
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
    if not 0.0 <= cfg.holdout < 1.0:
        raise ConfigError(f"--holdout must be a fraction in [0, 1), got {cfg.holdout}")
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


def validate(cfg: TrainConfig, n_classes: int | None = None, min_class_count: int | None = None,
             n_allowed_classes: int | None = None) -> None:
    """Raise ``ConfigError`` for the first bad value. Dataset-dependent checks run when the
    dataset facts are given."""
    from plastic_jax.feedback import FEEDBACK_MODES

    check_types(cfg)
    layer_term_sets(cfg)
    if cfg.feedback not in FEEDBACK_MODES:
        raise ConfigError(f"unknown feedback {cfg.feedback!r}; choose one of {', '.join(FEEDBACK_MODES)}")
    for name in ("episodes", "M", "K", "Q", "meta_batch", "seeds"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v <= 0:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a positive integer, got {v!r}")
    if any(h <= 0 for h in cfg.hidden):
        raise ConfigError(f"--hidden sizes must be positive, got {list(cfg.hidden)}")
    for name, low in (("checkpoint_every", 0), ("keep_checkpoints", 2), ("max_skips", 0)):
        if getattr(cfg, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {getattr(cfg, name)!r}")
    if not math.isfinite(cfg.theta0):
        raise ConfigError(f"theta0 must be finite, got {cfg.theta0!r}")
    if not isinstance(cfg.analysis_every, int) or cfg.analysis_every < 0:
        raise ConfigError(f"--analysis-every must be a non-negative integer, got {cfg.analysis_every!r}")
    if not cfg.meta_lr > 0:
        raise ConfigError(f"--meta-lr must be positive, got {cfg.meta_lr}")
    if not cfg.l1 >= 0:
        raise ConfigError(f"--l1 must be non-negative, got {cfg.l1}")
    from plastic_jax.meta import ESTIMATORS

    if cfg.estimator not in ESTIMATORS:
        raise ConfigError(f"unknown meta-gradient estimator {cfg.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    from plastic_jax.data import SOURCES, SPLIT_SOURCES

    if cfg.split is not None and cfg.dataset in SOURCES and cfg.dataset not in SPLIT_SOURCES:
        raise ConfigError(f"--split applies to {', '.join(sorted(SPLIT_SOURCES))}; {cfg.dataset} has no splits")
    if not isinstance(cfg.split_seed, int):
        raise ConfigError(f"--split-seed must be an integer, got {cfg.split_seed!r}")
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
