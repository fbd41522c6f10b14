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

The computation is ``plastic_jax.stability``, the figures ``plastic_jax.stability_plots``; this is
the command:

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
from collections.abc import Sequence
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from plastic_jax import stability as st  # noqa: E402
from plastic_jax.stability_plots import figure_input_scale, figure_slices  # noqa: E402

#: the runs whose trajectories and final Θ are overlaid (those that exist and are finished)
DEFAULT_RUNS = ("runs/seeds20/robust/bio-fa", "runs/seeds20/paper/bio-fa")


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

    setup = st.build_setup(args.quick, args.data_dir)
    runs = st.finished_runs(args.runs if args.runs is not None else ([] if args.quick else DEFAULT_RUNS))
    learned = st.learned_thetas(runs)
    fixed, fixed_src = st.fixed_values(learned, {"F0": args.fixed_theta0, "F2": args.fixed_theta2,
                                                 "F9": args.fixed_theta9})
    idx = st.TERM_INDEX
    keys = jax.random.split(jax.random.PRNGKey(args.task_seed), n_tasks)
    fn = st.make_evaluator(setup.rule, setup.spec, args.threshold)
    a0 = st.Axis("F0", *args.theta0_range, scale="log")
    a2 = st.Axis("F2", *args.theta2_range, scale="symlog", linthresh=1e-3)
    a9 = st.Axis("F9", *args.theta9_range, scale="symlog", linthresh=1e-3)
    axes_of = [(a0, a2), (a0, a9)]
    trajectories = []
    for p in runs:
        for seed, tr in list(st.read_trajectories(p).items())[: args.traj_seeds]:
            trajectories.append({"run": p, "seed": seed, "theta": tr})

    t0 = time.perf_counter()
    slices = [st.run_slice(fn, xa, ya, n, fixed, idx, keys, setup.ci, 1.0, chunk, args.threshold)
              for xa, ya in axes_of]
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
    emnist_scale = st.emnist_scale(setup.mean_sq_norm)
    if not args.no_extras and not args.quick:
        factors = st.ray_factors(args.ray_max)
        result["ray_factors"] = factors.tolist()
        t0 = time.perf_counter()
        if learned:
            rays = st.ray_edges(fn, np.array([s["theta"] for s in learned]), factors, keys, setup.ci, 1.0, chunk,
                                args.refine)
            result["seeds"] = [{**s, **r} for s, r in zip(learned, rays)]
            for r in result["seeds"]:
                a = [x if x is not None else math.inf for x in r["amplification_at_1"]]
                print(f"  {r['run']} seed {r['seed']}: Θ {np.round(r['theta'], 4).tolist()}, amplification "
                      f"{np.median(a):.3g} (median of {len(a)} tasks, max {max(a):.3g}), {r['regime_at_1']}, edge "
                      f"c* {r['edge_bracket']}, last-100 accuracy {r['last100_accuracy']}", flush=True)
        print(f"rays of {len(learned)} learned Θ: {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        med = [fixed[t] for t in st.TERMS]
        result["input_scale"] = st.input_scale_edges(fn, med, args.input_scales, emnist_scale, factors, keys,
                                                     setup.ci, chunk, args.refine)
        result["emnist_scale"] = emnist_scale
        scales = [r["scale"] for r in result["input_scale"]]
        print(f"input scales {scales}: {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        extra = emnist_scale if args.extra_map_scale is None else args.extra_map_scale
        result["extra_slice"] = sl = st.run_slice(fn, a0, a2, n, fixed, idx, keys, setup.ci, extra, chunk,
                                                  args.threshold)
        sl["changed_vs_scale_1"] = st.regime_changes(sl["regime"], slices[0]["regime"])
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
