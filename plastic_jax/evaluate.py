"""Meta-test (``plastic-jax evaluate``): a fixed Θ on new tasks from the held-out classes.

Fresh networks learn each task online with the rule's Θ (no meta-learning here); the mean query
accuracy over N tasks is compared with the baselines on *the same tasks* (same task keys, hence
the same examples, stream order, initial W and feedback B):

- ``learned``: the run's rule and Θ (``summary.json``, else the last ``metrics.jsonl`` record of
  the chosen seed), or a rule and Θ given by hand (``--rule``/``--terms`` with ``--theta``);
- ``f0+bp``: online SGD, W ← W + θ_0 F0 with B = W;
- ``f0+fa``: feedback alignment, the same with fixed random B;
- ``f0+<mode>``, only when the rule's feedback is another mode (``dfa``, ``sign``, ``kp``,
  ``plastic``, ``routing``; ``baselines``): the same F0 with the run's own feedback, so that the
  learned rule is also compared with plain F0 under the teaching signals it was trained with.
  ``plastic`` and ``routing`` have meta-parameters of their own after θ_0 in Θ; this baseline
  keeps them at their initial values (``baseline_theta``; ``inner.initial_theta``): Θ^B = 0
  (``plastic`` then starts as, and here stays, ``fa``) and φ = 0 (every routing gate at ½). Its
  ``theta`` in the results lists them, and its ``theta_source`` says so.

**Baseline θ_0.** By default each baseline's θ_0 is the best of a small log grid
(``BASELINE_GRID``) by mean query accuracy on ``--tune-tasks`` tasks drawn from the
*meta-training* classes (other keys than the test tasks): the baselines get the same data to
tune on that the learned rule was meta-trained on, and never see the held-out classes.
``--baseline-lr`` fixes θ_0 for every baseline instead.

**Intervals.** The headline (the table's "98% CI", JSON ``ci98``) is a 98% percentile-bootstrap
interval over seeds *and* tasks (``seeds_tasks_ci``): every meta-training seed's Θ is tested on
the same N tasks, so the accuracies form a seeds × tasks table, and each resample draws S seeds
and, independently, N tasks with replacement (a two-way bootstrap of that crossed table; the
drawn tasks are the same for every drawn seed, as they are in the data). It accounts for both
sources of variation: which seeds meta-training happened to run, and which tasks were drawn.
With one seed (a baseline, a Θ by hand, ``--seed-index``) it is the bootstrap over tasks.
Paired differences (learned − baseline, same tasks) get the same interval. JSON ``ci95`` keeps
the earlier 95% t-interval over tasks of the seed-averaged accuracy (mean ± t_{0.975, N-1} ·
s / √N, ddof = 1), which ignores the spread between seeds.

All tasks of one rule run in one jitted call: ``episode.task_loss`` vmapped over task keys (and
over the θ_0 grid when tuning); inside, the episode is one ``lax.scan`` over the stream.

Library: ``evaluate_run(run_dir, ...)`` and ``evaluate_rule(cfg, theta, ...)`` return the results
as a dict; ``cmd_evaluate`` is the CLI over them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import os
import stat
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plastic_jax import checks, rundir
from plastic_jax.atomic import atomic_write_json
from plastic_jax.config import (
    FLOAT32_MAX,
    INT_MAX,
    SEED_MAX,
    SETTINGS,
    ConfigError,
    TrainConfig,
    add_config_flags,
    check_settings,
)
from plastic_jax.data import build_class_index
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.episode import EpisodeSpec, _run, check_episode
from plastic_jax.experiment import build, rule_of
from plastic_jax.inner import Rule, make_rule
from plastic_jax.network import forward

#: θ_0 grid for the baselines: 10^(-3 … 0) in half decades
BASELINE_GRID = (1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1, 3.16e-1, 1.0)
#: fold_in constants that separate evaluation and tuning keys from meta-training's
#: (meta-training folds in the episode number, which stays far below these)
EVAL_STREAM = 2**31 - 1
TUNE_STREAM = 2**31 - 2


@functools.partial(jax.jit, static_argnames=("rule", "spec"))
def task_accuracies(thetas: jax.Array, keys: jax.Array, ci: ClassIndex, *, rule: Rule,
                    spec: EpisodeSpec) -> jax.Array:
    """Query accuracy of every Θ on every task: thetas (G, ``rule.n_theta``), keys (N, 2) → (G, N).

    A task key draws the task and the initial network exactly as in meta-training
    (``episode.task_loss``), so the same keys mean the same tasks for every rule.

    **Non-finite values give NaN, never a plausible accuracy**, called directly or under an outer
    ``jax.jit``/``vmap`` alike (this function is itself jitted, so Θ's values are never read in
    Python): the accuracy is NaN on every task of a row of ``thetas`` with a NaN or ±inf entry, and
    on every task whose adapted network gives a non-finite query output (a huge Θ such as 1e30
    overflows the episode; ``argmax`` over NaN logits would pick class 0 and score a chance-level
    number). A diverged row thus stays visible without discarding the other rows of a grid; use
    ``np.isnan`` (or ``nan_to_num`` to rank a grid) on the result. Shapes are checked at trace time
    (``checks.PlasticJaxError``).
    """
    if len(thetas.shape) != 2:
        checks.fail("task_accuracies", f"thetas must be 2-D (one Θ per row), got shape {tuple(thetas.shape)}")
    check_episode("task_accuracies", thetas[0], rule, spec, ci)

    def one(theta, key):
        out = _run(theta, rule, spec, key, ci)
        logits = forward(out.W, out.task.xq).zs[-1]
        ok = jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(logits))
        return jnp.where(ok, out.accuracy, jnp.nan)

    return jax.vmap(lambda th: jax.vmap(lambda k: one(th, k))(keys))(thetas)


def stream_keys(seed: int, stream: int, n: int) -> jax.Array:
    """n task keys of one stream: split(fold_in(PRNGKey(seed), stream), n) → (n, 2)."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), stream), n)


