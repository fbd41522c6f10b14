"""Fig. 8: the orthonormality error per layer, ‖W y_{ℓ−1} − W Wᵀ y_ℓ‖²: Oja's term lowers it."""

from __future__ import annotations

from plastic_jax.paper.claims import Claim, Figure, Verdict, evaluate, verdict_line
from plastic_jax.paper.context import PaperContext, compact, episodes_note, figure_links, missing
from plastic_jax.paper.markdown import fmt_ci
from plastic_jax.paper.measures import ci_separated

FIGURE = Figure("fig8", ("f0-fa", "ehebb-fa", "oja-fa", "bio-fa"), ("orthonormality",), ("fig3", "rules"))


def decide(ctx: PaperContext) -> Verdict | None:
    """Reproduced when oja+fa's error lies below f0+fa's (disjoint 98% CIs) in every hidden layer,
    partly in some; None when either run logged no orthonormality."""
    if ctx.win["oja-fa"]["orth"] is None or ctx.win["f0-fa"]["orth"] is None:
        return None
    o_oja, o_fa = ctx.win["oja-fa"]["orth"][:, :-1], ctx.win["f0-fa"]["orth"][:, :-1]
    lower = [l + 1 for l in range(o_fa.shape[1]) if ci_separated(o_fa[:, l], o_oja[:, l]) > 0]
    verdict = "reproduced" if len(lower) == o_fa.shape[1] else "partly" if lower else "not reproduced"
    return Verdict(
        verdict,
        "oja+fa's error is below f0+fa's (disjoint 98% CIs) in hidden layers "
        f"{', '.join(map(str, lower)) or 'none'} "
        f"of {o_fa.shape[1]}; mean over hidden layers {o_oja.mean():.3g} against {o_fa.mean():.3g}. In the "
        f"output layer, which the claim does not cover, it is {ctx.win['oja-fa']['orth'][:, -1].mean():.3g} "
        f"against {ctx.win['f0-fa']['orth'][:, -1].mean():.3g}.",
        ("oja-fa", "f0-fa"))


CLAIM = Claim("fig8", "Fig. 8, Oja's term makes the weights more orthonormal", "lower error with F9 (oja, bio)",
              ("oja-fa", "f0-fa"), decide)
CLAIMS = (CLAIM,)


def section(ctx: PaperContext) -> list[str]:
    """The section: the error per layer of the fa rules (and f0+bp), the verdict, the figure."""
    L = ["### Fig. 8: orthonormality error per layer, ‖W y_{ℓ−1} − W Wᵀ y_ℓ‖²", ""]
    names = [n for n in ("f0-fa", "ehebb-fa", "oja-fa", "bio-fa", "f0-bp") if n in ctx.runs
             and ctx.win[n]["orth"] is not None]
    if "f0-fa" not in names or "oja-fa" not in names:
        return L + [f"Not run yet: {', '.join(missing(ctx, ('f0-fa', 'oja-fa', 'ehebb-fa', 'bio-fa')))} "
                    "(`bash scripts/paper_runs.sh fig3 rules`).", ""]
    nl = ctx.win["f0-fa"]["orth"].shape[1]
    L += compact(ctx, [(f"mean hidden-layer error, {n.replace('-', '+')}", p,
                        f"{ctx.win[n]['orth'][:, :-1].mean():.3g}" + episodes_note(ctx, n))
                       for n, p in (("f0-fa", "high"), ("oja-fa", "lower: F9 pushes towards orthonormal rows"),
                                    ("bio-fa", "lower (has F9)"), ("ehebb-fa", "–")) if n in names])
    paper = {"f0-fa": "–", "ehebb-fa": "–", "oja-fa": "lower than without F9", "bio-fa": "lower (has F9)",
             "f0-bp": "–"}
    L += ["| run | paper (EMNIST) | " + " | ".join(f"layer {l + 1}" for l in range(nl)) + " |",
          "| --- | --- |" + " --- |" * nl]
    for n in names:
        o = ctx.win[n]["orth"]
        L.append(f"| {n}{episodes_note(ctx, n)} | {paper[n]} | " + " | ".join(
            f"{fmt_ci(o[:, l], 1.0, 2)}" for l in range(o.shape[1])) + " |")
    v = evaluate(CLAIM, ctx)
    assert v is not None
    return L + ["", verdict_line(ctx, CLAIM, v), "", figure_links(ctx, FIGURE.name, FIGURE.panels), ""]
