"""The input statistics of a dataset beside EMNIST balanced's: is the data's energy the reason seeds fail?

Prints (and with --json writes) the mean pixel, the pixel standard deviation (over every pixel
of every image), the mean squared norm E‖x‖² of an input vector and the mean norm, for each
dataset named, and EMNIST balanced's from its commonly quoted moments (mean 0.1751, std 0.3332
over all pixels, 28×28): E‖x‖² = 784 · (σ² + μ²), exact for the global moments. EMNIST itself is
measured too when it is prepared (``--dataset emnist`` with ``--data-dir``).

    .venv/bin/python scripts/data_moments.py                      # glyphs and digits
    .venv/bin/python scripts/data_moments.py --datasets glyphs emnist --data-dir ~/tensorflow_datasets
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from plastic_jax.data import load_dataset  # noqa: E402

#: EMNIST balanced's commonly quoted pixel mean and std (values in [0, 1]), 28×28 inputs
EMNIST_QUOTED = {"mean": 0.1751, "std": 0.3332, "dim": 784}


def moments(x: np.ndarray) -> dict[str, float]:
    """Mean and std over every pixel, E‖x‖² and E‖x‖ over the inputs; ``x`` (N, D) in [0, 1]."""
    x = np.asarray(x, np.float64)
    sq = (x * x).sum(axis=1)
    return {"mean": float(x.mean()), "std": float(x.std()), "mean_sq_norm": float(sq.mean()),
            "mean_norm": float(np.sqrt(sq).mean()), "dim": int(x.shape[1]), "n": int(x.shape[0])}


def quoted_emnist() -> dict[str, float]:
    m, s, d = EMNIST_QUOTED["mean"], EMNIST_QUOTED["std"], EMNIST_QUOTED["dim"]
    return {"mean": m, "std": s, "mean_sq_norm": d * (s * s + m * m), "mean_norm": float("nan"), "dim": d, "n": 0}


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| data | inputs | mean pixel | pixel std | E‖x‖² | E‖x‖ |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        norm = "–" if np.isnan(r["mean_norm"]) else f"{r['mean_norm']:.2f}"
        lines.append(f"| {name} | {r['dim']} | {r['mean']:.4f} | {r['std']:.4f} | {r['mean_sq_norm']:.1f} | {norm} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["glyphs", "digits"], help="datasets to measure")
    p.add_argument("--data-dir", default=None, help="where the datasets live (emnist, glyphs' cache)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    rows = {}
    for name in args.datasets:
        rows[name] = moments(load_dataset(name, args.data_dir).x)
    rows["EMNIST balanced (quoted moments)"] = quoted_emnist()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
