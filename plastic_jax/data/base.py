"""The in-memory dataset every source returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DataUnavailableError(RuntimeError):
    """The dataset is not on disk and cannot be fetched; the message says how to get it."""


class Dataset(NamedTuple):
    """x: (N, D) float32 in [0, 1]; y: (N,) int32 global labels in [0, n_classes)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    n_classes: int

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.n_classes)
