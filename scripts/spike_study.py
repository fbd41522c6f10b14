"""Are meta-gradient spikes chaotic episodes? Replay the spikes of a run and measure them.

For every episode a run flagged as a spike (record ``spike``, or ``grad_norm`` above ``--factor``
× ``grad_norm_median``), and for ``--normal`` ordinary episodes of the same member, this replays
the exact tasks and Θ of that meta-step (``plastic_jax.replay``) and measures, per task:
the amplification of a perturbation of Θ through the episode (``sensitivity.episode_sensitivity``,
direction: the recorded meta-gradient's sign pattern is unknown, so all ones), the directional
derivative of the query loss, and central finite differences at h = 1e-2, 1e-3, 1e-4 along the same
direction. A chaotic episode amplifies by orders of magnitude more than an ordinary one and its
finite differences disagree with each other and with the derivative.

    .venv/bin/python scripts/spike_study.py runs/seeds20/check-bio-fa --normal 3 --json docs/benchmark/spike_study.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from plastic_jax import rundir  # noqa: E402


def spikes(records: list[dict], factor: float) -> list[dict]:
    """The records flagged as spikes (or above ``factor`` × their median norm)."""
    out = []
    for r in records:
        g, med = r.get("grad_norm"), r.get("grad_norm_median")
        if r.get("spike") or (g is not None and med and g > factor * med):
            out.append(r)
    return out


def measure(run_dir: str, rec: dict) -> dict:
    import jax

    from plastic_jax.replay import replay_episode
    from plastic_jax.sensitivity import episode_sensitivity, finite_differences

    ep = replay_episode(run_dir, rec["episode"], seed=rec["seed"], l1=rec.get("l1"), meta_lr=rec.get("meta_lr"))
    sens = jax.jit(episode_sensitivity, static_argnums=(1, 2))
    fdiff = jax.jit(finite_differences, static_argnums=(1, 2, 6))
    rows = []
    for k in ep.task_keys:
        s = sens(ep.theta, ep.rule, ep.spec, k, ep.ci)
        fd = fdiff(ep.theta, ep.rule, ep.spec, k, ep.ci, None, (1e-2, 1e-3, 1e-4))
        rows.append({"amplification": float(s.amplification), "dloss": float(s.dloss),
                     "fd": [float(x) for x in fd], "loss": float(s.loss)})
    return {"episode": rec["episode"], "seed": rec["seed"], "l1": rec.get("l1"), "meta_lr": rec.get("meta_lr"),
            "grad_norm": rec.get("grad_norm"), "grad_norm_median": rec.get("grad_norm_median"), "tasks": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--factor", type=float, default=100.0, help="a spike: grad_norm above this × its median")
    p.add_argument("--normal", type=int, default=3, help="ordinary episodes of the same member per spike")
    p.add_argument("--max-spikes", type=int, default=10, help="at most this many spikes (the largest)")
    p.add_argument("--json", default=None, help="write the measurements here")
    args = p.parse_args(argv)
    records = rundir.read_records(args.run_dir)
    found = sorted(spikes(records, args.factor), key=lambda r: -(r.get("grad_norm") or 0))[: args.max_spikes]
    if not found:
        print(f"{args.run_dir}: no spike (grad_norm > {args.factor:g} × median) in {len(records)} records")
        return 0
    rng = np.random.default_rng(0)
    out = []
    print("| kind | member | episode | ‖g‖ / median | amplification | dL/dv | FD h=1e-2, 1e-3, 1e-4 |")
    print("|---|---|---|---|---|---|---|")
    for rec in found:
        same = [r for r in records if rundir.member_of(r) == rundir.member_of(rec) and not r.get("spike")
                and r.get("grad_norm_median") and r["episode"] > 10]
        normal = [same[i] for i in rng.choice(len(same), size=min(args.normal, len(same)), replace=False)]
        for kind, r in [("spike", rec)] + [("ordinary", n) for n in normal]:
            m = measure(args.run_dir, r)
            m["kind"] = kind
            out.append(m)
            t = m["tasks"][0]
            ratio = (m["grad_norm"] or float("nan")) / (m["grad_norm_median"] or float("nan"))
            who = f"seed {m['seed']}" + (f", λ {m['l1']:g}, lr {m['meta_lr']:g}" if m["l1"] else "")
            print(f"| {kind} | {who} | {m['episode']} | {ratio:.3g} | {t['amplification']:.3g} | {t['dloss']:.3g} | "
                  + ", ".join(f"{x:.3g}" for x in t["fd"]) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
