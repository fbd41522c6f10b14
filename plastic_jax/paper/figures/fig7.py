"""Fig. 7: oja + fa, much above FA with only slightly better alignment.

Its table and verdict are part of the joint section "Figs. 5 and 7" (``figures.fig5.section``)."""

from __future__ import annotations

from plastic_jax.paper.claims import Claim, Figure, Verdict
from plastic_jax.paper.context import PaperContext, hidden_mean, learned_acc, mean_pct, unless_degenerate
from plastic_jax.paper.measures import ci_separated

FIGURE = Figure("fig7", ("oja-fa", "bio-fa", "f0-fa", "f0-bp"), ("accuracy", "theta", "alignment"),
                ("fig3", "rules"))


def decide(ctx: PaperContext) -> Verdict:
    """Reproduced when oja+fa's seeds that learned lie above f0+fa (98% CIs) and its mean hidden α
    is below f0+fa's but above ehebb+fa's; partly when one of the two holds; at best partly when
    seeds of oja+fa are degenerate."""
    w, fa = ctx.win["oja-fa"], ctx.win["f0-fa"]
    above = ci_separated(w["acc_l"], fa["acc"])
    a_oja, a_fa = hidden_mean(ctx, "oja-fa"), hidden_mean(ctx, "f0-fa")
    a_eh = hidden_mean(ctx, "ehebb-fa") if "ehebb-fa" in ctx.win else None
    slightly = a_oja < a_fa and (a_eh is None or a_oja > a_eh)
    verdict = "reproduced" if above > 0 and slightly else "partly" if above > 0 or slightly else "not reproduced"
    return Verdict(
        unless_degenerate(ctx, verdict, "oja-fa"),
        f"oja+fa {mean_pct(ctx, 'oja-fa')}{learned_acc(ctx, 'oja-fa')} against f0+fa "
        f"{mean_pct(ctx, 'f0-fa')} "
        f"({'above' if above > 0 else 'not above'}, 98% CIs over the seeds that learned); mean hidden α "
        f"{a_oja:.1f}° against f0+fa's "
        f"{a_fa:.1f}°" + (f" and ehebb+fa's {a_eh:.1f}°" if a_eh is not None else "") + ".",
        ("oja-fa", "f0-fa"))


CLAIM = Claim("fig7", "Fig. 7, Oja much above FA with only slightly better alignment",
              "much above f0+fa; only slightly better aligned", ("oja-fa", "f0-fa"), decide, uses=("ehebb-fa",))
CLAIMS = (CLAIM,)
