"""Datasets and the episode sampler.

A source is a function ``load(data_dir) -> Dataset``; register it in ``SOURCES``. Sources in
``SPLIT_SOURCES`` (tensorflow-datasets ones) also take ``split`` and ``download``; their heavy
imports happen inside the loader, so importing this package stays light. A name that ends in
``.npz`` or names an existing file is the user's own data (``npz.load_npz``).
"""

from __future__ import annotations

import os

from plastic_jax import checks
from plastic_jax.data.base import Dataset, DataUnavailableError
from plastic_jax.data.digits import load_digits
from plastic_jax.data.emnist import load_emnist
from plastic_jax.data.glyphs import load_glyphs
from plastic_jax.data.npz import is_npz_path, load_npz
from plastic_jax.data.sampler import ClassIndex, build_class_index, sample_task

SOURCES = {"digits": load_digits, "emnist": load_emnist, "glyphs": load_glyphs}
#: sources that have named splits and may download (``split``, ``download`` keyword arguments)
SPLIT_SOURCES = frozenset({"emnist"})


def load_dataset(name: str | os.PathLike[str], data_dir: str | None = None, *, split: str | None = None,
                 download: bool = False) -> Dataset:
    """Load a dataset by name (once per run), or the user's ``.npz`` file at the path ``name``
    (``npz.load_npz``; ``name`` may be an ``os.PathLike``). ``split``/``download`` apply to
    ``SPLIT_SOURCES``. Any other type of ``name`` is a one-line ``checks.PlasticJaxError``."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        what = repr(name) if len(repr(name)) <= 60 else repr(name)[:57] + "..."
        checks.fail("load_dataset", f"expected a dataset name ({', '.join(SOURCES)}) or the path of an .npz "
                                    f"file (str or os.PathLike), got {type(name).__name__} {what}")
    if name not in SOURCES and is_npz_path(name):
        if split is not None:
            raise ValueError(f"--split applies to {', '.join(sorted(SPLIT_SOURCES))}; an .npz file has no splits")
        return load_npz(name, data_dir)
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}, or give the path "
                         "of an .npz file with arrays x and y")
    if name in SPLIT_SOURCES:
        return SOURCES[name](data_dir, split=split, download=download)
    return SOURCES[name](data_dir)


__all__ = [
    "ClassIndex",
    "Dataset",
    "DataUnavailableError",
    "SOURCES",
    "SPLIT_SOURCES",
    "build_class_index",
    "load_dataset",
    "load_npz",
    "sample_task",
]
