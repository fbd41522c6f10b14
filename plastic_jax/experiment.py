"""What a config makes, shared by meta-training and ``evaluate``: the data, the class split, the
rule and the episode spec, validated against the dataset.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from plastic_jax.config import ConfigError, TrainConfig, class_split, layer_term_sets, validate
from plastic_jax.data import DataUnavailableError, build_class_index, load_dataset
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec
from plastic_jax.inner import Rule, make_rule


class Experiment(NamedTuple):
    """The data, the meta-training class index, the rule and the episode spec of a config."""

    data: Any  # plastic_jax.data.Dataset
    ci: ClassIndex
    rule: Rule
    spec: EpisodeSpec


def load_data(cfg: TrainConfig) -> Any:
    """The dataset of ``cfg`` (checks the settings first); a missing dataset is a ``ConfigError``."""
    validate(cfg)  # cheap checks before touching the data
    try:
        return load_dataset(cfg.dataset, cfg.data_dir, split=cfg.split, download=cfg.download)
    except (ValueError, DataUnavailableError) as e:
        raise ConfigError(str(e)) from None


def rule_of(cfg: TrainConfig, **changes: Any) -> Rule:
    """The plasticity rule of ``cfg`` (``changes`` replace keyword arguments of ``make_rule``)."""
    kw = dict(layer_terms=layer_term_sets(cfg), feedback=cfg.feedback, bp_grad=cfg.bp_grad, f5_f8=cfg.f5_f8)
    return make_rule(**{**kw, **changes})


def build(cfg: TrainConfig, data: Any = None) -> Experiment:
    """Load (unless ``data`` is given) and validate everything that does not need a device.

    The class index draws tasks from the meta-training side of the class split
    (``config.class_split``); with a split, the resolved classes are recorded in
    ``cfg.extra["class_split"]`` (so they appear in config.json).
    """
    if data is None:
        data = load_data(cfg)
    counts = data.class_counts()
    validate(cfg, n_classes=data.n_classes, min_class_count=int(counts[counts > 0].min()))
    train_classes, test_classes = class_split(cfg, data.n_classes)
    if test_classes is not None:
        cfg.extra["class_split"] = {"train": list(train_classes), "test": list(test_classes)}
    ci = build_class_index(data, train_classes)
    spec = EpisodeSpec((data.dim, *cfg.hidden, data.n_classes), cfg.M, cfg.K, cfg.Q, cfg.meta_batch)
    return Experiment(data, ci, rule_of(cfg), spec)
