"""Writing a file so that it is never half written: through a temporary file beside it, then
``os.replace``. A failed write (disk full, no inodes, Ctrl-C) removes the temporary file and leaves
an earlier file of that name whole. The one home of strict JSON (a non-finite number is ``null``).

A leaf module: it imports nothing of the package, so the run directory, checkpoints, settings,
figures and reports all write through it without importing one another.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from typing import IO, Any


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON writes it as ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text (``json_safe``) ending in a newline."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n"


@contextlib.contextmanager
def atomic_file(path: str, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on leaving the block it is flushed,
    synced and renamed onto ``path``. On an exception it is removed and ``path`` is as it was."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb" if binary else "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through ``atomic_file`` (never half a file)."""
    with atomic_file(path) as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any, indent: int | None = 2) -> None:
    """``atomic_write_text`` of strict JSON (a non-finite number is written as ``null``)."""
    atomic_write_text(path, json_text(obj, indent))
