"""Datasets and the episode sampler.

A source is a function ``load(data_dir) -> Dataset``; register it in ``SOURCES``. Sources in
``SPLIT_SOURCES`` (tensorflow-datasets ones) also take ``split`` and ``download``; their heavy
imports happen inside the loader, so importing this package stays light. A name that ends in
``.npz`` or names an existing file is the user's own data (``npz.load_npz``).
"""

from __future__ import annotations

from plastic_jax.data.base import Dataset, DataUnavailableError
from plastic_jax.data.digits import load_digits
from plastic_jax.data.emnist import load_emnist
from plastic_jax.data.glyphs import load_glyphs
from plastic_jax.data.npz import is_npz_path, load_npz
from plastic_jax.data.sampler import ClassIndex, build_class_index, sample_task

SOURCES = {"digits": load_digits, "emnist": load_emnist, "glyphs": load_glyphs}
#: sources that have named splits and may download (``split``, ``download`` keyword arguments)
SPLIT_SOURCES = frozenset({"emnist"})


def load_dataset(name: str, data_dir: str | None = None, *, split: str | None = None,
                 download: bool = False) -> Dataset:
    """Load a dataset by name (once per run), or the user's ``.npz`` file at the path ``name``
    (``npz.load_npz``). ``split``/``download`` apply to ``SPLIT_SOURCES``."""
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
