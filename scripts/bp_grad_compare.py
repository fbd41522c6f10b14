"""dL/dθ0 of f0 + bp on one task under both --bp-grad settings (docs/METHOD.md §2).

    python scripts/bp_grad_compare.py                       # glyphs, the paper's network, float32
    python scripts/bp_grad_compare.py --dataset digits --hidden 16,12 --x64

``frozen`` holds B = W constant in the meta-gradient (the published code); ``through``
differentiates through B = W (the exact gradient). The query loss is the same under both.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="glyphs")
    p.add_argument("--hidden", default="170,130,100,70")
    p.add_argument("--theta0", type=float, default=1e-3)
    p.add_argument("--K", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x64", action="store_true", help="float64")
    args = p.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from plastic_jax.data import build_class_index, load_dataset
    from plastic_jax.episode import EpisodeSpec
    from plastic_jax.estimators import reverse_grad
    from plastic_jax.inner import make_rule

    dtype = jnp.float64 if args.x64 else jnp.float32
    data = load_dataset(args.dataset)
    ci = build_class_index(data)
    ci = ci._replace(x=jnp.asarray(data.x, dtype))
    sizes = (data.dim, *(int(h) for h in args.hidden.split(",")), data.n_classes)
    spec = EpisodeSpec(sizes, 5, args.K, 10, 1)
    key = jax.random.PRNGKey(args.seed)
    theta = jnp.array([args.theta0], dtype)
    print(f"{args.dataset}, sizes {sizes}, θ0 = {args.theta0}, {'float64' if args.x64 else 'float32'}, "
          f"task key {args.seed}")
    for mode in ("frozen", "through"):
        rule = make_rule((0,), len(sizes) - 1, "bp", bp_grad=mode)
        (loss, acc), g = jax.jit(reverse_grad, static_argnums=(1, 2))(theta, rule, spec, key, ci)
        print(f"  bp_grad={mode:8s} query loss {float(loss):.6f}  accuracy {float(acc):.3f}  "
              f"dL/dθ0 = {float(g[0]):+.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
