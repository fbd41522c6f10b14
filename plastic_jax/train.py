"""The meta-training driver: the only place with I/O. It jits and vmaps the pure core.

``meta_train(cfg)`` runs ``cfg.episodes`` meta-training episodes for ``cfg.seeds`` independent
seeds in one compiled program (vmap over seeds), writes ``config.json`` and ``metrics.jsonl``
to ``cfg.out`` and returns a summary.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from plastic_jax.config import ConfigError, TrainConfig, class_split, layer_term_sets, validate
from plastic_jax.data import DataUnavailableError, build_class_index, load_dataset
from plastic_jax.inner import Rule, initial_theta
from plastic_jax.meta import EpisodeSpec, MetaState, meta_init, meta_step
from plastic_jax.stats import bootstrap_ci


def theta_dict(theta: np.ndarray, terms: tuple[int, ...]) -> dict[str, float]:
    """Θ as ``{"F0": θ_0, ...}`` over the active terms."""
    return {f"F{r}": float(v) for r, v in zip(terms, np.asarray(theta))}


def prepare_out_dir(out: str, overwrite: bool = False) -> None:
    """Create ``out`` and check it is writable; refuse to clobber an earlier run's metrics."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"cannot write to --out {out!r}: {e.strerror or e}") from None
    if not overwrite and os.path.exists(os.path.join(out, "metrics.jsonl")):
        raise ConfigError(
            f"--out {out!r} already holds a run (metrics.jsonl); choose another directory "
            "or pass --overwrite"
        )


def build(cfg: TrainConfig, data=None):
    """Load and validate: returns (data, class index, rule, episode spec).

    The class index draws tasks from the meta-training side of the class split
    (``config.class_split``); with a split, the resolved classes are recorded in
    ``cfg.extra["class_split"]`` (so they appear in config.json).
    """
    if data is None:
        validate(cfg)  # cheap checks before touching the data
        try:
            data = load_dataset(cfg.dataset, cfg.data_dir, split=cfg.split, download=cfg.download)
        except (ValueError, DataUnavailableError) as e:
            raise ConfigError(str(e)) from None
    counts = data.class_counts()
    validate(cfg, n_classes=data.n_classes, min_class_count=int(counts[counts > 0].min()))
    train_classes, test_classes = class_split(cfg, data.n_classes)
    if test_classes is not None:
        cfg.extra["class_split"] = {"train": list(train_classes), "test": list(test_classes)}
    ci = build_class_index(data, train_classes)
    rule = Rule(layer_term_sets(cfg), cfg.feedback)
    sizes = (data.dim, *cfg.hidden, data.n_classes)
    spec = EpisodeSpec(sizes, cfg.M, cfg.K, cfg.Q, cfg.meta_batch)
    return data, ci, rule, spec


def make_step(cfg: TrainConfig, rule: Rule, spec: EpisodeSpec):
    """The jitted meta-step over all seeds: (state[S], keys[S], ci) -> (state[S], metrics[S])."""
    optimizer = optax.adam(cfg.meta_lr)
    step = functools.partial(
        meta_step, rule=rule, spec=spec, optimizer=optimizer, l1=cfg.l1, estimator=cfg.estimator
    )
    return optimizer, jax.jit(jax.vmap(step, in_axes=(0, 0, None)))


def make_analysis(rule: Rule, spec: EpisodeSpec):
    """Jitted ``metrics.episode_analysis`` over all seeds: (theta[S], keys[S], ci) -> dict of [S, L]."""
    from plastic_jax.metrics import episode_analysis

    fn = functools.partial(episode_analysis, rule=rule, spec=spec)
    return jax.jit(jax.vmap(lambda th, k, ci: fn(th, key=k, ci=ci), in_axes=(0, 0, None)))


def analysis_due(cfg: TrainConfig, ep: int) -> bool:
    """Whether episode ``ep`` gets the analysis metrics: every ``analysis_every``-th and the last."""
    return cfg.analysis_every > 0 and (ep % cfg.analysis_every == 0 or ep == cfg.episodes - 1)


def init_state(cfg: TrainConfig, rule: Rule, optimizer) -> MetaState:
    theta = initial_theta(rule, jnp.float32, cfg.theta0)
    return jax.vmap(lambda _: meta_init(theta, optimizer))(jnp.arange(cfg.seeds))


def seed_keys(cfg: TrainConfig) -> jax.Array:
    """One base key per seed: seed s of a multi-seed run is the single-seed run ``cfg.seed + s``."""
    return jnp.stack([jax.random.PRNGKey(cfg.seed + s) for s in range(cfg.seeds)])


def episode_keys(base: jax.Array, episode: int) -> jax.Array:
    """The key of episode ``episode`` for every seed: a pure function of (seed, episode)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, episode))(base)


def meta_train(cfg: TrainConfig, *, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run meta-training; returns the summary (also written to ``out/summary.json``)."""
    data, ci, rule, spec = build(cfg)
    prepare_out_dir(cfg.out, overwrite)
    cfg.dump(os.path.join(cfg.out, "config.json"))
    optimizer, step = make_step(cfg, rule, spec)
    state = init_state(cfg, rule, optimizer)
    analyze = make_analysis(rule, spec)
    base = seed_keys(cfg)
    terms = rule.terms

    accs = np.zeros((cfg.episodes, cfg.seeds))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.episodes, desc=f"{cfg.rule if not cfg.terms else cfg.terms}+{cfg.feedback}",
                   unit="ep")
    with open(os.path.join(cfg.out, "metrics.jsonl"), "w") as log:
        for ep in range(cfg.episodes):
            keys = episode_keys(base, ep)
            # analysis: the same episode(s) as this step, with the Θ the step is given (pre-update)
            an = jax.device_get(analyze(state.theta, keys, ci)) if analysis_due(cfg, ep) else None
            state, m = step(state, keys, ci)
            m, theta = jax.device_get((m, state.theta))
            accs[ep] = m["accuracy"]
            for s in range(cfg.seeds):
                rec = {
                    "episode": ep,
                    "seed": cfg.seed + s,
                    "meta_loss": float(m["meta_loss"][s]),
                    "query_loss": float(m["query_loss"][s]),
                    "accuracy": float(m["accuracy"][s]),
                    "skipped": bool(m["skipped"][s]),
                    "theta": theta_dict(theta[s], terms),
                }
                if an is not None:
                    rec["alignment"] = [float(v) for v in an["alignment"][s]]
                    rec["orthonormality"] = [float(v) for v in an["orthonormality"][s]]
                log.write(json.dumps(rec) + "\n")
            log.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(acc=f"{accs[max(0, ep - 99): ep + 1].mean():.3f}")
    if bar is not None:
        bar.close()

    theta = np.asarray(jax.device_get(state.theta))
    last = accs[-min(100, cfg.episodes):]
    # 98% percentile-bootstrap CI (500 resamples) over the seeds of the per-seed means (SPEC §6)
    _, lo, hi = bootstrap_ci(last.mean(axis=0), level=0.98, n_resamples=500)
    summary = {
        "episodes": cfg.episodes,
        "seeds": [cfg.seed + s for s in range(cfg.seeds)],
        "last100_accuracy": float(last.mean()),
        "last100_accuracy_per_seed": [float(a) for a in last.mean(axis=0)],
        "last100_accuracy_ci98": [float(lo), float(hi)],
        "theta": [theta_dict(t, terms) for t in theta],
    }
    with open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary
