import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Many tests build the same small programs again (one meta-train run per seed, per flag); JAX's
# persistent compilation cache lets a repeated program skip XLA compilation (keyed on the program,
# jax version and backend, so a stale entry is never used).
import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
