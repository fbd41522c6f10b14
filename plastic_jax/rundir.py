"""The run directory: the one module that creates, refuses, locks, resumes, appends to and reads
back a run. Training (``train.py``), ``evaluate``, ``plots`` and ``scripts/reproduce.py`` read
runs only through it.

    RUN_DIR/config.json      every setting (``TrainConfig.to_json``), written atomically
    RUN_DIR/metrics.jsonl    one JSON object per (episode, seed), appended and flushed every
                             episode, fsynced before each checkpoint
    RUN_DIR/summary.json     the summary, written atomically at the end (or when the guard stops)
    RUN_DIR/checkpoints/<n>  checkpoints (``plastic_jax.checkpoint``); checkpoints_bad/: damaged ones
    RUN_DIR/metrics_cut.jsonl  records a resume cut from metrics.jsonl (it runs those episodes again)
    RUN_DIR/.lock            while a process writes the run: {"pid", "host", "boot_id", "started"}

**Order.** ``open_run`` only checks until everything that can be checked has passed (the caller
has validated the settings, the dataset and the devices before calling it): a new run refuses a
directory holding another run's metrics or checkpoints unless ``overwrite``; a resume refuses a
changed setting. Then it takes the lock, and only then deletes (``overwrite``) or writes anything.
A new run that fails before its first record removes what it wrote (config.json, an empty
metrics.jsonl) and leaves the directory as it found it.

**Nothing is lost.** A new run refuses a directory holding any file of another run (config.json,
metrics.jsonl, summary.json, checkpoints) unless ``overwrite``. A resume restores the newest
usable checkpoint and cuts metrics.jsonl back to it; the records it cuts (episodes it runs again)
are appended to metrics_cut.jsonl first. A resume whose checkpoints are all damaged changes
nothing and says so (one line); one whose checkpoints were all moved to checkpoints_bad/ by an
earlier resume is refused, naming the ``--overwrite`` command that restarts the run deliberately.
An I/O error while writing (disk full) stops the run with one line; the records and checkpoints
written before stay readable and ``--resume`` continues.

**Lock.** ``RunLock`` holds an exclusive ``flock`` on ``RUN_DIR/.lock`` for as long as the run is
open; the kernel drops it when the process dies, so a lock whose ``flock`` is free is stale and is
taken over when it names this host. A live holder, or a free lock naming another host (whose
process this host cannot check), refuses the second writer with one line naming pid and host.

**Reading back.** Every file is parsed defensively: a problem is a ``RunDirError`` (a
``ConfigError``: one line, exit code 2) naming the file. A torn last line of metrics.jsonl (a run
killed mid-write) is dropped everywhere, silently; a bad line before it is an error.

**NaN.** A skipped episode's ``meta_loss`` can be NaN or infinite; records are strict JSON and
write a non-finite number as ``null`` (``record_line``). The reader accepts both ``null`` and the
``NaN``/``Infinity`` that runs written before wrote, and gives NaN for ``null``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from plastic_jax.config import EPISODES_MAX, RESUME_MAY_CHANGE, SEED_MAX, ConfigError, TrainConfig, flag_of

CONFIG, METRICS, SUMMARY, CHECKPOINTS, LOCK = "config.json", "metrics.jsonl", "summary.json", "checkpoints", ".lock"
CHECKPOINTS_BAD, METRICS_CUT = CHECKPOINTS + "_bad", "metrics_cut.jsonl"
#: what a run writes (besides the lock): a new run refuses a directory holding any of them
RUN_FILES = (CONFIG, METRICS, SUMMARY, CHECKPOINTS, CHECKPOINTS_BAD, METRICS_CUT)
#: number fields of a record (null: not finite) and lists of numbers
NUMBER_FIELDS, NUMBER_LISTS = ("meta_loss", "query_loss", "accuracy"), ("alignment", "orthonormality")
#: the terms of ``plastic`` feedback's Θ^B in Θ's order (``feedback.PLASTIC_B_TERMS``; spelled out
#: here so that reading a run needs no JAX)
B_TERMS = ("kp", "decay", "err")
#: a key of a record's Θ table (``inner.Rule.theta_labels``): "F<term id>", or "F<term id>@<layer>"
#: (1-based) with --per-layer-theta; then the feedback mode's meta-parameters, "B:<term>" (Θ^B of
#: ``plastic``) or "gate@<layer>" (φ_ℓ of ``routing``'s gate of e_ℓ, 0-based)
THETA_KEY = re.compile(r"F(\d+)(?:@(\d+))?|B:(" + "|".join(B_TERMS) + r")|gate@(\d+)")


def theta_key_order(key: str) -> tuple[int, int]:
    """Sort key of a Θ label (``THETA_KEY``): the coefficients by term id, then layer (a shared Θ
    has layer 0); after them Θ^B in ``B_TERMS``' order, then the gates by layer; anything else last."""
    m = THETA_KEY.fullmatch(key)
    if m is None:
        return (1 << 30, 0)
    if m.group(1) is not None:
        return (int(m.group(1)), int(m.group(2) or 0))
    if m.group(3) is not None:
        return (1 << 28, B_TERMS.index(m.group(3)))
    return (1 << 29, int(m.group(4)))


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
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RunDirError(f"{path} is not valid JSON ({_first_line(e)}); the file is damaged") from None


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON writes it as ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def record_line(rec: dict[str, Any]) -> str:
    """One metrics.jsonl line: strict JSON (a non-finite number is ``null``) and a newline."""
    return json.dumps(json_safe(rec), allow_nan=False) + "\n"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_record(rec: dict[str, Any]) -> str | None:
    """Normalise a parsed record in place (``null`` numbers become NaN); what is wrong with it."""
    ep = rec.get("episode")
    if not isinstance(ep, int) or isinstance(ep, bool) or not 0 <= ep <= EPISODES_MAX:
        return f"'episode' must be a non-negative integer (at most {EPISODES_MAX}), got {ep!r}"
    seed = rec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or abs(seed) > SEED_MAX:  # runs before 32-bit seeds: < 0
        return f"'seed' must be an integer of at most 32 bits, got {seed!r}"
    for k in NUMBER_FIELDS:
        if k in rec:
            if rec[k] is None:
                rec[k] = math.nan
            elif not _is_number(rec[k]):
                return f"{k!r} must be a number or null, got {rec[k]!r}"
    if "theta" in rec:
        th = rec["theta"]
        if not isinstance(th, dict) or not all(isinstance(k, str) and THETA_KEY.fullmatch(k) for k in th):
            return (f"'theta' must be a table like {{\"F0\": 0.1}} (or \"F0@1\" per layer, \"B:kp\", "
                    f"\"gate@0\" of the feedback), got {th!r}")[:200]
        for k, v in th.items():
            if v is None:
                th[k] = math.nan
            elif not _is_number(v):
                return f"'theta' {k} must be a number or null, got {v!r}"
    for k in NUMBER_LISTS:
        if k in rec:
            v = rec[k]
            if not isinstance(v, list) or not all(x is None or _is_number(x) for x in v):
                return f"{k!r} must be a list of numbers, got {v!r}"[:200]
            rec[k] = [math.nan if x is None else x for x in v]
    return None


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
    from plastic_jax.config import check_settings

    d = read_config_dict(run_dir)
    try:
        cfg = TrainConfig.from_run_json(d)
        check_settings(cfg)
        return cfg
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
    before it that is not a JSON object with an integer ``episode`` is a ``RunDirError``, and so is
    any record whose fields have the wrong type (``_check_record``). ``null`` numbers read as NaN.
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
        except (ValueError, UnicodeDecodeError, RecursionError):
            if i == last:
                break  # torn by a kill mid-write
            raise RunDirError(f"{path} line {i + 1} is not JSON; the file is damaged") from None
        if not isinstance(rec, dict) or "episode" not in rec:
            if i == last:
                break
            raise RunDirError(f"{path} line {i + 1} is not a record (no integer 'episode')")
        why = _check_record(rec)
        if why:
            raise RunDirError(f"{path} line {i + 1} is not a valid record: {why}")
        records.append(rec)
    return records


