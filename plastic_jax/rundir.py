"""The run directory: the one module that creates, refuses, locks, resumes, appends to and reads
back a run. Training (``train.py``), ``evaluate``, ``plots`` and ``scripts/reproduce.py`` read
runs only through it.

    RUN_DIR/config.json      every setting (``TrainConfig.to_json``), written atomically
    RUN_DIR/metrics.jsonl    one JSON object per (episode, seed), appended and flushed every
                             episode, fsynced before each checkpoint
    RUN_DIR/summary.json     the summary, written atomically at the end (or when the guard stops)
    RUN_DIR/checkpoints/<n>  checkpoints (``plastic_jax.checkpoint``); checkpoints_bad/: damaged ones
    RUN_DIR/.lock            while a process writes the run: {"pid", "host", "boot_id", "started"}

**Order.** ``open_run`` only checks until everything that can be checked has passed (the caller
has validated the settings, the dataset and the devices before calling it): a new run refuses a
directory holding another run's metrics or checkpoints unless ``overwrite``; a resume refuses a
changed setting. Then it takes the lock, and only then deletes (``overwrite``) or writes anything.

**Lock.** ``RunLock`` holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as the run is
open; the kernel drops it when the process dies, so a lock whose ``flock`` is free is stale and is
taken over when it names this host. A live holder, or a free lock naming another host (whose
process this host cannot check), refuses the second writer with one line naming pid and host.

**Reading back.** Every file is parsed defensively: a problem is a ``RunDirError`` (a
``ConfigError``: one line, exit code 2) naming the file. A torn last line of metrics.jsonl (a run
killed mid-write) is dropped everywhere, silently; a bad line before it is an error.

**NaN.** A skipped episode's ``meta_loss`` can be NaN or infinite; records keep Python's JSON
spelling (``NaN``, ``Infinity``), which ``json.loads`` reads back, as before (not strict JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from plastic_jax.config import RESUME_MAY_CHANGE, ConfigError, TrainConfig, flag_of

CONFIG, METRICS, SUMMARY, CHECKPOINTS, LOCK = "config.json", "metrics.jsonl", "summary.json", "checkpoints", ".lock"


class RunDirError(ConfigError):
    """A run directory that cannot be used as asked; the message is one line naming the file."""


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# --------------------------------------------------------------------------- reading back


def read_json(path: str) -> Any:
    """The JSON value in ``path``; ``RunDirError`` naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path} is not valid JSON ({_first_line(e)}); the file is damaged") from None


def read_config_dict(run_dir: str) -> dict[str, Any]:
    """The raw settings of the run in ``run_dir`` (its config.json as a dict)."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        raise RunDirError(f"{run_dir!r} holds no run (no {CONFIG})")
    d = read_json(path)
    if not isinstance(d, dict):
        raise RunDirError(f"{path} must hold a table of settings, got {type(d).__name__}")
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def read_config(run_dir: str) -> TrainConfig:
    """The ``TrainConfig`` of the run in ``run_dir``; settings its config.json predates take the
    values the run had (``config.LEGACY``)."""
    d = read_config_dict(run_dir)
    try:
        return TrainConfig.from_run_json(d)
    except (ConfigError, TypeError) as e:
        raise RunDirError(f"{os.path.join(run_dir, CONFIG)}: {_first_line(e)}") from None


def read_summary(run_dir: str) -> dict[str, Any] | None:
    """The run's summary.json (None when there is none yet)."""
    path = os.path.join(run_dir, SUMMARY)
    if not os.path.exists(path):
        return None
    d = read_json(path)
    if not isinstance(d, dict):
        raise RunDirError(f"{path} must hold a table, got {type(d).__name__}")
    return d


def read_records(run_dir: str) -> list[dict[str, Any]]:
    """Every record of the run's metrics.jsonl, in file order ([] when there is no file).

    The one reader of metrics.jsonl. A torn last line (a run killed mid-write) is dropped; a line
    before it that is not a JSON object with an integer ``episode`` is a ``RunDirError``.
    """
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return []
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise RunDirError(f"cannot read {path}: {e.strerror or e}") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            if i == last:
                break  # torn by a kill mid-write
            raise RunDirError(f"{path} line {i + 1} is not JSON; the file is damaged") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("episode"), int):
            if i == last:
                break
            raise RunDirError(f"{path} line {i + 1} is not a record (no integer 'episode')")
        records.append(rec)
    return records


