"""Benchmark meta-training episodes: ``python scripts/benchmark.py --rule bio --feedback fa --T 250
--meta-batch 1`` (same flags as ``plastic-jax benchmark``; see plastic_jax/benchmark.py)."""

import sys

from plastic_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
