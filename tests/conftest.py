import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# The tests' programs are tiny: XLA's time goes into compiling them, not running them, and most of
# that is LLVM optimising the CPU code. Without those optimisations (XLA's own HLO passes still run)
# compiling takes about half as long and the tiny programs run as fast; results agree with the
# optimised code to float32 rounding (measured: the last bit or two, as between any two programs of
# the same computation). Set before jax starts its backend; the subprocesses the tests start inherit
# it. A level given in XLA_FLAGS wins (XLA_FLAGS=--xla_backend_optimization_level=2 pytest ...).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# Many tests build the same small programs again (one meta-train run per seed, per flag); JAX's
# persistent compilation cache lets a repeated program skip XLA compilation (keyed on the program,
# jax version and backend, so a stale entry is never used).
import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
