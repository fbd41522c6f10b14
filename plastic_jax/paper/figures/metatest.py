"""Meta-test on the held-out classes: each learned Θ trains fresh networks on new tasks.

The numbers come from the meta-test cache (``plastic_jax.paper.metatest.meta_test``, in
``FIGURES/meta_test.json``); this section draws no figure."""

from __future__ import annotations

import numpy as np

from plastic_jax.paper.claims import Claim, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import PaperContext
from plastic_jax.paper.matrix import META_TEST_RUNS

FIGURE = None


def decide(ctx: PaperContext) -> Verdict | None:
    """Reported: each run's held-out accuracy (over the seeds that learned, where some did not)
    against the tuned baselines; None before the meta-test has run."""
    res = ctx.cache.get("runs", {})
    base = ctx.cache.get("baselines")
    if not res or not base:
        return None
    b = {r["name"]: r["mean_accuracy"] for r in base["rules"]}
    parts = []
    for n in ("bio-fa", "ehebb-fa", "oja-fa", ctx.best_pool):
        if n and n in res:
            accs = np.array([s["mean_accuracy"] for s in res[n]["seeds"]])
            part = f"{n} {100 * accs.mean():.1f}%"
            if n in ctx.outcomes:
                seeds = ctx.runs[n].seeds
                ok = [s["seed_index"] for s in res[n]["seeds"]
                      if ctx.outcomes[n][seeds[s["seed_index"]]][0] == "learned"]
                if ok and len(ok) < len(accs):
                    part += (f" ({100 * accs[ok].mean():.1f}% over the {len(ok)} seeds that learned in "
                             "meta-training; the others' Θ is degenerate)")
            parts.append(part)
    return Verdict("reported", "On the held-out classes: " + (", ".join(parts) or "no learned rule yet")
                   + f"; tuned f0+bp {100 * b.get('f0+bp', np.nan):.1f}%, tuned f0+fa "
                   f"{100 * b.get('f0+fa', np.nan):.1f}%.", tuple(n for n in res))


CLAIM = Claim("metatest", "Learned rules keep their advantage on held-out classes",
              "learned rules generalise to unseen classes", (), decide, uses=(*META_TEST_RUNS, "<best pool>"))
CLAIMS = (CLAIM,)


def _M(ctx: PaperContext) -> object:
    return ctx.statuses[0].cfg.M if ctx.statuses else next(iter(ctx.runs.values())).config.get("M")


def section(ctx: PaperContext) -> list[str]:
    """The section: per seed and over seeds, the held-out accuracy against the tuned baselines."""
    from plastic_jax.evaluate import mean_ci95

    L = [f"### Meta-test on the {len(ctx.test_classes)} held-out classes", ""]
    res = ctx.cache.get("runs", {})
    base = ctx.cache.get("baselines")
    want = [n for n in (*META_TEST_RUNS, ctx.best_pool) if n]
    if not res or not base:
        return L + ["Not evaluated yet: `python scripts/reproduce.py --scale paper --only metatest` (evaluates "
                    "every finished run among " + ", ".join(want) + ").", ""]
    tasks = base["tasks"]
    S = ctx.eval_seeds
    L += [f"`plastic_jax.evaluate` (the numbers of `plastic-jax evaluate RUN --seed-index i --tasks {tasks}`): "
          f"each meta-training seed's final Θ trains fresh networks on the same {tasks} new "
          f"{_M(ctx)}-way tasks from "
          "the held-out classes " + ", ".join(map(str, base["test_classes"])) + "; the baselines f0+bp and "
          "f0+fa use θ0 tuned on tasks from the meta-training classes ("
          + ", ".join(f"{b['name']}: θ0 = {b['theta']['F0']:g}" for b in base["rules"]) + "). Per seed: mean "
          "[95% t-interval over tasks]; across seeds: mean [95% t-interval over the seeds' means].", "",
          "| rule (run) | " + " | ".join(f"seed {i}" for i in range(S))
          + " | over seeds | − f0+bp (paired, mean over seeds) | − f0+fa |",
          "| --- |" + " --- |" * (S + 3)]
    for b in base["rules"]:
        lo, hi = b["ci95"]
        L.append(f"| {b['name']} (θ0 tuned) | {100 * b['mean_accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] |"
                 + " |" * (S + 2))
    for n in want:
        if n not in res:
            why = ("not evaluated yet (`--only metatest`)" if n in ctx.runs and ctx.finished.get(n)
                   else "not evaluated (run not finished)")
            L.append(f"| {n} | {why} |" + " |" * (S + 2))
            continue
        seeds = res[n]["seeds"]
        cells = [f"{100 * s['mean_accuracy']:.1f} [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]"
                 for s in seeds]
        cells += [""] * (S - len(cells))
        means = np.array([s["mean_accuracy"] for s in seeds])
        if len(means) > 1:
            m, ci = mean_ci95(means)
            over = f"{100 * m:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        else:
            over = f"{100 * means[0]:.1f}"
        diffs = [f"{100 * np.array([s['paired'][b][0] for s in seeds]).mean():+.1f}" for b in ("f0+bp", "f0+fa")]
        L.append(f"| {n} | " + " | ".join(cells[:S]) + f" | {over} | " + " | ".join(diffs) + " |")
    v = evaluate(CLAIM, ctx)
    assert v is not None
    return L + ["", verdict_line(ctx, CLAIM, v), ""]
