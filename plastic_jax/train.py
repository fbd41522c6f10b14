"""The meta-training driver: the only place with I/O. It jits and vmaps the pure core.

``meta_train(cfg)`` runs ``cfg.episodes`` meta-training episodes for ``cfg.seeds`` independent
seeds in one compiled program (vmap over seeds), writes ``config.json`` and ``metrics.jsonl``
to ``cfg.out`` and returns a summary.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
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


class TrainingStopped(RuntimeError):
    """Meta-training stopped early by the divergence guard; the message is one line."""


#: settings a resumed run may change (they do not alter the trajectory of the episodes run so far)
RESUME_MAY_CHANGE = ("episodes", "checkpoint_every", "keep_checkpoints", "max_skips", "out", "extra")


def check_resume(cfg: TrainConfig) -> None:
    """Refuse ``--resume`` when ``cfg`` changes a setting of the run in ``cfg.out`` that shapes it."""
    path = os.path.join(cfg.out, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"--resume: {cfg.out!r} holds no run (no config.json)")
    try:
        with open(path) as f:
            saved = TrainConfig.from_json(json.load(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: cannot read {path}: {str(e).splitlines()[0]}") from None
    for name, old in saved.to_json().items():
        new = cfg.to_json()[name]
        if name not in RESUME_MAY_CHANGE and new != old:
            raise ConfigError(
                f"--resume: {name} is {old!r} in {path} but {new!r} now; only "
                f"{', '.join(RESUME_MAY_CHANGE[:4])} may change on resume"
            )


def read_metrics(path: str, n_seeds: int) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` up to the last complete episode (all seeds present).

    A torn last line (a run killed mid-write) is dropped; a bad line elsewhere is an error.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    recs = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the last line (the file may or may not end in "\n")
                break
            raise ConfigError(f"--resume: {path} line {i + 1} is not JSON; the file is damaged") from None
    by_ep: dict[int, int] = {}
    for r in recs:
        by_ep[r["episode"]] = by_ep.get(r["episode"], 0) + 1
    done = 0
    while by_ep.get(done) == n_seeds:
        done += 1
    return [r for r in recs if r["episode"] < done]


def _fsync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def meta_train(cfg: TrainConfig, *, progress: bool = True, overwrite: bool = False, resume: bool = False,
               devices: Any = None) -> dict[str, Any]:
    """Run meta-training; returns the summary (also written to ``out/summary.json``).

    - ``cfg.checkpoint_every`` > 0: a checkpoint (``plastic_jax.checkpoint``) every that many
      episodes, at the end, and when the guard stops the run.
    - ``resume``: continue the run in ``cfg.out`` from its newest usable checkpoint (or from
      episode 0 when it has none); metrics.jsonl is cut back to that checkpoint's episode.
    - Divergence guard: ``meta_step`` skips a non-finite update; after ``cfg.max_skips``
      consecutive skips of any seed (0: never) the run stops, saves the last finite state and
      raises ``TrainingStopped``.
    - ``devices``: the seed axis is sharded over these (None: all local devices; see
      ``plastic_jax.sharding``).
    """
    from plastic_jax.checkpoint import Checkpointer, CheckpointError, all_finite, atomic_write_json, atomic_write_text
    from plastic_jax.sharding import seed_shardings

    data, ci, rule, spec = build(cfg)
    out = cfg.out
    ckpt_dir = os.path.join(out, "checkpoints")
    metrics_path = os.path.join(out, "metrics.jsonl")
    if resume:
        check_resume(cfg)
    else:
        prepare_out_dir(out, overwrite)
        if not overwrite and os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
            raise ConfigError(f"--out {out!r} holds checkpoints of an earlier run; pass --resume or --overwrite")
        for old in (ckpt_dir, ckpt_dir + "_bad"):
            if os.path.isdir(old):
                shutil.rmtree(old)
        for old in ("metrics.jsonl", "summary.json"):
            if os.path.exists(os.path.join(out, old)):
                os.remove(os.path.join(out, old))
    if not resume:
        atomic_write_json(os.path.join(out, "config.json"), cfg.to_json())
    optimizer, step = make_step(cfg, rule, spec)
    state = init_state(cfg, rule, optimizer)
    analyze = make_analysis(rule, spec)
    base = seed_keys(cfg)
    terms = rule.terms
    ckpt = Checkpointer(ckpt_dir, cfg.keep_checkpoints) if (cfg.checkpoint_every or resume) else None

    accs = np.zeros((cfg.episodes, cfg.seeds))
    start = 0
    if resume:
        recs = read_metrics(metrics_path, cfg.seeds)
        have = max((r["episode"] + 1 for r in recs), default=0)
        try:
            restored = ckpt.restore_latest(jax.device_get(state), max_episode=have)
        except CheckpointError as e:
            raise ConfigError(f"--resume: {e}") from None
        if restored is not None:
            start, state = restored
        if start > cfg.episodes:
            raise ConfigError(f"--resume: the checkpoint is at episode {start}, beyond --episodes {cfg.episodes}")
        recs = [r for r in recs if r["episode"] < start]
        for r in recs:
            accs[r["episode"], r["seed"] - cfg.seed] = r["accuracy"]
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in recs))
        atomic_write_json(os.path.join(out, "config.json"), cfg.to_json())  # e.g. a raised --episodes
        print(f"resuming {out} at episode {start}", file=sys.stderr)

    seed_sh, repl = seed_shardings(cfg.seeds, devices)
    state = jax.device_put(state, seed_sh)
    base = jax.device_put(base, seed_sh)
    ci = jax.device_put(ci, repl)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.episodes, initial=start, unit="ep",
                   desc=f"{cfg.rule if not cfg.terms else cfg.terms}+{cfg.feedback}")
    done = start
    stopped = None
    with open(metrics_path, "a" if resume else "w") as log:
        for ep in range(start, cfg.episodes):
            keys = episode_keys(base, ep)
            # analysis: the same episode(s) as this step, with the Θ the step is given (pre-update)
            an = jax.device_get(analyze(state.theta, keys, ci)) if analysis_due(cfg, ep) else None
            state, m = step(state, keys, ci)
            m, theta, skips = jax.device_get((m, state.theta, state.skips))
            accs[ep] = m["accuracy"]
            for s in range(cfg.seeds):
                rec = {
                    "episode": ep,
                    "seed": cfg.seed + s,
                    "meta_loss": float(m["meta_loss"][s]),
                    "query_loss": float(m["query_loss"][s]),
                    "accuracy": float(m["accuracy"][s]),
                    "skipped": bool(m["skipped"][s]),
                    "consecutive_skips": int(skips[s]),
                    "theta": theta_dict(theta[s], terms),
                }
                if an is not None:
                    rec["alignment"] = [float(v) for v in an["alignment"][s]]
                    rec["orthonormality"] = [float(v) for v in an["orthonormality"][s]]
                log.write(json.dumps(rec) + "\n")
            log.flush()
            done = ep + 1
            if cfg.max_skips and int(skips.max()) >= cfg.max_skips:
                s = int(np.argmax(skips))
                stopped = (
                    f"stopped at episode {ep}: seed {cfg.seed + s} skipped {int(skips[s])} consecutive "
                    f"non-finite meta-updates (--max-skips {cfg.max_skips}); the last finite Θ is in "
                    f"{os.path.join(out, 'summary.json')}"
                )
            if ckpt is not None and (stopped or done == cfg.episodes
                                     or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
                _fsync(log)  # the records of every checkpointed episode are on disk first
                ckpt.save(done, state)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(acc=f"{accs[max(0, ep - 99): ep + 1].mean():.3f}")
            if stopped:
                break
    if bar is not None:
        bar.close()
    if ckpt is not None:
        ckpt.close()

    theta = np.asarray(jax.device_get(state.theta))
    if not all_finite(theta):  # cannot happen: meta_step keeps the last finite Θ
        raise TrainingStopped("non-finite Θ; not written")
    accs = accs[:done]
    last = accs[-min(100, done):]
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
    if stopped:
        summary["episodes_completed"] = done
        summary["stopped"] = stopped
    atomic_write_json(os.path.join(cfg.out, "summary.json"), summary)
    if stopped:
        raise TrainingStopped(stopped)
    return summary