def latest_records(records: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """``(episode, seed) -> record``, the last record of an (episode, seed) winning (so a run that
    was resumed after a crash reads as one), sorted by episode and seed."""
    latest = {(r["episode"], r.get("seed", 0)): r for r in records}
    return dict(sorted(latest.items()))


def complete_episodes(records: list[dict[str, Any]], n_seeds: int) -> list[dict[str, Any]]:
    """The records of the leading episodes 0, 1, ... that all ``n_seeds`` seeds reached."""
    count: dict[int, int] = {}
    for r in records:
        count[r["episode"]] = count.get(r["episode"], 0) + 1
    done = 0
    while count.get(done) == n_seeds:
        done += 1
    return [r for r in records if r["episode"] < done]


# --------------------------------------------------------------------------- checks (no writes)


def check_new(out: str, overwrite: bool) -> None:
    """Refuse to start a new run in ``out`` over another run, unless ``overwrite``. Writes nothing."""
    if overwrite:
        return
    if os.path.exists(os.path.join(out, METRICS)):
        raise RunDirError(f"--out {out!r} already holds a run ({METRICS}); choose another directory "
                          "or pass --overwrite")
    ckpt = os.path.join(out, CHECKPOINTS)
    if os.path.isdir(ckpt) and os.listdir(ckpt):
        raise RunDirError(f"--out {out!r} holds checkpoints of an earlier run; pass --resume or --overwrite")


def check_resume(cfg: TrainConfig) -> None:
    """Refuse ``--resume`` when ``cfg`` changes a setting of the run in ``cfg.out`` that shapes it."""
    saved = read_config(cfg.out)
    path = os.path.join(cfg.out, CONFIG)
    now = cfg.to_json()
    for name, old in saved.to_json().items():
        if name not in RESUME_MAY_CHANGE and now[name] != old:
            may = ", ".join(n for n in RESUME_MAY_CHANGE if n not in ("out", "extra"))
            raise RunDirError(f"--resume: {name} is {old!r} in {path} but {now[name]!r} now "
                              f"({flag_of(name)}); only {may} may change on resume")


# --------------------------------------------------------------------------- the lock


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


class RunLock:
    """An exclusive lock on a run directory (see the module docstring); a context manager."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self._fd: int | None = None

    def _holder(self, fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            d = json.loads(os.read(fd, 4096) or b"{}")
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: dict[str, Any], why: str) -> RunDirError:
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        return RunDirError(f"{self.run_dir!r} is {why} by {who} (lock file {self.path}); run one writer at a time"
                           + ("" if why == "being written" else ", or delete the lock file if that process is gone"))

    def acquire(self) -> RunLock:
        """Take the lock, or raise ``RunDirError`` naming its holder."""
        import fcntl

        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._holder(fd)
                os.close(fd)
                raise self._refuse(holder, "being written") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed between our open and flock: try again
                os.close(fd)
                continue
            holder = self._holder(fd)
            if holder and holder.get("host") != host:
                os.close(fd)
                raise self._refuse(holder, "locked")
            if holder and holder.get("pid") != os.getpid():
                print(f"taking over the stale lock of pid {holder.get('pid')} in {self.path}", file=sys.stderr)
            me = {"pid": os.getpid(), "host": host, "boot_id": _boot_id(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(me) + "\n").encode())
            os.fsync(fd)
            self._fd = fd
            return self

    def release(self) -> None:
        """Remove the lock file, then drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# --------------------------------------------------------------------------- writing a run


def _fsync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


class Run:
    """A run directory open for writing (locked): what the training loop writes through.

    ``checkpointing``: whether checkpoints are saved (``--checkpoint-every`` or a resumed run).
    """

    def __init__(self, cfg: TrainConfig, resume: bool):
        from plastic_jax.checkpoint import Checkpointer

        self.cfg = cfg
        self.path = cfg.out
        self.resume = resume
        self.checkpointing = bool(cfg.checkpoint_every or resume)
        self._ckpt = Checkpointer(os.path.join(self.path, CHECKPOINTS), cfg.keep_checkpoints) \
            if self.checkpointing else None
        self._log: Any = None

    def start(self, target: Any) -> tuple[int, Any, list[dict[str, Any]]]:
        """Where the run starts: ``(episode, state, records so far)``; ``target`` is the fresh state.

        A resumed run restores the newest usable checkpoint (at most the last complete episode of
        metrics.jsonl; none: episode 0), cuts metrics.jsonl back to it and rewrites config.json
        (e.g. a raised ``--episodes``). When checkpoints exist but none is usable, it raises
        ``RunDirError`` and leaves every file as it was.
        """
        import jax

        from plastic_jax.checkpoint import CheckpointError, atomic_write_json, atomic_write_text

        start, state, records = 0, target, []
        metrics = os.path.join(self.path, METRICS)
        if self.resume:
            records = complete_episodes(read_records(self.path), self.cfg.seeds)
            have = max((r["episode"] + 1 for r in records), default=0)
            try:
                restored = self._ckpt.restore_latest(jax.device_get(target), max_episode=have)
            except CheckpointError as e:
                raise RunDirError(f"--resume: {e}") from None
            if restored is not None:
                start, state = restored
            if start > self.cfg.episodes:
                raise RunDirError(f"--resume: the checkpoint is at episode {start}, beyond --episodes "
                                  f"{self.cfg.episodes}")
            records = [r for r in records if r["episode"] < start]
            atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in records))
            atomic_write_json(os.path.join(self.path, CONFIG), self.cfg.to_json())
            print(f"resuming {self.path} at episode {start}", file=sys.stderr)
        self._log = open(metrics, "a")
        return start, state, records

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append one episode's records to metrics.jsonl and flush them."""
        self._log.write("".join(json.dumps(r) + "\n" for r in records))
        self._log.flush()

    def save_checkpoint(self, episode: int, state: Any) -> None:
        """fsync the records, then checkpoint ``state`` as completed episode ``episode``."""
        _fsync(self._log)  # the records of every checkpointed episode are on disk first
        self._ckpt.save(episode, state)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json (atomically)."""
        from plastic_jax.checkpoint import atomic_write_json

        atomic_write_json(os.path.join(self.path, SUMMARY), summary)

    def close(self) -> None:
        """fsync and close metrics.jsonl, close the checkpointer."""
        if self._log is not None:
            _fsync(self._log)
            self._log.close()
            self._log = None
        if self._ckpt is not None:
            self._ckpt.close()
            self._ckpt = None


def _claim(out: str) -> RunLock:
    """Create ``out`` and lock it (the first write to it); unwritable: one line."""
    try:
        os.makedirs(out, exist_ok=True)
        return RunLock(out).acquire()
    except OSError as e:
        raise RunDirError(f"cannot write to --out {out!r}: {e.strerror or e}") from None


def _clear(out: str) -> None:
    """Remove an earlier run's files from ``out`` (``--overwrite``), under the lock."""
    for name in (CHECKPOINTS, CHECKPOINTS + "_bad"):
        if os.path.isdir(os.path.join(out, name)):
            shutil.rmtree(os.path.join(out, name))
    for name in (METRICS, SUMMARY):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out, name))


@contextlib.contextmanager
def open_run(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Iterator[Run]:
    """Open ``cfg.out`` for writing: check (no writes), lock, then clear and write config.json (a
    new run) or leave the files to ``Run.start`` (a resume). The lock is released on exit."""
    if resume:
        check_resume(cfg)
    else:
        check_new(cfg.out, overwrite)
    lock = _claim(cfg.out)
    run = None
    try:
        if not resume:
            from plastic_jax.checkpoint import atomic_write_json

            check_new(cfg.out, overwrite)  # again, under the lock: another writer may have been first
            _clear(cfg.out)
            atomic_write_json(os.path.join(cfg.out, CONFIG), cfg.to_json())
        run = Run(cfg, resume)
        yield run
    finally:
        if run is not None:
            run.close()
        lock.release()
