"""Replay one meta-training episode of a run exactly: the tasks, initial weights, feedback and Θ
that the meta-step of (member, episode) used.

The meta-step of episode ``e`` of seed ``s`` draws its tasks from the keys
``split(fold_in(PRNGKey(s), e), meta_batch)`` (``train.episode_keys``, ``episode.mean_over_tasks``);
task ``i`` then splits its key into the task sample and the fresh network (``episode.draw``).
Replaying ``fold_in(PRNGKey(s), e)`` itself as an episode key gives another task. Θ is the one the
step was given: the previous record's (post-update) Θ, or the run's initial Θ at episode 0.

    >>> ep = replay_episode("runs/bio-fa", episode=483, seed=3)
    >>> out = plastic_jax.episode.run(ep.theta, ep.rule, ep.spec, ep.task_keys[0], ep.ci)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from plastic_jax.config import ConfigError, TrainConfig
from plastic_jax.runs import member_index, read_config, read_records


class ReplayedEpisode(NamedTuple):
    """Everything one meta-step used, for one member of a run.

    theta: (R,) the Θ the step was given (float32); task_keys: (meta_batch, 2) the tasks' keys;
    tasks, W, B: per task of the meta-batch, ``episode.draw`` of its key (a list, one entry per task);
    record: the metrics.jsonl record of the episode (its ``query_loss`` is the mean over the tasks).
    """

    cfg: TrainConfig
    rule: Any
    spec: Any
    ci: Any
    theta: jax.Array
    task_keys: jax.Array
    tasks: list
    W: list
    B: list
    record: dict[str, Any]


def task_keys(seed: int, episode: int, meta_batch: int) -> jax.Array:
    """The keys of the ``meta_batch`` tasks of ``episode`` for ``seed`` (what the meta-step drew)."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(np.uint32(seed)), episode), meta_batch)


def replay_episode(run_dir: str, episode: int, *, seed: int | None = None, l1: float | None = None,
                   meta_lr: float | None = None) -> ReplayedEpisode:
    """The tasks, initial W and B and Θ of ``episode`` of one member of the run in ``run_dir``.

    ``seed`` (default: the run's first), ``l1`` and ``meta_lr`` (default: the run's first; only
    a sweep has more than one) name the member. ``ConfigError`` (one line) when the run has no
    such member or episode.
    """
    from plastic_jax.episode import draw
    from plastic_jax.experiment import build
    from plastic_jax.inner import initial_theta

    cfg = read_config(run_dir)
    member = {"seed": cfg.seed if seed is None else seed, "l1": cfg.l1_values[0] if l1 is None else l1,
              "meta_lr": cfg.meta_lr_values[0] if meta_lr is None else meta_lr}
    index = member_index(cfg, member)
    if index is None:
        raise ConfigError(f"{run_dir} has no member seed {member['seed']}, l1 {member['l1']:g}, meta_lr "
                          f"{member['meta_lr']:g} (seeds {cfg.seed} … {cfg.seed + cfg.seeds - 1}, l1 "
                          f"{list(cfg.l1_values)}, meta_lr {list(cfg.meta_lr_values)})")
    records = {r["episode"]: r for r in read_records(run_dir)
               if member_index(cfg, r) == index}
    if episode not in records:
        raise ConfigError(f"{run_dir} holds no record of episode {episode} for that member "
                          f"(episodes {min(records, default=0)} … {max(records, default=-1)})")
    exp = build(cfg)
    if episode == 0:
        theta = initial_theta(exp.rule, jnp.float32, cfg.theta0)
    else:
        labels = exp.rule.theta_labels()
        prev = records[episode - 1]["theta"]
        theta = jnp.asarray([prev[k] for k in labels], jnp.float32)
    keys = task_keys(member["seed"], episode, exp.spec.meta_batch)
    drawn = [draw(exp.spec, k, exp.ci, jnp.float32, exp.rule.feedback) for k in keys]
    return ReplayedEpisode(cfg, exp.rule, exp.spec, exp.ci, theta, keys, [d[0] for d in drawn],
                           [d[1] for d in drawn], [d[2] for d in drawn], records[episode])
