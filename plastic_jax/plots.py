"""Figures of meta-training runs (``plastic-jax plot RUN_DIR [RUN_DIR ...]``), PNG and PDF.

- ``accuracy`` and ``loss``: meta-accuracy and meta-loss per episode, a trailing moving average
  of each seed's curve, the mean over seeds and a 98% bootstrap band over seeds (500 resamples);
  all NaN-aware: a non-finite value is skipped (one line on stderr says so), and a point that
  rests on fewer than all seeds is flagged in the legend; accuracy has its chance levels
  (``chance_lines``): 1/M, guessing among a task's M classes, and 1/C, an untrained network's
  argmax over all C outputs (one per class of the dataset), where the accuracy starts;
- ``theta``: the Θ trajectories, one panel per term (``theta_title``); with ``--feedback plastic``
  Θ^B's panels (``B:kp``, ``B:decay``, ``B:err``) follow, drawn like θ's; with ``--feedback
  routing`` the gates get their own rows at the bottom, drawn as the gate g_ℓ = sigmoid(φ_ℓ) in
  [0, 1] (dashed line at ½, where φ = 0 starts) rather than the raw φ_ℓ that metrics.jsonl records;
- ``alignment``: the alignment angle α_ℓ per layer (docs/METHOD.md §6), at the episodes it was logged;
- ``orthonormality``: the orthonormality error per layer;
- ``telemetry``: each meta-step's telemetry, per seed: (a) the meta-gradient norm before clipping
  (log scale) with spikes (red x) and rollbacks (ticks at the bottom) marked, (b) Adam's largest
  sqrt of the second moment, (c) the norm of the applied update, (d) the guard's step multiplier;
  drawn only when some run recorded telemetry (runs written before it have none); and, when some
  run logged it at its analysis points, (e) the episode's perturbation amplification growth_T /
  growth_1 along all ones / √R (``sensitivity.episode_sensitivity``, mean over the meta-batch; log
  scale) with the chaotic threshold 1e3 (dashed) and, at the top, the analysis points whose
  amplification overflowed or whose episode diverged (flag ``chaotic``, amplification null).

Several runs overlay, each labelled by its rule and feedback (e.g. ``ehebb+fa``, ``ehebb+fa
per-layer Θ``), and by the settings in which the overlaid runs differ (``label_runs``: ``pool+fa
F5–F8 elementwise``, ``ehebb+fa robust preset``), every one in each figure's legend with its number
of seeds. A sweep (several (λ, Adam rate) combinations in one run directory, ``load_runs``) is one
run per combination, labelled with its λ and rate (``ehebb+fa λ=1 lr=0.001``).
Runs are read by ``plastic_jax.runs`` (NumPy only); matplotlib (Agg backend) is imported when drawing.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from plastic_jax.atomic import atomic_file
from plastic_jax.config import ConfigError

# a run read back is plastic_jax.runs'; its names here are kept for the callers of plots
from plastic_jax.runs import (  # noqa: F401
    SENSITIVITY,
    SENSITIVITY_FLAGS,
    TELEMETRY,
    TELEMETRY_FLAGS,
    THETA_KEY,
    Run,
    load_run,
    load_runs,
    relabel,
    run_label,
    theta_key_order,
)
from plastic_jax.stats import bootstrap_ci

FIGURES = ("accuracy", "loss", "theta", "alignment", "orthonormality", "telemetry")
#: ``sensitivity.CHAOS_THRESHOLD`` (spelled out: reading and drawing a run needs no JAX)
CHAOS_THRESHOLD = 1e3


def _default_label(run: Run) -> str:
    """The label ``load_runs`` gives ``run`` (a sweep's member: the base label and its λ and rate)."""
    return run_label({**run.config, "l1": None}) + run.member if run.member else run_label(run.config)


def _has_f5_f8(run: Run) -> bool:
    """Whether the run's rule has any of F5–F8 (read from its Θ keys: reading a run needs no JAX)."""
    return any((m := THETA_KEY.fullmatch(t)) is not None and m.group(1) is not None and 5 <= int(m.group(1)) <= 8
               for t in run.theta)


#: settings that tell overlaid runs apart, spelled out in ``label_runs`` only when the runs differ
#: in them: name -> (the value a config.json without it means, whether a run has the setting, suffix)
DISTINGUISHING = {
    "f5_f8": ("matrix", _has_f5_f8, lambda v: f" F5–F8 {v}"),  # the reading: only rules with F5–F8 have one
    "preset": ("paper", lambda run: True, lambda v: f" {v} preset"),  # runs before config.json recorded it: paper
}


def label_runs(runs: list[Run]) -> list[Run]:
    """``runs`` (copies) with labels that tell them apart: each setting of ``DISTINGUISHING`` in
    which the runs that have it differ is appended to their labels (before a sweep member's λ and
    rate); runs still alike get their directory's name. A label set by hand (``--label``) is kept."""
    import dataclasses

    auto = [r for r in runs if r.label == _default_label(r)]
    suffix = {id(r): "" for r in auto}
    for name, (absent, has, text) in DISTINGUISHING.items():
        having = [r for r in auto if has(r)]
        values = {id(r): str(r.config.get(name) or absent) for r in having}
        if len(set(values.values())) > 1:
            for r in having:
                suffix[id(r)] += text(values[id(r)])

    def base(r):
        return run_label({**r.config, "l1": None}) if r.member else run_label(r.config)

    labels = {id(r): base(r) + suffix[id(r)] + r.member for r in auto}
    for r in auto:
        if sum(labels[id(q)] == labels[id(r)] for q in auto) > 1:
            suffix[id(r)] += f" ({os.path.basename(os.path.normpath(r.path))})"
    return [dataclasses.replace(r, label=base(r) + suffix[id(r)] + r.member) if id(r) in suffix else r
            for r in runs]


def nan_moving_average(x: np.ndarray, window: int, axis: int = -1) -> np.ndarray:
    """Trailing moving average that skips non-finite points: entry t is the mean of the finite
    values among x[max(0, t−window+1) … t], NaN only when none of them is finite.

    A NaN (or ±inf) point is left out of the windows that contain it and affects nothing else
    (a cumsum-based average would carry it, or an overflowed 1e30, to the end of the curve).
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    fin = np.isfinite(x)
    pad = [(0, 0)] * (x.ndim - 1) + [(window - 1, 0)]
    vals = np.lib.stride_tricks.sliding_window_view(np.pad(np.where(fin, x, 0.0), pad), window, axis=-1)
    cnt = np.lib.stride_tricks.sliding_window_view(np.pad(fin, pad), window, axis=-1).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(cnt > 0, vals.sum(axis=-1) / cnt, np.nan)
    return np.moveaxis(out, -1, axis)


def seed_band(curves: np.ndarray, level: float = 0.98, n_resamples: int = 500):
    """Mean over seeds (axis 0) of the finite values at each point, and its percentile-bootstrap
    band over those seeds.

    Points are grouped by which seeds are finite there; each group is resampled over its finite
    seeds only (whole curves, as ``stats.bootstrap_ci``), so where every seed is finite the band is
    exactly ``bootstrap_ci(curves)``. Returns (mean, lo, hi, n_finite), each of shape (E,); a
    point with no finite seed is NaN.
    """
    curves = np.asarray(curves, np.float64)
    fin = np.isfinite(curves)
    E = curves.shape[1]
    mean, lo, hi = (np.full(E, np.nan) for _ in range(3))
    patterns, inverse = np.unique(fin.T, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for g, pat in enumerate(patterns):
        if not pat.any():
            continue
        cols = np.flatnonzero(inverse == g)
        m, l, h = bootstrap_ci(curves[pat][:, cols], axis=0, level=level, n_resamples=n_resamples)
        mean[cols], lo[cols], hi[cols] = m, l, h
    return mean, lo, hi, fin.sum(axis=0)


def _seeds_label(label: str, S: int) -> str:
    """``label`` and how many seeds are behind its curve: ``ehebb+fa (n=3 seeds)``."""
    return f"{label} (n={S} seed{'s' if S > 1 else ''})"


def _band(ax, x, curves, label, color, *, who: str = "", window: int | None = None):
    """Mean over seeds (axis 0) with its 98% bootstrap band, NaN-aware (``seed_band``); returns
    the mean's line and whether some plotted point rests on fewer than all seeds.

    ``window``: smooth each seed's curve first (``nan_moving_average``). Non-finite values are
    skipped, not propagated; when some exist, one line on stderr names ``who`` and how many
    points they touch, and where a plotted point rests on fewer than all seeds the legend says so
    (``(n=3 seeds; at 2 points only 1 of 3 finite)``).
    """
    curves = np.asarray(curves, np.float64)
    S = curves.shape[0]
    label = _seeds_label(label, S)
    bad = ~np.isfinite(curves)
    if window is not None:
        curves = nan_moving_average(curves, window, axis=1)
    mean, lo, hi, n_fin = seed_band(curves)
    short = n_fin < S
    if short.any():
        n = int(short.sum())
        label = f"{label[:-1]}; at {n} point{'s' if n > 1 else ''} only {n_fin[short].min()} of {S} finite)"
    if bad.any():
        print(f"warning: {who}: {bad.sum()} non-finite value(s) in {bad.any(axis=1).sum()} of {S} seed(s) "
              f"skipped; {short.sum()} of {curves.shape[1]} plotted points average fewer than {S} seeds",
              file=sys.stderr)
    (line,) = ax.plot(x, mean, label=label, color=color, lw=1.5)
    if S > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    return line, bool(short.any())


def is_gate(t: str) -> bool:
    """A routing gate's label (``gate@<ℓ>``: its φ_ℓ; the figure shows sigmoid(φ_ℓ))."""
    from plastic_jax.pathways import label_owner

    return label_owner(t) is not None and label_owner(t)[0] == "routing"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The routing gate g = sigmoid(φ) = 1 / (1 + exp(−φ)), NaN kept (as ``feedback.gates``)."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def theta_title(t: str) -> str:
    """A Θ key as mathtext: ``F2`` -> θ_2 (F2), ``F2@1`` -> θ_2, layer 1 (F2@1); ``B:kp`` ->
    θ^B_kp (B:kp) (``plastic`` feedback's Θ^B); ``gate@1`` -> gate g_1 = sigmoid(φ_1) (gate@1)
    (``routing``: the panel shows the gate, not φ). Any other key, a registered pathway's own
    included (``pathways.label_owner``), is shown as it is."""
    from plastic_jax.pathways import label_owner
    from plastic_jax.rundir import THETA_KEY

    m = THETA_KEY.fullmatch(t)
    owner = label_owner(t)
    if m is None or (m.group(1) is None and owner is None):
        return t.replace("$", r"\$")
    if owner is not None:
        name, part = owner
        if name == "plastic":
            return rf"$\theta^B_{{\mathrm{{{part}}}}}$ ({t})"
        if name == "routing":
            return rf"gate $g_{{{part}}}$ = sigmoid($\phi_{{{part}}}$) ({t})"
        return t.replace("$", r"\$")
    term, layer = m.group(1), m.group(2)
    return rf"$\theta_{{{term}}}$" + (f", layer {layer}" if layer else "") + f" ({t})"


#: the number of classes (the network's outputs: one per class of the dataset) of the named datasets
DATASET_CLASSES = {"digits": 10, "emnist": 47, "glyphs": 47}


def n_outputs(config: dict) -> int | None:
    """C, the network's output units (one per class of the dataset): from the dataset's name
    (``DATASET_CLASSES``), else from ``extra.class_split`` (its train and test classes are all the
    dataset's, unless both lists were given by hand); None when the config does not tell."""
    dataset = config.get("dataset")
    if isinstance(dataset, str) and dataset in DATASET_CLASSES:
        return DATASET_CLASSES[dataset]
    extra = config.get("extra")
    split = extra.get("class_split") if isinstance(extra, dict) else None
    if not isinstance(split, dict) or (config.get("train_classes") and config.get("test_classes")):
        return None
    classes = [c for side in ("train", "test") if isinstance(split.get(side), list) for c in split[side]]
    return len(set(classes)) or None


def chance_lines(configs: list[dict]) -> list[tuple[float, str, str]]:
    """The chance levels of the accuracy figure, (y, line style, label), for the runs' configs:
    1/M, guessing among a task's M classes (the meta-accuracy of a network that has learnt the task
    but not which of its M classes is which), and 1/C, the argmax of an untrained network over all
    its C outputs (the labels are the dataset's, so the accuracy starts near 1/C, below 1/M).
    One line per value: M = C share it."""
    def ints(values):
        return {v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0}

    lines: dict[float, tuple[str, list[str]]] = {}
    for M in sorted(ints(c.get("M") for c in configs)):
        lines.setdefault(1.0 / M, (":", []))[1].append(f"1/M = {1.0 / M:.3g}: guessing among a task's {M} classes")
    for C in sorted(ints(n_outputs(c) for c in configs)):
        lines.setdefault(1.0 / C, ("-.", []))[1].append(
            f"1/C = {1.0 / C:.3g}: untrained argmax over all {C} outputs")
    return [(y, ls, "; ".join(text)) for y, (ls, text) in sorted(lines.items(), reverse=True)]


def _save(fig, out: str, name: str) -> list[str]:
    """Write ``fig`` as ``out/name.png`` and ``.pdf``, each through a temporary file in ``out`` and
    ``os.replace``: a failed write (disk full) leaves an earlier figure of that name whole."""
    paths = []
    for ext in ("png", "pdf"):
        p = os.path.join(out, f"{name}.{ext}")
        with atomic_file(p, binary=True) as f:
            fig.savefig(f, format=ext, dpi=130, bbox_inches="tight")
        paths.append(p)
    return paths


def plot_runs(runs: list[Run], out: str, *, window: int = 20, title: str | None = None,
              names: tuple[str, ...] = FIGURES) -> list[str]:
    """Draw the figures ``names`` for ``runs`` overlaid into ``out``; returns the files written.

    ``window``: moving-average length (episodes) of accuracy and loss. A figure with no data
    (e.g. alignment when no run logged it, telemetry when no run recorded it) is skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    runs = label_runs(runs)  # overlaid runs alike in rule and feedback: what else tells them apart
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {id(r): colors[i % len(colors)] for i, r in enumerate(runs)}
    n_seeds = sorted({len(r.seeds) for r in runs})
    if len(n_seeds) > 1:
        band_note = (f"mean over each run's n seeds (n = {' or '.join(map(str, n_seeds))}, in the legend), "
                     f"98% bootstrap band over seeds where n > 1")
    else:
        band_note = (f"mean over {n_seeds[0]} seeds, 98% bootstrap band over seeds" if n_seeds[0] > 1
                     else "one seed per run")
    written: list[str] = []

    def finish(fig, name):
        if title:
            fig.suptitle(title, y=1.03)
        written.extend(_save(fig, out, name))
        plt.close(fig)

    for name, attr, ylabel in (("accuracy", "accuracy", "meta-accuracy (query)"),
                               ("loss", "meta_loss", "meta-loss")):
        if name not in names:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in runs:
            _band(ax, r.episodes, getattr(r, attr), r.label, color[id(r)], who=f"{r.path}{r.member} {attr}",
                  window=window)
        if name == "accuracy":  # chance: 1/M (a task's classes) and 1/C (all outputs) among the runs
            for y, ls, text in chance_lines([r.config for r in runs]):
                ax.axhline(y, color="0.4" if ls == ":" else "0.6", ls=ls, lw=1, label=text)
        ax.set_xlabel("episode")
        ax.set_ylabel(f"{ylabel}, moving average ({window})")
        ax.set_title(band_note, fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        finish(fig, name)

    if "theta" in names:
        terms = sorted({t for r in runs for t in r.theta}, key=theta_key_order)
        # the coefficients (and Θ^B) fill rows; the routing gates start rows of their own
        groups = [g for g in ([t for t in terms if not is_gate(t)], [t for t in terms if is_gate(t)]) if g]
        ncol = min(max(len(g) for g in groups), 5)
        nrow = sum(-(-len(g) // ncol) for g in groups)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        used, row = [], 0
        entry: dict[int, list] = {}  # a run's legend entry: its first line, whether some panel is short of seeds
        for g in groups:
            for i, t in enumerate(g):
                ax = axes[row + i // ncol, i % ncol]
                used.append(ax)
                gate = is_gate(t)
                for r in runs:
                    if t in r.theta:
                        line, short = _band(ax, r.episodes, sigmoid(r.theta[t]) if gate else r.theta[t], r.label,
                                            color[id(r)], who=f"{r.path}{r.member} theta {t}")
                        entry.setdefault(id(r), [line, False])[1] |= short
                if gate:  # g = sigmoid(φ) in [0, 1]; ½ is φ = 0, where it starts
                    ax.axhline(0.5, color="0.4", ls="--", lw=1)
                    ax.set_ylim(-0.02, 1.02)
                else:
                    ax.axhline(0.0, color="k", lw=0.5)
                ax.set_title(theta_title(t), fontsize=9)
                ax.set_xlabel("episode", fontsize=8)
                ax.grid(alpha=0.3)
            row += -(-len(g) // ncol)
        for ax in axes.flat:
            if ax not in used:
                ax.axis("off")
        # every run, whichever panels it has (two runs may share no Θ key)
        legend = [(entry[id(r)][0], _seeds_label(r.label, len(r.seeds))
                   + (" (fewer finite at some points)" if entry[id(r)][1] else "")) for r in runs if id(r) in entry]
        used[0].legend(*zip(*legend), fontsize=7)
        fig.tight_layout()
        finish(fig, "theta")

    for name, ylabel, log in (("alignment", r"$\alpha_\ell$ (degrees)", False),
                              ("orthonormality", r"$\Vert W y_{\ell-1} - W W^T y_\ell \Vert^2$", True)):
        if name not in names:
            continue
        have = [r for r in runs if getattr(r, name) is not None]
        if not have:
            continue
        L = max(getattr(r, name).shape[2] for r in have)
        if name == "alignment" and L > 1:
            L -= 1  # α_L = 0 by construction (the output layer's error is the loss gradient itself)
        ncol = min(L, 5)
        nrow = -(-L // ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        for l in range(L):
            ax = axes.flat[l]
            for r in have:
                v = getattr(r, name)
                if l < v.shape[2]:
                    _band(ax, r.analysis_episodes, v[:, :, l], r.label, color[id(r)],
                          who=f"{r.path}{r.member} {name} layer {l + 1}")
            if name == "alignment":
                ax.axhline(90.0, color="0.4", ls=":", lw=1, label=r"$90^\circ$ (orthogonal)")
            ax.set_title(rf"layer $\ell = {l + 1}$", fontsize=9)
            ax.set_xlabel("episode", fontsize=8)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[L:]:
            ax.axis("off")
        axes.flat[0].set_ylabel(ylabel)
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        finish(fig, name)

    have = [r for r in runs if r.telemetry] if "telemetry" in names else []
    if have:
        finish(_telemetry_figure(plt, have, color), "telemetry")
    return written


#: the panels of the telemetry figure: key, title, y label, log scale
TELEMETRY_PANELS = (
    ("grad_norm", "(a) meta-gradient norm before clipping", r"$\Vert \nabla_\Theta L \Vert$", True),
    ("adam_nu_max", r"(b) Adam: largest $\sqrt{\nu}$ (second moment)", r"$\max \sqrt{\nu}$", True),
    ("update_norm", "(c) norm of the applied update (0, not applied: a gap)", r"$\Vert \Delta\Theta \Vert$", True),
    ("step_scale", "(d) guard's step multiplier (1 = full step)", "step scale", False),
)


def _amplification_panel(ax, runs: list[Run], color: dict, first: dict) -> None:
    """Panel (e): each seed's amplification at its analysis points (log scale; a point whose
    amplification is not finite, an overflowed tangent or a diverged episode flagged ``chaotic``,
    is a red triangle at the top), the chaotic threshold as a dashed line."""
    from matplotlib.lines import Line2D

    overflow = False
    for r in runs:
        v = r.telemetry.get("amplification")
        if v is None:
            continue
        chaotic = r.telemetry["chaotic"] == 1.0
        S = len(r.seeds)
        for i in range(S):
            ok = np.isfinite(v[i]) & (v[i] > 0)
            if ok.any():
                (line,) = ax.plot(r.episodes[ok], v[i][ok], color=color[id(r)], lw=0.7, alpha=0.7, marker=".", ms=3,
                                  label=_seeds_label(r.label, S) if id(r) not in first else None)
                first.setdefault(id(r), line)
            bad = chaotic[i] & ~ok
            if bad.any():
                overflow = True
                ax.plot(r.episodes[bad], np.full(int(bad.sum()), 0.97), ls="none", marker="^", color="red", ms=5,
                        transform=ax.get_xaxis_transform(), zorder=3)
    ax.set_yscale("log")
    ax.axhline(CHAOS_THRESHOLD, color="0.3", ls="--", lw=1)
    handles = [Line2D([], [], color="0.3", ls="--", lw=1)]
    labels = [f"chaotic above {CHAOS_THRESHOLD:g}"]
    if overflow:
        handles.append(Line2D([], [], ls="none", marker="^", color="red", ms=5))
        labels.append("overflowed or diverged")
    ax.legend(handles, labels, fontsize=7, loc="upper left")
    ax.set_title(r"(e) perturbation amplification of the episode, $\Vert\delta W_T\Vert / \Vert\delta W_1\Vert$ "
                 r"along $\mathbf{1}/\sqrt{R}$ (analysis points, mean over the meta-batch)", fontsize=9)
    ax.set_xlabel("episode", fontsize=8)
    ax.set_ylabel("amplification", fontsize=8)
    ax.grid(alpha=0.3)


def _telemetry_figure(plt, runs: list[Run], color: dict):
    """The telemetry figure of ``runs`` (each with telemetry), one thin line per seed, one colour
    per run; spikes (red x) and rollbacks (ticks at the bottom) marked on the gradient norm; a
    fifth panel, the amplification, when some run logged it (``_amplification_panel``)."""
    from matplotlib.lines import Line2D

    sens = any("amplification" in r.telemetry for r in runs)
    if sens:
        fig, axes = plt.subplots(3, 2, figsize=(11, 10), squeeze=False)
        for ax in axes[2]:
            ax.remove()
        amp_ax = fig.add_subplot(3, 1, 3)
    else:
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
    marks = {"spike": False, "rolled_back": False}
    first: dict[int, object] = {}  # a run's legend entry: its first line in any panel
    for ax, (key, title, ylabel, log) in zip(axes.flat, TELEMETRY_PANELS):
        drawn = False
        for r in runs:
            v = r.telemetry.get(key)
            if v is None:  # a run with an amplification but no meta-step telemetry
                continue
            if log:  # a norm of 0 (an update not applied) or a NaN has no place on a log axis: a gap
                with np.errstate(invalid="ignore"):
                    v = np.where(v > 0, v, np.nan)
            if not np.isfinite(v).any():
                continue
            drawn = True
            S = len(r.seeds)
            for i in range(S):
                (line,) = ax.plot(r.episodes, v[i], color=color[id(r)], lw=0.7, alpha=0.7,
                                  label=_seeds_label(r.label, S) if id(r) not in first else None)
                first.setdefault(id(r), line)
            if key != "grad_norm":
                continue
            spike = r.telemetry["spike"] == 1.0
            if spike.any():
                marks["spike"] = True
                s_i, e_i = np.nonzero(spike)
                ax.plot(r.episodes[e_i], v[s_i, e_i], ls="none", marker="x", color="red", ms=6, mew=1.5, zorder=3)
            back = r.telemetry["rolled_back"] == 1.0
            if back.any():  # ticks at the bottom of the panel, in the run's colour
                marks["rolled_back"] = True
                eps = r.episodes[np.flatnonzero(back.any(axis=0))]
                ax.plot(eps, np.full(len(eps), 0.03), ls="none", marker="|", ms=12, mew=1.5, color=color[id(r)],
                        transform=ax.get_xaxis_transform(), zorder=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("episode", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        if not drawn:
            ax.text(0.5, 0.5, "not recorded by these runs", ha="center", va="center", transform=ax.transAxes,
                    color="0.4", fontsize=9)
            continue
        if log:
            ax.set_yscale("log")
        if key == "step_scale":
            ax.axhline(1.0, color="0.4", ls=":", lw=1)
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]), top=max(1.05, ax.get_ylim()[1]))
    if sens:
        _amplification_panel(amp_ax, runs, color, first)
    # every run drawn, whichever panel it first appears in (one without a gradient norm is not in (a))
    handles = [first[id(r)] for r in runs if id(r) in first]
    labels = [h.get_label() for h in handles]
    if marks["spike"]:
        handles.append(Line2D([], [], ls="none", marker="x", color="red", mew=1.5))
        labels.append("spike")
    if marks["rolled_back"]:
        handles.append(Line2D([], [], ls="none", marker="|", ms=10, mew=1.5, color="0.2"))
        labels.append("rolled back")
    fig.suptitle("meta-step telemetry (one thin line per seed)", fontsize=10)  # --title replaces it
    # below the panels: the rollback ticks sit at the bottom of (a), where a legend inside would hide them
    fig.tight_layout(rect=(0, 0.04 + 0.025 * -(-len(handles) // 3), 1, 1))
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(3, len(handles)), frameon=False)
    return fig


def add_plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories (overlaid; a sweep's (l1, meta_lr) combinations are runs of their own)")
    p.add_argument("--out", default=None,
                   help="where the figures go (default: RUN_DIR/figures for one run, ./figures for several)")
    p.add_argument("--window", type=int, default=20,
                   help="moving-average window in episodes for accuracy and loss (default: %(default)s)")
    p.add_argument("--title", default=None, help="a title over every figure")
    p.add_argument("--label", action="append", default=None, metavar="TEXT",
                   help="the legend label of a run, once per RUN_DIR in order (default: rule+feedback); "
                        "each combination of a sweep adds its λ and rate")


def check_title(title: str | None) -> None:
    """Refuse a ``--title`` that matplotlib cannot draw (unbalanced ``$...$`` mathtext), before
    anything is written."""
    if not title:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    fig.suptitle(title)
    try:
        FigureCanvasAgg(fig).draw()
    except Exception as e:  # noqa: BLE001 - matplotlib's parse errors have several types
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(f"--title {title!r} cannot be drawn ({msg}); escape a literal $ as \\$") from None


def cmd_plot(args: argparse.Namespace) -> int:
    if args.window < 1:
        raise ConfigError(f"--window must be a positive integer, got {args.window}")
    out = args.out or (os.path.join(args.runs[0], "figures") if len(args.runs) == 1 else "figures")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out!r} is a file, not a directory")
    labels = getattr(args, "label", None)
    if labels is not None and len(labels) != len(args.runs):
        raise ConfigError(f"--label was given {len(labels)} time(s) for {len(args.runs)} run(s); give one per RUN_DIR")
    per_dir = [load_runs(p) for p in args.runs]  # a sweep: one run per (l1, meta_lr) combination
    if labels is not None:
        per_dir = [[relabel(r, text) for r in members] for members, text in zip(per_dir, labels)]
    runs = [r for members in per_dir for r in members]
    check_title(args.title)
    # a window longer than every run averages what is there: the same curves, without the padding
    window = min(args.window, max(len(r.episodes) for r in runs))
    try:
        written = plot_runs(runs, out, window=window, title=args.title)
    except OSError as e:
        raise ConfigError(f"cannot write figures to {out!r}: {e.strerror or e}") from None
    for p in written:
        print(p)
    return 0
