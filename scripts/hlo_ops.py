"""The optimised XLA program of each meta-gradient, counted by operation, and its value: for
comparing two versions of the code (docs/PERFORMANCE.md, "Before/after the reshape").

Run it once per checkout (``--root``: the checkout whose ``plastic_jax`` is measured, put first on
the path; the file says which it imported), then compare the two JSON files:

    git worktree add /tmp/old <commit>
    python scripts/hlo_ops.py --root /tmp/old /tmp/old.json
    python scripts/hlo_ops.py --root . /tmp/new.json
    python scripts/hlo_ops.py --compare /tmp/old.json /tmp/new.json

For bio and pool (fa) on a small network (64-20-15-10, M = 3, K = 4, Q = 2, the digits data), the
adjoint and forward-mode meta-gradients: jit, compile, count the operations of the optimised HLO
by kind, and evaluate (meta-loss and dL/dΘ). The same counts and bitwise the same values mean the
same compiled work, whatever a noisy machine's timings say.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys


def measure(root: str) -> dict:
    import os

    sys.path.insert(0, os.path.abspath(root))
    import jax

    import plastic_jax
    from plastic_jax import estimators
    from plastic_jax.data import build_class_index, load_dataset
    from plastic_jax.episode import EpisodeSpec
    from plastic_jax.inner import initial_theta, make_rule

    ci = build_class_index(load_dataset("digits"))
    spec = EpisodeSpec((64, 20, 15, 10), M=3, K=4, Q=2, meta_batch=1)
    out = {"_package": plastic_jax.__file__}
    for rule_name in ("bio", "pool"):
        rule = make_rule(rule_name, n_layers=3)
        theta = initial_theta(rule)
        for est in ("adjoint", "forward"):
            fn = estimators.ESTIMATORS[est]
            f = jax.jit(lambda t, fn=fn, rule=rule: fn(t, rule, spec, jax.random.PRNGKey(0), ci))
            text = f.lower(theta).compile().as_text()
            ops = collections.Counter(m.group(1) for m in re.finditer(r"=\s*\S+\s+([a-z][a-z0-9\-]*)\(", text))
            (loss, _), grad = f(theta)
            out[f"{rule_name}/{est}"] = {"ops": dict(sorted(ops.items())), "n_ops": sum(ops.values()),
                                         "loss": float(loss), "grad": [float(g) for g in grad]}
    return out


def compare(old: dict, new: dict) -> int:
    same = True
    print(f"old: {old.pop('_package', '?')}, new: {new.pop('_package', '?')}")
    for k in old:
        diff = {op: (old[k]["ops"].get(op, 0), new[k]["ops"].get(op, 0))
                for op in sorted(set(old[k]["ops"]) | set(new[k]["ops"]))
                if old[k]["ops"].get(op, 0) != new[k]["ops"].get(op, 0)}
        values = old[k]["loss"] == new[k]["loss"] and old[k]["grad"] == new[k]["grad"]
        same &= values and not diff
        print(f"{k}: {old[k]['n_ops']} -> {new[k]['n_ops']} operations; values bitwise equal: {values}"
              + (f"; differing: {diff}" if diff else ""))
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="OUT.json (measure), or OLD.json NEW.json with --compare")
    ap.add_argument("--compare", action="store_true", help="compare two files written before")
    ap.add_argument("--root", default=".", help="the checkout to measure (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.compare:
        if len(args.paths) != 2:
            ap.error("--compare takes OLD.json NEW.json")
        return compare(*(json.load(open(p)) for p in args.paths))
    result = measure(args.root)
    with open(args.paths[0], "w") as f:
        json.dump(result, f, indent=1)
    print(result["_package"], {k: v["n_ops"] for k, v in result.items() if k != "_package"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
