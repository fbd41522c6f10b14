"""Bring your own data: a NumPy ``.npz`` file (``--dataset path/to/file.npz``).

The file holds (``np.savez("mine.npz", x=x, y=y)``):

- ``x``: (N, D), one example per row, either floating point with every value in [0, 1], or
  ``uint8`` pixels 0..255, which are divided by 255 (as EMNIST's are). Images must be
  flattened first (``x.reshape(len(x), -1)``); other integer types are refused rather than
  guessed at (divide them to [0, 1] yourself).
- ``y``: (N,) integer class labels 0..C-1, every class with at least one example (the episode
  sampler draws classes uniformly, so an empty class would draw examples of another class).
- ``n_classes`` (optional): C as a scalar; the labels must then cover 0..C-1 exactly. Without
  it, C = max(y) + 1.

Other arrays in the file are ignored. Nothing is pickled (``allow_pickle=False``). The data then
work as the built-in datasets do: the same class splits (``--holdout``, ``--train-classes``),
``evaluate`` and the network's first and last layer sizes (D inputs, C outputs). Every problem
with the file raises ``DataUnavailableError`` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from plastic_jax.data.base import Dataset, DataUnavailableError

#: how a user's file is told apart from a dataset name
NPZ_SUFFIX = ".npz"

_HOW = "expected np.savez(FILE, x=<(N, D) floats in [0, 1] or uint8>, y=<(N,) integer labels 0..C-1>)"


def is_npz_path(name: str) -> bool:
    """True when ``name`` refers to a file rather than a built-in dataset: it ends in ``.npz``
    or names an existing path."""
    return name.lower().endswith(NPZ_SUFFIX) or os.path.exists(os.path.expanduser(name))


def _bad(path: str, what: str, how: bool = False) -> DataUnavailableError:
    return DataUnavailableError(f"--dataset {path}: {what}" + (f"; {_HOW}" if how else ""))


def load_npz(path: str, data_dir: str | None = None) -> Dataset:
    """Load the user's ``.npz`` at ``path`` (``~`` expanded; relative to the working directory,
    ``data_dir`` is not used): x (N, D) float32 in [0, 1], y (N,) int32, C classes.

    Raises ``DataUnavailableError`` (one line) for a missing file, a file that is not an ``.npz``
    archive, a missing ``x`` or ``y``, wrong shapes or dtypes, values of x outside [0, 1] or not
    finite, labels outside 0..C-1, or a class without examples.
    """
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise DataUnavailableError(f"--dataset {path}: no such file (a path ending in .npz is read as "
                                   "your own data; the built-in datasets are digits, emnist, glyphs)")
    if os.path.isdir(full):
        raise _bad(path, "is a directory, not an .npz file", how=True)
    if not zipfile.is_zipfile(full):
        raise _bad(path, "is not an .npz archive (np.savez writes one; a .npy or pickle file is not read)", how=True)
    try:
        with np.load(full, allow_pickle=False) as f:
            keys = set(f.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise _bad(path, f"has no array {' or '.join(repr(k) for k in missing)} "
                                 f"(it holds {sorted(keys) or 'no arrays'})", how=True)
            x, y = f["x"], f["y"]
            n_classes = f["n_classes"] if "n_classes" in keys else None
    except DataUnavailableError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # object arrays, damaged members
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _bad(path, f"cannot be read ({first})") from None
    return Dataset(os.path.basename(path), _check_x(path, x), *_check_y(path, y, len(x), n_classes))


def _check_x(path: str, x: np.ndarray) -> np.ndarray:
    if x.ndim != 2:
        hint = " (flatten images with x.reshape(len(x), -1))" if x.ndim > 2 else ""
        raise _bad(path, f"x must be 2-D (N examples, D features), got shape {x.shape}{hint}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise _bad(path, f"x is empty (shape {x.shape})")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise _bad(path, f"x has dtype {x.dtype}; it must be floating point in [0, 1] or uint8 0..255")
    if not np.all(np.isfinite(x)):
        raise _bad(path, f"x holds {int(np.sum(~np.isfinite(x)))} NaN or infinite value(s)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise _bad(path, f"x must lie in [0, 1], found values in [{lo:g}, {hi:g}] (scale it first)")
    return x.astype(np.float32)


def _check_y(path: str, y: np.ndarray, n: int, n_classes: np.ndarray | None) -> tuple[np.ndarray, int]:
    if y.ndim != 1 or len(y) != n:
        raise _bad(path, f"y must have shape ({n},), one label per row of x, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise _bad(path, f"y has dtype {y.dtype}; labels must be integers 0..C-1 (y.astype(int))")
    if int(y.min()) < 0:
        raise _bad(path, f"y holds the negative label {int(y.min())}; labels must be 0..C-1")
    top = int(y.max())
    if n_classes is None:
        C = top + 1
    else:
        if n_classes.shape != () or not np.issubdtype(n_classes.dtype, np.integer):
            raise _bad(path, f"n_classes must be an integer scalar, got {n_classes.dtype} of shape {n_classes.shape}")
        C = int(n_classes)
        if top >= C:
            raise _bad(path, f"y holds the label {top} but n_classes is {C} (labels 0..{C - 1})")
    if C < 2:
        raise _bad(path, f"the labels name {C} class; a task needs at least 2")
    counts = np.bincount(y, minlength=C)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(str(int(c)) for c in empty[:10]) + (", ..." if len(empty) > 10 else "")
        raise _bad(path, f"class(es) {shown} of 0..{C - 1} have no example (relabel the classes as 0..C-1)")
    return y.astype(np.int32), C
