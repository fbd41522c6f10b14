"""Where each run of a matrix stands on disk, and starting, resuming or skipping it.

``paper_status`` reads a run directory (config.json, metrics.jsonl, summary.json, .lock) without
writing anything; ``train_paper`` starts a missing run and resumes an interrupted one, one
``plastic-jax meta-train`` subprocess after another, and appends each invocation's wall seconds
to ``RUN_DIR/wall_seconds.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from plastic_jax import rundir
from plastic_jax.config import TrainConfig, flag_of
from plastic_jax.paper.matrix import PaperRun, config_differences, config_of, paper_argv
from plastic_jax.runs import CONFIG, complete_episodes, read_config, read_records, read_summary


def lock_holder(out: str) -> str | None:
    """``pid N`` of a live process writing the run in ``out`` (this host), else None."""
    try:
        with open(os.path.join(out, rundir.LOCK)) as f:
            d = json.loads(f.read() or "{}")
        pid = int(d["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if d.get("host") != socket.gethostname():
        return f"pid {pid} on host {d.get('host')}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return f"pid {pid}"


def wall_seconds(out: str) -> float | None:
    """The run's wall time: the sum over the lines of ``wall_seconds.txt`` (one per invocation) of
    each line's first number (scripts/seeds20_runs.sh writes ``123 s, rc 0, load ...``); None when
    there is no such file or a line does not start with a number."""
    try:
        with open(os.path.join(out, "wall_seconds.txt")) as f:
            return float(sum(float(line.split()[0]) for line in f if line.strip()))
    except (OSError, ValueError):
        return None


@dataclass
class PaperStatus:
    """Where one run of the matrix stands on disk.

    state: ``missing`` (no config.json), ``done``, ``partial`` (to resume), ``running`` (a live
    writer holds its lock) or ``conflict`` (its config.json differs from the matrix's).
    """

    run: PaperRun
    argv: list[str]
    cfg: TrainConfig
    state: str
    done: int = 0
    note: str = ""
    old: TrainConfig | None = None

    @property
    def out(self) -> str:
        """The run directory."""
        return self.cfg.out


def paper_status(run: PaperRun, args: argparse.Namespace) -> PaperStatus:
    """Where ``run`` (with ``paper_argv(run, args)``) stands in ``args.runs``."""
    argv = paper_argv(run, args)
    cfg = config_of(argv)
    st = PaperStatus(run, argv, cfg, "missing")
    if not os.path.exists(os.path.join(cfg.out, CONFIG)):
        return st
    st.old = old = read_config(cfg.out)
    diff = config_differences(old, cfg)
    recs = read_records(cfg.out)
    st.done = max((r["episode"] + 1 for r in complete_episodes(recs, old.seeds)), default=0)
    holder = lock_holder(cfg.out)
    summary = read_summary(cfg.out)
    if diff:
        st.state = "conflict"
        st.note = "its config.json differs: " + "; ".join(
            f"{k} = {old.to_json().get(k)!r} there, {cfg.to_json()[k]!r} in the matrix" for k in diff)
    elif holder:
        st.state, st.note = "running", f"being written by {holder}"
    elif (summary is not None and not summary.get("stopped") and summary.get("episodes", 0) >= cfg.episodes
          and st.done >= cfg.episodes):
        st.state = "done"
    else:
        st.state = "partial"
        if summary is not None and summary.get("stopped"):
            st.note = f"stopped by the guard: {summary['stopped']}"
    return st


def meta_train_command() -> list[str]:
    """How a run is started: ``$PJ`` (e.g. .venv/bin/plastic-jax) or this Python's plastic_jax.cli."""
    pj = os.environ.get("PJ")
    return shlex.split(pj) if pj else [sys.executable, "-m", "plastic_jax.cli"]


def train_command(st: PaperStatus) -> list[str] | None:
    """The command that starts or resumes the run (None: nothing to do)."""
    if st.state == "missing":
        return [*meta_train_command(), "meta-train", *st.argv, "--no-progress"]
    if st.state == "partial":
        assert st.old is not None
        changed = []
        new = st.cfg.to_json()
        for k in config_differences(st.old, st.cfg, resumable=True):
            changed += [flag_of(k), str(new[k])]
        return [*meta_train_command(), "meta-train", "--resume", st.out, *changed, "--no-progress"]
    return None


def train_paper(args: argparse.Namespace, statuses: list[PaperStatus]) -> int:
    """Start, resume or skip each run, one after another (paper_runs.sh); 1 when one conflicts.
    ``args.dry_run``: print the commands, run nothing."""
    rc = 0
    for st in statuses:
        name = st.run.name
        if st.state == "done":
            print(f"== {name}: done", flush=True)
            continue
        if st.state in ("running", "conflict"):
            print(f"== {name}: left alone, {st.note}", flush=True)
            rc = rc or (1 if st.state == "conflict" else 0)
            continue
        cmd = train_command(st)
        assert cmd is not None
        verb = "starting" if st.state == "missing" else f"resuming (episode {st.done} of {st.cfg.episodes} logged)"
        print(f"== {name}: {verb}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        t0 = time.time()
        code = subprocess.call(cmd)
        wall = round(time.time() - t0)
        print(f"== {name}: exit {code} after {wall} s", flush=True)
        os.makedirs(st.out, exist_ok=True)
        with open(os.path.join(st.out, "wall_seconds.txt"), "a") as f:
            f.write(f"{wall}\n")
    return rc
