"""Meta-test of the finished runs on the held-out classes, cached in ``FIGURES/meta_test.json``.

``meta_test`` evaluates each run's learned Θ (seeds 0 … ``eval_seeds``−1) on new tasks from the
held-out classes against f0+bp and f0+fa with θ0 tuned on the meta-training classes
(``plastic_jax.evaluate``); the cache is keyed by run and Θ, so a run is evaluated once. The
section that reports it is ``figures.metatest``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from plastic_jax.atomic import atomic_write_json
from plastic_jax.paper.matrix import META_TEST_RUNS
from plastic_jax.runs import Run, read_summary


def read_cache(path: str) -> dict:
    """The cache at ``path`` ({} when there is none or it is unreadable)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_cache(path: str, cache: dict) -> None:
    """Write the cache atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, cache, indent=1)


def meta_test(args: argparse.Namespace, runs: Mapping[str, Run], best_pool: str | None,
              cache_path: str) -> dict[str, Any]:
    """Meta-test the finished runs of META_TEST_RUNS (and ``best_pool``) on the held-out classes,
    seeds 0 … ``--eval-seeds``−1, ``--eval-tasks`` tasks each, against f0+bp and f0+fa tuned on the
    meta-training classes (``plastic_jax.evaluate``: the numbers of ``plastic-jax evaluate RUN
    --seed-index i --tasks N``). Results are cached in ``cache_path`` by run and Θ."""
    import jax.numpy as jnp

    from plastic_jax import evaluate as ev
    from plastic_jax.data import build_class_index
    from plastic_jax.experiment import build, rule_of

    cache = read_cache(cache_path)
    names = [n for n in (*META_TEST_RUNS, best_pool) if n and n in runs
             and read_summary(runs[n].path) is not None]
    for name in names:
        path = runs[name].path
        cfg = ev.run_config(path)
        rule_ = rule_of(cfg)
        labels = rule_.theta_labels() if hasattr(rule_, "theta_labels") else rule_.terms
        n_seeds = min(args.eval_seeds, cfg.seeds)
        thetas = [ev.read_learned_theta(path, cfg, labels, i)[0] for i in range(n_seeds)]
        key = {"tasks": args.eval_tasks, "theta": [[float(x) for x in t] for t in thetas]}
        if cache.get("runs", {}).get(name, {}).get("key") == key:
            print(f"meta-test {name}: cached", flush=True)
            continue
        t0 = time.perf_counter()
        if "baselines" not in cache or cache["baselines"].get("tasks") != args.eval_tasks:
            # f0+bp and f0+fa with θ_0 tuned on the meta-training classes, on the same test tasks
            quick = dict(tune_tasks=2, baseline_grid=(1e-2, 1e-1)) if args.quick else {}
            res = ev.evaluate_run(path, tasks=args.eval_tasks, **quick)
            cache["baselines"] = {"tasks": args.eval_tasks,
                                  "rules": [r for r in res["rules"] if r["name"] != "learned"],
                                  "test_classes": res["test_classes"], "tuning": res["baseline_tuning"]}
        exp = build(cfg)
        rule, spec = exp.rule, exp.spec
        ci_test = build_class_index(exp.data, exp.test_classes)
        keys = ev.stream_keys(0, ev.EVAL_STREAM, args.eval_tasks)
        per_task = np.asarray(ev.task_accuracies(jnp.asarray(np.stack(thetas)), keys, ci_test, rule=rule, spec=spec))
        # the baselines' accuracy on each test task (the same tasks for every run of this network)
        per_task_base = cache["baselines"].setdefault("per_task", {})
        for b in cache["baselines"]["rules"]:
            if b["name"] not in per_task_base:
                per_task_base[b["name"]] = np.asarray(ev.task_accuracies(
                    jnp.asarray([[b["theta"]["F0"]]], jnp.float32), keys, ci_test,
                    rule=ev.baseline_rule(b["feedback"], rule.n_layers), spec=spec))[0].tolist()
        base = {b_name: np.asarray(v) for b_name, v in per_task_base.items()}
        seeds = []
        for i in range(n_seeds):
            m, ci = ev.mean_ci95(per_task[i])
            seeds.append({"seed_index": i, "mean_accuracy": m, "ci95": list(ci),
                          "paired": {b: list((lambda r: (r[0], *r[1]))(ev.mean_ci95(per_task[i] - a)))
                                     for b, a in base.items()}})
        cache.setdefault("runs", {})[name] = {"key": key, "seeds": seeds}
        print(f"meta-test {name}: {n_seeds} seed(s), {time.perf_counter() - t0:.0f} s", flush=True)
        write_cache(cache_path, cache)
    return cache