def mean_ci95(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Mean and 95% t-interval of a sample (N ≥ 2): mean ± t_{0.975,N-1} s/√N."""
    from scipy.stats import t

    v = np.asarray(values, np.float64)
    n = len(v)
    mean = float(v.mean())
    half = float(t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, (mean - half, mean + half)


#: the headline interval: level and resamples of ``seeds_tasks_ci`` (its RNG seed is fixed: 0)
CI_LEVEL = 0.98
CI_RESAMPLES = 2000
#: what the headline interval is, as the table and the JSON (``ci98_interval``) say it
CI98_INTERVAL = ("98% CI over seeds and tasks: percentile bootstrap, seeds and tasks resampled independently "
                 f"(two-way, the same tasks for every seed), {CI_RESAMPLES} resamples; one seed: over tasks")


#: the most index entries one chunk of resamples holds (keeps ``--tasks 100000`` in tens of MB)
_CHUNK_ENTRIES = 2**21


def seeds_tasks_resamples(acc: np.ndarray, n_resamples: int = CI_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap means of ``acc`` (S seeds × N tasks, every seed on the same N tasks), shape
    (n_resamples,): resample b draws N task indices and, independently, S seed indices, uniformly
    with replacement, and takes the mean of ``acc`` over every drawn seed × every drawn task.

    The draws: row b of ``default_rng([seed, 0]).integers(0, N, (n_resamples, N))`` (tasks) and
    of ``default_rng([seed, 1]).integers(0, S, (n_resamples, S))`` (seeds); with one seed the
    task draws are those of a plain bootstrap over tasks from the first generator.

    The variance of these means is exactly mean(r²)/S + mean(c²)/N + mean(e²)/(S·N), where r, c
    and e are the seed, task and residual effects of ``acc``'s two-way decomposition
    (acc = grand mean + r_s + c_t + e_st): both sources count (a nested bootstrap, with tasks
    drawn anew for each seed, would divide the task part by S although the seeds share the tasks).
    """
    acc = np.asarray(acc, np.float64)
    if acc.ndim != 2 or 0 in acc.shape:
        raise ValueError(f"acc must be a non-empty (seeds, tasks) table, got shape {acc.shape}")
    n_seeds, n_tasks = acc.shape
    task_rng, seed_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ENTRIES // max(n_seeds, n_tasks))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        task_counts = _counts(task_rng.integers(0, n_tasks, (b, n_tasks)), n_tasks)
        seed_counts = _counts(seed_rng.integers(0, n_seeds, (b, n_seeds)), n_seeds)
        out[start:start + b] = np.einsum("bs,st,bt->b", seed_counts, acc, task_counts) / (n_seeds * n_tasks)
    return out


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of 0 … n−1 was drawn, row by row: (B, k) indices → (B, n) counts."""
    flat = (np.arange(len(draws))[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=len(draws) * n).reshape(len(draws), n).astype(np.float64)


def seeds_tasks_ci(acc: np.ndarray, level: float = CI_LEVEL, n_resamples: int = CI_RESAMPLES,
                   seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of ``acc`` (S seeds × N tasks, or N tasks: one seed) and its percentile-bootstrap
    interval at ``level`` over seeds and tasks: the ((1 − level)/2, (1 + level)/2) quantiles of
    ``seeds_tasks_resamples``. One seed: the percentile bootstrap over tasks. A NaN accuracy (a
    diverged Θ) makes the mean and the interval NaN."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    acc = np.atleast_2d(np.asarray(acc, np.float64))
    means = seeds_tasks_resamples(acc, n_resamples, seed)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(acc.mean()), (float(lo), float(hi))


#: the baselines every meta-test has, by feedback mode
BASELINE_FEEDBACKS = ("bp", "fa")


def baselines(feedback: str) -> tuple[str, ...]:
    """The feedback modes of the baselines for a rule with ``feedback``: ``bp`` and ``fa``, and
    the rule's own mode when it is another one (``f0+dfa``, ``f0+routing``, …)."""
    return BASELINE_FEEDBACKS + (() if feedback in BASELINE_FEEDBACKS else (feedback,))


def baseline_rule(feedback: str, n_layers: int) -> Rule:
    """``f0`` on every layer with ``feedback``."""
    return make_rule(layer_terms=((0,),) * n_layers, feedback=feedback)


def baseline_theta(rule: Rule, theta0: float) -> np.ndarray:
    """Θ of a baseline ``rule`` (``baseline_rule``): θ_0, then the feedback mode's meta-parameters
    at their initial values (``inner.initial_theta``: Θ^B = 0, φ = 0 → gates ½), shape
    (``rule.n_theta``,)."""
    return np.array([theta0] + [0.0] * rule.n_feedback, np.float32)


def baseline_note(rule: Rule) -> str:
    """What a baseline's Θ holds besides θ_0 ('' when nothing): the mode's initial meta-parameters."""
    if not rule.n_feedback:
        return ""
    labels = rule.theta_labels()[1:]
    what = {"plastic": "Θ^B = 0, B as in fa", "routing": "φ = 0, every gate sigmoid(φ) = ½"}.get(
        rule.feedback, "0")
    return f"; {', '.join(labels)} at the mode's initial values ({what})"


def tune_baseline(feedback: str, n_layers: int, spec: EpisodeSpec, ci: ClassIndex, keys: jax.Array,
                  grid: tuple[float, ...]) -> tuple[float, list[float]]:
    """Best θ_0 of ``grid`` for ``f0`` with ``feedback`` by mean accuracy on the tasks of ``keys``
    (the mode's own meta-parameters, if any, at their initial values: ``baseline_theta``)."""
    rule = baseline_rule(feedback, n_layers)
    rows = np.stack([baseline_theta(rule, v) for v in grid])
    accs = np.asarray(task_accuracies(jnp.asarray(rows, jnp.float32), keys, ci, rule=rule, spec=spec))
    means = [float(m) for m in np.nan_to_num(accs, nan=0.0).mean(axis=1)]
    return float(grid[int(np.argmax(means))]), means


def read_learned_theta(run_dir: str, cfg: TrainConfig, terms: tuple[int, ...],
                       seed_index: int = 0) -> tuple[np.ndarray, str]:
    """Θ of seed ``cfg.seed + seed_index`` of a run, ordered as ``terms``; and where it came from
    (summary.json, else the seed's last metrics.jsonl record)."""
    if seed_index < 0:
        raise ConfigError(f"--seed-index must be a non-negative integer, got {seed_index}")
    summary = rundir.read_summary(run_dir)
    theta: Any = None
    if summary is not None:
        thetas = summary.get("theta", [])
        if not isinstance(thetas, list):
            raise rundir.RunDirError(f"{os.path.join(run_dir, rundir.SUMMARY)}: 'theta' must be a list with one "
                                     f"table per seed, got {type(thetas).__name__}")
        if seed_index >= len(thetas):
            raise ConfigError(f"--seed-index {seed_index}: the run has {len(thetas)} seed(s)")
        theta, source = thetas[seed_index], os.path.join(run_dir, rundir.SUMMARY)
    else:
        metrics_path = os.path.join(run_dir, rundir.METRICS)
        if not os.path.exists(metrics_path):
            raise ConfigError(f"{run_dir} holds neither summary.json nor metrics.jsonl")
        seed = cfg.seed + seed_index
        mine = [r for r in rundir.read_records(run_dir) if r.get("seed") == seed]
        if not mine:
            raise ConfigError(f"{metrics_path} has no record of seed {seed}")
        theta, source = mine[-1].get("theta"), f"{metrics_path} (episode {mine[-1]['episode']})"
    if not isinstance(theta, dict):
        raise ConfigError(f"{source} holds no Θ table for seed index {seed_index}")
    names = [r if isinstance(r, str) else f"F{r}" for r in terms]  # Rule.theta_labels, or term ids
    missing = [n for n in names if n not in theta]
    if missing:
        raise ConfigError(f"the run's Θ lacks {', '.join(missing)}; give --theta by hand")
    values = [theta[n] for n in names]
    bad = [f"{n}={v!r}" for n, v in zip(names, values)
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite32(v)]
    if bad:
        raise rundir.RunDirError(f"{source}: Θ must hold finite numbers, got {', '.join(bad)}; the file is damaged "
                                 "(or give --theta by hand)")
    return np.array(values, np.float32), source


def _finite32(v: float) -> bool:
    """Finite in float32 (``config.FLOAT32_MAX``)."""
    return math.isfinite(v) and abs(v) <= FLOAT32_MAX


def check_theta(theta: Any, n_terms: int, terms: tuple[int, ...]) -> np.ndarray:
    """Θ as float32, one finite value per term; ``ConfigError`` otherwise."""
    values = list(np.asarray(theta, np.float64).reshape(-1))
    if len(values) != n_terms:
        raise ConfigError(
            f"--theta has {len(values)} value(s) but the rule has {n_terms} term(s) "
            f"({', '.join(r if isinstance(r, str) else f'F{r}' for r in terms)})"
        )
    bad = [str(v) for v in values if not _finite32(float(v))]
    if bad:
        raise ConfigError(f"--theta must be finite numbers (in float32, |x| <= 3.4e38), got {', '.join(bad)}")
    return np.asarray(values, np.float32)


def _check_options(tasks: int, tune_tasks: int, baseline_grid: tuple[float, ...], baseline_lr: float | None,
                   seed: int = 0) -> None:
    if tasks < 2:
        raise ConfigError(f"--tasks must be at least 2 (for a confidence interval), got {tasks}")
    if tune_tasks < 1:
        raise ConfigError(f"--tune-tasks must be a positive integer, got {tune_tasks}")
    for flag, n in (("--tasks", tasks), ("--tune-tasks", tune_tasks)):
        if n > INT_MAX:
            raise ConfigError(f"{flag} must be at most {INT_MAX}, got {n}")
    if not baseline_grid or any(not (v > 0 and _finite32(v)) for v in baseline_grid):
        raise ConfigError(f"--baseline-grid must list positive finite values, got {','.join(map(str, baseline_grid))}")
    if baseline_lr is not None and not (baseline_lr > 0 and _finite32(baseline_lr)):
        raise ConfigError(f"--baseline-lr must be positive and finite, got {baseline_lr}")
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be in 0 … {SEED_MAX} (PRNG seeds are 32-bit), got {seed}")


def check_json_out(path: str | None, flag: str = "--json") -> None:
    """Refuse an output file that cannot be written, before any work: a directory, a path under a
    file or a missing directory."""
    if path is None:
        return
    if not path.strip() or "\x00" in path:
        raise ConfigError(f"{flag} must name a file, got {path!r}")
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path!r} is a directory; give a file name")
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        # the file is written through a temporary file and os.replace, which would replace the node
        raise ConfigError(f"{flag} {path!r} is not a regular file (a FIFO, device or socket); give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        why = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ConfigError(f"cannot write {flag} {path!r}: {parent} {why}")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ConfigError(f"cannot write {flag} {path!r}: permission denied")


def check_evaluation_memory(cfg: TrainConfig, spec: EpisodeSpec, data: Any, tasks: int, tune_tasks: int,
                            n_grid: int) -> None:
    """Refuse a meta-test that cannot fit: every task (and every θ_0 of the tuning grid) runs at
    once, each with its network (W, B) and its stream."""
    from plastic_jax.experiment import check_fits, n_weights

    per_task = 4 * (2 * n_weights(spec.sizes) + (spec.M * (spec.K + spec.Q)) * data.dim) + 8
    need = per_task * max(tasks, tune_tasks * n_grid)
    check_fits(need, f"evaluating {tasks} task(s) ({tune_tasks} × {n_grid} for tuning) on layer sizes "
               f"{list(spec.sizes)}", "--tasks, --tune-tasks or --hidden")


def run_config(run_dir: str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config to evaluate: the run's (``TrainConfig()`` without a run), with ``overrides``
    (settings by name, e.g. ``{"M": 3, "test_classes": (7, 8, 9)}``)."""
    if run_dir is None:
        cfg = TrainConfig()
    else:
        if not os.path.exists(os.path.join(run_dir, rundir.CONFIG)):
            raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
        cfg = rundir.read_config(run_dir)
    cfg = TrainConfig.from_json({**cfg.to_json(), **(overrides or {}), "meta_batch": 1})
    # every setting on its own (type, bound, choices), as meta-train's; before anything builds a rule
    # from them (``evaluate_run`` reads the run's Θ by the rule's terms before ``build`` validates)
    check_settings(cfg)
    return cfg


@contextlib.contextmanager
def _timed(progress: bool, what: str) -> Iterator[None]:
    """With ``progress``: "evaluate: WHAT … (N s)" on stderr around the block."""
    if not progress:
        yield
        return
    t0 = time.perf_counter()
    print(f"evaluate: {what} …", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        print(f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)


def across_seeds(means: list[float]) -> tuple[float, list[float] | None]:
    """Mean of per-seed means and its 95% t-interval over the meta-training seeds (None for one)."""
    if len(means) < 2:
        return float(np.mean(means)), None
    m, (lo, hi) = mean_ci95(np.asarray(means))
    return m, [lo, hi]


def evaluate_rule(cfg: TrainConfig, theta: Any, *, source: str = "given", tasks: int = 100, seed: int = 0,
                  baseline_lr: float | None = None, baseline_grid: tuple[float, ...] = BASELINE_GRID,
                  tune_tasks: int = 20, run_dir: str | None = None, label: str = "given",
                  seeds: list[int] | None = None, progress: bool = False) -> dict[str, Any]:
    """Meta-test the rule of ``cfg`` (rule/terms/layer_rules, feedback, f5_f8) with Θ = ``theta``
    (one value per term, in increasing term order, then the feedback mode's meta-parameters:
    ``Rule.theta_labels``) on ``tasks`` tasks from ``cfg``'s held-out classes, against f0+bp and
    f0+fa (and f0+<mode> for another feedback mode: ``baselines``) on the same tasks; returns the
    JSON-ready results.

    ``theta`` may hold one row per meta-training seed (``seeds``: their seed numbers): the rule's
    accuracy on a task is then the mean over the seeds, ``per_seed`` has each seed's results and
    ``across_seeds`` the 95% t-interval over the seeds' means (None for one seed). ``label``: the
    rule's name in the results, "given" for a Θ by hand, "learned" for a run's (``evaluate_run``).
    The baselines' θ_0 is ``baseline_lr``, else the best of ``baseline_grid`` on ``tune_tasks``
    tasks from the meta-training classes; a baseline's feedback meta-parameters (``plastic``,
    ``routing``) stay at their initial values (``baseline_theta``). ``seed`` seeds the test and
    tuning tasks. ``progress``: say on stderr what runs and how long it took.

    Every rule and every paired difference has ``ci98``, the headline interval over seeds and
    tasks (``seeds_tasks_ci``; a baseline's, with one Θ, over tasks), and ``ci95``, the 95%
    t-interval over tasks of the seed-averaged accuracy; ``ci98_interval`` says what ``ci98`` is.
    """
    _check_options(tasks, tune_tasks, tuple(baseline_grid), baseline_lr, seed)
    rows = np.asarray(theta, np.float64)
    theta, rows = (rows[0], rows[1:]) if rows.ndim == 2 else (rows, rows[:0])
    data, ci_train, rule, spec, _, held_out = build(cfg)
    warn_other_data(cfg, data, run_dir)
    terms = rule.theta_labels()
    theta = check_theta(theta, rule.n_theta, terms)
    thetas = np.stack([theta] + [check_theta(t, len(theta), terms) for t in rows])
    check_evaluation_memory(cfg, spec, data, tasks, 0 if baseline_lr is not None else tune_tasks, len(baseline_grid))
    test_classes = held_out
    if test_classes is None:
        print("warning: the run has no class split (--holdout / --test-classes); evaluating on all "
              "classes, which meta-training also drew from", file=sys.stderr)
        test_classes = tuple(range(data.n_classes))
    ci_test = build_class_index(data, test_classes)

    n_layers = rule.n_layers
    feedbacks = baselines(rule.feedback)
    names = [f"f0+{fb}" for fb in feedbacks]
    test_keys = stream_keys(seed, EVAL_STREAM, tasks)
    tuning: dict[str, Any] = {}
    baseline_lr_of: dict[str, float] = {}
    for fb in feedbacks:
        if baseline_lr is not None:
            baseline_lr_of[fb] = float(baseline_lr)
        else:
            tune_keys = stream_keys(seed, TUNE_STREAM, tune_tasks)
            with _timed(progress, f"tuning θ_0 of f0+{fb} ({len(baseline_grid)} values × {tune_tasks} tasks)"):
                best, means = tune_baseline(fb, n_layers, spec, ci_train, tune_keys, tuple(baseline_grid))
            baseline_lr_of[fb] = best
            tuning[f"f0+{fb}"] = {"grid": list(baseline_grid), "mean_accuracy": means, "chosen": best,
                                 "tasks": tune_tasks, "classes": [int(c) for c in np.asarray(ci_train.classes)]}

    how = "--baseline-lr" if baseline_lr is not None else "tuned on meta-training classes"
    entries = [(label, rule, theta, source)]
    for fb in feedbacks:
        r = baseline_rule(fb, n_layers)
        entries.append((f"f0+{fb}", r, baseline_theta(r, baseline_lr_of[fb]), how + baseline_note(r)))
    rules, per_task = [], {}
    for name, r, th, src in entries:
        ths = thetas if name == label else np.asarray(th)[None, :]
        what = f"{name} on {tasks} tasks" + (f" × {len(ths)} seeds" if len(ths) > 1 else "")
        with _timed(progress, what):
            each = np.asarray(task_accuracies(jnp.asarray(ths), test_keys, ci_test, rule=r, spec=spec))
        accs = each.mean(axis=0)  # a run's several seeds: the mean over them, task by task
        if name == label:
            seed_accs = each
        per_task[name] = accs
        mean, (lo, hi) = mean_ci95(accs)
        rules.append({
            "name": name, "mean_accuracy": mean, "ci95": [lo, hi], "ci98": list(seeds_tasks_ci(each)[1]),
            "tasks": int(tasks), "feedback": r.feedback, "terms": list(r.terms),
            "theta": dict(zip(r.theta_labels(), map(float, th))), "theta_source": src,
        })
    paired = []
    for base in names:
        mean, (lo, hi) = mean_ci95(per_task[label] - per_task[base])
        ci98 = seeds_tasks_ci(seed_accs - per_task[base][None, :])[1]  # seed by seed, on the same tasks
        paired.append({"name": f"{label} - {base}", "mean_difference": mean, "ci95": [lo, hi], "ci98": list(ci98)})
    per_seed = []
    for s, (accs, th) in enumerate(zip(seed_accs, thetas)):
        if seeds is None:
            break  # a Θ by hand: no meta-training seeds
        mean, (lo, hi) = mean_ci95(accs)
        per_seed.append({"seed": seeds[s], "mean_accuracy": mean, "ci95": [lo, hi],
                         "theta": dict(zip(list(rules[0]["theta"]), map(float, th))),
                         "differences": {b: float((accs - per_task[b]).mean()) for b in names}})
    if len(thetas) > 1:
        rules[0]["theta"] = None  # one per seed: per_seed
    rules[0]["seeds"] = len(thetas)
    over_seeds = None
    if per_seed:
        m, ci = across_seeds([p["mean_accuracy"] for p in per_seed])
        over_seeds = {"seeds": len(per_seed), "mean_accuracy": m, "ci95": ci,
                      "paired_differences": [
                          dict(zip(("name", "mean_difference", "ci95"),
                                   (f"{label} - {b}", *across_seeds([p["differences"][b] for p in per_seed]))))
                          for b in names],
                      "interval": "95% t-interval over the meta-training seeds' mean accuracies (none for one seed)"}
    return {
        "per_seed": per_seed,
        "across_seeds": over_seeds,
        "rules": rules,
        "paired_differences": paired,
        "run_dir": run_dir,
        "dataset": cfg.dataset,
        "test_classes": [int(c) for c in test_classes],
        "held_out": held_out is not None,
        "M": cfg.M, "K": cfg.K, "Q": cfg.Q, "hidden": list(cfg.hidden),
        "seed": seed,
        "baseline_tuning": tuning,
        "interval": "95% t-interval over tasks",
        "ci98_interval": CI98_INTERVAL,
        "ci98_resamples": CI_RESAMPLES,
    }


def warn_other_data(cfg: TrainConfig, data: Any, run_dir: str | None) -> None:
    """Warn on stderr when the data loaded now is not what the run in ``run_dir`` was meta-trained on
    (its recorded fingerprint, ``rundir.data_fingerprint``): its "held-out" classes may then not be
    held out, and its Θ was learned on other examples. Runs without a fingerprint are not checked."""
    old = cfg.extra.get("fingerprint") if run_dir is not None else None
    if old is None:
        return
    change = rundir.fingerprint_change(old, rundir.data_fingerprint(data, cfg))
    if change:
        print(f"warning: {run_dir} was meta-trained on other data: {change}", file=sys.stderr)


def evaluate_run(run_dir: str, *, seed_index: int | None = None, overrides: dict[str, Any] | None = None,
                 **options: Any) -> dict[str, Any]:
    """Meta-test the learned Θ of the run in ``run_dir`` (every seed, or seed ``seed_index``; from
    summary.json, else metrics.jsonl) on its held-out classes; ``overrides`` change the run's
    settings and ``options`` are ``evaluate_rule``'s."""
    _check_options(options.get("tasks", 100), options.get("tune_tasks", 20),
                   tuple(options.get("baseline_grid", BASELINE_GRID)), options.get("baseline_lr"),
                   options.get("seed", 0))
    cfg = run_config(run_dir, overrides)
    indices = range(cfg.seeds) if seed_index is None else [seed_index]
    read = [read_learned_theta(run_dir, cfg, rule_of(cfg).theta_labels(), i) for i in indices]
    return evaluate_rule(cfg, np.stack([t for t, _ in read]), source=read[0][1], run_dir=run_dir, label="learned",
                         seeds=[cfg.seed + i for i in indices], **options)


def _headline(item: dict[str, Any]) -> list[float]:
    """The interval the table shows for a rule or a paired difference: ``ci98`` (over seeds and
    tasks), else ``ci95`` (results written before ``ci98`` existed)."""
    return item.get("ci98") or item["ci95"]


def _headline_note(seeds: int, tasks: int, resamples: int) -> str:
    """The line under the table that says what its 98% CI is."""
    how = f"percentile bootstrap, {resamples} resamples (JSON ci98; ci95 is the 95% t-interval over tasks)"
    if seeds < 2:
        return f"98% CI over tasks (one seed): {how}"
    return (f"98% CI over seeds and tasks ({seeds} seeds × {tasks} tasks, resampled independently; the "
            f"baselines' over tasks): {how}")


def format_table(res: dict[str, Any]) -> str:
    """The results as a plain-text table; the line under it says which interval it shows."""
    w = max([8] + [len(r["name"]) for r in res["rules"]])
    new = "ci98" in res["rules"][0]
    lines = [
        f"meta-test on {res['dataset']}: {res['rules'][0]['tasks']} tasks, {res['M']}-way, K={res['K']}, "
        f"Q={res['Q']}, classes {res['test_classes']}"
        + ("" if res["held_out"] else " (no held-out classes)"),
        f"{'rule':<{w}} {'feedback':<8} {'mean acc':>8}  {'98% CI' if new else '95% CI':<17}  theta",
    ]
    for r in res["rules"]:
        th = " ".join(f"{k}={v:+.5f}" for k, v in r["theta"].items()) if r["theta"] else "Θ per seed below"
        lo, hi = _headline(r)
        lines.append(f"{r['name']:<{w}} {r['feedback']:<8} {r['mean_accuracy']:>8.4f}  [{lo:.4f}, {hi:.4f}]  "
                     f"{th} ({r['theta_source']})")
    for p in res["paired_differences"]:
        lo, hi = _headline(p)
        lines.append(f"{p['name']}: {p['mean_difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired, same tasks)")
    if new:
        lines.append(_headline_note(res["rules"][0].get("seeds", 1), res["rules"][0]["tasks"],
                                    res.get("ci98_resamples", CI_RESAMPLES)))
    if res.get("per_seed"):
        lines.append("per seed (95% t-interval over tasks):")
    for p in res.get("per_seed", []):
        lo, hi = p["ci95"]
        th = " ".join(f"{k}={v:+.5f}" for k, v in p["theta"].items())
        lines.append(f"  seed {p['seed']}: {p['mean_accuracy']:.4f} [{lo:.4f}, {hi:.4f}]  {th}")
    over = res.get("across_seeds")
    if over:
        ci = over["ci95"]
        lines.append(f"over {over['seeds']} meta-training seed(s): {over['mean_accuracy']:.4f} "
                     + (f"[{ci[0]:.4f}, {ci[1]:.4f}] (95% t-interval over seeds)" if ci else "(one seed: no interval)"))
    return "\n".join(lines)


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


#: settings that ``evaluate`` takes as flags, overriding the run's config.json
OVERRIDES = tuple(n for n, s in SETTINGS.items() if s.evaluate)


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``evaluate``: its own, and the settings of ``OVERRIDES`` (generated)."""
    p.add_argument("run_dir", nargs="?", default=None,
                   help="a meta-training run directory (config.json, summary.json or metrics.jsonl)")
    g = p.add_argument_group("the rule (default: the run's learned Θ)")
    g.add_argument("--rule", dest="hand_rule", metavar="RULE", default=None,
                   help="named rule to evaluate with --theta (f0, bio, ...)")
    g.add_argument("--terms", dest="hand_terms", metavar="TERMS", default=None,
                   help="comma-separated term ids, e.g. 0,2,9 (with --theta)")
    g.add_argument("--theta", type=_floats, default=None,
                   help="Θ by hand, one value per term in increasing term order, e.g. 0.05,0.01,0.002; "
                        "then the feedback mode's own (plastic: B:kp,B:decay,B:err; routing: the gates' "
                        "φ_0 … φ_(L-2), gate = sigmoid(φ))")
    rule_settings = [n for n in OVERRIDES if SETTINGS[n].group == "plasticity rule" and n != "hidden"]
    add_config_flags(p, rule_settings, group=g, help_suffix="default: the run's")
    g.add_argument("--seed-index", type=int, default=None,
                   help="evaluate only this seed of a multi-seed run (default: every seed)")
    g = p.add_argument_group("meta-test")
    g.add_argument("--tasks", type=int, default=100, help="number of test tasks (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the test tasks (default: %(default)s)")
    g.add_argument("--baseline-lr", type=float, default=None,
                   help="θ_0 of every baseline (default: tuned on the meta-training classes)")
    g.add_argument("--baseline-grid", type=_floats, default=BASELINE_GRID,
                   help="θ_0 values tried for the baselines (default: 1e-3 … 1 in half decades)")
    g.add_argument("--tune-tasks", type=int, default=20,
                   help="meta-training-class tasks per θ_0 value when tuning (default: %(default)s)")
    g.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    g = p.add_argument_group("data and network (override the run's config.json; without a run, "
                             "meta-train's defaults)")
    add_config_flags(p, [n for n in OVERRIDES if n not in rule_settings], group=g, help_suffix="")


def evaluate_args(args: argparse.Namespace) -> dict[str, Any]:
    """The meta-test the ``evaluate`` command line asks for (``evaluate_run`` or ``evaluate_rule``)."""
    overrides = {n: getattr(args, n) for n in OVERRIDES if hasattr(args, n)}
    options = dict(tasks=args.tasks, seed=args.seed, baseline_lr=args.baseline_lr,
                   baseline_grid=tuple(args.baseline_grid), tune_tasks=args.tune_tasks, progress=True)
    by_hand = args.hand_rule is not None or args.hand_terms is not None
    check_json_out(args.json)
    for flag, v in (("--rule", args.hand_rule), ("--terms", args.hand_terms)):
        if v is not None and not v.strip():
            raise ConfigError(f"{flag} is empty")
    if args.run_dir is not None and not by_hand and args.theta is None:
        return evaluate_run(args.run_dir, seed_index=args.seed_index, overrides=overrides, **options)
    if args.run_dir is None and args.theta is None:
        raise ConfigError("give a RUN_DIR, or a rule by hand with --rule/--terms and --theta")
    if args.theta is None:
        raise ConfigError("--rule/--terms need --theta (the run's Θ belongs to the run's rule)")
    _check_options(options["tasks"], options["tune_tasks"], options["baseline_grid"], options["baseline_lr"],
                   options["seed"])
    cfg = run_config(args.run_dir, overrides)
    if by_hand:
        cfg = dataclasses.replace(cfg, rule=args.hand_rule or cfg.rule, terms=args.hand_terms, layer_rules=None)
    return evaluate_rule(cfg, args.theta, source="--theta", run_dir=args.run_dir, **options)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``plastic-jax evaluate``: print the table, optionally write ``--json``."""
    res = evaluate_args(args)
    print(format_table(res))
    for name, t in res["baseline_tuning"].items():
        lr = t["chosen"]
        if lr in (min(t["grid"]), max(t["grid"])):
            print(f"warning: the tuned θ_0 of {name} ({lr:g}) is at the edge of --baseline-grid", file=sys.stderr)
    if args.json:

        try:  # through a temporary file and os.replace: an earlier file stays whole when this fails
            atomic_write_json(args.json, res)
        except OSError as e:
            raise ConfigError(f"cannot write --json {args.json!r}: {e.strerror or e}") from None
    return 0
