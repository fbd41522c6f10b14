"""Run configuration and its validation, all in one place.

``TrainConfig`` holds every setting of a meta-training run; ``validate(cfg, data)`` checks it
against the dataset and raises ``ConfigError`` with a one-line message for the first bad value.
The CLI turns a ``ConfigError`` into that message and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from plastic_jax.plasticity import RuleError, parse_terms


class ConfigError(ValueError):
    """A bad setting; the message is one line meant for the user."""


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: str | None = None
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
    estimator: str = "reverse"
    out: str = "runs/default"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(int(h) for h in d["hidden"])
        return cls(**d)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=2)


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


def validate(cfg: TrainConfig, n_classes: int | None = None, min_class_count: int | None = None,
             n_allowed_classes: int | None = None) -> None:
    """Raise ``ConfigError`` for the first bad value. Dataset-dependent checks run when the
    dataset facts are given."""
    from plastic_jax.feedback import FEEDBACK_MODES

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
    if not cfg.meta_lr > 0:
        raise ConfigError(f"--meta-lr must be positive, got {cfg.meta_lr}")
    if not cfg.l1 >= 0:
        raise ConfigError(f"--l1 must be non-negative, got {cfg.l1}")
    from plastic_jax.meta import ESTIMATORS

    if cfg.estimator not in ESTIMATORS:
        raise ConfigError(f"unknown meta-gradient estimator {cfg.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
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
