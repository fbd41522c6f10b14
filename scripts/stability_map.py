"""Stability map of the bio rule: where in Θ-space an episode is smooth, chaotic or diverged.

For the rule ``bio`` (Θ = (θ0, θ2, θ9) on F0, F2, F9) with ``fa`` feedback at the paper's network
(784-170-130-100-70-47, M = 5, K = 50 → T = 250, Q = 10) on the offline ``glyphs`` set
(meta-training classes of ``--holdout 0.21``, as runs/seeds20), every cell of a grid over a 2-D
slice of Θ adapts ``--tasks`` fixed tasks (the same tasks in every cell, vmapped) and measures, per
task (``plastic_jax.sensitivity``): the perturbation amplification ‖δW_T‖/‖δW_1‖ of the tangent
along the fixed unit direction v = (1, 1, 1)/√3, whether the episode diverged (adapted weights or
query loss not finite), the query loss and accuracy. A task is *diverged*, else *chaotic* when its
amplification exceeds ``--threshold`` (1e3) or overflowed, else *smooth*; a cell takes the worst
regime of its tasks. Slices: θ0 × θ2 at θ9 fixed and θ0 × θ9 at θ2 fixed, the fixed values the
median over seeds of the final Θ of the runs (``--runs``; or ``--fixed-theta2``/``--fixed-theta9``).

Overlaid: the meta-training trajectories of Θ (records' ``theta``) of ``--traj-seeds`` seeds of each
run, projected on the slice (the third coefficient varies along a trajectory; the slice holds it at
the median), and every seed's final Θ. Beyond the slices: for every seed's final (learned) Θ, the
amplification there and its distance to the edge along the ray c·Θ: the smallest factor c on the
ladder c = 2^(k/2) ≤ ``--ray-max`` at which the cell is no longer smooth, bracket refined by
``--refine`` bisections in log c. And whether the edge moves with the data's energy: the same edge
factor of the median Θ with the inputs scaled by s (``--input-scales``, plus the s that gives glyphs
EMNIST balanced's E‖x‖², from its quoted moments as in scripts/data_moments.py), and the θ0 × θ2
map again with the inputs at that EMNIST-energy scale (``--extra-map-scale`` for another).

    taskset -c 0 .venv/bin/python scripts/stability_map.py            # ~15 min on one core
    .venv/bin/python scripts/stability_map.py --quick --out /tmp/q --json /tmp/q/map.json   # seconds

Writes docs/benchmark/stability_map.json and docs/figures/stability_map_{slices,input_scale,emnist_energy}.png
(default sizes: 13×13 cells per map, 4 tasks per cell, about 0.8 s of one core per cell).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

#: the runs whose trajectories and final Θ are overlaid (those that exist and are finished)
DEFAULT_RUNS = ("runs/seeds20/robust/bio-fa", "runs/seeds20/paper/bio-fa")
#: EMNIST balanced's quoted pixel moments (scripts/data_moments.py): E‖x‖² = 784 (σ² + μ²)
EMNIST_MEAN_SQ_NORM = 784 * (0.3332 ** 2 + 0.1751 ** 2)
#: where the fixed coefficients come from when no run is given: a typical learned bio Θ
#: (runs/seeds20/robust/bio-fa, median over 20 seeds, rounded)
FALLBACK_FIXED = {"F0": 0.0115, "F2": -0.057, "F9": 0.0062}
REGIMES = ("smooth", "chaotic", "diverged")  # sensitivity.REGIMES, by code
#: log10 of an amplification that overflowed float32 (drawn at the top of the contour scale)
LOG10_OVERFLOW = 38.5


# --------------------------------------------------------------------------- the axes of a slice


@dataclass(frozen=True)
class Axis:
    """One axis of a slice: the coefficient ``term`` ("F0"), its range [lo, hi] and how it is
    spaced and drawn: ``"log"`` (lo > 0) or ``"symlog"`` (through 0; linear within ±linthresh)."""

    term: str
    lo: float
    hi: float
    scale: str = "log"
    linthresh: float = 1e-3

    def _transform(self) -> Any:
        from matplotlib.scale import LogTransform, SymmetricalLogTransform

        if self.scale == "log":
            return LogTransform(10)
        return SymmetricalLogTransform(10, self.linthresh, 1.0)

    def edges(self, n: int) -> np.ndarray:
        """(n + 1,) cell edges, evenly spaced in the axis' scale (so the cells look alike)."""
        t = self._transform()
        a, b = t.transform(np.array([[self.lo], [self.hi]]))[:, 0]
        return t.inverted().transform(np.linspace(a, b, n + 1)[:, None])[:, 0]

    def centers(self, n: int) -> np.ndarray:
        """(n,) cell centres, the midpoints of ``edges`` in the axis' scale."""
        t = self._transform()
        e = t.transform(self.edges(n)[:, None])[:, 0]
        return t.inverted().transform(((e[:-1] + e[1:]) / 2)[:, None])[:, 0]

    def coord(self, v: np.ndarray) -> np.ndarray:
        """Values in the axis' scale (log10, or matplotlib's symlog), for distances on the map."""
        return self._transform().transform(np.asarray(v, float).reshape(-1, 1))[:, 0].reshape(np.shape(v))


