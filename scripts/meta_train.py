"""Meta-train a plasticity rule: a thin wrapper over ``plastic-jax meta-train``.

    python scripts/meta_train.py --rule bio --feedback fa --episodes 300
"""

import sys

from plastic_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["meta-train", *sys.argv[1:]]))
