"""The in-memory dataset every source returns."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class DataUnavailableError(RuntimeError):
    """The dataset is not on disk and cannot be fetched; the message says how to get it."""


class Task(NamedTuple):
    """One episode's data: a shuffled training stream and a query set (docs/METHOD.md §4)."""

    xs: Any  # (T, n_0) with T = M·K
    ys: Any  # (T,) int
    xq: Any  # (M·Q, n_0)
    yq: Any  # (M·Q,) int


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
