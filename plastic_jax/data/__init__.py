"""Datasets and the episode sampler.

A source is a function ``load(data_dir) -> Dataset``; register it in ``SOURCES``.
"""

from __future__ import annotations

from plastic_jax.data.base import Dataset, DataUnavailableError
from plastic_jax.data.digits import load_digits
from plastic_jax.data.sampler import ClassIndex, build_class_index, sample_task

SOURCES = {"digits": load_digits}


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a dataset by name (once per run)."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[name](data_dir)


__all__ = [
    "ClassIndex",
    "Dataset",
    "DataUnavailableError",
    "SOURCES",
    "build_class_index",
    "load_dataset",
    "sample_task",
]
