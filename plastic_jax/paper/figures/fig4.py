"""Fig. 4: pool + fa, an L1 sweep — does pool reach backprop, and does Θ sparsify to F0, F2, F9?"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from plastic_jax.paper.claims import Claim, Figure, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import (
    POOL,
    PaperContext,
    acc_text,
    compact,
    episodes_note,
    figure_links,
    learned_acc,
    learned_seeds,
    n_degenerate,
    reaches,
)
from plastic_jax.paper.diagnose import COLLAPSE_TOL, DIVERGED_SKIPS, N_CLASSES
from plastic_jax.paper.markdown import fmt_ci, fmt_theta
from plastic_jax.paper.measures import SURVIVE_STEPS, adam_steps, final_theta, peak_accuracy, survivors

FIGURE = Figure("fig4", (POOL, "f0-bp", "f0-fa"), ("accuracy", "loss"), ("fig3", "pool"), per_pool_theta=True)
#: the terms of the bio rule, which the paper finds pool keeps
BIO = {"F0", "F2", "F9"}


def survivors_of(ctx: PaperContext, name: str) -> list[str]:
    """The surviving terms of pool run ``name`` over its seeds that learned."""
    return survivors(ctx.runs[name], learned_seeds(ctx, name))[0]


def _unfinished_matrix_pool(ctx: PaperContext) -> list[str]:
    return [st.run.name for st in ctx.statuses if st.run.group == "pool" and st.state != "done"]


def decide_reach(ctx: PaperContext) -> Verdict:
    """Reproduced when the best pool setting's seeds that learned come within 5 points of f0+bp."""
    best = ctx.best_pool
    assert best is not None
    reach, why = reaches(ctx, best) if "f0-bp" in ctx.win else ("not reproduced", "f0-bp has not run")
    why = (f"The best pool setting so far is {best}{episodes_note(ctx, best)}. {why}; its surviving terms: "
           f"{', '.join(survivors_of(ctx, best)) or 'none'}.")
    unfinished = _unfinished_matrix_pool(ctx)
    if unfinished:
        why += (f" Not finished: {', '.join(unfinished)} (`bash scripts/paper_runs.sh pool` starts or resumes "
                "them).")
    return Verdict(reach, why, ctx.pool)


def decide_sparse(ctx: PaperContext) -> Verdict:
    """Reproduced when a setting keeps exactly F0, F2, F9; partly when one keeps them and drops at
    least four of the other seven terms."""
    surv_of = {n: set(survivors_of(ctx, n)) for n in ctx.pool}
    exact = [n for n in ctx.pool if surv_of[n] == BIO]
    # sparse: contains F0, F2, F9 and drops at least half of the other seven terms
    any_sparse = [n for n in ctx.pool if BIO <= surv_of[n] and len(surv_of[n]) <= 6]
    return Verdict("reproduced" if exact else "partly" if any_sparse else "not reproduced",
                   f"Settings whose survivors are exactly F0, F2, F9: {', '.join(exact) or 'none'}; that "
                   "contain them and drop at least four of the other seven terms: "
                   f"{', '.join(any_sparse) or 'none'}." + pool_explanation(ctx), ctx.pool)


REACH = Claim("fig4-reach", "Fig. 4, pool reaches BP's accuracy", "near BP (≈ 70%) by ≈ 300 episodes", (POOL,),
              decide_reach, uses=("f0-bp",))
SPARSE = Claim("fig4-sparse", "Fig. 4, Θ sparsifies to a set containing F0, F2, F9", "F0, F2, F9 survive",
               (POOL,), decide_sparse)
CLAIMS = (REACH, SPARSE)