def latest_records(records: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    """``(episode, seed) -> record``, the last record of an (episode, seed) winning (so a run that
    was resumed after a crash reads as one), sorted by episode and seed."""
    latest = {(r["episode"], r.get("seed", 0)): r for r in records}
    return dict(sorted(latest.items()))


def member_of(rec: dict[str, Any]) -> tuple[Any, Any, int]:
    """The member a record belongs to: ``(l1, meta_lr, seed)`` (None for the λ and rate of a run
    written before records named them; such runs have one member per seed)."""
    return rec.get("l1"), rec.get("meta_lr"), rec.get("seed", 0)


def complete_episodes(records: list[dict[str, Any]], n_members: int) -> list[dict[str, Any]]:
    """The records of the leading episodes 0, 1, ... that all ``n_members`` members (seeds, or
    (λ, rate, seed) of a sweep) reached; a record repeated for the same member counts once."""
    seen: dict[int, set] = {}
    for r in records:
        seen.setdefault(r["episode"], set()).add(member_of(r))
    done = 0
    while len(seen.get(done, ())) == n_members:
        done += 1
    return [r for r in records if r["episode"] < done]


def split_sweep(records: list[dict[str, Any]]) -> dict[tuple[Any, Any], list[dict[str, Any]]]:
    """The records of each (λ, rate) combination of a run, in file order (one entry for a run
    that sweeps nothing)."""
    out: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r.get("l1"), r.get("meta_lr")), []).append(r)
    return out


