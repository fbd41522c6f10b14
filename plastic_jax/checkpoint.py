"""Checkpoints of a meta-training run (orbax-checkpoint), and the atomic file writes around them.

A checkpoint at step ``n`` holds the ``MetaState`` after ``n`` completed episodes (Θ, the optax
state and the consecutive-skip counter, each with a leading seed axis) and a small JSON record:
``{"episode": n, "digest": sha256 of the state's bytes}``. Nothing else is needed to resume: the
task sampler and the network initialisation draw from ``fold_in(PRNGKey(seed + s), episode)``,
a pure function of the base seed and the episode index, so the RNG state *is* the episode index.

Checkpoints live in ``RUN_DIR/checkpoints/<n>``. Orbax writes each one into a temporary folder
and renames it when complete, so a run killed while saving leaves no half-written step behind;
the digest catches a step whose files were damaged afterwards. ``restore_latest`` walks the
steps newest first and returns the first that reads back, matches its digest and is finite;
the newer steps that failed are then moved to ``RUN_DIR/checkpoints_bad/`` with the reason
printed. When no step is usable nothing is moved and ``CheckpointError`` says why, per step.

Steps newer than the one restored (damaged, or beyond the complete records of metrics.jsonl, as
after a kill that tore the last line) are set aside too, so that the episodes run again can be
checkpointed under the same step numbers. ``<directory>_bad/<n>`` never replaces a copy set aside
before: a second one is ``<n>.1``, ``<n>.2``, ...

**Whose checkpoint.** A ``Checkpointer`` of a run with an id (``run_id``, config.json's
``extra["run_id"]``) writes it into each step's meta and refuses a step that names another run
(copied from elsewhere): such a step is unusable, like a damaged one. Steps without an id (written
before ids existed) stay usable.

**Failures are one line.** A damaged step can make orbax's reads fail while others are still in
flight; tensorstore then reports their completion to an event loop that orbax has closed, which
printed "RuntimeError: Event loop is closed" tracebacks although the outcome was right
(``_quiet_closed_loops`` drops those late callbacks instead). A failed save (disk full, no inodes,
a path too long) made orbax's worker threads log their tracebacks through absl; ``save`` mutes
that logger while it writes (and, after a failure, for the rest of the process: those threads may
report it later still), removes the half-written temporary folder (again at ``close``, and any
left over when a ``Checkpointer`` opens the directory: tensorstore may still write into it after
a failure) and raises ``CheckpointWriteError``, an ``OSError`` whose ``strerror`` is the system's
reason.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from plastic_jax.atomic import atomic_write_json, atomic_write_text  # noqa: F401 - re-exported


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a state that must not be written (non-finite)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, no inodes, permissions, a path too long):
    ``strerror`` is the reason in a few words, ``filename`` the step's folder."""


