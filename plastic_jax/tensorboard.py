"""Metrics as TensorBoard event files (``--tensorboard``), beside metrics.jsonl.

Written with tensorboardX (the optional extra ``plastic_jax[tensorboard]``), which writes event
files without TensorFlow. One writer per seed, ``RUN_DIR/tensorboard/seed<N>``, so TensorBoard
overlays the seeds; scalars per episode: ``accuracy``, ``query_loss``, ``meta_loss``,
``theta/F<r>``, and where logged ``alignment/layer<l>`` and ``orthonormality/layer<l>``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from plastic_jax.config import ConfigError

DIR = "tensorboard"


def check_available() -> None:
    """``ConfigError`` (one line) when tensorboardX is not installed."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ConfigError("--tensorboard needs tensorboardX, which is not installed: "
                          "pip install 'plastic_jax[tensorboard]'") from None


class TensorBoardWriter:
    """Event files of one run, one writer per seed; ``add`` takes an episode's metrics.jsonl records."""

    def __init__(self, run_dir: str, seeds: list[int]):
        check_available()
        from tensorboardX import SummaryWriter

        self.writers = {s: SummaryWriter(os.path.join(run_dir, DIR, f"seed{s}")) for s in seeds}

    def add(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            w, ep = self.writers[rec["seed"]], rec["episode"]
            scalars = {k: rec[k] for k in ("accuracy", "query_loss", "meta_loss")}
            scalars.update({f"theta/{k}": v for k, v in rec["theta"].items()})
            for k in ("alignment", "orthonormality"):
                scalars.update({f"{k}/layer{i + 1}": v for i, v in enumerate(rec.get(k, []))})
            for tag, v in scalars.items():
                if v is not None and math.isfinite(v):
                    w.add_scalar(tag, float(v), ep)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


class _Off:
    def add(self, records: list[dict[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


def open_writer(cfg: Any) -> Any:
    """A context manager: the run's ``TensorBoardWriter`` with ``cfg.tensorboard``, else a no-op."""
    import contextlib

    on = cfg.tensorboard
    return contextlib.closing(TensorBoardWriter(cfg.out, [cfg.seed + s for s in range(cfg.seeds)]) if on else _Off())
