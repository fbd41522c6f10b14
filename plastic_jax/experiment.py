"""What a config makes, shared by meta-training and ``evaluate``: the data, the class split, the
rule and the episode spec, validated against the dataset.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from plastic_jax.config import ConfigError, TrainConfig, class_split, layer_term_sets, validate
from plastic_jax.data import DataUnavailableError, build_class_index, load_dataset
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec
from plastic_jax.estimators.base import n_weights  # noqa: F401 - evaluate.py imports it from here
from plastic_jax.inner import Rule, make_rule
from plastic_jax.user_terms import pool_of


class Experiment(NamedTuple):
    """The data, the meta-training class index, the rule and the episode spec of a config, and its
    resolved class split (``config.class_split``): the meta-training classes and the held-out ones
    (None: no split). A run records the split in its config.json (``rundir.recorded_config``)."""

    data: Any  # plastic_jax.data.Dataset
    ci: ClassIndex
    rule: Rule
    spec: EpisodeSpec
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...] | None


def load_data(cfg: TrainConfig) -> Any:
    """The dataset of ``cfg`` (checks the settings first); a missing dataset is a ``ConfigError``."""
    validate(cfg)  # cheap checks before touching the data
    try:
        return load_dataset(cfg.dataset, cfg.data_dir, split=cfg.split, download=cfg.download)
    except (ValueError, DataUnavailableError) as e:
        raise ConfigError(str(e)) from None


def rule_of(cfg: TrainConfig, **changes: Any) -> Rule:
    """The plasticity rule of ``cfg`` (``changes`` replace keyword arguments of ``make_rule``); with
    ``terms_from``, on the paper's terms and the user's (``user_terms.pool_of``: refused when the file
    changed since ``cfg`` recorded it)."""
    kw = dict(layer_terms=layer_term_sets(cfg), feedback=cfg.feedback, bp_grad=cfg.bp_grad, f5_f8=cfg.f5_f8,
              per_layer=cfg.per_layer_theta, pool=pool_of(cfg))
    return make_rule(**{**kw, **changes})


def build(cfg: TrainConfig, data: Any = None) -> Experiment:
    """Load (unless ``data`` is given) and validate everything that does not need a device.

    The class index draws tasks from the meta-training side of the class split
    (``config.class_split``), which the experiment carries (``cfg`` is not changed; a run writes it
    into config.json's ``extra["class_split"]``, ``rundir.recorded_config``). With ``terms_from``, building
    the rule checks the user's terms file against the record ``cfg`` carries (a resumed run's); a
    run writes that record (``user_terms.fingerprint``) into config.json (``rundir.recorded_config``).
    """
    if data is None:
        data = load_data(cfg)
    counts = data.class_counts()
    validate(cfg, n_classes=data.n_classes, min_class_count=int(counts[counts > 0].min()))
    train_classes, test_classes = class_split(cfg, data.n_classes)
    ci = build_class_index(data, train_classes)
    spec = EpisodeSpec((data.dim, *cfg.hidden, data.n_classes), cfg.M, cfg.K, cfg.Q, cfg.meta_batch)
    rule = rule_of(cfg)  # checks a user's terms file against the record cfg carries (a resumed run's)
    return Experiment(data, ci, rule, spec, train_classes, test_classes)


# --------------------------------------------------------------------------- memory, before anything runs


def available_memory(devices: int | None = None) -> tuple[int, str]:
    """(bytes, what): the memory the computation can use: the devices' own on an accelerator
    (``bytes_limit`` of the first ``devices`` local devices), else this machine's RAM."""
    import jax

    devs = jax.local_devices()[: devices or None]
    if devs and devs[0].platform != "cpu":
        try:
            limit = sum(int((d.memory_stats() or {}).get("bytes_limit", 0)) for d in devs)
        except Exception:  # noqa: BLE001 - memory_stats is best effort
            limit = 0
        if limit > 0:
            return limit, f"the {len(devs)} {devs[0].platform} device(s)"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0, "this machine"
    return ram, "this machine's RAM"


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(need: int, what: str, lower: str, devices: int | None = None) -> None:
    """``ConfigError`` when ``need`` bytes (a lower bound of what the run keeps in memory at once)
    exceed the memory available (``available_memory``): a clear line instead of an allocation
    failure deep inside XLA, or minutes of swapping."""
    have, where = available_memory(devices)
    if have and need > have:
        raise ConfigError(f"{what} needs at least {_gb(need)} of memory at once, more than {where} ({_gb(have)}); "
                          f"lower {lower}")


def check_training_memory(cfg: TrainConfig, spec: EpisodeSpec, rule: Rule, devices: int | None = None) -> None:
    """Refuse a meta-training run that cannot fit: per seed, what the meta-step keeps at once by
    its estimator's memory model (``estimators.memory_bytes``, the registry's record: W and B per
    task and what the meta-gradient keeps, e.g. forward mode a tangent of W per term, reverse mode
    a snapshot of W per step of the stream), plus the host's accuracy table."""
    from plastic_jax.estimators import REGISTRY, memory_bytes, resolve

    est = resolve(cfg.estimator, rule.n_theta, rule.feedback)
    need = memory_bytes(est, spec, rule, cfg) * cfg.seeds + 8 * cfg.episodes * cfg.seeds
    extra = REGISTRY[est].lower_memory
    check_fits(need, f"meta-training (layer sizes {list(spec.sizes)}, {cfg.seeds} seed(s) × meta-batch "
               f"{cfg.meta_batch}, {est} meta-gradient)",
               f"--hidden, --seeds, --meta-batch{' or ' + extra if extra else ''}", devices)
