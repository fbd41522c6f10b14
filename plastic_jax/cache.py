"""JAX's persistent compilation cache for the command line: compile a program once, not on every run.

A meta-training program takes 25–45 s to compile on a 2-core CPU; without a cache every run, every
``--resume``, every ``evaluate`` pays it again. ``plastic-jax`` (``cli.main``) turns the cache on
before anything is compiled:

- directory: ``$PLASTIC_JAX_COMPILE_CACHE`` if set, else ``~/.cache/plastic_jax/jax-compile``
  (``$XDG_CACHE_HOME/plastic_jax/jax-compile`` when ``XDG_CACHE_HOME`` is set);
- ``PLASTIC_JAX_COMPILE_CACHE=off`` (or ``0``, ``none``, empty) turns it off;
- a cache directory already configured (``jax.config.jax_compilation_cache_dir``, e.g. by a
  test suite or the user's own code) is left alone.

Entries are keyed on the program, the JAX/XLA version and the backend, so a stale entry is never
used; deleting the directory is always safe. Library users call ``enable_compilation_cache()``
themselves (or configure JAX directly).
"""

from __future__ import annotations

import os

#: the environment variable naming the directory (or "off")
ENV = "PLASTIC_JAX_COMPILE_CACHE"
OFF = ("off", "0", "none", "")
#: programs that compile faster than this are not cached (JAX's own default is 1 s)
MIN_COMPILE_SECONDS = 0.5


def cache_dir() -> str | None:
    """Where the CLI caches compiled programs (None: turned off by ``$PLASTIC_JAX_COMPILE_CACHE``)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "plastic_jax", "jax-compile")


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``cache_dir()``) unless a
    cache directory is already configured; returns the directory in use (None: off). Never fails:
    a directory that cannot be created leaves the cache off."""
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = cache_dir() if path is None else path
    if not path:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
