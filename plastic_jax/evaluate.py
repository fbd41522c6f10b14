"""Meta-test (``plastic-jax evaluate``): a fixed Θ on new tasks from the held-out classes.

Fresh networks learn each task online with the rule's Θ (no meta-learning here); the mean query
accuracy over N tasks is compared with two baselines on *the same tasks* (same task keys, hence
the same examples, stream order, initial W and feedback B):

- ``learned``: the run's rule and Θ (``summary.json``, else the last ``metrics.jsonl`` record of
  the chosen seed), or a rule and Θ given by hand (``--rule``/``--terms`` with ``--theta``);
- ``f0+bp``: online SGD, W ← W + θ_0 F0 with B = W;
- ``f0+fa``: feedback alignment, the same with fixed random B.

**Baseline θ_0.** By default each baseline's θ_0 is the best of a small log grid
(``BASELINE_GRID``) by mean query accuracy on ``--tune-tasks`` tasks drawn from the
*meta-training* classes (other keys than the test tasks): the baselines get the same data to
tune on that the learned rule was meta-trained on, and never see the held-out classes.
``--baseline-lr`` fixes θ_0 for both instead.

**Interval.** 95% t-interval over tasks: mean ± t_{0.975, N-1} · s / √N (s: sample standard
deviation, ddof = 1). Paired differences (learned − baseline, same tasks) get the same interval.

All tasks of one rule run in one jitted call: ``meta.task_loss`` vmapped over task keys (and over
the θ_0 grid when tuning); inside, the episode is one ``lax.scan`` over the stream.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from plastic_jax.config import ConfigError, TrainConfig, class_split
from plastic_jax.data import build_class_index
from plastic_jax.data.sampler import ClassIndex
from plastic_jax.inner import Rule
from plastic_jax.meta import EpisodeSpec, task_loss

#: θ_0 grid for the baselines: 10^(-3 … 0) in half decades
BASELINE_GRID = (1e-3, 3.16e-3, 1e-2, 3.16e-2, 1e-1, 3.16e-1, 1.0)
#: fold_in constants that separate evaluation and tuning keys from meta-training's
#: (meta-training folds in the episode number, which stays far below these)
EVAL_STREAM = 2**31 - 1
TUNE_STREAM = 2**31 - 2


@functools.partial(jax.jit, static_argnames=("rule", "spec"))
def task_accuracies(thetas: jax.Array, keys: jax.Array, ci: ClassIndex, *, rule: Rule,
                    spec: EpisodeSpec) -> jax.Array:
    """Query accuracy of every Θ on every task: thetas (G, R), keys (N, 2) → (G, N).

    A task key draws the task and the initial network exactly as in meta-training
    (``meta.task_loss``), so the same keys mean the same tasks for every rule.
    """

    def one(theta, key):
        return task_loss(theta, rule, spec, key, ci)[1]

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


def tune_baseline(feedback: str, n_layers: int, spec: EpisodeSpec, ci: ClassIndex, keys: jax.Array,
                  grid: tuple[float, ...]) -> tuple[float, list[float]]:
    """Best θ_0 of ``grid`` for ``f0`` with ``feedback`` by mean accuracy on the tasks of ``keys``."""
    rule = Rule(((0,),) * n_layers, feedback)
    accs = np.asarray(task_accuracies(jnp.asarray(grid, jnp.float32)[:, None], keys, ci, rule=rule, spec=spec))
    means = [float(m) for m in np.nan_to_num(accs, nan=0.0).mean(axis=1)]
    return float(grid[int(np.argmax(means))]), means


def read_learned_theta(run_dir: str, cfg: TrainConfig, terms: tuple[int, ...],
                       seed_index: int = 0) -> tuple[np.ndarray, str]:
    """Θ of seed ``cfg.seed + seed_index`` of a run, ordered as ``terms``; and where it came from."""
    summary_path = os.path.join(run_dir, "summary.json")
    theta: dict[str, float] | None = None
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            thetas = json.load(f).get("theta", [])
        if seed_index >= len(thetas):
            raise ConfigError(f"--seed-index {seed_index}: the run has {len(thetas)} seed(s)")
        theta, source = thetas[seed_index], summary_path
    else:
        metrics_path = os.path.join(run_dir, "metrics.jsonl")
        if not os.path.exists(metrics_path):
            raise ConfigError(f"{run_dir} holds neither summary.json nor metrics.jsonl")
        seed = cfg.seed + seed_index
        with open(metrics_path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("seed") == seed:
                        theta = rec["theta"]
                        source = f"{metrics_path} (episode {rec['episode']})"
        if theta is None:
            raise ConfigError(f"{metrics_path} has no record of seed {seed}")
    missing = [f"F{r}" for r in terms if f"F{r}" not in theta]
    if missing:
        raise ConfigError(f"the run's Θ lacks {', '.join(missing)}; give --theta by hand")
    return np.array([theta[f"F{r}"] for r in terms], np.float32), source


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


#: flags that override the run's config.json (or TrainConfig's defaults without a run)
_OVERRIDES = ("dataset", "data_dir", "split", "download", "holdout", "train_classes", "test_classes",
              "split_seed", "hidden", "M", "K", "Q", "feedback")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    """Flags of ``evaluate``."""
    p.add_argument("run_dir", nargs="?", default=None,
                   help="a meta-training run directory (config.json, summary.json or metrics.jsonl)")
    g = p.add_argument_group("the rule (default: the run's learned Θ)")
    g.add_argument("--rule", default=None, help="named rule to evaluate with --theta (f0, bio, ...)")
    g.add_argument("--terms", default=None, help="comma-separated term ids, e.g. 0,2,9 (with --theta)")
    g.add_argument("--theta", type=_floats, default=None,
                   help="Θ by hand, one value per term in increasing term order, e.g. 0.05,0.01,0.002")
    g.add_argument("--feedback", default=None, help="bp or fa (default: the run's, else fa)")
    g.add_argument("--seed-index", type=int, default=0,
                   help="which seed of a multi-seed run supplies Θ (default: the first)")
    g = p.add_argument_group("meta-test")
    g.add_argument("--tasks", type=int, default=100, help="number of test tasks (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the test tasks (default: %(default)s)")
    g.add_argument("--baseline-lr", type=float, default=None,
                   help="θ_0 of both baselines (default: tuned on the meta-training classes)")
    g.add_argument("--baseline-grid", type=_floats, default=BASELINE_GRID,
                   help="θ_0 values tried for the baselines (default: 1e-3 … 1 in half decades)")
    g.add_argument("--tune-tasks", type=int, default=20,
                   help="meta-training-class tasks per θ_0 value when tuning (default: %(default)s)")
    g.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    g = p.add_argument_group("data and network (override the run's config.json)")
    g.add_argument("--dataset", default=None)
    g.add_argument("--data-dir", default=None)
    g.add_argument("--split", default=None)
    g.add_argument("--download", action="store_const", const=True, default=None)
    g.add_argument("--holdout", type=float, default=None)
    g.add_argument("--train-classes", type=_ints, default=None)
    g.add_argument("--test-classes", type=_ints, default=None)
    g.add_argument("--split-seed", type=int, default=None)
    g.add_argument("--hidden", type=_ints, default=None)
    g.add_argument("--M", type=int, default=None)
    g.add_argument("--K", type=int, default=None)
    g.add_argument("--Q", type=int, default=None)


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.run_dir is not None:
        path = os.path.join(args.run_dir, "config.json")
        if not os.path.exists(path):
            raise ConfigError(f"{args.run_dir} is not a run directory (no config.json)")
        with open(path) as f:
            cfg = TrainConfig.from_json(json.load(f))
    else:
        if args.theta is None:
            raise ConfigError("give a RUN_DIR, or a rule by hand with --rule/--terms and --theta")
        cfg = TrainConfig()
    for name in _OVERRIDES:
        v = getattr(args, name)
        if v is not None:
            setattr(cfg, name, v)
    if args.rule is not None or args.terms is not None:
        if args.theta is None:
            raise ConfigError("--rule/--terms need --theta (the run's Θ belongs to the run's rule)")
        cfg.rule = args.rule or cfg.rule
        cfg.terms = args.terms
        cfg.layer_rules = None
    return cfg


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the meta-test described by the CLI arguments; returns the JSON-ready results."""
    from plastic_jax.train import build

    if args.tasks < 2:
        raise ConfigError(f"--tasks must be at least 2 (for a confidence interval), got {args.tasks}")
    if args.tune_tasks < 1:
        raise ConfigError(f"--tune-tasks must be a positive integer, got {args.tune_tasks}")
    if not args.baseline_grid or any(not v > 0 for v in args.baseline_grid):
        raise ConfigError("--baseline-grid must list positive values")
    if args.baseline_lr is not None and not args.baseline_lr > 0:
        raise ConfigError(f"--baseline-lr must be positive, got {args.baseline_lr}")
    cfg = _config(args)
    cfg.meta_batch = 1
    data, ci_train, rule, spec = build(cfg)
    terms = rule.terms
    if args.theta is not None:
        if len(args.theta) != len(terms):
            raise ConfigError(
                f"--theta has {len(args.theta)} value(s) but the rule has {len(terms)} term(s) "
                f"({', '.join(f'F{r}' for r in terms)})"
            )
        theta, source = np.asarray(args.theta, np.float32), "--theta"
    else:
        theta, source = read_learned_theta(args.run_dir, cfg, terms, args.seed_index)

    _, test_classes = class_split(cfg, data.n_classes)
    if test_classes is None:
        print("warning: the run has no class split (--holdout / --test-classes); evaluating on all "
              "classes, which meta-training also drew from", file=sys.stderr)
        test_classes = tuple(range(data.n_classes))
    ci_test = build_class_index(data, test_classes)

    n_layers = rule.n_layers
    test_keys = stream_keys(args.seed, EVAL_STREAM, args.tasks)
    tuning: dict[str, Any] = {}
    baseline_lr: dict[str, float] = {}
    for fb in ("bp", "fa"):
        if args.baseline_lr is not None:
            baseline_lr[fb] = float(args.baseline_lr)
        else:
            tune_keys = stream_keys(args.seed, TUNE_STREAM, args.tune_tasks)
            best, means = tune_baseline(fb, n_layers, spec, ci_train, tune_keys, tuple(args.baseline_grid))
            baseline_lr[fb] = best
            tuning[f"f0+{fb}"] = {"grid": list(args.baseline_grid), "mean_accuracy": means, "chosen": best,
                                 "tasks": args.tune_tasks, "classes": [int(c) for c in np.asarray(ci_train.classes)]}

    entries = [
        ("learned", rule, theta, source),
        ("f0+bp", Rule(((0,),) * n_layers, "bp"), np.array([baseline_lr["bp"]], np.float32),
         "--baseline-lr" if args.baseline_lr is not None else "tuned on meta-training classes"),
        ("f0+fa", Rule(((0,),) * n_layers, "fa"), np.array([baseline_lr["fa"]], np.float32),
         "--baseline-lr" if args.baseline_lr is not None else "tuned on meta-training classes"),
    ]
    rules, per_task = [], {}
    for name, r, th, src in entries:
        accs = np.asarray(task_accuracies(jnp.asarray(th)[None, :], test_keys, ci_test, rule=r, spec=spec))[0]
        per_task[name] = accs
        mean, (lo, hi) = mean_ci95(accs)
        rules.append({
            "name": name, "mean_accuracy": mean, "ci95": [lo, hi], "tasks": int(args.tasks),
            "feedback": r.feedback, "terms": list(r.terms),
            "theta": {f"F{t}": float(v) for t, v in zip(r.terms, th)}, "theta_source": src,
        })
    paired = []
    for base in ("f0+bp", "f0+fa"):
        mean, (lo, hi) = mean_ci95(per_task["learned"] - per_task[base])
        paired.append({"name": f"learned - {base}", "mean_difference": mean, "ci95": [lo, hi]})
    return {
        "rules": rules,
        "paired_differences": paired,
        "run_dir": args.run_dir,
        "dataset": cfg.dataset,
        "test_classes": [int(c) for c in test_classes],
        "held_out": cfg.extra.get("class_split") is not None,
        "M": cfg.M, "K": cfg.K, "Q": cfg.Q, "hidden": list(cfg.hidden),
        "seed": args.seed,
        "baseline_tuning": tuning,
        "interval": "95% t-interval over tasks",
    }


