"""Metrics as TensorBoard event files (``--tensorboard``), beside metrics.jsonl.

Written with tensorboardX (the optional extra ``plastic_jax[tensorboard]``), which writes event
files without TensorFlow. One writer per seed, ``RUN_DIR/tensorboard/seed<N>`` (per member of a
sweep, ``l1_<λ>-lr_<rate>-seed<N>``), so TensorBoard overlays them; scalars per episode:
``accuracy``, ``query_loss``, ``meta_loss``, ``telemetry/grad_norm`` (and ``update_norm``,
``adam_nu_max``, ``step_scale``), ``theta/F<r>``, and where logged ``alignment/layer<l>`` and
``orthonormality/layer<l>``.
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

    def __init__(self, run_dir: str, seeds: list[int], members: list[tuple[float, float, int]] | None = None):
        """``members``: the (l1, meta_lr, seed) of a sweep (one writer each, ``l1_<λ>-lr_<rate>-seed<N>``)."""
        check_available()
        from tensorboardX import SummaryWriter

        if members is None:
            self.writers = {s: SummaryWriter(os.path.join(run_dir, DIR, f"seed{s}")) for s in seeds}
        else:
            self.writers = {(lam, lr, s): SummaryWriter(os.path.join(run_dir, DIR, f"l1_{lam:g}-lr_{lr:g}-seed{s}"))
                            for lam, lr, s in members}
        self.sweep = members is not None

    def add(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            who = (rec["l1"], rec["meta_lr"], rec["seed"]) if self.sweep else rec["seed"]
            w, ep = self.writers[who], rec["episode"]
            scalars = {k: rec[k] for k in ("accuracy", "query_loss", "meta_loss")}
            scalars.update({f"telemetry/{k}": rec[k] for k in ("grad_norm", "update_norm", "adam_nu_max", "step_scale")
                            if k in rec})
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
    if not on:
        return contextlib.closing(_Off())
    members = cfg.members() if cfg.is_sweep else None
    return contextlib.closing(TensorBoardWriter(cfg.out, [cfg.seed + s for s in range(cfg.seeds)], members))