def _os_error_of(e: BaseException, path: str) -> CheckpointWriteError:
    """``e`` (from orbax or tensorstore, in any of their types) as a one-line ``OSError``: the
    errno the message carries (``[Errno 28]``, ``os_error_code='28'``) with its system text, else
    the message's first line, shortened."""
    if isinstance(e, OSError) and e.errno:
        return CheckpointWriteError(e.errno, e.strerror or os.strerror(e.errno), path)
    text = str(e)
    m = re.search(r"\[Errno (\d+)\]|os_error_code='?(\d+)", text)
    if m:
        code = int(m.group(1) or m.group(2))
        return CheckpointWriteError(code, os.strerror(code), path)
    for code, words in ((errno.ENOSPC, "No space left"), (errno.ENAMETOOLONG, "name too long"),
                        (errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")):
        if words in text:
            return CheckpointWriteError(code, os.strerror(code), path)
    line = " ".join(text.split()) or type(e).__name__
    return CheckpointWriteError(errno.EIO, line if len(line) <= 200 else line[:200] + "…", path)


_ABSL = logging.getLogger("absl")


class _NeverRetrieved(logging.Filter):
    """Drops asyncio's "... exception was never retrieved" reports of orbax's write tasks: after a
    failed write (disk full) the sibling writes orbax started fail too, nobody awaits them, and
    asyncio logs each one with a traceback when it is collected, possibly at exit, after the run
    has already said in one line why it stopped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in str(record.msg)


_ASYNCIO_FILTER = _NeverRetrieved()


@contextlib.contextmanager
def _muted() -> Iterator[None]:
    """Orbax's absl logging off inside (its worker threads log a failed write with a traceback);
    after a failure, asyncio's reports of its unawaited sibling writes stay off for good."""
    was = _ABSL.disabled
    _ABSL.disabled = True
    try:
        yield
    except BaseException:
        logging.getLogger("asyncio").addFilter(_ASYNCIO_FILTER)  # idempotent: a filter is added once
        raise
    finally:
        _ABSL.disabled = was


_QUIET = False


def _quiet_closed_loops() -> None:
    """Drop callbacks that tensorstore hands to an asyncio loop orbax has already closed (after a
    failed read) instead of printing a "RuntimeError: Event loop is closed" traceback: such a loop
    never runs anything again, so the callback had no effect either way. Installed once."""
    global _QUIET
    if _QUIET:
        return
    import asyncio.base_events as base_events

    original = base_events.BaseEventLoop.call_soon_threadsafe

    def call_soon_threadsafe(self, *args, **kwargs):
        if self.is_closed():
            return None
        return original(self, *args, **kwargs)

    base_events.BaseEventLoop.call_soon_threadsafe = call_soon_threadsafe
    _QUIET = True


def all_finite(tree: Any) -> bool:
    """True when every floating-point leaf of ``tree`` is finite."""
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            return False
    return True


def state_digest(tree: Any) -> str:
    """sha256 over the dtype, shape and bytes of every leaf, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Restored(NamedTuple):
    episode: int  # completed episodes: the next episode to run
    state: Any  # the restored pytree (NumPy leaves), same structure as the target
    #: the steps newer than ``episode`` and why each is not used: set aside by ``restore_latest``
    #: (or, with ``set_aside=False``, by the caller through ``Checkpointer.set_aside``)
    newer: tuple[tuple[int, str], ...] = ()


@contextlib.contextmanager
def _own_process() -> Iterator[None]:
    """Make orbax treat this process as a single-process program while it is inside.

    Under JAX's distributed runtime orbax writes NumPy leaves and JSON from process 0 only and
    syncs all processes; here every process owns its run directory (README, several hosts). So,
    while a checkpoint is written or read, orbax's process index reads 0, and each manager runs
    over the processes {0} only (``_manager``), which skips its barriers. Nothing changes in a
    single-process program.
    """
    if jax.process_count() == 1:
        yield
        return
    from unittest import mock

    try:
        from orbax.checkpoint._src.multihost import multihost
    except ImportError:  # pragma: no cover - another orbax layout
        raise CheckpointError("checkpoints under JAX's distributed runtime need orbax-checkpoint's multihost "
                              "module (orbax.checkpoint._src.multihost); run with --checkpoint-every 0") from None
    with mock.patch.object(multihost, "process_index", lambda: 0):
        yield


def _manager(directory: str, keep: int):
    """An orbax manager of ``directory`` (created if missing); see ``_own_process``."""
    import orbax.checkpoint as ocp

    os.makedirs(directory, exist_ok=True)
    kw: dict[str, Any] = {}
    if jax.process_count() > 1:
        kw["multiprocessing_options"] = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=False, **kw)
    with _own_process():
        return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "meta"))


class Checkpointer:
    """Save and restore ``(episode, state)`` under ``directory``, keeping the newest ``keep``.

    Saving is synchronous (the state is a few hundred bytes per seed).
    """

    def __init__(self, directory: str, keep: int = 2, run_id: str | None = None):
        self.directory = directory
        self.keep = keep
        self.run_id = run_id
        self._failed: set[int] = set()  # steps whose save failed (their temporary folders go at close)
        _quiet_closed_loops()
        self._mgr = _manager(directory, keep)
        for path in glob.glob(os.path.join(glob.escape(directory), "*.orbax-checkpoint-tmp*")):
            shutil.rmtree(path, ignore_errors=True)  # what a failed or killed save left (the run is locked)

    def steps(self) -> list[int]:
        with _own_process():
            return sorted(self._mgr.all_steps())

    def save(self, episode: int, state: Any) -> None:
        """Write ``state`` (a pytree; moved to host) as step ``episode``. Refuses a non-finite one."""
        import orbax.checkpoint as ocp

        state = jax.device_get(state)
        if not all_finite(state):
            raise CheckpointError(f"refusing to checkpoint a non-finite state at episode {episode}")
        meta = {"episode": int(episode), "digest": state_digest(state)}
        if self.run_id is not None:
            meta["run_id"] = self.run_id
        self._remove_temporary(episode)  # a save killed earlier left it; orbax would trip over it
        try:
            with _muted(), _own_process():
                self._mgr.save(
                    int(episode),
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                self._mgr.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore fail in many types
            _ABSL.disabled = True  # its worker threads may still log the failure, even after close
            with contextlib.suppress(Exception), _own_process():
                self._mgr.wait_until_finished()
            self._remove_temporary(episode)
            self._failed.add(int(episode))  # tensorstore may still write into it: removed again by close
            raise _os_error_of(e, os.path.join(self.directory, str(episode))) from None

    def _remove_temporary(self, step: int) -> None:
        """Remove what an unfinished save of ``step`` left (orbax's ``<step>.orbax-checkpoint-tmp*``)."""
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{int(step)}.orbax-checkpoint-tmp*")):
            shutil.rmtree(path, ignore_errors=True)

    def _read(self, step: int, target: Any, legacy: Any = None) -> Any:
        """The state of ``step`` in ``target``'s structure; ``legacy``: ``(old_target, convert)``
        for a checkpoint written in an older structure (tried when ``target``'s does not match)."""
        try:
            return self._read_as(step, target)
        except _ForeignCheckpoint:
            raise
        except Exception:
            if legacy is None:
                raise
            old_target, convert = legacy
            try:
                old = self._read_as(step, old_target)
            except Exception:  # noqa: BLE001 - report the failure against today's structure
                pass
            else:
                return jax.tree.map(np.asarray, jax.device_get(convert(old)))
            raise

    def _read_as(self, step: int, target: Any) -> Any:
        import orbax.checkpoint as ocp

        target = jax.device_get(target)
        with _muted(), _own_process():  # a failed read leaves unawaited sibling reads, as a failed write does
            got = self._mgr.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            )
        meta, state = got["meta"], got["state"]
        if not isinstance(meta, dict):
            raise CheckpointError("its meta is not a table")
        rid = meta.get("run_id")
        if rid is not None and self.run_id is not None and rid != self.run_id:
            raise _ForeignCheckpoint(f"written by another run (run id {str(rid)[:12]}, this run's {self.run_id[:12]}): "
                                     "copied from elsewhere")
        state = jax.tree.map(np.asarray, state)
        if jax.tree.structure(state) != jax.tree.structure(target):
            raise CheckpointError("state structure differs from this run's")
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(target)):
            if a.shape != np.shape(b) or a.dtype != np.asarray(b).dtype:
                raise CheckpointError(f"leaf {a.shape} {a.dtype} does not match {np.shape(b)} {np.asarray(b).dtype}")
        if int(meta.get("episode", -1)) != step:
            raise CheckpointError(f"records episode {meta.get('episode')} under step {step}")
        if meta.get("digest") != state_digest(state):
            raise CheckpointError("digest mismatch (damaged files)")
        if not all_finite(state):
            raise CheckpointError("non-finite values")
        return state

    def restore_latest(self, target: Any, max_episode: int | None = None, legacy: Any = None,
                       set_aside: bool = True) -> Restored | None:
        """The newest step that reads back intact (at most ``max_episode``), or None if there is none.

        ``legacy``: ``(old_target, convert)``, how to read a checkpoint of an older state structure.
        The steps newer than the one returned (damaged, of another run, or beyond ``max_episode``)
        are moved aside to ``<directory>_bad/``, each with a one-line note on stderr
        (``set_aside=False``: they are only listed in ``Restored.newer``, for ``set_aside``).
        Raises ``CheckpointError`` when steps exist but none is usable, and then moves nothing.
        """
        steps = self.steps()
        if not steps:
            return None
        reasons, damaged = [], []
        for step in reversed(steps):
            if max_episode is not None and step > max_episode:
                why = f"beyond the {max_episode} complete episode(s) of metrics.jsonl"
                reasons.append(f"step {step}: {why}")
                damaged.append((step, why))
                continue
            try:
                state = self._read(step, target, legacy)
            except Exception as e:  # noqa: BLE001 - any failure to read means: not usable
                msg = " ".join(str(e).split()) if str(e).strip() else type(e).__name__
                msg = msg if len(msg) <= 160 else msg[:160] + "…"
                reasons.append(f"step {step}: {msg}")
                damaged.append((step, msg))
                continue
            restored = Restored(step, state, tuple(damaged))
            if set_aside:
                self.set_aside(restored.newer)
            return restored
        raise CheckpointError(
            f"no usable checkpoint in {self.directory} ({'; '.join(reasons)}); nothing was changed")

    def set_aside(self, steps: Any) -> None:
        """Move each ``(step, why)`` of ``steps`` to ``<directory>_bad/`` (``Restored.newer``)."""
        for step, why in steps:
            self._quarantine(step, why)

    def _quarantine(self, step: int, why: str) -> None:
        bad = self.directory.rstrip("/") + "_bad"
        os.makedirs(bad, exist_ok=True)
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(bad, str(step))
        n = 0
        while os.path.lexists(dst):  # set aside before (an earlier resume): keep that one too
            n += 1
            dst = os.path.join(bad, f"{step}.{n}")
        if os.path.exists(src):
            shutil.move(src, dst)
        what = "is not used" if why.startswith("beyond") else "is unusable"
        print(f"checkpoint {src} {what} ({why}); moved to {dst}, falling back", file=sys.stderr)
        with _own_process():
            self._mgr.reload()

    def close(self) -> None:
        try:
            with _muted(), _own_process():
                self._mgr.close()
        finally:
            for step in self._failed:
                self._remove_temporary(step)
            # after a failed save orbax's logging stays off: its worker threads may report the
            # failure even after close, when the one line has been printed


class _ForeignCheckpoint(CheckpointError):
    """A step whose meta names another run (not retried in the legacy structure)."""
