"""Meta-gradient magnitude per plasticity term, to choose the L1 sweep of Fig. 4.

The L1 penalty adds λ·sign(θ_r) to the meta-gradient before Adam. A term whose meta-gradient
|∂L/∂θ_r| stays well below λ is pushed to zero; one well above λ is hardly affected. So the
λ values worth sweeping lie across the range of the measured |∂L/∂θ_r|, from "inert" (below
every term's gradient) to "kills θ0" (above |∂L/∂θ0|).

    python scripts/grad_magnitudes.py --dataset glyphs --tasks 16 --json docs/benchmark/grad_magnitudes.json

prints, per term, the median and the 10th/90th percentile of |∂L/∂θ_r| over ``--tasks`` tasks at
the initial Θ (θ0 = 1e-3, the rest 0) and at a second Θ (``--theta-mid``, e.g. a bio-like
point), for the paper's network and both readings of F5–F8.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np


def measure(dataset: str, hidden: tuple[int, ...], f5_f8: str, theta: np.ndarray, n_tasks: int,
            feedback: str = "fa", K: int = 50, seed: int = 0, data_dir: str | None = None) -> np.ndarray:
    """|∂L/∂θ_r| of the pool rule on ``n_tasks`` tasks: (n_tasks, 10)."""
    from plastic_jax.data import build_class_index, load_dataset
    from plastic_jax.episode import EpisodeSpec
    from plastic_jax.estimators import forward_grad
    from plastic_jax.inner import make_rule

    data = load_dataset(dataset, data_dir)
    ci = build_class_index(data)
    sizes = (data.dim, *hidden, data.n_classes)
    rule = make_rule(tuple(range(10)), len(sizes) - 1, feedback, f5_f8=f5_f8)
    spec = EpisodeSpec(sizes, 5, K, 10, 1)
    grad = jax.jit(lambda th, k: forward_grad(th, rule, spec, k, ci)[1])
    th = jnp.asarray(theta, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_tasks)
    return np.abs(np.stack([np.asarray(grad(th, k)) for k in keys]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="glyphs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--hidden", default="170,130,100,70")
    p.add_argument("--tasks", type=int, default=16)
    p.add_argument("--K", type=int, default=50)
    p.add_argument("--theta-mid", default="0.03,0,-0.1,0,0,0,0,0,0,0.02",
                   help="a second Θ to measure at (ten values; default: a bio-like point)")
    p.add_argument("--readings", default="matrix,elementwise", help="readings of F5-F8 to measure")
    p.add_argument("--json", default=None, help="write the table here")
    args = p.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    theta0 = np.zeros(10)
    theta0[0] = 1e-3
    mid = np.array([float(v) for v in args.theta_mid.split(",")])
    if mid.shape != (10,):
        p.error("--theta-mid needs ten values")
    out = {"dataset": args.dataset, "hidden": list(hidden), "tasks": args.tasks, "K": args.K, "rows": []}
    for reading in args.readings.split(","):
        for name, th in (("init", theta0), ("mid", mid)):
            g = measure(args.dataset, hidden, reading, th, args.tasks, K=args.K, data_dir=args.data_dir)
            q10, med, q90 = np.percentile(g, [10, 50, 90], axis=0)
            print(f"\nf5_f8={reading}, Θ={name}: |dL/dθ_r| over {args.tasks} tasks (median [p10, p90])")
            for r in range(10):
                print(f"  F{r}: {med[r]:.3g} [{q10[r]:.3g}, {q90[r]:.3g}]")
            out["rows"].append({"f5_f8": reading, "theta": name, "theta_value": th.tolist(),
                                "median": med.tolist(), "p10": q10.tolist(), "p90": q90.tolist()})
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
