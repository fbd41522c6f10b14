"""Bring your own data: a NumPy ``.npz`` file (``--dataset path/to/file.npz``).

The file holds (``np.savez("mine.npz", x=x, y=y)``):

- ``x``: (N, D), one example per row, either floating point with every value in [0, 1], or
  ``uint8`` pixels 0..255, which are divided by 255 (as EMNIST's are). Images must be
  flattened first (``x.reshape(len(x), -1)``); other integer types are refused rather than
  guessed at (divide them to [0, 1] yourself).
- ``y``: (N,) integer class labels 0..C-1, every class with at least one example (the episode
  sampler draws classes uniformly, so an empty class would draw examples of another class).
- ``n_classes`` (optional): C as a scalar; the labels must then cover 0..C-1 exactly. Without
  it, C = max(y) + 1. C is at most ``MAX_CLASSES`` (100000).

Other arrays in the file are ignored. Nothing is pickled (``allow_pickle=False``). The data then
work as the built-in datasets do: the same class splits (``--holdout``, ``--train-classes``),
``evaluate`` and the network's first and last layer sizes (D inputs, C outputs). Every problem
with the file raises ``DataUnavailableError`` with one line naming the file and what is wrong.

Only a regular file is opened (a FIFO, a device such as /dev/zero or a socket is refused before
it is opened: reading one would block or never end), and only when its arrays x and y, with the
float32 copy of x, fit in the memory available (``available_memory``); the sizes come from the
arrays' .npy headers, so a small compressed file that would unpack to more than fits is refused
before anything is unpacked.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib

import numpy as np

from plastic_jax.data.base import Dataset, DataUnavailableError

#: how a user's file is told apart from a dataset name
NPZ_SUFFIX = ".npz"

#: the most classes a file may name (``n_classes``, else max(y) + 1)
MAX_CLASSES = 100_000

_HOW = "expected np.savez(FILE, x=<(N, D) floats in [0, 1] or uint8>, y=<(N,) integer labels 0..C-1>)"


def is_npz_path(name: str) -> bool:
    """True when ``name`` refers to a file rather than a built-in dataset: it ends in ``.npz``
    or names an existing path."""
    return name.lower().endswith(NPZ_SUFFIX) or os.path.exists(os.path.expanduser(name))


def _bad(path: str, what: str, how: bool = False) -> DataUnavailableError:
    return DataUnavailableError(f"--dataset {path}: {what}" + (f"; {_HOW}" if how else ""))


def available_memory() -> int | None:
    """Bytes of memory this machine can give now: ``MemAvailable`` of /proc/meminfo, else the
    physical memory (``os.sysconf``); None when neither is known (then no size is refused)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _gb(n: int) -> str:
    if n >= 1e8:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _stat_regular(path: str, full: str) -> os.stat_result:
    """``os.stat`` of the user's file (following links), refusing anything but a regular file
    before it is opened: reading a FIFO blocks, a device such as /dev/zero never ends."""
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        raise DataUnavailableError(f"--dataset {path}: no such file (a path ending in .npz is read as "
                                   "your own data; the built-in datasets are digits, emnist, glyphs)") from None
    except (OSError, ValueError) as e:
        raise _bad(path, f"cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _bad(path, "is a directory, not an .npz file", how=True)
    if not stat.S_ISREG(st.st_mode):
        raise _bad(path, f"is {_kind(st.st_mode)}, not a regular file; give the path of an .npz file "
                         "(np.savez writes one)")
    return st


def _npy_header(path: str, z: zipfile.ZipFile, key: str, name: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from the .npy header of the archive's member ``name`` (array ``key``), read
    without unpacking the data; None for a header version this NumPy reads only with the data."""
    fmt = np.lib.format
    with z.open(name) as m:
        if m.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
            raise _bad(path, f"{key!r} is not a NumPy array (np.savez stores every array as a .npy member)",
                       how=True)
        major = m.read(2)[:1]
        reader = {b"\x01": fmt.read_array_header_1_0, b"\x02": fmt.read_array_header_2_0}.get(major)
        if reader is None:
            return None
        shape, _, dtype = reader(m)
    if dtype.hasobject:
        raise _bad(path, f"cannot be read: {key!r} is an array of Python objects ({dtype}), which would need "
                         "unpickling (never done here); save plain numbers, e.g. x.astype(np.float32)")
    return tuple(int(n) for n in shape), dtype


def _check_fits(path: str, st: os.stat_result, z: zipfile.ZipFile, members: dict[str, str]) -> None:
    """Refuse, before unpacking, arrays x and y that with the float32 copy of x (two for uint8
    pixels) need more than the memory available; refuse object arrays."""
    need = 0
    for key in ("x", "y", "n_classes"):
        if key not in members:
            continue
        header = _npy_header(path, z, key, members[key])
        if header is None:  # fall back on the unpacked size the archive records
            need += 2 * z.getinfo(members[key]).file_size
            continue
        shape, dtype = header
        n = int(np.prod(shape, dtype=object))
        need += n * dtype.itemsize
        if key == "x":
            need += n * 4 * (2 if dtype == np.uint8 else 1)
    avail = available_memory()
    if avail is not None and need > avail:
        raise _bad(path, f"its arrays x and y need about {_gb(need)} of memory to load (with the float32 "
                         f"copy of x), more than the {_gb(avail)} available; use a smaller file "
                         f"(the file itself is {_gb(st.st_size)})")


def load_npz(path: str, data_dir: str | None = None) -> Dataset:
    """Load the user's ``.npz`` at ``path`` (``~`` expanded; relative to the working directory,
    ``data_dir`` is not used): x (N, D) float32 in [0, 1], y (N,) int32, C classes.

    Raises ``DataUnavailableError`` (one line) for a missing file, a directory, a FIFO or device
    (refused before it is opened), an unreadable file, a file that is not an ``.npz`` archive, a
    missing ``x`` or ``y``, an object (pickled) array, arrays too large for the memory available,
    wrong shapes or dtypes, values of x outside [0, 1] or not finite, labels outside 0..C-1 or
    naming more than ``MAX_CLASSES`` classes, or a class without examples.
    """
    path = os.fspath(path)
    full = os.path.expanduser(path)
    st = _stat_regular(path, full)
    avail = available_memory()
    if avail is not None and st.st_size > avail:
        raise _bad(path, f"is {_gb(st.st_size)}, more than the {_gb(avail)} of memory available; use a "
                         "smaller file")
    try:
        fh = open(full, "rb")
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})") from None
    with fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced since the stat above
            raise _bad(path, "is not a regular file; give the path of an .npz file")
        try:
            if not zipfile.is_zipfile(fh):
                raise _bad(path, "is not an .npz archive (np.savez writes one; a .npy or pickle file is not read)",
                           how=True)
            fh.seek(0)
            with zipfile.ZipFile(fh) as z:
                members: dict[str, str] = {}
                for name in z.namelist():  # the keys np.load gives the members
                    members.setdefault(name[:-4] if name.endswith(".npy") else name, name)
                missing = [k for k in ("x", "y") if k not in members]
                if missing:
                    raise _bad(path, f"has no array {' or '.join(repr(k) for k in missing)} "
                                     f"(it holds {sorted(members) or 'no arrays'})", how=True)
                _check_fits(path, st, z, members)
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as f:
                x, y = f["x"], f["y"]
                n_classes = f["n_classes"] if "n_classes" in f.files else None
        except DataUnavailableError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError,
                NotImplementedError) as e:  # object arrays, damaged or encrypted members
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise _bad(path, f"cannot be read ({first})") from None
    for key, a in (("x", x), ("y", y), ("n_classes", n_classes)):
        if a is not None and not isinstance(a, np.ndarray):
            raise _bad(path, f"{key!r} is not a NumPy array", how=True)
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
        hint = " (flatten it with y.reshape(-1))" if y.ndim > 1 and y.size == n else ""
        raise _bad(path, f"y must have shape ({n},), one label per row of x, got {y.shape}{hint}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating):
            odd = ~np.isfinite(y)
            odd[~odd] = y[~odd] != np.round(y[~odd])
            if odd.any():
                raise _bad(path, f"y has dtype {y.dtype} with the non-integer label {y[odd][0].item()!r}; labels "
                                 "must be integers 0..C-1")
            raise _bad(path, f"y has dtype {y.dtype}; labels must be integers 0..C-1 (y.astype(int))")
        raise _bad(path, f"y has dtype {y.dtype}; labels must be integers 0..C-1")
    if int(y.min()) < 0:
        raise _bad(path, f"y holds the negative label {int(y.min())}; labels must be 0..C-1")
    top = int(y.max())
    if n_classes is None:
        C = top + 1
        if C > MAX_CLASSES:
            raise _bad(path, f"y holds the label {top}, which makes {C} classes (labels 0..max(y)); at most "
                             f"{MAX_CLASSES} classes are allowed: relabel the classes as 0..C-1")
    else:
        if n_classes.shape != () or not np.issubdtype(n_classes.dtype, np.integer):
            raise _bad(path, f"n_classes must be an integer scalar, got {n_classes.dtype} of shape {n_classes.shape}")
        C = int(n_classes)
        if C < 2:
            raise _bad(path, f"n_classes is {C}; a task needs at least 2 classes")
        if C > MAX_CLASSES:
            raise _bad(path, f"n_classes is {C}; at most {MAX_CLASSES} classes are allowed")
        if top >= C:
            raise _bad(path, f"y holds the label {top} but n_classes is {C} (labels 0..{C - 1})")
    if C < 2:
        raise _bad(path, f"the labels name {C} class; a task needs at least 2")
    if C > n:
        raise _bad(path, f"the labels name {C} classes (0..{C - 1}) but x has only {n} example(s), so some "
                         f"class has none (the label {top} is the largest; relabel the classes as 0..C-1)")
    counts = np.bincount(y.astype(np.int64), minlength=C)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(str(int(c)) for c in empty[:10]) + (", ..." if len(empty) > 10 else "")
        raise _bad(path, f"class(es) {shown} of 0..{C - 1} have no example (relabel the classes as 0..C-1)")
    return y.astype(np.int32), C