def pool_explanation(ctx: PaperContext) -> str:
    """What the pool runs' own metrics say about why they fail (when they do)."""
    notes = []
    n_seeds = n_bad = 0
    for n in ctx.pool:
        out = ctx.outcomes[n]
        n_seeds += len(out)
        n_bad += sum(k != "learned" for k, _ in out.values())
    if n_bad:
        notes.append(f" Of the {n_seeds} pool seeds, {n_bad} ended diverged or collapsed to a uniform output "
                     "(query loss ≈ ln 47): a learner that stops learning, whose Θ then says nothing about "
                     "which terms help.")
    ratios = [v / float(ctx.runs[n].config.get("meta_lr", 1e-3)) for n in ctx.pool
              for v in adam_steps(ctx.runs[n]).values() if np.isfinite(v)]
    if ratios:
        notes.append(f" In the first 50 episodes every term moved by {min(ratios):.2f} to {max(ratios):.2f} times "
                     "its run's Adam learning rate per episode (median over seeds), although the initial "
                     "meta-gradients of the terms span more than three decades (the table above): Adam divides "
                     "each coordinate by its own gradient scale, so every term drifts at about the same speed, "
                     "and the L1 subgradient λ·sign(θ_r) only decides a term's direction once λ exceeds its "
                     "|∂L/∂θ_r|.")
    by_lr: dict[float, list[str]] = {}
    for n in ctx.pool:
        by_lr.setdefault(float(ctx.runs[n].config.get("meta_lr", 1e-3)), []).append(n)
    if len(by_lr) > 1:
        parts = []
        for lr, names in sorted(by_lr.items()):
            seeds = sum(len(ctx.outcomes[n]) for n in names)
            bad = sum(n_degenerate(ctx, n) for n in names)
            accs = np.concatenate([ctx.win[n]["acc_l"] for n in names if n_degenerate(ctx, n) < len(
                ctx.outcomes[n])] or [np.array([np.nan])])
            parts.append(f"Adam {lr:g}: {bad} of {seeds} seeds degenerate, the others at "
                         f"{100 * np.nanmean(accs):.1f}% on average ({', '.join(names)})")
        notes.append(" By meta-learning rate: " + "; ".join(parts) + ".")
    return "".join(notes)


def grad_table(ctx: PaperContext) -> list[str]:
    """The initial meta-gradient magnitudes of docs/benchmark/grad_magnitudes*.json, against the swept λ."""
    files = sorted(glob.glob(os.path.join("docs", "benchmark", "grad_magnitudes*.json")))
    rows = {}
    for f in files:
        try:
            d = json.load(open(f))
        except (OSError, ValueError):
            continue
        for r in d.get("rows", []):
            if r.get("theta") == "init" and np.all(np.isfinite(r["median"])):
                rows[r["f5_f8"]] = (r, d.get("tasks"), f)
    if not rows:
        return []
    l1s = sorted({float(x) for x in ctx.pool_l1})
    readings = list(rows)
    L = ["Meta-gradient magnitudes at the start (θ0 = 1e-3, the rest 0), the median [10th, 90th percentile] "
         "of |∂L/∂θ_r| over tasks, from `scripts/grad_magnitudes.py` ("
         + ", ".join(f"`{os.path.relpath(f)}`, {t} tasks" for _, t, f in rows.values())
         + "). The L1 subgradient adds λ·sign(θ_r); it dominates a term whose |∂L/∂θ_r| is below λ:",
         "", "| term | " + " | ".join(f"|∂L/∂θ_r|, F5-F8 {r}" for r in readings)
         + " | swept λ above the median (" + readings[0] + ") |",
         "| --- |" + " --- |" * (len(readings) + 1)]
    for t in range(10):
        cells = []
        for r in readings:
            row = rows[r][0]
            cells.append(f"{row['median'][t]:.3g} [{row['p10'][t]:.2g}, {row['p90'][t]:.2g}]")
        above = [f"{x:g}" for x in l1s if x > rows[readings[0]][0]["median"][t]]
        L.append(f"| F{t} | " + " | ".join(cells) + f" | {', '.join(above) or 'none'} |")
    return L + [""]


