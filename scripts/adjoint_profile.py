"""Where the adjoint meta-gradient's time goes (docs/PERFORMANCE.md, "Where the time goes").

    python scripts/adjoint_profile.py --rule pool               # matrix reading, fa
    python scripts/adjoint_profile.py --rule pool --f5-f8 elementwise --repeats 21

For one task on the EMNIST-sized network (T = 250, synthetic inputs, the benchmark's), in one
process, alternating the calls: the process CPU time and the wall time (medians over --repeats;
on a shared machine trust CPU time, on a quiet one wall time: XLA then runs on every core) of

- ``forward episode``: ``episode.batch_loss`` (draw, the online scan, the query loss), the
  denominator of every ratio;
- ``adjoint forward scan``: ``adjoint._fast_forward`` (the scan that also stacks the residuals);
- ``backward scan + dL/dΘ``: ``adjoint._fast_backward`` on that scan's output;
- ``adjoint meta-gradient``: the estimator (``estimators.ESTIMATORS["adjoint"]``), everything;

and the XLA operations in the optimised HLO of the scan bodies (the forward episode's step, the
adjoint's forward and backward steps), by kind. On a CPU at batch size 1 a step's cost is its
passes over weight-sized arrays plus about a microsecond per operation.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections import Counter


def body_op_counts(hlo: str) -> list[tuple[str, Counter]]:
    """[(while-body name, Counter of operation kinds)] of an optimised HLO module's text (the
    bookkeeping kinds parameter, get-tuple-element, tuple, constant and bitcast left out)."""
    comps, cur = {}, None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?(%?[\w.\-]+) ", line)
        if m and line.rstrip().endswith("{"):
            cur = m.group(1)
            comps[cur] = []
        elif cur and line.strip() and line.strip() != "}":
            comps[cur].append(line.strip())
    out = []
    for body in re.findall(r"body=(%?[\w.\-]+)", hlo):
        kinds = Counter()
        for line in comps.get(body, []):
            m = re.search(r"= \S+ (\w[\w\-]*)\(", line)
            if m and m.group(1) not in ("parameter", "get-tuple-element", "tuple", "constant", "bitcast"):
                kinds[m.group(1)] += 1
        out.append((body, kinds))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rule", default="pool", help="f0, bio, pool, ehebb or oja (default pool)")
    p.add_argument("--f5-f8", default="matrix", choices=("matrix", "elementwise"))
    p.add_argument("--feedback", default="fa", choices=("fa", "bp"))
    p.add_argument("--per-layer-theta", action="store_true", help="one Θ row per layer")
    p.add_argument("--repeats", type=int, default=15, help="timed calls of each function (default 15)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    import jax
    import jax.numpy as jnp

    import plastic_jax.adjoint as A
    from plastic_jax.benchmark import EMNIST_SIZES, synthetic_class_index
    from plastic_jax.episode import EpisodeSpec, batch_loss, draw
    from plastic_jax.estimators import ESTIMATORS
    from plastic_jax.inner import initial_theta, make_rule
    from plastic_jax.plasticity import RULES

    if args.rule not in RULES:
        p.error(f"--rule: one of {sorted(RULES)}")
    rule = make_rule(RULES[args.rule], 5, args.feedback, f5_f8=args.f5_f8, per_layer=args.per_layer_theta)
    T = 250
    spec = EpisodeSpec(EMNIST_SIZES, 5, T // 5, 10, 1)
    ci = synthetic_class_index(T, EMNIST_SIZES)
    theta = initial_theta(rule)
    key = jax.random.PRNGKey(0)
    task, W, B = draw(spec, key, ci, theta.dtype, rule.feedback)
    xs, ys = task.xs, task.ys
    fwd_scan = jax.jit(lambda th: A._fast_forward(th, rule, W, B, xs, ys))
    W_T, res = fwd_scan(theta)
    G = tuple(jnp.full_like(w, 1e-3) for w in W_T)
    fns = {
        "forward episode": jax.jit(lambda th: batch_loss(th, rule, spec, key, ci)),
        "adjoint forward scan": fwd_scan,
        "backward scan + dL/dΘ": jax.jit(lambda th: A._fast_backward(th, rule, W_T, B, xs, ys, res, G, False)),
        "adjoint meta-gradient": jax.jit(lambda th: ESTIMATORS["adjoint"](th, rule, spec, key, ci)),
    }
    for f in fns.values():
        jax.block_until_ready(f(theta))
    cpu = {n: [] for n in fns}
    wall = {n: [] for n in fns}
    for _ in range(args.repeats):
        for n, f in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(f(theta))
            cpu[n].append(time.process_time() - c0)
            wall[n].append(time.perf_counter() - w0)
    med = {n: statistics.median(v) * 1e3 for n, v in cpu.items()}
    wmed = {n: statistics.median(v) * 1e3 for n, v in wall.items()}
    try:
        import os
        load = f"{os.getloadavg()[0]:.1f}"
    except OSError:
        load = "?"
    print(f"rule {args.rule}, {args.f5_f8} F5-F8, {args.feedback}, per-layer Θ {args.per_layer_theta}, "
          f"T {T}, meta-batch 1; medians of {args.repeats}; load average {load}")
    print("| part | CPU ms | × forward episode | wall ms | × forward episode |")
    print("|---|---|---|---|---|")
    for n, m in med.items():
        w = wmed[n]
        print(f"| {n} | {m:.1f} | {m / med['forward episode']:.2f} | {w:.1f} | {w / wmed['forward episode']:.2f} |")

    print("\nXLA operations per scan step (optimised HLO):")
    for name, f in (("forward episode", fns["forward episode"]), ("adjoint", fns["adjoint meta-gradient"])):
        hlo = f.lower(theta).compile().as_text()
        for _body, kinds in body_op_counts(hlo):
            total = sum(kinds.values())
            if total >= 20:  # the online scans, not the small loops of the sampler
                print(f"  {name}: {total} ({', '.join(f'{k} {v}' for k, v in kinds.most_common())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
