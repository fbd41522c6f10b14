"""Figures of the stability map (``plastic_jax.stability``; scripts/stability_map.py): the regime maps of
slices of Θ with their amplification contours and the runs' Θ trajectories, and the edge factor
against the inputs' scale. matplotlib (Agg backend) is imported when drawing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plastic_jax.stability import REGIMES, Axis

#: the regimes' colours, by code: smooth, chaotic, diverged
COLORS = ("#cfe8cf", "#f4a259", "#7a1f2b")


def draw_slice(ax: Any, sl: dict[str, Any], xa: Axis, ya: Axis, n: int, trajectories: list[dict[str, Any]],
               learned: list[dict[str, Any]], idx: dict[str, int]) -> None:
    """One map on ``ax``: the (n, n) regimes of ``sl`` (``stability.run_slice``; discrete colours),
    contours of its log10 amplification, ``trajectories`` ({"theta": (E + 1, 3)}) projected on the
    slice (thin lines; start ○, final ●), the learned Θ ({"theta": (3,)}; ·) and the fixed point
    (★ where the slice's fixed value is); ``idx`` places a term in Θ."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    reg = np.asarray(sl["regime"], float)
    ax.pcolormesh(xa.edges(n), ya.edges(n), reg, cmap=ListedColormap(COLORS),
                  norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3), shading="flat", rasterized=True)
    la = np.array(sl["log10_amplification"], dtype=float)
    xc, yc = xa.centers(n), ya.centers(n)
    lo, hi = np.nanmin(la, initial=np.inf), np.nanmax(la, initial=-np.inf)
    levels = [lv for lv in (2, 3, 6) if lo < lv < hi]
    if levels and np.isfinite(la).sum() >= 4:
        cs = ax.contour(xc, yc, np.ma.masked_invalid(la), levels=levels, colors="k", linewidths=0.8)
        ax.clabel(cs, fmt=lambda v: f"$10^{{{v:g}}}$", fontsize=7)
    ix, iy = idx[xa.term], idx[ya.term]
    for t in trajectories:
        tr = t["theta"]
        (line,) = ax.plot(tr[:, ix], tr[:, iy], lw=0.8, alpha=0.8)
        ax.plot(tr[0, ix], tr[0, iy], "o", mfc="none", mec=line.get_color(), ms=4)
        ax.plot(tr[-1, ix], tr[-1, iy], "o", color=line.get_color(), ms=4)
    if learned:
        th = np.array([s["theta"] for s in learned])
        ax.plot(th[:, ix], th[:, iy], "k.", ms=3, label=f"final Θ of {len(th)} seeds")
    fx = sl["fixed_point"]
    ax.plot(fx[xa.term], fx[ya.term], "*", color="white", mec="k", ms=12, label="median learned Θ")
    for a, set_scale, set_lim in ((xa, ax.set_xscale, ax.set_xlim), (ya, ax.set_yscale, ax.set_ylim)):
        set_scale(a.scale, **({"linthresh": a.linthresh} if a.scale == "symlog" else {}))
        set_lim(a.lo, a.hi)
    ax.set_xlabel(rf"$\theta_{{{xa.term[1:]}}}$")
    ax.set_ylabel(rf"$\theta_{{{ya.term[1:]}}}$")
    (fixed_term, fixed_value), = sl["fixed"].items()
    ax.set_title(rf"$\theta_{{{fixed_term[1:]}}}$ = {fixed_value:.3g}, inputs × {sl['x_scale']:.3g}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")


def legend_patches() -> list[Any]:
    """One patch per regime, in its colour (the legend shared by a figure's maps)."""
    from matplotlib.patches import Patch

    return [Patch(color=c, label=r) for c, r in zip(COLORS, REGIMES)]


def figure_slices(path: str, slices: list[dict[str, Any]], axes_of: list[tuple[Axis, Axis]], n: int,
                  trajectories: list[dict[str, Any]], learned: list[dict[str, Any]], idx: dict[str, int],
                  title: str) -> None:
    """The maps side by side (``slices[k]`` drawn on ``axes_of[k]``'s (x, y) axes, n × n cells),
    one shared regime legend; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(slices), figsize=(6.2 * len(slices), 5.6), squeeze=False)
    for ax, sl, (xa, ya) in zip(axs[0], slices, axes_of):
        draw_slice(ax, sl, xa, ya, n, trajectories, learned, idx)
    fig.legend(handles=legend_patches(), loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure_input_scale(path: str, scales: list[dict[str, Any]], emnist_scale: float, title: str) -> None:
    """Edge factor c* of the median learned Θ (c·Θ turns non-smooth above it) and the amplification
    at Θ against the input scale s, from ``scales`` (``stability.input_scale_edges``: one entry per s);
    a scale where Θ itself is not smooth is marked at the bottom; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.array([r["scale"] for r in scales])
    lo = np.array([np.nan if r["edge_bracket"][0] is None else r["edge_bracket"][0] for r in scales], float)
    hi = np.array([np.nan if r["edge_bracket"][1] is None else r["edge_bracket"][1] for r in scales], float)
    edge = np.sqrt(lo * hi)
    amps = [np.array([np.nan if a is None else a for a in r["amplification_at_1"]], float) for r in scales]
    amp = np.array([np.median(a[np.isfinite(a)]) if np.isfinite(a).any() else np.nan for a in amps])
    at1 = [r["regime_at_1"] for r in scales]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ok = np.isfinite(edge)
    a1.errorbar(s[ok], edge[ok], yerr=[edge[ok] - lo[ok], hi[ok] - edge[ok]], fmt="o-", capsize=3)
    a1.set_ylabel("edge factor c*: c·Θ smooth below")
    a1.set_yscale("log")
    a2.plot(s[np.isfinite(amp)], amp[np.isfinite(amp)], "o-")
    a2.axhline(1e3, color="0.3", ls="--", lw=1, label="chaotic threshold")
    a2.set_yscale("log")
    a2.set_ylabel("amplification at Θ (median of tasks)")
    for ax in (a1, a2):
        for x, r in zip(s, at1):
            if r != "smooth":
                ax.plot(x, 0.04, "v", color="tab:red", ms=8, transform=ax.get_xaxis_transform())
                ax.annotate(f"Θ {r}", (x, 0.08), xycoords=("data", "axes fraction"), ha="center", fontsize=8,
                            color="tab:red")
        ax.set_xlabel("input scale s (x → s·x)")
        ax.axvline(1.0, color="0.5", ls=":", lw=1)
        ax.axvline(emnist_scale, color="tab:red", ls=":", lw=1, label=f"EMNIST's E‖x‖² (s = {emnist_scale:.3g})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
