"""Synthetic run records and run directories, shaped like ``plastic-jax meta-train``'s, for tests
and examples of the report (a claim's verdict, a diagnosis, a per-preset table) without training.

``seed_series`` makes one seed's records; ``write_run`` writes a run directory (config.json,
metrics.jsonl, summary.json) of a ``TrainConfig``, or of a one-program sweep when ``members``
names several (λ, Adam rate) combinations; ``plastic_jax.runs`` reads them as it reads real runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from plastic_jax.config import TrainConfig, class_split
from plastic_jax.paper.diagnose import N_CLASSES


def seed_series(episodes: int, *, seed: int = 0, acc: float = 0.5, loss: float = 1.0,
                theta: Mapping[str, float] | None = None, n_layers: int = 3, analysis_every: int = 10,
                align: Iterable[float] | None = None, ortho: Iterable[float] | None = None,
                collapse_at: int | None = None, n_classes: int = 47, diverge_at: int | None = None,
                spikes: Iterable[int] = (), telemetry: bool | None = None,
                member: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """The records of one seed over ``episodes`` episodes, in episode order.

    A seed that learns has query loss ``loss``, accuracy ``acc`` and Θ growing linearly to
    ``theta`` (default θ0 = 0.01). From ``collapse_at`` on it collapses: query loss ln C
    (``n_classes``), accuracy 1/C, θ0 below its start; from ``diverge_at`` on it diverges: NaN
    losses and accuracy, every update skipped. ``spikes``: episodes flagged as meta-gradient
    spikes; ``telemetry`` (default: whether there are spikes) adds the guard's keys to every
    record. ``member``: the (λ, Adam rate) a sweep's record names. ``n_layers``: weight layers
    (alignment and orthonormality get one value per layer, the output's α 0), every
    ``analysis_every`` episodes and at the last.
    """
    theta = dict(theta or {"F0": 0.01})
    spikes = set(spikes)
    telemetry = bool(spikes) if telemetry is None else telemetry
    align = list(align) if align is not None else [80.0] * (n_layers - 1)
    ortho = list(ortho) if ortho is not None else [10.0] * n_layers
    out = []
    skips = 0
    for ep in range(episodes):
        frac = (ep + 1) / episodes
        th = {k: v * frac for k, v in theta.items()}
        ql, a, skipped = loss, acc, False
        if collapse_at is not None and ep >= collapse_at:
            ql, a = math.log(n_classes) * 1.002, 1.0 / n_classes
            th["F0"] = -0.002
        if diverge_at is not None and ep >= diverge_at:
            ql, a, skipped = float("nan"), float("nan"), True
        skips = skips + 1 if skipped else 0
        rec: dict[str, Any] = {"episode": ep, "seed": seed}
        if member is not None:
            rec.update(l1=member[0], meta_lr=member[1])
        rec.update(meta_loss=None if ql != ql else ql, query_loss=None if ql != ql else ql,
                   accuracy=None if a != a else a, skipped=skipped, consecutive_skips=skips, theta=th)
        if telemetry:
            rec.update(grad_norm=1e4 if ep in spikes else 1.0, grad_norm_median=1.0, update_norm=1e-3,
                       adam_nu_max=1.0, step_scale=1.0, clipped=False, spike=ep in spikes, rolled_back=False)
        if analysis_every and (ep % analysis_every == 0 or ep == episodes - 1):
            rec["alignment"] = [*align, 0.0]
            rec["orthonormality"] = ortho
        out.append(rec)
    return out


def write_run(cfg: TrainConfig, seeds: Mapping[int, list[dict[str, Any]]], *, finished: bool = True) -> str:
    """Write the run directory ``cfg.out``: config.json (with the class split, as meta-train records
    it), metrics.jsonl (the records of every seed, episode-major, as a vmapped run writes them) and,
    when ``finished``, summary.json. ``seeds``: seed (or any key) -> its records, all of one length
    per member. Returns ``cfg.out``."""
    os.makedirs(cfg.out, exist_ok=True)
    train, test = class_split(cfg, N_CLASSES.get(cfg.dataset, 10))
    cfg = dataclasses.replace(cfg, extra={"class_split": {"train": list(train), "test": list(test)}} if test else {})
    with open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(cfg.to_json(), f)
    series = list(seeds.values())
    with open(os.path.join(cfg.out, "metrics.jsonl"), "w") as f:
        for ep in range(max(len(s) for s in series)):
            for s in series:
                if ep < len(s):
                    f.write(json.dumps(s[ep]) + "\n")
    if finished:
        with open(os.path.join(cfg.out, "summary.json"), "w") as f:
            json.dump({"episodes": cfg.episodes, "seeds": sorted({r["seed"] for s in series for r in s}),
                       "theta": [s[-1]["theta"] for s in series]}, f)
    return cfg.out


def config(out: str, *, episodes: int, seeds: int, **settings: Any) -> TrainConfig:
    """A small run's config (glyphs' 47 classes, 10 held out, a 784-8-8-47 network, alignment
    every 10 episodes) with ``settings`` (rule, feedback, l1, preset ...) on top."""
    base: dict[str, Any] = dict(dataset="glyphs", holdout=0.21, hidden=(8, 8), analysis_every=10)
    return TrainConfig(**{**base, **settings}, episodes=episodes, seeds=seeds, out=out)


def synthetic_run(out: str, episodes: int, seeds: Mapping[int, Mapping[str, Any]] | int, *, finished: bool = True,
                  **settings: Any) -> str:
    """Write a run directory of ``seed_series`` seeds: ``seeds`` maps each seed to its keyword
    arguments (or is a number of seeds that learn with the defaults); ``settings`` go to ``config``
    (and ``acc``, ``loss``, ``theta``, ``align``, ``ortho`` there are every seed's defaults). A
    sweep (``l1`` or ``meta_lr`` a tuple) gets every seed in every member; telemetry is in every
    seed's records when any seed has spikes. Returns ``out``."""
    series_keys = ("acc", "loss", "theta", "align", "ortho")
    common = {k: settings.pop(k) for k in series_keys if k in settings}
    per_seed = {s: {} for s in range(seeds)} if isinstance(seeds, int) else dict(seeds)
    cfg = config(out, episodes=episodes, seeds=len(per_seed), **settings)
    members = [(lam, lr) for lam in cfg.l1_values for lr in cfg.meta_lr_values] if cfg.is_sweep else [None]
    first = cfg.seed
    # a run records telemetry in every seed or in none
    telemetry = any(kw.get("spikes") or kw.get("telemetry") for kw in per_seed.values())
    recs = {}
    for m in members:
        for i, (s, kw) in enumerate(sorted(per_seed.items())):
            kw = {"seed": first + i, "analysis_every": cfg.analysis_every, "n_layers": len(cfg.hidden) + 1,
                  "member": m, "telemetry": telemetry, **common, **kw}
            recs[(m, s)] = seed_series(episodes, **kw)
    return write_run(cfg, recs, finished=finished)