# --------------------------------------------------------------------------- the experiment


@dataclass
class Setup:
    """The rule, episode spec, class index (meta-training classes) and dataset of the map."""

    rule: Any
    spec: Any
    ci: Any
    dataset: str
    mean_sq_norm: float  # E‖x‖² of the dataset's inputs


def build_setup(quick: bool, data_dir: str | None = None) -> Setup:
    """The paper's network on glyphs (``--holdout 0.21``: runs/seeds20's split), or with ``quick`` a
    tiny one on digits (64-16-10, M = 3, K = 5, Q = 2)."""
    from plastic_jax.config import TrainConfig
    from plastic_jax.experiment import build

    if quick:
        cfg = TrainConfig(dataset="digits", rule="bio", feedback="fa", hidden=(16,), M=3, K=5, Q=2)
    else:
        cfg = TrainConfig(dataset="glyphs", data_dir=data_dir, holdout=0.21, rule="bio", feedback="fa",
                          hidden=(170, 130, 100, 70), M=5, K=50, Q=10)
    exp = build(cfg)
    x = np.asarray(exp.data.x, np.float64)
    return Setup(exp.rule, exp.spec, exp.ci, cfg.dataset, float((x * x).sum(axis=1).mean()))


def make_evaluator(rule: Any, spec: Any, threshold: float) -> Callable[..., dict[str, Any]]:
    """A jitted ``(thetas (C, R), keys (N, 2), x_scale (), ci) -> dict of (C, N)``: for every Θ and
    task, the amplification along (1, …, 1)/√R, the diverged flag, the regime code (0 smooth, 1
    chaotic, 2 diverged: ``sensitivity.regime``), the query loss and accuracy; the inputs of ``ci``
    multiplied by ``x_scale`` first."""
    import jax

    from plastic_jax.inner import query_loss
    from plastic_jax.sensitivity import regime, sensitivity_of, tangent_episode

    def one(theta, key, ci):
        ep = tangent_episode(theta, rule, spec, key, ci)
        s = sensitivity_of(ep)
        return {"amplification": s.amplification, "diverged": s.diverged, "regime": regime(s, threshold),
                "loss": s.loss, "accuracy": query_loss(ep.W, ep.task.xq, ep.task.yq)[1]}

    def cells(thetas, keys, x_scale, ci):
        ci = ci._replace(x=ci.x * x_scale)
        return jax.vmap(lambda th: jax.vmap(lambda k: one(th, k, ci))(keys))(thetas)

    return jax.jit(cells)


