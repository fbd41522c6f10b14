"""Fig. S2 / Eq. 7: bio + fa (F0, F2, F9) beside pool's survivors."""

from __future__ import annotations

import numpy as np

from plastic_jax.paper.claims import Claim, Figure, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import (
    BEST_POOL,
    PaperContext,
    acc_text,
    episodes_note,
    figure_links,
    ours_header,
    reaches,
)
from plastic_jax.paper.markdown import fmt_theta
from plastic_jax.paper.measures import final_theta

FIGURE = Figure("figS2", ("bio-fa", BEST_POOL, "f0-bp", "f0-fa"), ("accuracy", "theta", "alignment"),
                ("rules", "pool"))


def decide(ctx: PaperContext) -> Verdict:
    """bio+fa reaches f0+bp (``context.reaches``), with θ2 < 0 counted and the pool run named."""
    th = final_theta(ctx.runs["bio-fa"])
    best = ctx.best_pool
    parts = []
    verdict = "not reproduced"
    if "f0-bp" in ctx.win:
        verdict, why = reaches(ctx, "bio-fa")
        parts.append(why)
    neg = int((th["F2"] < 0).sum())
    parts.append(f"θ2 < 0 in {neg} of {len(th['F2'])} seeds, the sign Eq. 9 needs")
    if best:
        parts.append(f"the comparison with pool rests on {best}{episodes_note(ctx, best) or ''}")
    else:
        parts.append("no pool run to compare with yet")
    return Verdict(verdict, "; ".join(parts) + ".", ("bio-fa", *((best,) if best else ())))


CLAIM = Claim("eq7", "Eq. 7, F_bio performs like the pool rule and near BP", "like pool+fa, near BP; θ2 < 0",
              ("bio-fa",), decide, uses=("f0-bp", BEST_POOL))
CLAIMS = (CLAIM,)


def section(ctx: PaperContext) -> list[str]:
    """The section: bio+fa's accuracy and final θ0, θ2, θ9 beside the best pool run's, the verdict."""
    L = ["### Fig. S2 / Eq. 7: bio + fa (F0, F2, F9) beside pool's survivors", ""]
    if "bio-fa" not in ctx.runs:
        return L + ["Not run yet: bio-fa (`bash scripts/paper_runs.sh rules`).", ""]
    th = final_theta(ctx.runs["bio-fa"])
    best = ctx.best_pool
    rows = [("accuracy, bio+fa", "like pool+fa, near BP", acc_text(ctx, "bio-fa"))]
    if "f0-bp" in ctx.runs:
        rows.append(("accuracy, f0+bp", "≈ 70%", acc_text(ctx, "f0-bp")))
    if best:
        rows.append((f"accuracy, best pool ({best})", "near BP", acc_text(ctx, best)))
    for t in ("F0", "F2", "F9"):
        lo, hi = fmt_theta(float(th[t].min())), fmt_theta(float(th[t].max()))
        cell = f"{fmt_theta(float(np.median(th[t])))} [{lo}, {hi}]"
        pool_cell = ""
        if best and t in ctx.runs[best].theta:
            pool_cell = f"; best pool: {fmt_theta(float(np.median(final_theta(ctx.runs[best])[t])))}"
        rows.append((f"θ{t[1:]} at the end (median [min, max] over seeds)",
                     "θ2 < 0 (Eq. 9)" if t == "F2" else "–", cell + pool_cell))
    L += [ours_header(ctx), "| --- | --- | --- |"]
    L += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    v = evaluate(CLAIM, ctx)
    assert v is not None
    return L + ["", verdict_line(ctx, CLAIM, v), "", figure_links(ctx, FIGURE.name, FIGURE.panels), ""]
