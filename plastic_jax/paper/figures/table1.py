"""Table 1: a 3-layer network (784-130-70-47) with F0 or eHebb per layer (fa)."""

from __future__ import annotations

from plastic_jax.paper.claims import Claim, Figure, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import PaperContext, acc_text, figure_links, sizes
from plastic_jax.paper.markdown import alpha_cells
from plastic_jax.paper.matrix import TABLE1, t1_name

NAMES = tuple(t1_name(r) for r in TABLE1)
BASE = "t1-f0-f0-f0"
FIGURE = Figure("table1", NAMES, ("accuracy", "alignment"), ("table1",))


def decide(ctx: PaperContext) -> Verdict | None:
    """Reported (the paper's values are not transcribed): each placement against f0,f0,f0, and
    whether eHebb on W_ℓ lowers α_{ℓ−1} by more than 5°; None with fewer than two of the runs."""
    have = [n for n in NAMES if n in ctx.runs]
    if BASE not in ctx.runs or len(have) < 2:
        return None
    b = ctx.win[BASE]
    facts = []
    for n in have:
        if n == BASE:
            continue
        w = ctx.win[n]
        d_acc = 100 * (w["acc"].mean() - b["acc"].mean())
        d_al = None if w["align"] is None else w["align"][:, :2].mean(axis=0) - b["align"][:, :2].mean(axis=0)
        facts.append(f"{n[3:].replace('-', ',')}: {d_acc:+.1f} points"
                     + (f", α_1 {d_al[0]:+.1f}°, α_2 {d_al[1]:+.1f}°" if d_al is not None else ""))
    best = max(have, key=lambda n: ctx.win[n]["acc"].mean())

    def d_alpha(n: str, layer: int) -> float:
        """How far eHebb at ``n`` moved α of ``layer`` from f0,f0,f0's (negative: better aligned)."""
        return float(ctx.win[n]["align"][:, layer].mean() - b["align"][:, layer].mean())

    checks = [(n, layer) for n, layer in (("t1-f0-f0-ehebb", 1), ("t1-f0-ehebb-f0", 0)) if n in ctx.win]
    held = [d_alpha(n, layer) < -5 for n, layer in checks]
    mech = ("holds" if checks and all(held) else "fails" if checks and not any(held) else "holds in part")
    return Verdict(
        "reported; the paper's values are not transcribed here" + ("" if len(have) == len(NAMES) else " (partly run)"),
        f"Against f0,f0,f0: {'; '.join(facts)}. Best: {best[3:].replace('-', ',')}. eHebb on W_ℓ pulls W_ℓ "
        "towards B_ℓ (Eq. 9) and so aligns e_{ℓ−1}: on W3 it should lower α_2, on W2 α_1, on W1 nothing "
        f"measured (e_0 is the input's); that mechanism {mech} here (a drop of more than 5°).",
        tuple(have))


CLAIM = Claim("table1", "Table 1, eHebb's effect depends on the layer", "not transcribed here", (BASE,), decide,
              uses=NAMES[1:])
CLAIMS = (CLAIM,)


def section(ctx: PaperContext) -> list[str]:
    """The section: accuracy and α_1, α_2 of each placement, the verdict, the figure."""
    L = [f"### Table 1: {sizes(ctx, BASE)}, F0 or eHebb per layer (fa)", ""]
    have = [n for n in NAMES if n in ctx.runs]
    if not have:
        return L + ["Not run yet (`bash scripts/paper_runs.sh table1`).", ""]
    L += ["The paper's Table 1 gives accuracy and alignment for these combinations on EMNIST; its values are "
          "not transcribed in this repository, so this table has no paper column. Its point, which these runs "
          "can test, is that where eHebb is placed matters (docs/METHOD.md §7).", "",
          "| layer rules (W1, W2, W3) | accuracy, % (98% CI) | α_1 (°) | α_2 (°) |", "| --- | --- | --- | --- |"]
    for lr, n in zip(TABLE1, NAMES):
        if n not in ctx.runs:
            L.append(f"| {lr} | not run yet | | |")
            continue
        L.append(f"| {lr} | {acc_text(ctx, n)} | " + " | ".join(alpha_cells(ctx.win[n]["align"], 2)) + " |")
    L.append("")
    v = evaluate(CLAIM, ctx)
    if v is not None:
        L += [verdict_line(ctx, CLAIM, v), ""]
    return L + [figure_links(ctx, FIGURE.name, FIGURE.panels), ""]
