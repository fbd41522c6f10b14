"""Meta-test a run's learned Θ on held-out classes: a thin wrapper over ``plastic-jax evaluate``.

    python scripts/evaluate.py runs/heldout-digits/bio-fa --tasks 100 --json runs/heldout-digits/evaluate.json
"""

import sys

from plastic_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