def evaluate(fn: Callable[..., dict[str, Any]], thetas: np.ndarray, keys: Any, ci: Any, x_scale: float = 1.0,
             chunk: int = 8) -> dict[str, np.ndarray]:
    """``fn`` over ``thetas`` (C, R) in chunks of ``chunk`` cells (the last one padded, so one
    compilation serves all): dict of (C, N) host arrays."""
    import jax.numpy as jnp

    thetas = np.asarray(thetas, np.float32)
    C = len(thetas)
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, C, chunk):
        part = thetas[i:i + chunk]
        pad = chunk - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        res = fn(jnp.asarray(part), keys, jnp.float32(x_scale), ci)
        for k, v in res.items():
            out.setdefault(k, []).append(np.asarray(v)[:chunk - pad])
    return {k: np.concatenate(v) for k, v in out.items()}


def cell_summary(res: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per cell (axis 0) from per-task results (C, N): ``regime`` the worst task's code;
    ``log10_amplification`` the median over the cell's finite tasks of log10 amplification (an
    overflowed one counts as ``LOG10_OVERFLOW``; NaN when every task diverged); ``diverged_frac``,
    ``chaotic_frac``; ``query_loss`` and ``accuracy`` the mean over tasks (NaN if any diverged)."""
    amp = res["amplification"].astype(np.float64)
    div = res["diverged"].astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        la = np.where(np.isfinite(amp) & (amp > 0), np.log10(np.where(amp > 0, amp, 1.0)), LOG10_OVERFLOW)
    la = np.where(div, np.nan, la)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(la, axis=-1)
    return {"regime": res["regime"].max(axis=-1).astype(int), "log10_amplification": med,
            "diverged_frac": div.mean(axis=-1), "chaotic_frac": (res["regime"] == 1).mean(axis=-1),
            "query_loss": res["loss"].astype(np.float64).mean(axis=-1),
            "accuracy": res["accuracy"].astype(np.float64).mean(axis=-1)}


def classify(amplification: np.ndarray, diverged: np.ndarray, threshold: float = 1e3) -> np.ndarray:
    """The regime codes of tasks (any shape) from their amplification and diverged flag, in NumPy
    (what ``sensitivity.regime`` computes on the device): 2 diverged, 1 chaotic, 0 smooth."""
    amp = np.asarray(amplification, np.float64)
    with np.errstate(invalid="ignore"):
        chaotic = ~np.isfinite(amp) | (amp > threshold)
    return np.where(diverged, 2, np.where(chaotic, 1, 0))


# --------------------------------------------------------------------------- runs: learned Θ, trajectories


def finished_runs(paths: Sequence[str]) -> list[str]:
    """The run directories among ``paths`` that exist and are finished (summary.json written:
    a run still being written is not read)."""
    return [p for p in paths if os.path.isfile(os.path.join(p, "summary.json"))
            and os.path.isfile(os.path.join(p, "metrics.jsonl"))]


def read_trajectories(run_dir: str, terms: Sequence[str] = ("F0", "F2", "F9")) -> dict[int, np.ndarray]:
    """seed -> (E, 3) Θ after each episode (records' ``theta``, the last record of an (episode,
    seed) winning), in ``terms`` order; the first row is the initial Θ."""
    from plastic_jax import rundir

    cfg = rundir.read_config_dict(run_dir)
    theta0 = float(cfg.get("theta0", 1e-3))
    by_seed: dict[int, list[tuple[int, list[float]]]] = {}
    for (ep, seed), r in rundir.latest_records(rundir.read_records(run_dir)).items():
        th = r.get("theta", {})
        by_seed.setdefault(seed, []).append((ep, [float(th.get(t, math.nan)) for t in terms]))
    start = [theta0 if t == "F0" else 0.0 for t in terms]  # inner.initial_theta
    return {s: np.array([start] + [v for _, v in sorted(rows)]) for s, rows in sorted(by_seed.items())}


def learned_thetas(runs: Sequence[str]) -> list[dict[str, Any]]:
    """Every seed's final Θ (summary.json's ``theta``) of every run: {run, seed, theta (3,),
    last100_accuracy (None: not finite)}."""
    from plastic_jax import rundir

    out = []
    for p in runs:
        summary = rundir.read_json(os.path.join(p, "summary.json"))
        seeds, thetas = summary.get("seeds", []), summary.get("theta", [])
        accs = summary.get("last100_accuracy_per_seed") or [None] * len(seeds)
        for seed, th, acc in zip(seeds, thetas, accs):
            out.append({"run": p, "seed": int(seed), "theta": [float(th["F0"]), float(th["F2"]), float(th["F9"])],
                        "last100_accuracy": acc})
    return out


# --------------------------------------------------------------------------- the ray c·Θ


def ray_edges(fn: Callable[..., dict[str, Any]], thetas: np.ndarray, factors: np.ndarray, keys: Any, ci: Any,
              x_scale: float, chunk: int, refine: int = 0) -> list[dict[str, Any]]:
    """For each Θ (P, 3), the cells c·Θ for c in ``factors`` (increasing, the first 1), climbed
    until the first cell that is not smooth (a Θ stops there: the cells beyond are not evaluated);
    then ``refine`` bisections (in log c) of each closed bracket. Calls of at most ``chunk`` cells,
    and no more than P. Returns per Θ: the regime of each ladder c (None: not evaluated), the
    amplification per task and the regime at c = 1, ``ladder_bracket`` [last smooth c, first
    non-smooth c] on the ladder (None: none below / none up to the last factor), ``edge_bracket``
    the same after the bisections, and ``edge_factor``, its geometric mean (None when open)."""
    P, F = len(thetas), len(factors)
    thetas = np.asarray(thetas, np.float64)
    chunk = min(chunk, P)  # a single Θ is not padded to a row of cells
    reg = np.full((P, F), -1)
    amp1 = np.full((P, 1), np.nan)
    active = np.arange(P)
    for f, c in enumerate(factors):
        if not len(active):
            break
        res = evaluate(fn, thetas[active] * c, keys, ci, x_scale, chunk)
        reg[active, f] = res["regime"].max(axis=-1)
        if f == 0:
            amp1 = res["amplification"]
        active = active[reg[active, f] == 0]
    lo: list[float | None] = []
    hi: list[float | None] = []
    for i in range(P):
        bad = np.flatnonzero(reg[i] > 0)
        if not len(bad):
            lo.append(float(factors[-1]))
            hi.append(None)
        else:
            lo.append(float(factors[bad[0] - 1]) if bad[0] > 0 else None)
            hi.append(float(factors[bad[0]]))
    ladder = [[a, b] for a, b in zip(lo, hi)]
    for _ in range(refine):
        closed = np.array([i for i in range(P) if lo[i] and hi[i]], int)
        if not len(closed):
            break
        mids = np.sqrt(np.array([lo[i] for i in closed]) * np.array([hi[i] for i in closed]))
        res = evaluate(fn, thetas[closed] * mids[:, None], keys, ci, x_scale, min(chunk, len(closed)))
        for i, m, r in zip(closed, mids, res["regime"].max(axis=-1)):
            if r > 0:
                hi[i] = float(m)
            else:
                lo[i] = float(m)
    out = []
    for i in range(P):
        a, b = lo[i], hi[i]
        out.append({"regimes": [REGIMES[int(r)] if r >= 0 else None for r in reg[i]],
                    "amplification_at_1": [_num(x) for x in amp1[i]], "regime_at_1": REGIMES[int(reg[i, 0])],
                    "ladder_bracket": ladder[i], "edge_bracket": [a, b],
                    "edge_factor": math.sqrt(a * b) if a and b else None})
    return out


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _nums(a: np.ndarray) -> Any:
    """A nested list of numbers, non-finite as None (strict JSON)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return _num(a) if a.dtype.kind == "f" else a.item()
    return [_nums(x) for x in a]


