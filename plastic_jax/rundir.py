"""The run directory: the one module that creates, refuses, locks, resumes and appends to a run
(``open_run`` yields a ``RunWriter``). Reading a run back is ``plastic_jax.runs``' (its readers are
importable from here under their old names).

    RUN_DIR/config.json      every setting (``TrainConfig.to_json``), written atomically; its
                             ``extra`` also records the run's id (``run_id``) and what it
                             depends on (``fingerprint``: the dataset's arrays and class split)
    RUN_DIR/metrics.jsonl    one JSON object per (episode, seed), appended and flushed every
                             episode, fsynced before each checkpoint
    RUN_DIR/summary.json     the summary, written atomically at the end (or when the guard stops)
    RUN_DIR/checkpoints/<n>  checkpoints (``plastic_jax.checkpoint``); checkpoints_bad/: damaged ones
    RUN_DIR/metrics_cut.jsonl  records a resume cut from metrics.jsonl (it runs those episodes again)
    RUN_DIR/.lock            while a process writes the run: {"pid", "host", "boot_id", "started"}

**Paths.** ``--out`` is checked first (``check_out_path``): no control character (a newline would
split the one-line messages that name it), valid UTF-8 as an absolute path (orbax and tensorstore
cannot write under other bytes) and short enough that the deepest checkpoint file stays within
the system's PATH_MAX.

**Order.** ``open_run`` only checks until everything that can be checked has passed (the caller
has validated the settings, the dataset and the devices before calling it): a live writer of the
directory is named first; a new run refuses a directory holding another run's metrics or
checkpoints unless ``overwrite``; a resume refuses a changed setting, other data (``fingerprint``)
and a run file that is a directory or a symbolic link where a file is expected (or the reverse).
Then it takes the lock, and only then deletes (``overwrite``) or writes anything. A new run that
fails or is interrupted before its first record removes everything it created (config.json, an
empty metrics.jsonl, the lock file, the directories it made, parents included).

**What a run depends on.** Its settings (config.json) and its data: ``meta_train`` records
``extra["fingerprint"]`` (``data_fingerprint``: a sha256 of the dataset's arrays x and y as
loaded, their shapes, and the resolved class split). A resume whose data differ is refused naming
what changed; a run written before fingerprints has none to compare and records it from then on.
config.json must name every setting: one it lacks is an error naming the file and the key, unless
the setting was added after old runs were written (``config.LEGACY``; ``PREDATED``).

**Nothing is lost.** A new run refuses a directory holding any file of another run (config.json,
metrics.jsonl, summary.json, checkpoints) unless ``overwrite``. A resume restores the newest
usable checkpoint and cuts metrics.jsonl back to it; the records it cuts (episodes it runs again,
and a record repeated for the same episode and member but the last) are appended to
metrics_cut.jsonl first. Checkpoints newer than the one restored (damaged, of another run, or
beyond the complete records, e.g. after a torn last line) are moved to checkpoints_bad/, so the
episodes run again are checkpointed as before. A checkpoint is this run's when its meta names the
run's id (``extra["run_id"]``, made when the run is created) or no id (older runs); one copied
from another run is unusable. A resume whose checkpoints are all damaged changes
nothing and says so (one line); one whose checkpoints were all moved to checkpoints_bad/ by an
earlier resume is refused, naming the ``--overwrite`` command that restarts the run deliberately.
An I/O error while writing (disk full) stops the run with one line; the records and checkpoints
written before stay readable and ``--resume`` continues.

**Lock.** ``RunLock`` holds an exclusive ``flock`` on ``RUN_DIR/.lock`` and on the directory
itself for as long as the run is open; the kernel drops them when the process dies, so a lock
whose ``flock`` is free is stale and is taken over when it names this host. A live holder, or a
free lock naming another host (whose process this host cannot check), refuses the second writer
(new run, overwrite or resume) with one line naming pid and host. ``.lock`` is opened with
``O_NOFOLLOW``: a symbolic link there is refused, never written through. The directory's
``flock`` keeps a second writer out even when ``.lock`` was deleted; and the writer checks before
every append, checkpoint and summary that ``.lock`` is still its own file, and stops with one line
when it was removed or replaced.

**Reading back** (``plastic_jax.runs``). Every file is parsed defensively: a problem is a
``RunDirError`` (a ``ConfigError``: one line, exit code 2) naming the file. A torn last line of
metrics.jsonl (a run killed mid-write) is dropped everywhere, silently; a bad line before it is an
error.

**NaN.** A skipped episode's ``meta_loss`` can be NaN or infinite; records are strict JSON and
write a non-finite number as ``null`` (``record_line``). The reader accepts both ``null`` and the
``NaN``/``Infinity`` that runs written before wrote, and gives NaN for ``null``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shlex
import shutil
import socket
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from plastic_jax import user_terms
from plastic_jax.atomic import atomic_write_json, atomic_write_text, json_safe
from plastic_jax.checkpoint import Checkpointer, CheckpointError
from plastic_jax.config import RESUME_MAY_CHANGE, TrainConfig, class_split, flag_of

# the readers live in plastic_jax.runs; their old names here are kept for callers of rundir
from plastic_jax.runs import (  # noqa: F401
    B_TERMS,
    CONFIG,
    METRICS,
    NUMBER_FIELDS,
    NUMBER_LISTS,
    PREDATED,
    SUMMARY,
    THETA_KEY,
    RunDirError,
    _first_line,
    complete_episodes,
    latest_records,
    member_index,
    member_of,
    read_config,
    read_config_dict,
    read_json,
    read_records,
    read_summary,
    split_sweep,
    theta_key_order,
)

CHECKPOINTS, LOCK = "checkpoints", ".lock"
CHECKPOINTS_BAD, METRICS_CUT = CHECKPOINTS + "_bad", "metrics_cut.jsonl"
#: where ``--tensorboard`` writes (``plastic_jax.tensorboard.DIR``)
TENSORBOARD = "tensorboard"
#: what a run writes (besides the lock): a new run refuses a directory holding any of them
RUN_FILES = (CONFIG, METRICS, SUMMARY, CHECKPOINTS, CHECKPOINTS_BAD, METRICS_CUT)
#: the run files that are files (the others, checkpoints and checkpoints_bad, are directories)
FILE_NAMES = (CONFIG, METRICS, SUMMARY, METRICS_CUT)
#: bytes a run needs below RUN_DIR for its deepest path (orbax's temporary checkpoint folders:
#: checkpoints/<step>.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/d/<32 hex>)
PATH_RESERVE = 256


def record_line(rec: dict[str, Any]) -> str:
    """One metrics.jsonl line: strict JSON (a non-finite number is ``null``) and a newline."""
    return json.dumps(json_safe(rec), allow_nan=False) + "\n"


# --------------------------------------------------------------------------- what a run depends on


def data_fingerprint(data: Any, cfg: TrainConfig) -> dict[str, Any]:
    """What the run's episodes depend on besides its settings: a sha256 of the dataset's arrays x
    and y as loaded (dtype, shape, bytes), their shapes, and the resolved class split."""
    import numpy as np


    h = hashlib.sha256()
    shapes = {}
    for name in ("x", "y"):
        a = np.ascontiguousarray(np.asarray(getattr(data, name)))
        h.update(f"{name}:{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
        shapes[name] = list(a.shape)
    train, test = class_split(cfg, data.n_classes)
    return {"data_sha256": h.hexdigest(), **shapes, "train_classes": [int(c) for c in train],
            "test_classes": None if test is None else [int(c) for c in test]}


def recorded_config(cfg: TrainConfig, exp: Any) -> TrainConfig:
    """``cfg`` as the run's config.json records it: ``extra`` with the experiment's resolved class
    split (``class_split``: its train and test classes; none without a split) and the data's
    ``fingerprint`` (``data_fingerprint``; a resume compares it with the run's, ``check_resume``) and,
    with ``terms_from``, the user's terms file (``user_terms``: its path, sha256 and term names).
    ``exp``: the ``experiment.Experiment`` of ``cfg``."""
    extra = {k: v for k, v in cfg.extra.items() if k not in ("class_split", "fingerprint", user_terms.EXTRA_KEY)}
    extra.update(user_terms.recorded_extra(cfg))
    if exp.test_classes is not None:
        extra["class_split"] = {"train": list(exp.train_classes), "test": list(exp.test_classes)}
    extra["fingerprint"] = data_fingerprint(exp.data, cfg)
    return dataclasses.replace(cfg, extra=extra)


def fingerprint_change(old: Any, new: dict[str, Any]) -> str | None:
    """What differs between the run's recorded fingerprint ``old`` and today's ``new`` (None: the same)."""
    if not isinstance(old, dict):
        return "its recorded data fingerprint is not a table"
    for name in ("x", "y"):
        if old.get(name) != new[name]:
            return (f"the dataset's {name} has shape {tuple(old.get(name) or ())} in the run but "
                    f"{tuple(new[name])} now")
    for name in ("train_classes", "test_classes"):
        if old.get(name) != new[name]:
            return f"the class split differs: {name} {old.get(name)} in the run, {new[name]} now"
    if old.get("data_sha256") != new["data_sha256"]:
        return ("the dataset's contents differ from the run's (same shapes: rows edited, replaced or "
                "reordered)")
    return None


# --------------------------------------------------------------------------- checks (no writes)


def _present(path: str) -> bool:
    """A file, or a directory with something in it."""
    if os.path.isdir(path):
        try:
            return bool(os.listdir(path))
        except OSError:
            return True
    return os.path.lexists(path)


def check_out_path(out: str) -> None:
    """Refuse a run directory whose path the run could not use or name: a control character (a
    newline would split the one-line messages naming it), bytes that are not UTF-8 (orbax cannot
    write checkpoints under them), or a path so long that the deepest checkpoint file would pass
    the system's PATH_MAX (``PATH_RESERVE`` bytes below RUN_DIR). Writes nothing."""
    bad = next((c for c in out if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise RunDirError(f"--out {out!r} holds the control character {bad!r}; choose a path without one")
    try:
        full = os.path.abspath(out)
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot use --out {out!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        full.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(full)
        raise RunDirError(f"--out {os.fsdecode(shown)!r} is not valid UTF-8 (as an absolute path; checkpoints "
                          "cannot be written under it); choose a UTF-8 path") from None
    limit = _path_max(full)
    n = len(os.fsencode(full))
    if n + PATH_RESERVE > limit:
        raise RunDirError(f"--out is too long: {n} bytes as an absolute path, and a run's checkpoint files need "
                          f"{PATH_RESERVE} more, beyond the system's limit of {limit} (PATH_MAX); choose a shorter "
                          "path")


def _path_max(path: str) -> int:
    d = path
    while d and not os.path.isdir(d):
        d = os.path.dirname(d)
    try:
        return int(os.pathconf(d or "/", "PC_PATH_MAX"))
    except (OSError, ValueError):
        return 4096


def check_new(out: str, overwrite: bool) -> None:
    """Refuse to start a new run in ``out`` over another run's files (``RUN_FILES``), unless
    ``overwrite``. Writes nothing."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirError(f"--out {out!r} is a file, not a directory; choose another --out")
    if overwrite:
        return
    if os.path.lexists(os.path.join(out, METRICS)):
        raise RunDirError(f"--out {out!r} already holds a run ({METRICS}); continue it with plastic-jax meta-train "
                          f"--resume {shlex.quote(out)}, choose another directory, or pass --overwrite (deletes it)")
    ckpt = os.path.join(out, CHECKPOINTS)
    if _present(ckpt):
        raise RunDirError(f"--out {out!r} holds checkpoints of an earlier run; pass --resume or --overwrite")
    found = [name for name in RUN_FILES if _present(os.path.join(out, name))]
    if found:
        raise RunDirError(f"--out {out!r} already holds files of a run ({', '.join(found)}); choose another "
                          "directory, --resume it, or pass --overwrite")


def check_run_files(run_dir: str) -> None:
    """Refuse a run whose files are not what they must be: a directory or a symbolic link where a
    file is expected (config.json, metrics.jsonl, summary.json, metrics_cut.jsonl: a link would
    have the run write into another file), a file where a directory is (checkpoints,
    checkpoints_bad). Found before anything runs, not after the episodes."""
    for name in FILE_NAMES:
        path = os.path.join(run_dir, name)
        if os.path.islink(path):
            raise RunDirError(f"{path} is a symbolic link (to {os.readlink(path)!r}); a run writes its own files: "
                              "replace it with a copy of the file")
        if os.path.isdir(path):
            raise RunDirError(f"cannot read {path}: it is a directory; move it away")
        if os.path.lexists(path) and not os.path.isfile(path):
            raise RunDirError(f"cannot read {path}: not a regular file (a FIFO, device or socket); move it away")
    for name in (CHECKPOINTS, CHECKPOINTS_BAD):
        path = os.path.join(run_dir, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise RunDirError(f"{path} is a file, not a checkpoint directory; move it away")


def check_resume(cfg: TrainConfig) -> TrainConfig:
    """Refuse ``--resume`` when ``cfg`` changes a setting of the run in ``cfg.out`` that shapes it,
    or its data (``cfg.extra["fingerprint"]`` against the run's), or a run file is not what it
    must be (``check_run_files``). Returns the run's saved config."""
    check_run_files(cfg.out)
    saved = read_config(cfg.out)
    path = os.path.join(cfg.out, CONFIG)
    now = cfg.to_json()
    for name, old in saved.to_json().items():
        if name not in RESUME_MAY_CHANGE and now[name] != old:
            may = ", ".join(n for n in RESUME_MAY_CHANGE if n not in ("out", "extra"))
            raise RunDirError(f"--resume: {name} is {old!r} in {path} but {now[name]!r} now "
                              f"({flag_of(name)}); only {may} may change on resume")
    old_fp, new_fp = saved.extra.get("fingerprint"), cfg.extra.get("fingerprint")
    if old_fp is not None and new_fp is not None:
        what = fingerprint_change(old_fp, new_fp)
        if what:
            raise RunDirError(f"--resume: {what} (dataset {cfg.dataset!r}; the run's fingerprint is in {path}); "
                              "resume with the data the run was trained on")
    return saved


# --------------------------------------------------------------------------- the lock


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


class RunLock:
    """An exclusive lock on a run directory (see the module docstring); a context manager.

    Two ``flock``s: on ``RUN_DIR/.lock`` (which names the holder: pid, host) and on the directory
    itself (which still keeps a second writer out when ``.lock`` was deleted). ``still_held``: is
    ``.lock`` still this lock's file (not removed or replaced)?
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self._fd: int | None = None
        self._dir_fd: int | None = None

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            d = json.loads(os.read(fd, 4096) or b"{}")
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def holder(self) -> dict[str, Any]:
        """What ``.lock`` says (pid, host, ...); {} when there is none or it cannot be read."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return {}
        try:
            return self._read_holder(fd) if os.path.isfile(self.path) else {}
        finally:
            os.close(fd)

    def _refuse(self, holder: dict[str, Any], why: str) -> RunDirError:
        if holder:
            who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        else:
            who = f"another process (its lock file {self.path} was removed)"
        return RunDirError(f"{self.run_dir!r} is {why} by {who} (lock file {self.path}); run one writer at a time"
                           + ("" if why == "being written" else ", or delete the lock file if that process is gone"))

    def _refuse_link(self) -> RunDirError:
        return RunDirError(f"{self.path} is a symbolic link (to {os.readlink(self.path)!r}), not a lock file; a run "
                           "never writes through it: remove it")

    def live_holder(self) -> dict[str, Any] | None:
        """The holder of a lock that a live process holds now (``flock`` taken), else None; takes
        nothing (a free lock is let go at once)."""
        import fcntl

        for path, flags in ((self.run_dir, os.O_RDONLY | os.O_DIRECTORY), (self.path, os.O_RDONLY | os.O_NOFOLLOW)):
            try:
                fd = os.open(path, flags | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self.holder()
            except OSError:  # no flock here (e.g. a directory on NFS): nothing to learn from it
                pass
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return None

    def acquire(self) -> RunLock:
        """Take the lock, or raise ``RunDirError`` naming its holder. When taking it fails midway
        (disk full, interrupted), the lock file it created is removed again."""
        import fcntl

        host = socket.gethostname()
        dir_fd: int | None = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refuse(self.holder(), "being written") from None
            except OSError:  # a file system without flock on directories (NFS): .lock alone
                os.close(dir_fd)
                dir_fd = None
            while True:
                fd, created = self._open()
                locked = False
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        raise self._refuse(self._read_holder(fd), "being written") from None
                    locked = True
                    if not self._same(fd):  # released and removed between our open and flock: again
                        os.close(fd)
                        fd = None
                        continue
                    holder = self._read_holder(fd)
                    if holder and holder.get("host") != host:
                        raise self._refuse(holder, "locked")
                    if holder and holder.get("pid") != os.getpid():
                        print(f"taking over the stale lock of pid {holder.get('pid')} in {self.path}", file=sys.stderr)
                    me = {"pid": os.getpid(), "host": host, "boot_id": _boot_id(), "started": time.time()}
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.write(fd, (json.dumps(me) + "\n").encode())
                    os.fsync(fd)
                except BaseException:
                    if fd is not None:
                        if created and locked and self._same(fd):
                            with contextlib.suppress(OSError):
                                os.remove(self.path)
                        os.close(fd)
                    raise
                self._fd, self._dir_fd = fd, dir_fd
                return self
        except BaseException:
            if dir_fd is not None and self._dir_fd != dir_fd:
                os.close(dir_fd)
            raise

    def _open(self) -> tuple[int, bool]:
        """``.lock`` opened for writing, never through a symbolic link: (fd, created by this call)."""
        while True:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), True
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
            except FileNotFoundError:
                continue  # removed in between: create it
            except OSError as e:
                if e.errno == errno.ELOOP or os.path.islink(self.path):
                    raise self._refuse_link() from None
                if e.errno != errno.EISDIR:
                    raise
                fd = None
            if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
                return fd, False
            if fd is not None:
                os.close(fd)
            raise RunDirError(f"cannot write to --out {self.run_dir!r}: its lock file {self.path} is a directory (or "
                              "another non-file); remove it")

    def _same(self, fd: int) -> bool:
        """Whether the path ``.lock`` is still the file open as ``fd``."""
        try:
            a, b = os.stat(self.path, follow_symlinks=False), os.fstat(fd)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def still_held(self) -> bool:
        """Whether ``.lock`` is still this lock's file (False: removed or replaced since)."""
        return self._fd is not None and self._same(self._fd)

    def release(self) -> None:
        """Remove the lock file (when it is still ours), then drop the locks."""
        if self._fd is None:
            return
        if self._same(self._fd):
            with contextlib.suppress(OSError):
                os.remove(self.path)
        os.close(self._fd)
        self._fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# --------------------------------------------------------------------------- writing a run


def _fsync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _advice(e: BaseException) -> str:
    """What to do about a failed write, from its errno."""
    code = getattr(e, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free space"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions"
    if code == errno.ENAMETOOLONG:
        return "move the run to a shorter path"
    return "free space (or fix the permissions)"


def _write_error(path: str, e: BaseException, run_dir: str | None) -> RunDirError:
    """The one line for a failed write; ``run_dir``: the run that ``--resume`` continues (None: a new
    run that wrote nothing)."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
    then = (f"what was written before is intact: {_advice(e)}, then continue with "
            f"plastic-jax meta-train --resume {shlex.quote(run_dir)}") if run_dir else _advice(e)
    return RunDirError(f"cannot write {path} ({why}); {then}")


class RunWriter:
    """A run directory open for writing (locked): what the training loop writes through.

    ``checkpointing``: whether checkpoints are saved (``--checkpoint-every`` or a resumed run).
    Every write that fails (disk full, permissions) raises ``RunDirError`` (one line); what was
    written before stays readable and resumable. ``lock``: the run's ``RunLock``; before every
    append, checkpoint and summary the run checks that its lock file is still its own.
    """

    def __init__(self, cfg: TrainConfig, resume: bool, lock: RunLock | None = None):

        self.cfg = cfg
        self.path = cfg.out
        self.resume = resume
        self.lock = lock
        self.checkpointing = bool(cfg.checkpoint_every or resume)
        self.records_written = 0
        self._log: Any = None
        self._ckpt = None
        if self.checkpointing:
            ckpt = os.path.join(self.path, CHECKPOINTS)
            if os.path.lexists(ckpt) and not os.path.isdir(ckpt):
                raise RunDirError(f"{ckpt} is a file, not a checkpoint directory; move it away")
            try:
                self._ckpt = Checkpointer(ckpt, cfg.keep_checkpoints, run_id=cfg.extra.get("run_id"))
            except OSError as e:
                raise RunDirError(f"cannot use {ckpt}: {e.strerror or _first_line(e)}") from None

    def _check_lock(self) -> None:
        """Stop (one line) when the run's lock file was removed or replaced while it wrote: another
        process may be writing the directory now."""
        if self.lock is not None and not self.lock.still_held():
            raise RunDirError(
                f"the lock file {self.lock.path} was removed or replaced while this process wrote {self.path!r}; "
                "another process may be writing it, so this one stopped. What was written before is intact; when "
                f"no other process writes it, continue with plastic-jax meta-train --resume {shlex.quote(self.path)}")

    def _refuse_quarantined(self) -> None:
        """Refuse a resume that would restart at episode 0 because an earlier resume moved every
        checkpoint to checkpoints_bad/."""
        bad = os.path.join(self.path, CHECKPOINTS_BAD)
        if self._ckpt.steps() or not _present(bad):
            return
        raise RunDirError(
            f"--resume: {os.path.join(self.path, CHECKPOINTS)} holds no checkpoint: the damaged ones were moved to "
            f"{bad}/ by an earlier resume, and resuming would restart at episode 0. {self._restart_hint()}")

    def _restart_hint(self) -> str:
        return (f"To restart the run from episode 0 deliberately (deleting its records): plastic-jax meta-train "
                f"--config {shlex.quote(os.path.join(self.path, CONFIG))} --out {shlex.quote(self.path)} --overwrite")

    def start(self, target: Any, legacy: Any = None) -> tuple[int, Any, list[dict[str, Any]]]:
        """Where the run starts: ``(episode, state, records so far)``; ``target`` is the fresh state.

        ``legacy``: ``(old_target, convert)`` for checkpoints of an older state structure
        (``checkpoint.Checkpointer.restore_latest``). A resumed run restores the newest usable
        checkpoint (at most the last complete episode of metrics.jsonl; none: episode 0), moves
        the records after it (and the earlier copies of a record repeated for the same episode and
        member) to metrics_cut.jsonl, cuts metrics.jsonl back to it, moves the checkpoints newer
        than it to checkpoints_bad/ (so the episodes run again can be checkpointed) and rewrites
        config.json (e.g. a raised ``--episodes``, the run id and fingerprint of a run written
        before them). When checkpoints exist but none is usable, or an earlier resume moved them
        all aside, it raises ``RunDirError`` and leaves every file as it was.
        """
        import jax


        self._check_lock()
        start, state, records = 0, target, []
        metrics = os.path.join(self.path, METRICS)
        if self.resume:
            every = read_records(self.path)
            members = self.cfg.members()
            complete = complete_episodes(every, len(members))
            have = max((r["episode"] + 1 for r in complete), default=0)
            self._refuse_quarantined()
            try:
                restored = self._ckpt.restore_latest(jax.device_get(target), max_episode=have, legacy=legacy,
                                                     set_aside=False)
            except CheckpointError as e:
                raise RunDirError(f"--resume: {e}. {self._restart_hint()}") from None
            if restored is not None:
                start, state = restored.episode, restored.state
            if start > self.cfg.episodes:
                raise RunDirError(f"--resume: the checkpoint is at episode {start}, beyond --episodes "
                                  f"{self.cfg.episodes}")
            records = _last_of_each([r for r in complete if r["episode"] < start])
            for r in records:
                if not 0 <= r.get("seed", 0) - self.cfg.seed < self.cfg.seeds:
                    raise RunDirError(f"{metrics} holds a record of seed {r.get('seed', 0)} (episode {r['episode']}); "
                                      f"the run's seeds are {self.cfg.seed} … {self.cfg.seed + self.cfg.seeds - 1}")
                if member_index(self.cfg, r) is None:
                    raise RunDirError(f"{metrics} holds a record of l1 {r.get('l1')!r}, meta_lr {r.get('meta_lr')!r} "
                                      f"(episode {r['episode']}), not one of the run's")
            kept = {id(r) for r in records}
            cut = [r for r in every if id(r) not in kept]
            self._cut_back(metrics, records, cut)
            if restored is not None and restored.newer:
                try:
                    self._ckpt.set_aside(restored.newer)
                except OSError as e:
                    raise _write_error(os.path.join(self.path, CHECKPOINTS_BAD), e, self.path) from None
            try:
                atomic_write_json(os.path.join(self.path, CONFIG), self.cfg.to_json())
            except OSError as e:
                raise _write_error(os.path.join(self.path, CONFIG), e, self.path) from None
            note = f" ({len(cut)} later record(s) moved to {METRICS_CUT})" if cut else ""
            print(f"resuming {self.path} at episode {start}{note}", file=sys.stderr)
        try:
            self._log = open(metrics, "a")
        except OSError as e:
            raise _write_error(metrics, e, self.path) from None
        return start, state, records

    def _cut_back(self, metrics: str, records: list[dict[str, Any]], cut: list[dict[str, Any]]) -> None:
        """Cut metrics.jsonl back to ``records``, appending the ``cut`` ones (the episodes that run
        again) to metrics_cut.jsonl first; a failed write (disk full) leaves both as they were."""
        text = "".join(record_line(r) for r in records)
        if os.path.exists(metrics):
            with open(metrics, "rb") as f:
                if f.read() == text.encode():
                    return  # nothing to cut, no torn line: leave the file alone
        side = os.path.join(self.path, METRICS_CUT)
        size = os.path.getsize(side) if os.path.exists(side) else None
        try:
            if cut:  # never lost: kept aside before metrics.jsonl is cut
                with open(side, "a") as f:
                    f.write("".join(record_line(r) for r in cut))
                    _fsync(f)
            atomic_write_text(metrics, text)
        except OSError as e:
            with contextlib.suppress(OSError):
                if size is None:
                    os.remove(side)
                else:
                    os.truncate(side, size)
            raise _write_error(metrics, e, self.path) from None

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append one episode's records to metrics.jsonl and flush them."""
        self._check_lock()
        try:
            self._log.write("".join(record_line(r) for r in records))
            self._log.flush()
        except OSError as e:
            raise _write_error(os.path.join(self.path, METRICS), e, self.path) from None
        self.records_written += len(records)

    def save_checkpoint(self, episode: int, state: Any) -> None:
        """fsync the records, then checkpoint ``state`` as completed episode ``episode``.

        A non-finite state raises ``checkpoint.CheckpointError`` (nothing written); a failed write
        ``RunDirError`` (one line: orbax's logging is muted, ``checkpoint.CheckpointWriteError``)."""

        self._check_lock()
        try:
            _fsync(self._log)  # the records of every checkpointed episode are on disk first
        except OSError as e:
            raise _write_error(os.path.join(self.path, METRICS), e, self.path) from None
        try:
            self._ckpt.save(episode, state)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - CheckpointWriteError, or anything orbax raised before it
            raise _write_error(os.path.join(self.path, CHECKPOINTS, str(episode)), e, self.path) from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json (atomically)."""
        self._check_lock()
        path = os.path.join(self.path, SUMMARY)
        try:
            atomic_write_json(path, summary)
        except OSError as e:
            raise _write_error(path, e, self.path) from None

    def close(self, quiet: bool = False) -> None:
        """fsync and close metrics.jsonl, close the checkpointer. ``quiet``: after an error,
        close what can be closed and raise nothing."""
        log, ckpt = self._log, self._ckpt
        self._log = self._ckpt = None
        try:
            if log is not None:
                try:
                    _fsync(log)
                finally:
                    with contextlib.suppress(OSError):
                        log.close()
            if ckpt is not None:
                ckpt.close()
        except Exception as e:  # noqa: BLE001
            if not quiet:
                raise _write_error(os.path.join(self.path, METRICS), e, self.path) from None


def _last_of_each(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with one record per (episode, member): the last (as ``latest_records``), in the
    place of the first (a record written twice, e.g. by an old resume, reads as one)."""
    last = {(r["episode"], member_of(r)): r for r in records}
    out, seen = [], set()
    for r in records:
        key = (r["episode"], member_of(r))
        if key not in seen:
            seen.add(key)
            out.append(last[key])
    return out


def _dirs_to_make(out: str) -> list[str]:
    """The directories ``os.makedirs(out)`` would create, deepest first."""
    made, d = [], os.path.abspath(out)
    while d and not os.path.lexists(d):
        made.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return made


def _claim(out: str) -> RunLock:
    """Create ``out`` and lock it (the first write to it); unwritable: one line."""
    lock = RunLock(out)
    try:
        os.makedirs(out, exist_ok=True)
        return lock.acquire()
    except OSError as e:
        raise RunDirError(f"cannot write to --out {out!r}: {e.strerror or e}") from None
    except BaseException:  # interrupted right after the lock was taken: let it go again
        lock.release()
        raise


def _clear(out: str) -> None:
    """Remove an earlier run's files (``RUN_FILES``) from ``out`` (``--overwrite``), under the lock."""
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def _unmake(out: str) -> None:
    """Remove what a new run that recorded nothing wrote: config.json, the empty metrics.jsonl,
    an empty checkpoints/."""
    for name in (CONFIG, METRICS):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(out, name))
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(out, CHECKPOINTS))  # only when empty


def _refuse_live_writer(out: str) -> None:
    """Refuse at once (naming pid and host) when a live process writes ``out`` now."""
    if os.path.isdir(out):
        lock = RunLock(out)
        if os.path.islink(lock.path):
            raise lock._refuse_link()
        holder = lock.live_holder()
        if holder is not None:
            raise lock._refuse(holder, "being written")


@contextlib.contextmanager
def open_run(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Iterator[RunWriter]:
    """Open ``cfg.out`` for writing: check (no writes), lock, then clear and write config.json (a
    new run, with a new ``extra["run_id"]``) or leave the files to ``RunWriter.start`` (a resume,
    which keeps the run's id or gives an old run one); the writer's ``cfg`` is ``cfg`` with that id
    (``cfg`` itself is never changed). The lock is released on exit; a new run that fails or is
    interrupted before its first record leaves nothing it created behind (``_unmake``, the lock
    file, the directories it made)."""
    check_out_path(cfg.out)
    _refuse_live_writer(cfg.out)
    if resume:
        saved = check_resume(cfg)
        rid = saved.extra.get("run_id")
        rid = rid if isinstance(rid, str) and rid else uuid.uuid4().hex
    else:
        check_new(cfg.out, overwrite)
        rid = uuid.uuid4().hex
    cfg = dataclasses.replace(cfg, extra={**cfg.extra, "run_id": rid})
    made = _dirs_to_make(cfg.out)
    lock = run = None
    wrote = False
    had_checkpoints = os.path.isdir(os.path.join(cfg.out, CHECKPOINTS))
    tensorboard = os.path.join(cfg.out, TENSORBOARD)
    had_tensorboard = os.path.lexists(tensorboard)
    try:
        lock = _claim(cfg.out)
        if not resume:
            check_new(cfg.out, overwrite)  # again, under the lock: another writer may have been first
            try:
                _clear(cfg.out)
                wrote = True
                atomic_write_json(os.path.join(cfg.out, CONFIG), cfg.to_json())
            except OSError as e:
                raise _write_error(os.path.join(cfg.out, CONFIG), e, None) from None
        run = RunWriter(cfg, resume, lock)
        yield run
    except BaseException:
        if run is not None:
            run.close(quiet=True)
        if wrote and (run is None or run.records_written == 0):
            _unmake(cfg.out)
            if not had_tensorboard and os.path.isdir(tensorboard) and not os.path.islink(tensorboard):
                shutil.rmtree(tensorboard, ignore_errors=True)  # the empty event files of this run
        if not had_checkpoints:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(cfg.out, CHECKPOINTS))  # only when empty: made by this run
        if lock is not None:
            lock.release()
        for d in made:  # deepest first, each only when empty: this run made it and left nothing in it
            try:
                os.rmdir(d)
            except OSError:
                break
        raise
    else:
        try:
            run.close()
        finally:
            lock.release()