def member_index(cfg: TrainConfig, rec: dict[str, Any]) -> int | None:
    """The index of a record's member on the run's vmapped axis (``TrainConfig.members``), or None
    when it is none of them. A record without ``l1``/``meta_lr`` (written before records named
    them) belongs to the run's first λ and rate."""
    lam = rec.get("l1", cfg.l1_values[0])
    lr = rec.get("meta_lr", cfg.meta_lr_values[0])
    try:
        i, j = cfg.l1_values.index(lam), cfg.meta_lr_values.index(lr)
    except ValueError:
        return None
    s = rec.get("seed", 0) - cfg.seed
    return (i * len(cfg.meta_lr_values) + j) * cfg.seeds + s if 0 <= s < cfg.seeds else None


# --------------------------------------------------------------------------- checks (no writes)


def _present(path: str) -> bool:
    """A file, or a directory with something in it."""
    if os.path.isdir(path):
        try:
            return bool(os.listdir(path))
        except OSError:
            return True
    return os.path.lexists(path)


def check_new(out: str, overwrite: bool) -> None:
    """Refuse to start a new run in ``out`` over another run's files (``RUN_FILES``), unless
    ``overwrite``. Writes nothing."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirError(f"--out {out!r} is a file, not a directory; choose another --out")
    if overwrite:
        return
    if os.path.exists(os.path.join(out, METRICS)):
        raise RunDirError(f"--out {out!r} already holds a run ({METRICS}); choose another directory "
                          "or pass --overwrite")
    ckpt = os.path.join(out, CHECKPOINTS)
    if _present(ckpt):
        raise RunDirError(f"--out {out!r} holds checkpoints of an earlier run; pass --resume or --overwrite")
    found = [name for name in RUN_FILES if _present(os.path.join(out, name))]
    if found:
        raise RunDirError(f"--out {out!r} already holds files of a run ({', '.join(found)}); choose another "
                          "directory, --resume it, or pass --overwrite")


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


def _write_error(path: str, e: BaseException, run_dir: str | None) -> RunDirError:
    """The one line for a failed write; ``run_dir``: the run that ``--resume`` continues (None: a new
    run that wrote nothing)."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
    then = (f"what was written before is intact: free space (or fix the permissions), then continue with "
            f"plastic-jax meta-train --resume {run_dir}") if run_dir else "free space or fix the permissions"
    return RunDirError(f"cannot write {path} ({why}); {then}")


