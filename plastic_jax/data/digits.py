"""scikit-learn's bundled 8×8 handwritten digits: 1797 images, 10 classes, offline."""

from __future__ import annotations

import numpy as np

from plastic_jax.data.base import Dataset


def load_digits(data_dir: str | None = None) -> Dataset:
    """Digits with pixels scaled from 0..16 to [0, 1]; ``data_dir`` is ignored (bundled)."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (np.asarray(d.data, np.float32) / 16.0).astype(np.float32)
    return Dataset("digits", x, np.asarray(d.target, np.int32), 10)
