"""Fig. 5: ehebb + fa, well above FA, under bio, and the best aligned.

Its section is the joint "Figs. 5 and 7" (``section``): one table of the fa rules' accuracy and
alignment, then Fig. 5's verdict and Fig. 7's (``figures.fig7``)."""

from __future__ import annotations

from plastic_jax.paper.claims import Claim, Figure, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import (
    PaperContext,
    acc_text,
    compact,
    figure_links,
    hidden_alpha,
    learned_acc,
    mean_pct,
    missing,
    unless_degenerate,
)
from plastic_jax.paper.figures import fig7
from plastic_jax.paper.markdown import alpha_cells
from plastic_jax.paper.measures import ci_separated, hidden

FIGURE = Figure("fig5", ("ehebb-fa", "bio-fa", "f0-fa", "f0-bp"), ("accuracy", "theta", "alignment"),
                ("fig3", "rules"))
#: the runs of the joint table, in its order
RULES = ("f0-bp", "f0-fa", "bio-fa", "ehebb-fa", "oja-fa")


def decide(ctx: PaperContext) -> Verdict:
    """Reproduced when ehebb+fa's seeds that learned lie above f0+fa and under bio+fa (98% CIs) and
    ehebb+fa has the lowest mean hidden α of the fa rules; partly when it lies above f0+fa; at best
    partly when seeds of ehebb+fa are degenerate."""
    names = [n for n in RULES if n in ctx.runs]
    w, fa = ctx.win["ehebb-fa"], ctx.win["f0-fa"]
    above = ci_separated(w["acc_l"], fa["acc"])
    # against bio over the seeds that learned (a collapsed seed is a failure of meta-training)
    under_bio = ci_separated(w["acc_l"], ctx.win["bio-fa"]["acc_l"]) if "bio-fa" in ctx.win else None
    hid = {n: float(hidden(ctx.win[n]["align"]).mean()) for n in names
           if n != "f0-bp" and ctx.win[n]["align"] is not None}
    best_aligned = min(hid, key=hid.get) if hid else None
    deep = {n: float(hidden(ctx.win[n]["align"])[:, -1].mean()) for n in hid}
    ok_acc = above > 0 and under_bio is not None and under_bio < 0
    verdict = ("reproduced" if ok_acc and best_aligned == "ehebb-fa" else "partly" if above > 0
               else "not reproduced")
    return Verdict(
        unless_degenerate(ctx, verdict, "ehebb-fa"),
        f"ehebb+fa {mean_pct(ctx, 'ehebb-fa')}{learned_acc(ctx, 'ehebb-fa')} against f0+fa "
        f"{mean_pct(ctx, 'f0-fa')} ({'above' if above > 0 else 'not above'}, 98% CIs over the seeds "
        "that learned)"
        + (f" and bio+fa {mean_pct(ctx, 'bio-fa')}{learned_acc(ctx, 'bio-fa')} "
           f"({'under' if under_bio < 0 else 'not under'}, 98% CIs over the seeds that learned)"
           if under_bio is not None else "")
        + f"; the lowest mean hidden α of the fa rules: {best_aligned} ("
        + ", ".join(f"{k} {v:.1f}°" for k, v in sorted(hid.items(), key=lambda kv: kv[1])) + "); in the "
        "deepest hidden layer: "
        + ", ".join(f"{k} {v:.1f}°" for k, v in sorted(deep.items(), key=lambda kv: kv[1]))
        + ".", ("ehebb-fa", "bio-fa", "f0-fa"))


CLAIM = Claim("fig5", "Fig. 5, eHebb well above FA, under bio, and the best aligned",
              "well above f0+fa, under bio; the best aligned", ("ehebb-fa", "f0-fa"), decide,
              uses=("bio-fa", "oja-fa"))
CLAIMS = (CLAIM,)


def section(ctx: PaperContext) -> list[str]:
    """The joint section of Figs. 5 and 7: the fa rules' accuracy and alignment, both verdicts."""
    L = ["### Figs. 5 and 7: ehebb + fa and oja + fa", ""]
    names = [n for n in RULES if n in ctx.runs]
    miss = missing(ctx, ("ehebb-fa", "oja-fa", "f0-fa"))
    if "f0-fa" not in ctx.runs:
        return L + ["Not run yet: f0-fa (`bash scripts/paper_runs.sh fig3`).", ""]
    rows = [("accuracy, f0+fa", "≈ 25%", acc_text(ctx, "f0-fa"))]
    for n, acc_p, al_p in (("ehebb-fa", "well above f0+fa, under bio", "the closest to backprop's of all rules"),
                           ("oja-fa", "much above f0+fa", "only slightly better than f0+fa's")):
        if n in ctx.runs:
            rows += [(f"accuracy, {n.replace('-', '+')}", acc_p, acc_text(ctx, n) + learned_acc(ctx, n)),
                     (f"mean hidden α, {n.replace('-', '+')}", al_p, hidden_alpha(ctx, n))]
    rows.append(("mean hidden α, f0+fa", "poorly aligned", hidden_alpha(ctx, "f0-fa")))
    if "bio-fa" in ctx.runs:
        rows.append(("mean hidden α, bio+fa", "–", hidden_alpha(ctx, "bio-fa")))
    L += compact(ctx, rows)
    Lh = max(ctx.win[n]["align"].shape[1] for n in names if ctx.win[n]["align"] is not None)
    L += ["| run | paper (EMNIST) | accuracy, % (98% CI) | " + " | ".join(f"α_{l + 1} (°)" for l in range(Lh - 1))
          + " | mean hidden α (°) |", "| --- | --- | --- |" + " --- |" * Lh]
    paper = {"f0-bp": "≈ 70%, α = 0", "f0-fa": "≈ 25%, poorly aligned", "bio-fa": "near BP",
             "ehebb-fa": "well above f0+fa, under bio; the best aligned", "oja-fa":
             "much above f0+fa; only slightly better aligned"}
    for n in names:
        al = hidden(ctx.win[n]["align"])
        mean = f"{al.mean():.1f}" if al is not None else "–"
        L.append(f"| {n} | {paper[n]} | {acc_text(ctx, n)} | " + " | ".join(alpha_cells(al, Lh - 1))
                 + f" | {mean} |")
    L.append("")
    for claim, run in ((CLAIM, "ehebb-fa"), (fig7.CLAIM, "oja-fa")):
        v = evaluate(claim, ctx)
        L += [verdict_line(ctx, claim, v) if v is not None else
              f"{run}: not run yet (`bash scripts/paper_runs.sh rules`).", ""]
    if miss:
        L += [f"Missing: {', '.join(miss)}.", ""]
    L += ["Fig. 5: " + figure_links(ctx, FIGURE.name, FIGURE.panels), "",
          "Fig. 7: " + figure_links(ctx, fig7.FIGURE.name, fig7.FIGURE.panels), ""]
    return L