class Run:
    """A run directory open for writing (locked): what the training loop writes through.

    ``checkpointing``: whether checkpoints are saved (``--checkpoint-every`` or a resumed run).
    Every write that fails (disk full, permissions) raises ``RunDirError`` (one line); what was
    written before stays readable and resumable.
    """

    def __init__(self, cfg: TrainConfig, resume: bool):
        from plastic_jax.checkpoint import Checkpointer

        self.cfg = cfg
        self.path = cfg.out
        self.resume = resume
        self.checkpointing = bool(cfg.checkpoint_every or resume)
        self.records_written = 0
        self._log: Any = None
        self._ckpt = None
        if self.checkpointing:
            ckpt = os.path.join(self.path, CHECKPOINTS)
            if os.path.lexists(ckpt) and not os.path.isdir(ckpt):
                raise RunDirError(f"{ckpt} is a file, not a checkpoint directory; move it away")
            try:
                self._ckpt = Checkpointer(ckpt, cfg.keep_checkpoints)
            except OSError as e:
                raise RunDirError(f"cannot use {ckpt}: {e.strerror or _first_line(e)}") from None

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
                f"--config {os.path.join(self.path, CONFIG)} --out {self.path} --overwrite")

    def start(self, target: Any, legacy: Any = None) -> tuple[int, Any, list[dict[str, Any]]]:
        """Where the run starts: ``(episode, state, records so far)``; ``target`` is the fresh state.

        ``legacy``: ``(old_target, convert)`` for checkpoints of an older state structure
        (``checkpoint.Checkpointer.restore_latest``). A resumed run restores the newest usable
        checkpoint (at most the last complete episode of
        metrics.jsonl; none: episode 0), moves the records after it to metrics_cut.jsonl, cuts
        metrics.jsonl back to it and rewrites config.json (e.g. a raised ``--episodes``). When
        checkpoints exist but none is usable, or an earlier resume moved them all aside, it raises
        ``RunDirError`` and leaves every file as it was.
        """
        import jax

        from plastic_jax.checkpoint import CheckpointError, atomic_write_json

        start, state, records = 0, target, []
        metrics = os.path.join(self.path, METRICS)
        if self.resume:
            every = read_records(self.path)
            members = self.cfg.members()
            complete = complete_episodes(every, len(members))
            have = max((r["episode"] + 1 for r in complete), default=0)
            self._refuse_quarantined()
            try:
                restored = self._ckpt.restore_latest(jax.device_get(target), max_episode=have, legacy=legacy)
            except CheckpointError as e:
                raise RunDirError(f"--resume: {e}. {self._restart_hint()}") from None
            if restored is not None:
                start, state = restored
            if start > self.cfg.episodes:
                raise RunDirError(f"--resume: the checkpoint is at episode {start}, beyond --episodes "
                                  f"{self.cfg.episodes}")
            records = [r for r in complete if r["episode"] < start]
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
        from plastic_jax.checkpoint import atomic_write_text

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
        try:
            self._log.write("".join(record_line(r) for r in records))
            self._log.flush()
        except OSError as e:
            raise _write_error(os.path.join(self.path, METRICS), e, self.path) from None
        self.records_written += len(records)

    def save_checkpoint(self, episode: int, state: Any) -> None:
        """fsync the records, then checkpoint ``state`` as completed episode ``episode``.

        A non-finite state raises ``checkpoint.CheckpointError`` (nothing written); a failed write
        ``RunDirError``."""
        from plastic_jax.checkpoint import CheckpointError

        try:
            _fsync(self._log)  # the records of every checkpointed episode are on disk first
        except OSError as e:
            raise _write_error(os.path.join(self.path, METRICS), e, self.path) from None
        try:
            self._ckpt.save(episode, state)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - orbax reports a failed write in several types
            raise _write_error(os.path.join(self.path, CHECKPOINTS, str(episode)), e, self.path) from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json (atomically)."""
        from plastic_jax.checkpoint import atomic_write_json

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


def _claim(out: str) -> RunLock:
    """Create ``out`` and lock it (the first write to it); unwritable: one line."""
    try:
        os.makedirs(out, exist_ok=True)
        return RunLock(out).acquire()
    except OSError as e:
        raise RunDirError(f"cannot write to --out {out!r}: {e.strerror or e}") from None


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


@contextlib.contextmanager
def open_run(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Iterator[Run]:
    """Open ``cfg.out`` for writing: check (no writes), lock, then clear and write config.json (a
    new run) or leave the files to ``Run.start`` (a resume). The lock is released on exit; a new
    run that fails before its first record leaves no files behind (``_unmake``)."""
    if resume:
        check_resume(cfg)
    else:
        check_new(cfg.out, overwrite)
    created = not os.path.exists(cfg.out)
    try:
        lock = _claim(cfg.out)
    except RunDirError:
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(cfg.out)
        raise
    run = None
    wrote = False
    had_checkpoints = os.path.isdir(os.path.join(cfg.out, CHECKPOINTS))
    try:
        if not resume:
            from plastic_jax.checkpoint import atomic_write_json

            check_new(cfg.out, overwrite)  # again, under the lock: another writer may have been first
            try:
                _clear(cfg.out)
                wrote = True
                atomic_write_json(os.path.join(cfg.out, CONFIG), cfg.to_json())
            except OSError as e:
                raise _write_error(os.path.join(cfg.out, CONFIG), e, None) from None
        run = Run(cfg, resume)
        yield run
    except BaseException:
        if run is not None:
            run.close(quiet=True)
        if wrote and (run is None or run.records_written == 0):
            _unmake(cfg.out)
        if not had_checkpoints:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(cfg.out, CHECKPOINTS))  # only when empty: made by this run
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(cfg.out)  # only when empty: this run made it and left nothing in it
        raise
    else:
        try:
            run.close()
        finally:
            lock.release()
