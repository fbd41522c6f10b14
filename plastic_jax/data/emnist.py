"""EMNIST balanced (47 classes: 10 digits, 26 upper-case, 11 distinct lower-case letters), read
either from the official NIST idx files with NumPy alone, or through tensorflow-datasets.

- **Where.** The data directory is ``data_dir`` (``--data-dir``), else ``$TFDS_DATA_DIR``, else
  ``~/tensorflow_datasets``. In it, these places are searched in this order; the first that holds
  any ``emnist-balanced-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]`` file, or a
  ``gzip.zip``, is used:

  1. ``<data_dir>/emnist/`` (loose idx files, ``.gz`` or un-gzipped),
  2. ``<data_dir>/emnist/gzip/`` (what unzipping ``gzip.zip`` there gives),
  3. ``<data_dir>/emnist/gzip.zip`` (the NIST archive as downloaded, not unpacked),
  4. ``<data_dir>/``, 5. ``<data_dir>/gzip/``, 6. ``<data_dir>/gzip.zip``.

  Within a place, a file's ``.gz`` form is preferred to its un-gzipped form (a file is
  un-gzipped when its content is gzip, whatever its name); inside ``gzip.zip`` the members
  ``gzip/emnist-balanced-*-ubyte.gz`` are read (the other subsets are ignored). No
  TensorFlow and no tensorflow-datasets import are involved. If none of these places holds the
  files, the prepared tfds dataset ``emnist/balanced`` (ArrayRecord files, read with
  ``tfds.data_source``: random access, no TensorFlow at run time) is used as before.
- **Validation.** idx files are parsed here (big-endian header: magic ``0x00000803`` for images,
  ``0x00000801`` for labels, then the dimensions): the magic, 28×28 images, the exact byte count,
  matching image and label counts and labels in 0..46 are checked. A missing or damaged file
  raises ``DataUnavailableError`` with one line naming the file, where it was looked for, and how
  to get it.
- **Split.** Default ``test``: the balanced test split, 400 images per class (18,800 images).
  The published code draws its tasks from this split; ``split="train"`` (2,400 per class) picks
  the other. On the idx path slices take tfds' syntax and rounding: ``"train[:10%]"``,
  ``"train[10%:20%]"``, ``"test[-500:]"``, ``"test[100:200]"`` (percent boundaries are rounded to
  the closest example, as tfds does), counted in the files' order; other tfds split forms (``+``
  unions, shards, mixed units) raise ``DataUnavailableError``. On the tfds path any tfds split
  string is passed through. tfds shuffles the records when it builds the dataset, so both paths
  give the same images and labels for a whole split but in another order, and a slice selects
  different examples on each.
- **Orientation.** The NIST idx files, and tfds (which copies their pixels unchanged), store each
  image as the transpose of the upright character. Both paths transpose every image back to
  upright (``to_upright``) before flattening, so the same stored image gives the same 784 values.
- **Scaling.** uint8 0..255 → float32 in [0, 1]; 28×28 → 784 values, row-major.
- **No download by default.** Without either form of the data this raises
  ``DataUnavailableError`` with one line saying how to get it: the official ``gzip.zip`` placed
  under ``<data_dir>/emnist/``, or ``tfds build``. ``download=True`` (used only when no idx files
  are found) runs tfds' download-and-prepare, which needs TensorFlow (the ``emnist`` extra:
  ``pip install 'plastic_jax[emnist]'``).

tensorflow_datasets is imported inside the tfds path only, so ``import plastic_jax``, the digits
path and the idx path never import it.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from plastic_jax.data.base import Dataset, DataUnavailableError

TFDS_NAME = "emnist/balanced"
N_CLASSES = 47
DEFAULT_SPLIT = "test"
FILE_FORMAT = "array_record"

#: the official EMNIST page, which links the NIST archive ``gzip.zip``
EMNIST_PAGE = "https://www.nist.gov/itl/products-and-services/emnist-dataset"
ZIP_NAME = "gzip.zip"
IDX_SPLITS = ("train", "test")
IMAGE_MAGIC = 0x00000803  # 0x08: unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # 0x08: unsigned byte, 1 dimension
IMAGE_SIDE = 28
GZIP_MAGIC = b"\x1f\x8b"


def resolve_data_dir(data_dir: str | None) -> str:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (tfds' own order)."""
    d = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.expanduser(d)


