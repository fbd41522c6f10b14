"""Rounding of the adjoint meta-gradient (docs/PERFORMANCE.md, "Rounding: the rebuilt W_0 and the
meta-gradient"): how far the float32 adjoint's rebuilt W_0 drifts from the true W_0, and how far its
meta-gradient is from a float64 reference, beside float32 reverse-remat.

    python scripts/adjoint_rounding.py                       # T = 250, every case (a few minutes)
    python scripts/adjoint_rounding.py --T 2500 --cases f0:matrix:bp:0,pool:matrix:fa:0,pool:matrix:fa:1e-3

One task on the EMNIST-sized network (784-170-130-100-70-47) with synthetic inputs (the benchmark's),
M = 5, K = T / 5. Θ: θ_0 = 0.02, θ_3 as given, the other coefficients N(0, 2·10⁻³) (seed 0). Columns:
``drift`` = max|W_0 rebuilt − W_0| / max|W_0| (float32 adjoint, ``adjoint.measure_drift``); ``adjoint
f32`` / ``reverse-remat f32`` / ``adjoint f64`` = max |meta-gradient − reference| / max |reference|, the
reference being float64 ``reverse-remat`` on the same task and network.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_CASES = ("f0:matrix:fa:0,f0:matrix:bp:0,bio:matrix:fa:0,bio:matrix:bp:0,pool:matrix:fa:0,"
                 "pool:matrix:bp:0,pool:elementwise:fa:0,pool:elementwise:bp:0,pool:matrix:bp:1e-3,"
                 "pool:matrix:bp:1e-2,pool:matrix:fa:3e-2,pool:matrix:bp:3e-2,pool:elementwise:bp:1e-2")


def parse_cases(spec: str) -> list[tuple[str, str, str, float]]:
    """``rule:reading:feedback:theta3,…`` → [(rule, reading, feedback, θ_3)…]; exits 2 on a bad one."""
    from plastic_jax.plasticity import RULES

    out = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        try:
            rule, reading, fb, th3 = parts
            th3 = float(th3)
        except ValueError:
            sys.exit(f"adjoint_rounding: bad case {item!r}: write rule:reading:feedback:theta3, "
                     "e.g. pool:matrix:fa:1e-3")
        if rule not in RULES or reading not in ("matrix", "elementwise") or fb not in ("fa", "bp"):
            sys.exit(f"adjoint_rounding: bad case {item!r}: rule one of {sorted(RULES)}, reading matrix or "
                     "elementwise, feedback fa or bp")
        out.append((rule, reading, fb, th3))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=250, help="online steps per episode, a multiple of 5 (default 250)")
    p.add_argument("--cases", default=DEFAULT_CASES, help="rule:reading:feedback:theta3, comma-separated")
    p.add_argument("--json", help="also write the records (one JSON object per line) to this file")
    args = p.parse_args(argv)
    if args.T < 5 or args.T % 5:
        p.error("--T must be a positive multiple of 5 (M = 5 classes)")
    cases = parse_cases(args.cases)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from plastic_jax.adjoint import adapt_adjoint, measure_drift
    from plastic_jax.benchmark import EMNIST_SIZES, synthetic_class_index
    from plastic_jax.episode import EpisodeSpec, draw
    from plastic_jax.estimators import adapt_remat
    from plastic_jax.inner import make_rule, query_loss
    from plastic_jax.plasticity import RULES

    spec = EpisodeSpec(EMNIST_SIZES, 5, args.T // 5, 10, 1)
    ci = synthetic_class_index(args.T, EMNIST_SIZES)
    task, W, B = draw(spec, jax.random.PRNGKey(0), ci, jnp.float32)

    def cast(tree, dtype):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    records = []
    print("| rule | fb | θ_3 | T | drift of W_0 | adjoint f32 | reverse-remat f32 | adjoint f64 |")
    print("|---|---|---|---|---|---|---|---|")
    for rname, reading, fb, th3 in cases:
        rule = make_rule(RULES[rname], 5, fb, f5_f8=reading)
        rng = np.random.default_rng(0)
        th = np.array([0.02 if r == 0 else (th3 if r == 3 else rng.normal(scale=2e-3)) for r in rule.terms])
        if th3 and 3 not in rule.terms:
            sys.exit(f"adjoint_rounding: rule {rname} has no θ_3 (F3); give theta3 0")
        drift = float(jax.jit(measure_drift, static_argnums=1)(jnp.asarray(th, jnp.float32), rule, W, B,
                                                                task.xs, task.ys))

        def grad(adapt_fn, dtype, _rule=rule, _th=th):
            t, W_, B_ = cast((task, W, B), dtype)

            def loss(theta):
                return query_loss(adapt_fn(theta, _rule, W_, B_, t.xs, t.ys), t.xq, t.yq)[0]

            return np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(_th, dtype)), np.float64)

        ref = grad(adapt_remat, jnp.float64)
        scale = np.abs(ref).max()
        rec = {"rule": rname, "f5_f8": reading, "feedback": fb, "theta3": th3, "T": args.T, "drift": drift,
               "adjoint_f32": float(np.abs(grad(adapt_adjoint, jnp.float32) - ref).max() / scale),
               "remat_f32": float(np.abs(grad(adapt_remat, jnp.float32) - ref).max() / scale),
               "adjoint_f64": float(np.abs(grad(adapt_adjoint, jnp.float64) - ref).max() / scale)}
        records.append(rec)
        name = rname if reading == "matrix" else f"{rname} ({reading})"
        print(f"| {name} | {fb} | {th3:g} | {args.T} | {drift:.1e} | {rec['adjoint_f32']:.1e} | "
              f"{rec['remat_f32']:.1e} | {rec['adjoint_f64']:.1e} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