def section(ctx: PaperContext) -> list[str]:
    """The section: gradient magnitudes, the sweep's table, each seed's diagnosis, Θ, the verdicts."""
    L = ["### Fig. 4: pool + fa, an L1 sweep", ""]
    L += grad_table(ctx)
    matrix_pool = [st.run.name for st in ctx.statuses if st.run.group == "pool"]
    if not ctx.pool:
        return L + [f"No pool run has logged an episode yet: `bash scripts/paper_runs.sh pool` runs the sweep "
                    f"({', '.join(matrix_pool)}).", ""]
    best = ctx.best_pool
    assert best is not None
    L += compact(ctx, [
        ("accuracy of pool+fa", "starts at FA's, climbs from ≈ episode 10, near BP by ≈ 300",
         f"best setting {best}: {acc_text(ctx, best)}{learned_acc(ctx, best)}"),
        ("accuracy of f0+bp / f0+fa", "≈ 70% / ≈ 25%", f"{acc_text(ctx, 'f0-bp')} / {acc_text(ctx, 'f0-fa')}"
         if "f0-bp" in ctx.runs and "f0-fa" in ctx.runs else "not run yet"),
        ("terms left after ≈ 600 episodes", "F0, F2, F9", f"{best}: {', '.join(survivors_of(ctx, best)) or 'none'}"),
        ("seeds degenerate (collapsed or diverged)", "–",
         ", ".join(f"{n}: {n_degenerate(ctx, n)} of {len(ctx.outcomes[n])}" for n in ctx.pool)),
    ])
    L += [f"Surviving terms: |θ_r| > {SURVIVE_STEPS} Adam steps (× the run's meta learning rate: 0.005 at "
          "1e-3, 0.0005 at 1e-4) at the last episode in more than half of the seeds that learned (a term the "
          "L1 penalty holds at 0 oscillates within about one Adam step of it; before the runs at Adam 1e-4 the "
          "threshold was a fixed 0.005, the same at 1e-3). "
          "Adam step: the median over seeds of the mean |Δθ_r| per episode over episodes 1-50, smallest and "
          "largest term. Peak: the highest mean over seeds of the 20-episode moving average of the accuracy, "
          "and the episode it ends at.", "",
          "| run | F5-F8 | λ | meta-lr | clip | episodes | accuracy, % (98% CI) | peak (episode) | seeds learned / "
          "collapsed / diverged | surviving terms | Adam step, min-max |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    detail = []
    theta_rows = []
    for n in ctx.pool:
        r = ctx.runs[n]
        c = r.config
        out = ctx.outcomes[n]
        kinds = [k for k, _ in out.values()]
        surv, count = survivors(r, learned_seeds(ctx, n))
        steps = adam_steps(r)
        sv = [v for v in steps.values() if np.isfinite(v)]
        L.append(f"| {n} | {c.get('f5_f8', 'matrix')} | {c.get('l1', 0):g} | {c.get('meta_lr', 1e-3):g} | "
                 f"{c.get('meta_clip', 0) or '–'} | {len(r.episodes)} of {c.get('episodes')} | "
                 f"{fmt_ci(ctx.win[n]['acc'])} | {peak_accuracy(r)} | {kinds.count('learned')} / "
                 f"{kinds.count('collapsed')} / "
                 f"{kinds.count('diverged')} | {', '.join(surv) or 'none'} | "
                 + (f"{min(sv):.1e}-{max(sv):.1e}" if sv else "–") + " |")
        detail.append(f"- {n}: " + "; ".join(f"seed {s}: {t}" for s, (_, t) in sorted(out.items())) + ".")
        theta_rows.append(f"| {n} | " + " | ".join(
            f"{fmt_theta(float(np.median(v)))} ({count[t]})" for t, v in final_theta(r).items()) + " |")
    C = N_CLASSES.get(ctx.dataset, 47)
    L += ["", f"Per seed (last-100 accuracy; the diagnosis from the run's metrics: *collapsed (uniform output)* = "
          f"median query loss within {100 * COLLAPSE_TOL:.0f}% of ln {C} = {np.log(C):.2f}, the loss of a network "
          f"that outputs 1/{C} for every class, with θ0 at or below its start (a collapse follows a meta-gradient "
          "spike; where the records carry telemetry the diagnosis names the episode of the last spike before it); "
          f"*diverged* = query loss non-finite in at least half of the last 100 episodes, or the last "
          f"{DIVERGED_SKIPS} or more updates skipped in a row):", "", *detail, "",
          "Θ at the last logged episode, the median over seeds (in brackets: in how many of the seeds that "
          f"learned |θ_r| > {SURVIVE_STEPS} × the run's meta learning rate):", "",
          "| run | " + " | ".join(f"F{t}" for t in range(10)) + " |", "| --- |" + " --- |" * 10, *theta_rows, ""]
    ew = [n for n in ctx.pool if ctx.runs[n].config.get("f5_f8") == "elementwise"
          and {"F7", "F8"} <= set(ctx.runs[n].theta)]
    if ew:
        d = max(float(np.nanmax(np.abs(ctx.runs[n].theta["F7"] - ctx.runs[n].theta["F8"]))) for n in ew)
        L += [f"In the element-wise reading F7 and F8 are the same matrix (F7_jk = F8_jk = −e_post,j post_j W_jk "
              f"e_pre,k pre_k, `plastic_jax/plasticity.py`), so they get the same meta-gradient and θ7 = θ8 "
              f"throughout (largest |θ7 − θ8| in these runs: {d:.1e}); the two count as one term.", ""]
    L += [figure_links(ctx, FIGURE.name, FIGURE.panels), ""]
    L += [" ".join(f"![Θ of {n}]({ctx.rel}/fig4/{n}/theta.png)" for n in ctx.pool
                   if os.path.exists(os.path.join(ctx.figures, "fig4", n, "theta.png"))), ""]
    for claim in CLAIMS:
        v = evaluate(claim, ctx)
        assert v is not None
        L += [verdict_line(ctx, claim, v), ""]
    return L