def _get_it(data_dir: str) -> str:
    """How to get the data, for the end of every one-line message."""
    return (
        f"get {ZIP_NAME} from the official EMNIST page ({EMNIST_PAGE}) and place it under "
        f"{os.path.join(data_dir, 'emnist')}{os.sep} (no TensorFlow needed), or prepare it with "
        f"`pip install 'plastic_jax[emnist]' && tfds build {TFDS_NAME} --file_format={FILE_FORMAT} "
        f"--data_dir {data_dir}`"
    )


def how_to_get(data_dir: str) -> str:
    """The one-line hint printed when EMNIST is in neither form under ``data_dir``."""
    return (
        f"EMNIST balanced is not prepared under {data_dir} (set by --data-dir or TFDS_DATA_DIR): "
        f"found neither the NIST idx files ({ZIP_NAME} or emnist-balanced-*-ubyte.gz in "
        f"{os.path.join(data_dir, 'emnist')} or {data_dir}) nor a tfds build; "
        + _get_it(data_dir)
        + " (or rerun with --download), or use --dataset digits, which runs offline"
    )


def to_upright(images: np.ndarray) -> np.ndarray:
    """Stored EMNIST images (N, 28, 28[, 1]) uint8 → upright (N, 784) float32 in [0, 1].

    Transposes each image (swaps rows and columns), then flattens row-major and divides by 255.
    Used for both the tfds records and the NIST idx files, which store the same transposed images.
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    up = np.transpose(images, (0, 2, 1))
    return (up.reshape(len(up), -1).astype(np.float32) / 255.0).astype(np.float32)


# --------------------------------------------------------------------------- idx files (NumPy only)


def idx_file_name(split: str, kind: str) -> str:
    """``emnist-balanced-{split}-{images-idx3|labels-idx1}-ubyte`` (without ``.gz``)."""
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    return f"emnist-balanced-{split}-{'images-idx3' if kind == 'images' else 'labels-idx1'}-ubyte"


_ALL_IDX_NAMES = tuple(idx_file_name(s, k) + gz for s in IDX_SPLITS for k in ("images", "labels")
                       for gz in (".gz", ""))


def parse_idx(data: bytes, magic: int) -> np.ndarray:
    """Parse an un-gzipped idx file of unsigned bytes into an array of its header's shape.

    Layout: a big-endian uint32 magic number (``0x0000080D``: type 0x08 = ubyte, D dimensions),
    D big-endian uint32 sizes, then the values row-major. Raises ``ValueError`` saying what is
    wrong when the magic differs from ``magic`` or the byte count differs from the header's.
    """
    if len(data) < 4:
        raise ValueError(f"only {len(data)} bytes, too short for an idx header")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise ValueError(f"magic number 0x{got:08X}, expected 0x{magic:08X}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"header truncated ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    need = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != need:
        raise ValueError(f"{len(data)} bytes where the header {dims} needs {need}"
                         + (" (truncated)" if len(data) < need else " (trailing bytes)"))
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@dataclass(frozen=True)
class IdxSource:
    """Where the idx files were found: a folder (``kind="dir"``) or the NIST ``gzip.zip`` (``"zip"``)."""

    kind: str
    path: str


def idx_places(root: str) -> list[IdxSource]:
    """The places searched for the idx files under the data directory ``root``, in order."""
    em = os.path.join(root, "emnist")
    return [
        IdxSource("dir", em),
        IdxSource("dir", os.path.join(em, "gzip")),
        IdxSource("zip", os.path.join(em, ZIP_NAME)),
        IdxSource("dir", root),
        IdxSource("dir", os.path.join(root, "gzip")),
        IdxSource("zip", os.path.join(root, ZIP_NAME)),
    ]


def find_idx_source(root: str) -> IdxSource | None:
    """The first place under ``root`` holding any EMNIST balanced idx file (or a ``gzip.zip``)."""
    for place in idx_places(root):
        if place.kind == "zip":
            if os.path.isfile(place.path):
                return place
        elif any(os.path.isfile(os.path.join(place.path, n)) for n in _ALL_IDX_NAMES):
            return place
    return None


def _gunzip(raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise ValueError("truncated gzip stream") from None
    except (OSError, zlib.error) as e:
        raise ValueError(f"not a valid gzip file ({e})") from None


def _read_member(source: IdxSource, name: str, root: str, zf: zipfile.ZipFile | None) -> tuple[bytes, str]:
    """The bytes of idx file ``name`` as stored (``.gz`` preferred) and the path to report."""
    if source.kind == "zip":
        assert zf is not None
        members = {posixpath.basename(m): m for m in zf.namelist() if not m.endswith("/")}
        for cand in (name + ".gz", name):
            if cand in members:
                label = f"{source.path}:{members[cand]}"
                try:
                    raw = zf.read(members[cand])
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
                    raise DataUnavailableError(f"EMNIST balanced: {label} is damaged ({e}); "
                                               + _get_it(root)) from None
                return raw, label
        raise DataUnavailableError(
            f"EMNIST balanced: {name}.gz is missing from {source.path} (looked for gzip/{name}.gz "
            f"inside it; it holds {len(members)} files); " + _get_it(root))
    for cand in (name + ".gz", name):
        path = os.path.join(source.path, cand)
        if os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    return f.read(), path
            except OSError as e:
                raise DataUnavailableError(f"EMNIST balanced: cannot read {path} ({e.strerror or e}); "
                                           + _get_it(root)) from None
    raise DataUnavailableError(
        f"EMNIST balanced: {name}.gz (or un-gzipped {name}) is missing from {source.path} "
        f"(the first place under {root} holding EMNIST idx files); " + _get_it(root))


def _read_idx(source: IdxSource, name: str, magic: int, root: str,
              zf: zipfile.ZipFile | None) -> tuple[np.ndarray, str]:
    raw, label = _read_member(source, name, root, zf)
    try:
        data = _gunzip(raw) if raw[:2] == GZIP_MAGIC else raw  # by content: a browser may unpack .gz
        return parse_idx(data, magic), label
    except ValueError as e:
        raise DataUnavailableError(f"EMNIST balanced: {label} is damaged ({e}); " + _get_it(root)) from None


_SPLIT_RE = re.compile(r"^(?P<name>[\w-]+)(?:\[(?P<sel>[^\]]*)\])?$")
_BOUND_RE = re.compile(r"^(?P<val>-?\d[\d_]*(?:\.[\d_]*)?)(?P<pct>%)?$")


def _bad_split(split: str, why: str) -> DataUnavailableError:
    return DataUnavailableError(
        f"split {split!r} is not supported for the EMNIST idx files ({why}): use 'train' or 'test', "
        f"optionally sliced by percent or index as tfds does, e.g. 'train[:10%]', 'train[10%:20%]', "
        f"'test[-500:]', 'test[100:200]'")


def parse_split(split: str) -> tuple[str, tuple[float | None, float | None, str]]:
    """Parse a split for the idx files: ``(name, (from, to, unit))`` with unit ``"%"`` or ``"abs"``.

    Accepts ``train``/``test`` with an optional tfds slice ``[from:to]`` whose given bounds share
    one unit (``%`` or absolute). Raises ``DataUnavailableError`` (one line) otherwise.
    """
    m = _SPLIT_RE.match(split.strip())
    if not m:
        raise _bad_split(split, "unrecognised form")
    name, sel = m["name"], m["sel"]
    if name not in IDX_SPLITS:
        raise _bad_split(split, f"no split {name!r}")
    if sel is None:
        return name, (None, None, "abs")
    parts = sel.split(":")
    if len(parts) != 2:
        raise _bad_split(split, "a slice needs the form [from:to]")
    bounds, units = [], set()
    for p in parts:
        if p == "":
            bounds.append(None)
            continue
        b = _BOUND_RE.match(p)
        if not b:
            raise _bad_split(split, f"cannot read the bound {p!r}")
        pct = bool(b["pct"])
        units.add("%" if pct else "abs")
        val = b["val"].replace("_", "")
        if not pct and "." in val:
            raise _bad_split(split, f"absolute bound {p!r} must be an integer")
        bounds.append(float(val) if pct else int(val))
    if not units:
        raise _bad_split(split, "empty slice")
    if len(units) > 1:
        raise _bad_split(split, "mixed percent and absolute bounds")
    return name, (bounds[0], bounds[1], units.pop())


def split_rows(split: str, n: int) -> slice:
    """The rows of a split of ``n`` examples selected by ``split`` (tfds' semantics and rounding:
    percent boundaries go to ``round(p * n / 100)``; negative bounds count from the end)."""
    _, (lo, hi, unit) = parse_split(split)
    if unit == "%":
        lo = 0 if lo is None else int(round(lo * n / 100.0))
        hi = n if hi is None else int(round(hi * n / 100.0))
    else:
        lo = 0 if lo is None else lo
        hi = n if hi is None else hi
    if abs(lo) > n or abs(hi) > n:
        raise DataUnavailableError(f"split {split!r} asks for rows [{lo}:{hi}] of a split with {n} examples")
    return slice(lo + n if lo < 0 else lo, hi + n if hi < 0 else hi)


def load_emnist_idx(source: IdxSource, split: str, root: str) -> Dataset:
    """Read EMNIST balanced from the NIST idx files at ``source`` (NumPy only, no TensorFlow).

    ``root`` is the data directory, for messages. Raises ``DataUnavailableError`` (one line naming
    the file) for a missing or damaged file, an unsupported split or an empty selection.
    """
    name, _ = parse_split(split)  # a bad split fails before any file is read
    img_name, lab_name = idx_file_name(name, "images"), idx_file_name(name, "labels")
    zf = None
    if source.kind == "zip":
        try:
            zf = zipfile.ZipFile(source.path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataUnavailableError(f"EMNIST balanced: {source.path} is damaged (not a readable zip "
                                       f"archive: {e}); " + _get_it(root)) from None
    try:
        images, img_label = _read_idx(source, img_name, IMAGE_MAGIC, root, zf)
        labels, lab_label = _read_idx(source, lab_name, LABEL_MAGIC, root, zf)
    finally:
        if zf is not None:
            zf.close()
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataUnavailableError(
            f"EMNIST balanced: {img_label} is damaged (images of {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_SIDE}x{IMAGE_SIDE}); " + _get_it(root))
    if len(images) != len(labels):
        raise DataUnavailableError(
            f"EMNIST balanced: {img_label} holds {len(images)} images but {lab_label} holds "
            f"{len(labels)} labels (one of them is damaged); " + _get_it(root))
    if len(labels) and int(labels.max()) >= N_CLASSES:
        raise DataUnavailableError(
            f"EMNIST balanced: {lab_label} is damaged (label {int(labels.max())} outside "
            f"0..{N_CLASSES - 1}); " + _get_it(root))
    rows = split_rows(split, len(labels))
    images, labels = images[rows], labels[rows]
    if len(labels) == 0:
        raise DataUnavailableError(f"split {split!r} of EMNIST balanced under {source.path} is empty")
    return Dataset("emnist", to_upright(images), labels.astype(np.int32), N_CLASSES)


# --------------------------------------------------------------------------- tensorflow-datasets


@contextlib.contextmanager
def _quiet_absl():
    """Silence tfds' absl warnings (e.g. "Variant folder ... has no dataset_info.json") so a
    missing dataset prints only our one line."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_emnist(data_dir: str | None = None, split: str | None = None, download: bool = False) -> Dataset:
    """Load EMNIST balanced once into memory: x (N, 784) float32 in [0, 1], y (N,) int32 in [0, 47).

    Reads the NIST idx files when any are found under the data directory (see the module
    docstring for the places searched), else the prepared tfds dataset. Raises
    ``DataUnavailableError`` (one line) when a file is missing or damaged, when neither form is
    present and ``download`` is False, or when preparing it fails.
    """
    split = split or DEFAULT_SPLIT
    root = resolve_data_dir(data_dir)
    source = find_idx_source(root)
    if source is not None:
        return load_emnist_idx(source, split, root)
    return _load_emnist_tfds(root, split, download)


