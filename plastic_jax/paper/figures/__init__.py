"""The figures (and tables) of the paper-scale report, one module each, and the claims registry.

Each module declares:

- ``FIGURE``: a ``claims.Figure`` (the runs it overlays, its panels, the paper_runs.sh groups
  that make them), or None for a section without a figure (``metatest``);
- ``CLAIMS``: its claims (``claims.Claim``: statement, the paper's value, the runs needed, a
  ``decide`` function);
- ``section(ctx) -> list[str]``: its section of the report (markdown lines), except ``fig7``,
  whose table and verdict are part of ``fig5``'s joint section "Figs. 5 and 7".

``MODULES`` is the report's order; adding a figure is one new module and one entry there.
"""

from __future__ import annotations

from plastic_jax.paper.claims import Claim, Figure
from plastic_jax.paper.figures import fig3, fig4, fig5, fig7, fig8, figS2, metatest, table1
from plastic_jax.paper.matrix import PAPER_GROUPS

#: the figure modules, in the order of the report
MODULES = (fig3, fig4, figS2, fig5, fig7, fig8, table1, metatest)
#: the sections of the report, in order (``section(ctx) -> list[str]``)
SECTIONS = tuple(m.section for m in MODULES if hasattr(m, "section"))
#: the figures, by name, in drawing order
FIGURES: dict[str, Figure] = {m.FIGURE.name: m.FIGURE for m in MODULES if m.FIGURE is not None}
#: every claim of the paper the report checks, in the order of the report's summary table
CLAIMS: tuple[Claim, ...] = tuple(c for m in MODULES for c in m.CLAIMS)
#: what each --only word of --scale paper trains: the paper_runs.sh groups, the figures, metatest
PAPER_SELECT: dict[str, tuple[str, ...]] = {
    **{g: (g,) for g in PAPER_GROUPS},
    **{name: f.groups for name, f in FIGURES.items() if name not in PAPER_GROUPS},
    "metatest": (),
}

__all__ = ["CLAIMS", "FIGURES", "MODULES", "PAPER_SELECT", "SECTIONS"]
