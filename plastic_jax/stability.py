"""Stability map of the bio rule: where in Θ-space an episode is smooth, chaotic or diverged.

For Θ = (θ0, θ2, θ9) of the rule ``bio`` (terms F0, F2, F9), every cell of a grid over a 2-D slice
of Θ adapts the same N fixed tasks (vmapped) and measures per task (``plastic_jax.sensitivity``)
the perturbation amplification ‖δW_T‖/‖δW_1‖ along the unit direction (1, 1, 1)/√3, whether the
episode diverged, the query loss and accuracy. A task is *diverged*, else *chaotic* when its
amplification exceeds the threshold (or overflowed), else *smooth*; a cell takes the worst regime
of its tasks (``cell_summary``). Beyond the slices: the smallest factor c on a ladder at which the
cell c·Θ of a learned Θ is no longer smooth (``ray_edges``), also with the inputs scaled.

The runs' learned Θ and Θ trajectories are read with ``plastic_jax.rundir``'s readers. Everything
here is NumPy on the host around one jitted, vmapped evaluator (``make_evaluator``); JAX and the
experiment are imported when first needed, and matplotlib's scale transforms (the axes' spacing,
so that the cells match the drawn axes) when an ``Axis`` is used. The figures are in
``plastic_jax.stability_plots``; the command is scripts/stability_map.py.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Θ's coefficients in the order of Θ's (3,) vector, and their positions
TERMS = ("F0", "F2", "F9")
TERM_INDEX = {t: i for i, t in enumerate(TERMS)}
#: EMNIST balanced's quoted pixel moments (scripts/data_moments.py): E‖x‖² = 784 (σ² + μ²)
EMNIST_MEAN_SQ_NORM = 784 * (0.3332 ** 2 + 0.1751 ** 2)
#: where the fixed coefficients come from when no run is given: a typical learned bio Θ
#: (runs/seeds20/robust/bio-fa, median over 20 seeds, rounded)
FALLBACK_FIXED = {"F0": 0.0115, "F2": -0.057, "F9": 0.0062}
REGIMES = ("smooth", "chaotic", "diverged")  # sensitivity.REGIMES, by code (spelled out: no JAX to read)
#: log10 of an amplification that overflowed float32 (drawn at the top of the contour scale)
LOG10_OVERFLOW = 38.5

#: a jitted ``(thetas (C, R), keys (N, 2), x_scale (), ci) -> dict of (C, N)`` (``make_evaluator``)
Evaluator = Callable[..., dict[str, Any]]


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
    """The paper's network on glyphs (``--holdout 0.21``: runs/seeds20's split; 784-170-130-100-70-47,
    M = 5, K = 50, Q = 10), or with ``quick`` a tiny one on digits (64-16-10, M = 3, K = 5, Q = 2);
    bio rule, fa feedback."""
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


def make_evaluator(rule: Any, spec: Any, threshold: float) -> Evaluator:
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


def evaluate(fn: Evaluator, thetas: np.ndarray, keys: Any, ci: Any, x_scale: float = 1.0,
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
    ``chaotic_frac``; ``query_loss`` and ``accuracy`` the mean over tasks (NaN if any diverged).
    Every value is (C,)."""
    amp = res["amplification"].astype(np.float64)
    div = res["diverged"].astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        la = np.where(np.isfinite(amp) & (amp > 0), np.log10(np.where(amp > 0, amp, 1.0)), LOG10_OVERFLOW)
    la = np.where(div, np.nan, la)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (every task diverged)
        med = np.nanmedian(la, axis=-1)
    return {"regime": res["regime"].max(axis=-1).astype(int), "log10_amplification": med,
            "diverged_frac": div.mean(axis=-1), "chaotic_frac": (res["regime"] == 1).mean(axis=-1),
            "query_loss": res["loss"].astype(np.float64).mean(axis=-1),
            "accuracy": res["accuracy"].astype(np.float64).mean(axis=-1)}


def classify(amplification: np.ndarray, diverged: np.ndarray, threshold: float = 1e3) -> np.ndarray:
    """The regime codes of tasks (any shape, that of the inputs) from their amplification and
    diverged flag, in NumPy (what ``sensitivity.regime`` computes on the device): 2 diverged, 1
    chaotic (amplification above ``threshold`` or not finite), 0 smooth."""
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