def format_table(res: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    lines = [
        f"meta-test on {res['dataset']}: {res['rules'][0]['tasks']} tasks, {res['M']}-way, K={res['K']}, "
        f"Q={res['Q']}, classes {res['test_classes']}"
        + ("" if res["held_out"] else " (no held-out classes)"),
        f"{'rule':<8} {'feedback':<8} {'mean acc':>8}  {'95% CI':<17}  theta",
    ]
    for r in res["rules"]:
        th = " ".join(f"{k}={v:+.5f}" for k, v in r["theta"].items())
        lo, hi = r["ci95"]
        lines.append(f"{r['name']:<8} {r['feedback']:<8} {r['mean_accuracy']:>8.4f}  [{lo:.4f}, {hi:.4f}]  "
                     f"{th} ({r['theta_source']})")
    for p in res["paired_differences"]:
        lo, hi = p["ci95"]
        lines.append(f"{p['name']}: {p['mean_difference']:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired, same tasks)")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``plastic-jax evaluate``: print the table, optionally write ``--json``."""
    res = evaluate(args)
    print(format_table(res))
    for name, t in res["baseline_tuning"].items():
        lr = t["chosen"]
        if lr in (min(t["grid"]), max(t["grid"])):
            print(f"warning: the tuned θ_0 of {name} ({lr:g}) is at the edge of --baseline-grid", file=sys.stderr)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        except OSError as e:
            raise ConfigError(f"cannot write --json {args.json!r}: {e.strerror or e}") from None
    return 0
