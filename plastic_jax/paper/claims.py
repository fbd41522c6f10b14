"""A claim of the paper, declared as data, and a figure of the report.

A ``Claim`` is a record: the statement, the paper's value, the runs it needs (``needs``; and
those it reads when they exist, ``uses``) and a ``decide`` function from a ``PaperContext`` to a
``Verdict`` (the verdict word, the evidence in a sentence or two, the runs it rests on). The
figure modules of ``plastic_jax.paper.figures`` declare their claims; ``figures.CLAIMS`` collects
them in report order. ``evaluate`` decides a claim on any context — the matrix's runs, one preset's
20-seed runs (``plastic_jax.paper.presets``), a few synthetic runs in a test — and returns None
where the runs it needs are not there.

A ``Figure`` names the runs a figure overlays (``"<pool>"``, ``"<best pool>"`` allowed), its
panels (``plastic_jax.plots.plot_runs`` names) and the paper_runs.sh groups that make its runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from plastic_jax.paper.context import PaperContext


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict on some runs: ``verdict`` (``reproduced``, ``partly ...``, ``not
    reproduced``, ``reported ...``), ``why`` (the evidence, in words and numbers) and the runs it
    rests on (``rests_on``: an unfinished one makes the verdict provisional)."""

    verdict: str
    why: str
    rests_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: ``key`` (short id), ``statement``, ``paper`` (the paper's value,
    EMNIST), ``needs`` (runs that must have logged for a verdict), ``decide`` (context -> Verdict,
    or None when the runs there cannot decide it) and ``uses`` (runs read when present)."""

    key: str
    statement: str
    paper: str
    needs: tuple[str, ...]
    decide: Callable[[PaperContext], Verdict | None]
    uses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Figure:
    """One figure of the report: its directory name, the runs it overlays (the first is the one it
    is about: without it the figure is not drawn), its panels, the paper_runs.sh groups whose runs
    it needs (``--only``), and whether each pool run also gets its own Θ figure (``per_pool_theta``)."""

    name: str
    runs: tuple[str, ...]
    panels: tuple[str, ...]
    groups: tuple[str, ...]
    per_pool_theta: bool = False


def evaluate(claim: Claim, ctx: PaperContext) -> Verdict | None:
    """``claim.decide(ctx)`` when the runs it needs are in ``ctx``, else None."""
    if not ctx.has(claim.needs):
        return None
    return claim.decide(ctx)


def verdict_text(ctx: PaperContext, v: Verdict) -> str:
    """The verdict word(s), marked provisional when a run it rests on has not finished."""
    open_ = [n for n in v.rests_on if n in ctx.runs and not ctx.finished.get(n)]
    return v.verdict + (f" (provisional: {', '.join(open_)} not finished)" if open_ else "")


def verdict_line(ctx: PaperContext, claim: Claim, v: Verdict) -> str:
    """``**statement: verdict.** why``: a claim's paragraph in its section."""
    return f"**{claim.statement}: {verdict_text(ctx, v)}.** {v.why}"