#: what the ``emnist`` extra installs for tfds' download-and-prepare
EXTRA_MODULES = ("tensorflow", "importlib_resources")


def _missing_extra(e: BaseException) -> str | None:
    """The module of the ``emnist`` extra whose absence ``e`` (or an exception it chains) reports."""
    while e is not None:
        if isinstance(e, ImportError):
            name = (e.name or "").split(".")[0]
            if name in EXTRA_MODULES:
                return name
        for m in EXTRA_MODULES:
            if f"No module named '{m}" in str(e):
                return m
        e = e.__cause__ or e.__context__
    return None


def _load_emnist_tfds(root: str, split: str, download: bool) -> Dataset:
    """The tensorflow-datasets path (``tfds.data_source`` over ArrayRecord files)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - tensorflow-datasets is a dependency
        raise DataUnavailableError(
            "--dataset emnist needs tensorflow-datasets (pip install tensorflow-datasets) or the NIST "
            f"idx files ({ZIP_NAME} under {os.path.join(root, 'emnist')}); --dataset digits runs offline"
        ) from None

    with _quiet_absl():
        builder = tfds.builder(TFDS_NAME, data_dir=root, file_format=FILE_FORMAT)
        prepared = builder.is_prepared()
    if not prepared:
        if not download:
            raise DataUnavailableError(how_to_get(root))
        try:
            builder.download_and_prepare(file_format=FILE_FORMAT)
        except Exception as e:  # noqa: BLE001 - network, TensorFlow missing, disk: all one message
            missing = _missing_extra(e)
            if missing:
                raise DataUnavailableError(
                    f"--download prepares EMNIST with TensorFlow, and {missing} is not installed: install the "
                    "optional extra with pip install 'plastic_jax[emnist]' (then rerun with --download), or put "
                    f"the NIST idx files ({ZIP_NAME}) under {os.path.join(root, 'emnist')}; --dataset digits "
                    "runs offline") from None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataUnavailableError(
                f"could not download and prepare EMNIST ({type(e).__name__}: {first}); "
                + how_to_get(root)
            ) from None
    try:
        source = builder.as_data_source(split=split)
    except (ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataUnavailableError(f"cannot read split {split!r} of {TFDS_NAME}: {msg}") from None
    except NotImplementedError:
        raise DataUnavailableError(
            f"EMNIST under {root} is not stored as {FILE_FORMAT} (needed for random access without "
            f"TensorFlow); rebuild it with `tfds build {TFDS_NAME} --file_format={FILE_FORMAT} "
            f"--data_dir {root}`"
        ) from None

    n = len(source)
    if n == 0:
        raise DataUnavailableError(f"split {split!r} of {TFDS_NAME} under {root} is empty")
    images = np.empty((n, 28, 28), np.uint8)
    labels = np.empty((n,), np.int64)
    for i in range(n):  # once per run; each record is decoded by tfds (PNG via PIL or OpenCV)
        ex = source[i]
        img = np.asarray(ex["image"])
        images[i] = img.reshape(28, 28)
        labels[i] = int(ex["label"])
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DataUnavailableError(f"{TFDS_NAME} labels outside 0..{N_CLASSES - 1} under {root}")
    return Dataset("emnist", to_upright(images), labels.astype(np.int32), N_CLASSES)
