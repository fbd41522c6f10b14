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
# jax version, backend and flags, so a stale entry is never used). It lives in the user's cache
# directory, not the clone, so a fresh clone on the same machine (CI's) starts warm;
# $PLASTIC_JAX_TEST_CACHE chooses another. The CLI's subprocesses use the CLI's own cache.
import jax  # noqa: E402

TEST_CACHE = os.environ.get("PLASTIC_JAX_TEST_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "plastic_jax", "jax-compile-tests")
jax.config.update("jax_compilation_cache_dir", TEST_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
