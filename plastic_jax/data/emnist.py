"""EMNIST balanced (47 classes: 10 digits, 26 upper-case, 11 distinct lower-case letters) via
tensorflow-datasets, read with ``tfds.data_source`` (random access to ArrayRecord files; no
TensorFlow at run time).

- **Split.** Default ``test``: the balanced test split, 400 images per class (18,800 images).
  The published code draws its tasks from this split; ``split="train"`` (2,400 per class) or any
  tfds split string (``"train[:10%]"``) is accepted.
- **Orientation.** tfds stores EMNIST as the original NIST files do: each image is the transpose
  of the upright character. We transpose every image back to upright before flattening.
- **Scaling.** uint8 0..255 → float32 in [0, 1]; 28×28 → 784 values, row-major.
- **No download by default.** If the prepared data is not in the data directory (``data_dir``,
  else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``) this raises ``DataUnavailableError``
  with one line saying how to prepare it. ``download=True`` runs tfds' download-and-prepare,
  which needs TensorFlow (the ``emnist`` extra: ``pip install 'plastic_jax[emnist]'``).

tensorflow_datasets is imported inside the functions, so ``import plastic_jax`` and the digits
path never import it.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

from plastic_jax.data.base import Dataset, DataUnavailableError

TFDS_NAME = "emnist/balanced"
N_CLASSES = 47
DEFAULT_SPLIT = "test"
FILE_FORMAT = "array_record"


def resolve_data_dir(data_dir: str | None) -> str:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (tfds' own order)."""
    d = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.expanduser(d)


def how_to_get(data_dir: str) -> str:
    """The one-line hint printed when EMNIST is not prepared under ``data_dir``."""
    return (
        f"EMNIST balanced is not prepared under {data_dir} (set by --data-dir or TFDS_DATA_DIR); "
        f"prepare it once where there is internet with `pip install 'plastic_jax[emnist]' && "
        f"tfds build {TFDS_NAME} --file_format={FILE_FORMAT} --data_dir {data_dir}` "
        f"(or rerun with --download), or use --dataset digits, which runs offline"
    )


def to_upright(images: np.ndarray) -> np.ndarray:
    """tfds EMNIST images (N, 28, 28[, 1]) uint8 → upright (N, 784) float32 in [0, 1].

    Transposes each image (swaps rows and columns), then flattens row-major and divides by 255.
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    up = np.transpose(images, (0, 2, 1))
    return (up.reshape(len(up), -1).astype(np.float32) / 255.0).astype(np.float32)


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

    Raises ``DataUnavailableError`` (one line) when the data is not prepared and ``download`` is
    False, or when preparing it fails.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - tensorflow-datasets is a dependency
        raise DataUnavailableError(
            "--dataset emnist needs tensorflow-datasets (pip install tensorflow-datasets); "
            "--dataset digits runs offline"
        ) from None

    split = split or DEFAULT_SPLIT
    root = resolve_data_dir(data_dir)
    with _quiet_absl():
        builder = tfds.builder(TFDS_NAME, data_dir=root, file_format=FILE_FORMAT)
        prepared = builder.is_prepared()
    if not prepared:
        if not download:
            raise DataUnavailableError(how_to_get(root))
        try:
            builder.download_and_prepare(file_format=FILE_FORMAT)
        except Exception as e:  # noqa: BLE001 - network, TensorFlow missing, disk: all one message
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