def read_trajectories(run_dir: str, terms: Sequence[str] = TERMS) -> dict[int, np.ndarray]:
    """seed -> (E + 1, len(terms)) Θ after each of the E episodes (records' ``theta``, the last
    record of an (episode, seed) winning), in ``terms`` order; the first row is the initial Θ."""
    from plastic_jax import runs

    cfg = runs.read_config_dict(run_dir)
    theta0 = float(cfg.get("theta0", 1e-3))
    by_seed: dict[int, list[tuple[int, list[float]]]] = {}
    for (ep, seed), r in runs.latest_records(runs.read_records(run_dir)).items():
        th = r.get("theta", {})
        by_seed.setdefault(seed, []).append((ep, [float(th.get(t, math.nan)) for t in terms]))
    start = [theta0 if t == "F0" else 0.0 for t in terms]  # inner.initial_theta
    return {s: np.array([start] + [v for _, v in sorted(rows)]) for s, rows in sorted(by_seed.items())}


def learned_thetas(runs: Sequence[str]) -> list[dict[str, Any]]:
    """Every seed's final Θ (summary.json's ``theta``) of every run, in run then summary order:
    {run, seed, theta [θ0, θ2, θ9], last100_accuracy (None: not finite)}."""
    from plastic_jax import rundir

    out = []
    for p in runs:
        summary = rundir.read_summary(p) or {}
        seeds, thetas = summary.get("seeds", []), summary.get("theta", [])
        accs = summary.get("last100_accuracy_per_seed") or [None] * len(seeds)
        for seed, th, acc in zip(seeds, thetas, accs):
            out.append({"run": p, "seed": int(seed), "theta": [float(th[t]) for t in TERMS],
                        "last100_accuracy": acc})
    return out


def fixed_values(learned: list[dict[str, Any]], overrides: Mapping[str, float | None] | None = None
                 ) -> tuple[dict[str, float], str]:
    """The coefficients the slices hold fixed, {"F0": θ0, "F2": θ2, "F9": θ9}: ``overrides`` (term ->
    value, None: not given), else the median final Θ over ``learned``'s seeds, else
    ``FALLBACK_FIXED``; with a line saying where they came from."""
    if learned:
        med = np.median(np.array([s["theta"] for s in learned]), axis=0)
        fixed = dict(zip(TERMS, map(float, med)))
        src = f"median final Θ over {len(learned)} seeds of {sorted({s['run'] for s in learned})}"
    else:
        fixed, src = dict(FALLBACK_FIXED), "FALLBACK_FIXED (no finished run given)"
    for term in TERMS:
        value = (overrides or {}).get(term)
        if value is not None:
            fixed[term] = float(value)
            src += f"; {term} from --fixed-theta{term[1:]}"
    return fixed, src


# --------------------------------------------------------------------------- JSON numbers


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _nums(a: np.ndarray) -> Any:
    """A nested list of numbers, non-finite as None (strict JSON)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return _num(a) if a.dtype.kind == "f" else a.item()
    return [_nums(x) for x in a]


# --------------------------------------------------------------------------- the ray c·Θ


def ray_factors(ray_max: float) -> np.ndarray:
    """(F,) the ladder c = 2^(k/2), k = 0, 1, …, up to ``ray_max`` (the first factor 1)."""
    return np.array([2 ** (k / 2) for k in range(int(2 * math.log2(ray_max)) + 1)])


def emnist_scale(mean_sq_norm: float) -> float:
    """The input scale s at which inputs of E‖x‖² = ``mean_sq_norm`` have EMNIST balanced's."""
    return math.sqrt(EMNIST_MEAN_SQ_NORM / mean_sq_norm)