# --------------------------------------------------------------------------- figures


COLORS = ("#cfe8cf", "#f4a259", "#7a1f2b")  # smooth, chaotic, diverged


def draw_slice(ax: Any, sl: dict[str, Any], xa: Axis, ya: Axis, n: int, trajectories: list[dict[str, Any]],
               learned: list[dict[str, Any]], idx: dict[str, int]) -> None:
    """One map: regimes (discrete colours), contours of log10 amplification, trajectories projected
    on the slice (thin lines; start ○, final ●), the fixed point (★ where the slice's fixed value is)."""
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


def _legend_patches() -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(color=c, label=r) for c, r in zip(COLORS, REGIMES)]


def figure_slices(path: str, slices: list[dict[str, Any]], axes_of: list[tuple[Axis, Axis]], n: int,
                  trajectories: list[dict[str, Any]], learned: list[dict[str, Any]], idx: dict[str, int],
                  title: str) -> None:
    """The maps side by side, one shared regime legend; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(slices), figsize=(6.2 * len(slices), 5.6), squeeze=False)
    for ax, sl, (xa, ya) in zip(axs[0], slices, axes_of):
        draw_slice(ax, sl, xa, ya, n, trajectories, learned, idx)
    fig.legend(handles=_legend_patches(), loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure_input_scale(path: str, scales: list[dict[str, Any]], emnist_scale: float, title: str) -> None:
    """Edge factor c* of the median learned Θ (c·Θ turns non-smooth above it) and the amplification
    at Θ against the input scale s; a scale where Θ itself is not smooth is marked at the bottom."""
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


# --------------------------------------------------------------------------- main


def fixed_values(learned: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """The coefficients each slice holds fixed: flags, else the median final Θ over the runs' seeds,
    else ``FALLBACK_FIXED``; with where they came from."""
    if learned:
        med = np.median(np.array([s["theta"] for s in learned]), axis=0)
        fixed = dict(zip(("F0", "F2", "F9"), map(float, med)))
        src = f"median final Θ over {len(learned)} seeds of {sorted({s['run'] for s in learned})}"
    else:
        fixed, src = dict(FALLBACK_FIXED), "FALLBACK_FIXED (no finished run given)"
    for term, flag in (("F0", args.fixed_theta0), ("F2", args.fixed_theta2), ("F9", args.fixed_theta9)):
        if flag is not None:
            fixed[term] = float(flag)
            src += f"; {term} from --fixed-theta{term[1:]}"
    return fixed, src


def slice_thetas(xa: Axis, ya: Axis, n: int, fixed: dict[str, float], idx: dict[str, int]) -> np.ndarray:
    """(n·n, 3) Θ of the cells, row-major over (y, x): cell (j, i) is Θ with θ_x = x_i, θ_y = y_j."""
    xs, ys = xa.centers(n), ya.centers(n)
    base = np.array([fixed["F0"], fixed["F2"], fixed["F9"]])
    th = np.repeat(base[None], n * n, axis=0)
    th[:, idx[xa.term]] = np.tile(xs, n)
    th[:, idx[ya.term]] = np.repeat(ys, n)
    return th


def run_slice(fn: Callable[..., dict[str, Any]], xa: Axis, ya: Axis, n: int, fixed: dict[str, float],
              idx: dict[str, int], keys: Any, ci: Any, x_scale: float, chunk: int, threshold: float) -> dict[str, Any]:
    """Evaluate one slice: JSON-ready dict with (n, n) maps (rows: y, columns: x) and (n, n, N) per task."""
    th = slice_thetas(xa, ya, n, fixed, idx)
    t0 = time.perf_counter()
    res = evaluate(fn, th, keys, ci, x_scale, chunk)
    wall = time.perf_counter() - t0
    cs = cell_summary(res)
    N = res["amplification"].shape[-1]
    reg = cs["regime"].reshape(n, n)
    (fixed_term,) = [t for t in ("F0", "F2", "F9") if t not in (xa.term, ya.term)]
    out = {
        "name": f"{xa.term}x{ya.term}", "x_scale": x_scale, "fixed": {fixed_term: fixed[fixed_term]},
        "fixed_point": dict(fixed),
        "x": {"term": xa.term, "values": _nums(xa.centers(n)), "edges": _nums(xa.edges(n)), "scale": xa.scale},
        "y": {"term": ya.term, "values": _nums(ya.centers(n)), "edges": _nums(ya.edges(n)), "scale": ya.scale},
        "shape": [n, n], "regime": reg.tolist(), "regime_names": REGIMES,
        "fractions": {r: float((reg == i).mean()) for i, r in enumerate(REGIMES)},
        "log10_amplification": _nums(cs["log10_amplification"].reshape(n, n)),
        "chaotic_frac": _nums(cs["chaotic_frac"].reshape(n, n)),
        "diverged_frac": _nums(cs["diverged_frac"].reshape(n, n)),
        "query_loss": _nums(cs["query_loss"].reshape(n, n)), "accuracy": _nums(cs["accuracy"].reshape(n, n)),
        "amplification_tasks": _nums(res["amplification"].reshape(n, n, N)),
        "regime_tasks": res["regime"].reshape(n, n, N).astype(int).tolist(),
        "threshold": threshold, "wall_s": round(wall, 2), "seconds_per_cell": round(wall / (n * n), 4),
    }
    out["edges_from_fixed_point"] = axis_edges(out)
    return out


def axis_edges(sl: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Along the row and the column of the slice through its fixed point (the cell nearest to it),
    the nearest cell centre on each side that is not smooth: {"x": {"below": v, "above": v}, "y":
    …} (None: smooth up to the map's edge); "at": the fixed point's own cell is not smooth."""
    reg = np.asarray(sl["regime"])
    xs, ys = np.asarray(sl["x"]["values"], float), np.asarray(sl["y"]["values"], float)
    fx, fy = sl["fixed_point"][sl["x"]["term"]], sl["fixed_point"][sl["y"]["term"]]
    i, j = int(np.argmin(np.abs(xs - fx))), int(np.argmin(np.abs(ys - fy)))  # nearest centres (monotone axes)

    def side(line: np.ndarray, vals: np.ndarray, k: int) -> dict[str, float | None]:
        below = [m for m in range(k - 1, -1, -1) if line[m] > 0]
        above = [m for m in range(k + 1, len(line)) if line[m] > 0]
        return {"below": float(vals[below[0]]) if below else None, "above": float(vals[above[0]]) if above else None,
                "at": bool(line[k] > 0)}

    return {"x": side(reg[j, :], xs, i), "y": side(reg[:, i], ys, j)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=None, help="N: an N×N grid per slice (default 13; --quick 3)")
    p.add_argument("--tasks", type=int, default=None, help="tasks per cell (default 4; --quick 2)")
    p.add_argument("--out", default=None, help="where the figures go (default docs/figures)")
    p.add_argument("--json", default=None, help="the numbers (default docs/benchmark/stability_map.json)")
    p.add_argument("--quick", action="store_true", help="tiny network on digits, 3×3 grid, no extras: seconds")
    p.add_argument("--runs", nargs="*", default=None,
                   help=f"finished bio-fa runs to overlay (default: those of {list(DEFAULT_RUNS)} that exist)")
    p.add_argument("--traj-seeds", type=int, default=5, help="trajectories of this many seeds per run")
    p.add_argument("--fixed-theta0", type=float, default=None, help="θ0 where a slice holds it (default: median)")
    p.add_argument("--fixed-theta2", type=float, default=None, help="θ2 held by the θ0×θ9 slice (default: median)")
    p.add_argument("--fixed-theta9", type=float, default=None, help="θ9 held by the θ0×θ2 slice (default: median)")
    p.add_argument("--theta0-range", type=float, nargs=2, default=(3e-4, 1.0), help="θ0 (log axis)")
    p.add_argument("--theta2-range", type=float, nargs=2, default=(-1.0, 0.3), help="θ2 (symlog axis)")
    p.add_argument("--theta9-range", type=float, nargs=2, default=(-3e-3, 0.3), help="θ9 (symlog axis)")
    p.add_argument("--threshold", type=float, default=1e3, help="chaotic: amplification above this")
    p.add_argument("--ray-max", type=float, default=16.0, help="the ray c·Θ is climbed for c = 2^(k/2) up to this")
    p.add_argument("--input-scales", type=float, nargs="*", default=(0.5, 0.7, 0.9, 1.0, 1.1, 1.4, 2.0),
                   help="input scales s for the edge factor of the median Θ (the EMNIST-energy s is added)")
    p.add_argument("--refine", type=int, default=3, help="bisections of each edge bracket on the ray (log c)")
    p.add_argument("--extra-map-scale", type=float, default=None,
                   help="input scale of the extra θ0×θ2 map (default: EMNIST's E‖x‖² over glyphs')")
    p.add_argument("--no-extras", action="store_true", help="only the two slices (no rays, input scales, extra map)")
    p.add_argument("--task-seed", type=int, default=1234, help="the tasks: split(PRNGKey(task_seed), tasks)")
    p.add_argument("--chunk", type=int, default=None, help="cells per compiled call (default: the grid's N)")
    p.add_argument("--data-dir", default=None, help="where glyphs' cache lives (default: the package's)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import jax

    t_start = time.perf_counter()
    n = args.grid or (3 if args.quick else 13)
    n_tasks = args.tasks or (2 if args.quick else 4)
    out = args.out or ("stability_map_quick" if args.quick else os.path.join("docs", "figures"))
    json_path = args.json or (os.path.join(out, "stability_map.json") if args.quick
                              else os.path.join("docs", "benchmark", "stability_map.json"))
    chunk = args.chunk or n
    if n < 2 or n_tasks < 1 or chunk < 1:
        raise SystemExit("--grid must be at least 2, --tasks and --chunk at least 1")
    os.makedirs(out, exist_ok=True)
    os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)

    setup = build_setup(args.quick, args.data_dir)
    runs = finished_runs(args.runs if args.runs is not None else ([] if args.quick else DEFAULT_RUNS))
    learned = learned_thetas(runs)
    fixed, fixed_src = fixed_values(learned, args)
    idx = {"F0": 0, "F2": 1, "F9": 2}
    keys = jax.random.split(jax.random.PRNGKey(args.task_seed), n_tasks)
    fn = make_evaluator(setup.rule, setup.spec, args.threshold)
    a0 = Axis("F0", *args.theta0_range, scale="log")
    a2 = Axis("F2", *args.theta2_range, scale="symlog", linthresh=1e-3)
    a9 = Axis("F9", *args.theta9_range, scale="symlog", linthresh=1e-3)
    axes_of = [(a0, a2), (a0, a9)]
    trajectories = []
    for p in runs:
        for seed, tr in list(read_trajectories(p).items())[: args.traj_seeds]:
            trajectories.append({"run": p, "seed": seed, "theta": tr})

    t0 = time.perf_counter()
    slices = [run_slice(fn, xa, ya, n, fixed, idx, keys, setup.ci, 1.0, chunk, args.threshold) for xa, ya in axes_of]
    print(f"slices: {time.perf_counter() - t0:.1f} s ({n}×{n} × {len(slices)}, {n_tasks} tasks per cell)", flush=True)
    for sl in slices:
        print(f"  {sl['name']}: " + ", ".join(f"{r} {f:.0%}" for r, f in sl["fractions"].items())
              + f"; from the fixed point: {sl['edges_from_fixed_point']}", flush=True)

    sizes = "-".join(map(str, setup.spec.sizes))
    result: dict[str, Any] = {
        "setup": {"rule": "bio (F0, F2, F9)", "feedback": "fa", "dataset": setup.dataset,
                  "sizes": list(setup.spec.sizes),
                  "M": setup.spec.M, "K": setup.spec.K, "Q": setup.spec.Q, "T": setup.spec.M * setup.spec.K,
                  "tasks_per_cell": n_tasks, "task_seed": args.task_seed, "grid": n,
                  "direction": "(1, 1, 1)/sqrt(3) in (θ0, θ2, θ9)", "threshold": args.threshold,
                  "cell_regime": "the worst of its tasks (diverged > chaotic > smooth)",
                  "mean_sq_norm": setup.mean_sq_norm, "quick": args.quick, "jax_backend": jax.default_backend()},
        "fixed": fixed, "fixed_from": fixed_src, "runs": runs, "slices": slices,
    }
    emnist_scale = math.sqrt(EMNIST_MEAN_SQ_NORM / setup.mean_sq_norm)
    if not args.no_extras and not args.quick:
        factors = np.array([2 ** (k / 2) for k in range(int(2 * math.log2(args.ray_max)) + 1)])
        result["ray_factors"] = factors.tolist()
        t0 = time.perf_counter()
        if learned:
            rays = ray_edges(fn, np.array([s["theta"] for s in learned]), factors, keys, setup.ci, 1.0, chunk,
                             args.refine)
            result["seeds"] = [{**s, **r} for s, r in zip(learned, rays)]
            for r in result["seeds"]:
                a = [x if x is not None else math.inf for x in r["amplification_at_1"]]
                print(f"  {r['run']} seed {r['seed']}: Θ {np.round(r['theta'], 4).tolist()}, amplification "
                      f"{np.median(a):.3g} (median of {len(a)} tasks, max {max(a):.3g}), {r['regime_at_1']}, edge "
                      f"c* {r['edge_bracket']}, last-100 accuracy {r['last100_accuracy']}", flush=True)
        print(f"rays of {len(learned)} learned Θ: {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        med = np.array([[fixed["F0"], fixed["F2"], fixed["F9"]]])
        scales = sorted(set(round(s, 4) for s in args.input_scales) | {round(emnist_scale, 4)})
        result["input_scale"] = [{"scale": s, "emnist_energy": s == round(emnist_scale, 4),
                                  **ray_edges(fn, med, factors, keys, setup.ci, s, chunk, args.refine)[0]}
                                 for s in scales]
        result["emnist_scale"] = emnist_scale
        print(f"input scales {scales}: {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        extra = emnist_scale if args.extra_map_scale is None else args.extra_map_scale
        result["extra_slice"] = sl = run_slice(fn, a0, a2, n, fixed, idx, keys, setup.ci, extra, chunk,
                                               args.threshold)
        base = np.array(slices[0]["regime"])
        sl["changed_vs_scale_1"] = {"cells": int((np.array(sl["regime"]) != base).sum()),
                                    "to_worse": int((np.array(sl["regime"]) > base).sum()),
                                    "to_better": int((np.array(sl["regime"]) < base).sum())}
        print(f"slice at inputs × {extra:.4g}: {time.perf_counter() - t0:.1f} s; " + ", ".join(
            f"{r} {f:.0%}" for r, f in sl["fractions"].items()) + f"; vs × 1: {sl['changed_vs_scale_1']}", flush=True)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)

    title = (f"bio+fa, {setup.dataset} {sizes}, T = {setup.spec.M * setup.spec.K}, {n_tasks} tasks per cell: "
             f"regime (worst task) and log10 amplification along (1,1,1)/√3")
    figs = [os.path.join(out, "stability_map_slices.png")]
    figure_slices(figs[0], slices, axes_of, n, trajectories, learned, idx, title)
    if "input_scale" in result:
        figs.append(os.path.join(out, "stability_map_input_scale.png"))
        figure_input_scale(figs[-1], result["input_scale"], emnist_scale,
                           f"bio+fa, {setup.dataset}: the edge along c·Θ (median learned Θ) vs the inputs' scale")
        extra = result["extra_slice"]["x_scale"]
        what = " (EMNIST's E‖x‖²)" if args.extra_map_scale is None else ""
        figs.append(os.path.join(out, "stability_map_emnist_energy.png" if args.extra_map_scale is None
                                 else f"stability_map_inputs_x{extra:g}.png"))
        figure_slices(figs[-1], [slices[0], result["extra_slice"]], [axes_of[0], axes_of[0]], n, trajectories,
                      learned, idx, title + f"; right: inputs × {extra:.3g}{what}")
    print(json_path)
    for f in figs:
        print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