def ray_edges(fn: Evaluator, thetas: np.ndarray, factors: np.ndarray, keys: Any, ci: Any,
              x_scale: float, chunk: int, refine: int = 0) -> list[dict[str, Any]]:
    """For each Θ (P, 3), the cells c·Θ for c in ``factors`` (F,) (increasing, the first 1), climbed
    until the first cell that is not smooth (a Θ stops there: the cells beyond are not evaluated);
    then ``refine`` bisections (in log c) of each closed bracket. Calls of at most ``chunk`` cells,
    and no more than P. Returns per Θ: the regime of each ladder c (None: not evaluated), the
    amplification per task (N,) and the regime at c = 1, ``ladder_bracket`` [last smooth c, first
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


def input_scale_edges(fn: Evaluator, theta: np.ndarray, scales: Sequence[float], s_emnist: float,
                      factors: np.ndarray, keys: Any, ci: Any, chunk: int, refine: int) -> list[dict[str, Any]]:
    """``ray_edges`` of one Θ (3,) with the inputs scaled by each s of ``scales`` and by
    ``s_emnist`` (each rounded to 4 decimals, sorted, repeats once): per scale {scale,
    emnist_energy (s is ``s_emnist``'s), and ``ray_edges``'s fields}."""
    med = np.asarray(theta, np.float64).reshape(1, -1)
    emnist = round(s_emnist, 4)
    return [{"scale": s, "emnist_energy": s == emnist, **ray_edges(fn, med, factors, keys, ci, s, chunk, refine)[0]}
            for s in sorted({round(s, 4) for s in scales} | {emnist})]


# --------------------------------------------------------------------------- slices


def slice_thetas(xa: Axis, ya: Axis, n: int, fixed: Mapping[str, float], idx: Mapping[str, int] = TERM_INDEX
                 ) -> np.ndarray:
    """(n·n, 3) Θ of the cells, row-major over (y, x): row j·n + i (cell (j, i)) is ``fixed`` with
    θ_x = x_i, θ_y = y_j (the axes' ``centers``); ``idx`` places a term in Θ."""
    xs, ys = xa.centers(n), ya.centers(n)
    base = np.array([fixed[t] for t in TERMS])
    th = np.repeat(base[None], n * n, axis=0)
    th[:, idx[xa.term]] = np.tile(xs, n)
    th[:, idx[ya.term]] = np.repeat(ys, n)
    return th


def run_slice(fn: Evaluator, xa: Axis, ya: Axis, n: int, fixed: Mapping[str, float], idx: Mapping[str, int],
              keys: Any, ci: Any, x_scale: float, chunk: int, threshold: float) -> dict[str, Any]:
    """Evaluate one slice: JSON-ready dict with (n, n) maps (rows: y, columns: x), (n, n, N) per
    task, the axes, the regimes' fractions and ``axis_edges`` from the fixed point."""
    th = slice_thetas(xa, ya, n, fixed, idx)
    t0 = time.perf_counter()
    res = evaluate(fn, th, keys, ci, x_scale, chunk)
    wall = time.perf_counter() - t0
    cs = cell_summary(res)
    N = res["amplification"].shape[-1]
    reg = cs["regime"].reshape(n, n)
    (fixed_term,) = [t for t in TERMS if t not in (xa.term, ya.term)]
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


def axis_edges(sl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Along the row and the column of the slice through its fixed point (the cell nearest to it),
    the nearest cell centre on each side that is not smooth: {"x": {"below": v, "above": v}, "y":
    …} (None: smooth up to the map's edge); "at": the fixed point's own cell is not smooth."""
    reg = np.asarray(sl["regime"])
    xs, ys = np.asarray(sl["x"]["values"], float), np.asarray(sl["y"]["values"], float)
    fx, fy = sl["fixed_point"][sl["x"]["term"]], sl["fixed_point"][sl["y"]["term"]]
    i, j = int(np.argmin(np.abs(xs - fx))), int(np.argmin(np.abs(ys - fy)))  # nearest centres (monotone axes)

    def side(line: np.ndarray, vals: np.ndarray, k: int) -> dict[str, Any]:
        below = [m for m in range(k - 1, -1, -1) if line[m] > 0]
        above = [m for m in range(k + 1, len(line)) if line[m] > 0]
        return {"below": float(vals[below[0]]) if below else None, "above": float(vals[above[0]]) if above else None,
                "at": bool(line[k] > 0)}

    return {"x": side(reg[j, :], xs, i), "y": side(reg[:, i], ys, j)}


def regime_changes(regime: np.ndarray, base: np.ndarray) -> dict[str, int]:
    """How many cells of a map's ``regime`` (n, n) differ from ``base``'s (n, n): in all, to a worse
    regime (higher code), to a better one."""
    regime, base = np.asarray(regime), np.asarray(base)
    return {"cells": int((regime != base).sum()), "to_worse": int((regime > base).sum()),
            "to_better": int((regime < base).sum())}
