"""Bad input and damaged files, tried as a hostile user would (README, "Errors and safety").

The table: for every subcommand, a command line (and what was done to the files first), the exit
code, and words of the one line on stderr. Each case runs in-process through ``cli.main`` on a
copy of one small finished run; it must give exactly that code, exactly one non-empty line on
stderr (no traceback) containing the words, within seconds, and leave every file and folder
under the case's directory byte-identical: the earlier run untouched, no half-made run directory,
no stray temporary file.

Then the cases that need more than a table: real processes (the console script's stderr, two
writers on one run, a file-size limit that fills the "disk"), an I/O error and a refused
checkpoint in the middle of a run, a failed resume run twice, strict JSON records, torn lines.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import pytest

from plastic_jax import rundir
from plastic_jax.cli import main

TINY = ["--hidden", "8", "--K", "3", "--Q", "2", "--M", "3"]
NP = "--no-progress"
#: a new run in the case's directory (it must never appear when the command fails)
NEW = ["meta-train", *TINY, "--episodes", "3", NP, "--out", "{tmp}/new"]
RESUME = ["meta-train", "--resume", "{run}", NP]
EV = ["evaluate", "{run}", "--tasks", "2", "--tune-tasks", "1", "--baseline-grid", "0.1"]
EVH = ["evaluate", *TINY, "--tasks", "2", "--baseline-lr", "0.1"]
PLOT = ["plot", "{run}", "--out", "{tmp}/figs"]
#: a benchmark that would run one tiny case (every bad one must stop before any timing)
BENCH = ["benchmark", "--rule", "f0", "--feedback", "fa", "--estimator", "forward", "--T", "5", "--meta-batch", "1",
         "--sizes", "4,5", "--naive", "no", "--repeats", "1"]
REC = {"episode": 0, "seed": 0, "meta_loss": 1.0, "query_loss": 1.0, "accuracy": 0.5, "theta": {"F0": 0.01}}
#: the console script in a fresh process; the compilation cache of conftest.py is shared
CLI = [sys.executable, "-m", "plastic_jax.cli"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One small finished run: 3 episodes, checkpoints 2 and 3 kept, analysis at episodes 0 and 2."""
    out = str(tmp_path_factory.mktemp("bad_inputs") / "run")
    assert main(["meta-train", *TINY, "--episodes", "3", "--checkpoint-every", "1", NP, "--out", out]) == 0
    return out


def _env():
    cache = jax.config.jax_compilation_cache_dir
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache or "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}


# --------------------------------------------------------------------------- what a case does first


def write(rel: str, text: str | bytes, mode: str = "w") -> Callable:
    """Write ``text`` to ``rel`` ({run} and {tmp} expand) before the command."""

    def setup(run, tmp):
        path = rel.format(run=run, tmp=tmp)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode + ("b" if isinstance(text, bytes) else "")) as f:
            f.write(text)

    return setup


def remove(*rels: str) -> Callable:
    def setup(run, tmp):
        for rel in rels:
            path = rel.format(run=run, tmp=tmp)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    return setup


def both(*setups: Callable) -> Callable:
    def setup(run, tmp):
        for s in setups:
            s(run, tmp)

    return setup


def records(*recs: dict, torn: str = "") -> str:
    return "".join(json.dumps(r) + "\n" for r in recs) + torn


def config(text: str, name: str = "c.toml") -> Callable:
    return write("{tmp}/" + name, text)


def damage_checkpoints(how: str) -> Callable:
    """Damage every checkpoint: garbage data files, garbage metadata, or the data folder gone."""

    def setup(run, tmp):
        for step in glob.glob(os.path.join(run, "checkpoints", "*")):
            if how == "data":
                for f in glob.glob(os.path.join(step, "state", "**"), recursive=True):
                    if os.path.isfile(f):
                        with open(f, "wb") as fh:
                            fh.write(b"\x00garbage")
            elif how == "meta":
                with open(os.path.join(step, "meta", "metadata"), "w") as fh:
                    fh.write("{bad")
            else:
                shutil.rmtree(os.path.join(step, "state", "d"))

    return setup


def quarantined(run, tmp):
    """What an earlier resume left after it moved every (damaged) checkpoint aside."""
    damage_checkpoints("data")(run, tmp)
    shutil.move(os.path.join(run, "checkpoints"), os.path.join(run, "checkpoints_bad"))
    os.makedirs(os.path.join(run, "checkpoints"))


def emnist_garbage(run, tmp):
    os.makedirs(os.path.join(tmp, "data"), exist_ok=True)
    for kind, n in (("images-idx3", 3), ("labels-idx1", 1)):
        with open(os.path.join(tmp, "data", f"emnist-balanced-test-{kind}-ubyte.gz"), "wb") as f:
            f.write(b"\x1f\x8b\x08garbage" * n)


def other_host_lock(run, tmp):
    with open(os.path.join(run, rundir.LOCK), "w") as f:
        json.dump({"pid": 1, "host": "elsewhere"}, f)


def summary(obj) -> Callable:
    return write("{run}/summary.json", obj if isinstance(obj, str) else json.dumps(obj))


def metrics(text: str) -> Callable:
    return write("{run}/metrics.jsonl", text)


NO_SUMMARY = remove("{run}/summary.json")


def edit_config(change: Callable) -> Callable:
    """Change the run's config.json in place: ``change(dict)`` edits the parsed settings."""

    def setup(run, tmp):
        path = os.path.join(run, rundir.CONFIG)
        with open(path) as f:
            d = json.load(f)
        change(d)
        with open(path, "w") as f:
            json.dump(d, f)

    return setup


def without(key: str) -> Callable:
    return edit_config(lambda d: d.pop(key))


def fingerprint(**changes) -> Callable:
    return edit_config(lambda d: d["extra"]["fingerprint"].update(changes))


def symlink(rel: str, to: str, text: str = "") -> Callable:
    """``rel`` becomes a symbolic link to ``to`` (a file holding ``text``; "{moved}": the file
    that was at ``rel``)."""

    def setup(run, tmp):
        path, target = rel.format(run=run, tmp=tmp), to.format(run=run, tmp=tmp)
        if os.path.lexists(path):
            shutil.move(path, target)
        else:
            with open(target, "w") as f:
                f.write(text)
        os.symlink(target, path)

    return setup


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    argv: list[str]
    words: str  # what the one line on stderr must contain
    setup: Callable | None = None
    code: int = 2


def case(id_: str, argv: list[str], words: str, setup: Callable | None = None, code: int = 2):
    return pytest.param(Case(argv, words, setup, code), id=id_)


META_TRAIN = [
    case("seed-1e20", [*NEW, "--seed", "100000000000000000000"], "--seed must be at most 4294967295"),
    case("seed-2^32-wraps-to-0", [*NEW, "--seed", str(2**32)], "--seed must be at most 4294967295"),
    case("seed-negative", [*NEW, "--seed", "-1"], "--seed must be a non-negative integer"),
    case("seeds-past-2^32", [*NEW, "--seed", str(2**32 - 1), "--seeds", "2"], "beyond 4294967295"),
    case("split-seed-negative", [*NEW, "--split-seed", "-1", "--holdout", "0.5"], "--split-seed must be a non-neg"),
    case("split-seed-huge", [*NEW, "--split-seed", str(2**40)], "--split-seed must be at most"),
    case("episodes-1e12", [*NEW, "--episodes", "1000000000000"], "--episodes must be at most 2147483645"),
    case("episodes-0", [*NEW, "--episodes", "0"], "--episodes must be a positive integer"),
    case("hidden-1e9", [*NEW, "--hidden", "1000000000"], "needs at least"),
    case("hidden-0", [*NEW, "--hidden", "0"], "sizes must be positive"),
    case("hidden-negative", [*NEW, "--hidden", "8,-1"], "sizes must be positive"),
    case("hidden-empty", [*NEW, "--hidden", ""], "at least one hidden layer"),
    case("hidden-not-ints", [*NEW, "--hidden", "8,x"], "expected comma-separated integers"),
    case("hidden-huge-item", [*NEW, "--hidden", "8,100000000000000000000"], "--hidden must be at most"),
    case("theta0-1e39-inf-in-float32", [*NEW, "--theta0", "1e39"], "finite in float32"),
    case("theta0-nan", [*NEW, "--theta0", "nan"], "--theta0 must be finite"),
    case("theta0-inf", [*NEW, "--theta0=-inf"], "--theta0 must be finite"),
    case("meta-lr-inf", [*NEW, "--meta-lr", "inf"], "--meta-lr must be finite"),
    case("meta-lr-1e39", [*NEW, "--meta-lr", "1e39"], "finite in float32"),
    case("meta-lr-0", [*NEW, "--meta-lr", "0"], "--meta-lr must be positive"),
    case("meta-lr-underflows", [*NEW, "--meta-lr", "1e-50"], "rounds to 0"),
    case("meta-lr-not-a-number", [*NEW, "--meta-lr", "fast"], "'fast'"),
    case("l1-inf", [*NEW, "--l1", "inf"], "--l1 must be finite"),
    case("l1-negative", [*NEW, "--l1", "-1"], "--l1 must be non-negative"),
    case("meta-clip-inf", [*NEW, "--meta-clip", "inf"], "--meta-clip must be finite"),
    case("meta-clip-negative", [*NEW, "--meta-clip", "-0.5"], "--meta-clip must be non-negative"),
    case("seeds-1e8", [*NEW, "--seeds", "100000000"], "needs at least"),
    # the estimator's own way to need less is named with the others
    case("seeds-1e8-es", [*NEW, "--meta-grad", "es", "--seeds", "100000000"], "--meta-batch or --es-pairs"),
    case("seeds-1e8-reverse", [*NEW, "--meta-grad", "reverse", "--seeds", "100000000"],
         "--meta-batch or --meta-grad adjoint"),
    case("seeds-0", [*NEW, "--seeds", "0"], "--seeds must be a positive integer"),
    case("meta-batch-1e9", [*NEW, "--meta-batch", "1000000000"], "needs at least"),
    case("meta-batch-0", [*NEW, "--meta-batch", "0"], "--meta-batch must be a positive integer"),
    case("M-0", [*NEW, "--M", "0"], "--M must be a positive integer"),
    case("K-negative", [*NEW, "--K", "-1"], "--K must be a positive integer"),
    case("Q-0", [*NEW, "--Q", "0"], "--Q must be a positive integer"),
    case("M-more-than-classes", [*NEW, "--M", "11"], "larger than the dataset's 10 classes"),
    case("K+Q-more-than-a-class", [*NEW, "--K", "170", "--Q", "10"], "larger than the smallest class"),
    case("M-1e23", [*NEW, "--M", "100000000000000000000000"], "--M must be at most"),
    case("devices-0", [*NEW, "--devices", "0"], "--devices must be a positive integer"),
    case("devices-negative", [*NEW, "--devices", "-1"], "--devices must be a positive integer"),
    case("devices-more-than-there-are", [*NEW, "--devices", "100"], "local device(s)"),
    case("out-empty", ["meta-train", *TINY, NP, "--out", ""], "--out is empty"),
    case("out-under-a-file", ["meta-train", *TINY, NP, "--out", "{run}/config.json/x"], "cannot write to --out"),
    case("out-is-a-file", ["meta-train", *TINY, NP, "--out", "{run}/config.json"], "is a file, not a directory"),
    case("terms-empty", [*NEW, "--terms", ""], "--terms is empty"),
    case("terms-twice", [*NEW, "--terms", "0,0"], "lists term 0 twice"),
    case("terms-out-of-range", [*NEW, "--terms", "0,12"], "term ids are 0-9"),
    case("rule-empty", [*NEW, "--rule", ""], "unknown rule or term id"),
    case("rule-unknown", [*NEW, "--rule", "hebbish"], "unknown rule or term id"),
    case("layer-rules-empty", [*NEW, "--layer-rules", ""], "--layer-rules is empty"),
    case("layer-rules-count", [*NEW, "--layer-rules", "f0,f0,f0"], "names 3 rule(s)"),
    case("feedback-unknown", [*NEW, "--feedback", "xx"], "unknown feedback"),
    case("bp-grad-unknown", [*NEW, "--bp-grad", "exact"], "unknown --bp-grad"),
    case("f5-f8-unknown", [*NEW, "--f5-f8", "outer"], "unknown --f5-f8"),
    case("meta-grad-unknown", [*NEW, "--meta-grad", "bogus"], "unknown meta-gradient estimator"),
    case("dataset-unknown", [*NEW, "--dataset", "mnist"], "unknown dataset 'mnist'"),
    case("split-for-digits", [*NEW, "--split", "train"], "digits has no splits"),
    case("holdout-1", [*NEW, "--holdout", "1"], "--holdout must be a fraction"),
    case("holdout-negative", [*NEW, "--holdout", "-0.1"], "--holdout must be a fraction"),
    case("holdout-nan", [*NEW, "--holdout", "nan"], "--holdout must be finite"),
    case("holdout-leaves-too-few", [*NEW, "--holdout", "0.95"], "lower --M or change the split"),
    case("classes-on-both-sides", [*NEW, "--train-classes", "0,1,2", "--test-classes", "2,3,4"], "in both"),
    case("class-twice", [*NEW, "--train-classes=0,0,1,2"], "lists a class twice"),
    case("class-out-of-range", [*NEW, "--train-classes", "0,1,99"], "outside 0..9"),
    case("class-negative", [*NEW, "--train-classes=-1,2,3"], "outside 0..9"),
    case("holdout-and-classes", [*NEW, "--holdout", "0.5", "--train-classes", "0,1,2"], "either --holdout"),
    case("keep-checkpoints-1", [*NEW, "--keep-checkpoints", "1"], "--keep-checkpoints must be an integer >= 2"),
    case("keep-checkpoints-1e23", [*NEW, "--keep-checkpoints", "1" + "0" * 23], "--keep-checkpoints must be at most"),
    case("checkpoint-every-negative", [*NEW, "--checkpoint-every", "-1"], "--checkpoint-every must be"),
    case("max-skips-negative", [*NEW, "--max-skips", "-3"], "--max-skips must be an integer >= 0"),
    case("analysis-every-negative", [*NEW, "--analysis-every", "-1"], "--analysis-every must be a non-negative"),
    case("flag-value-not-an-int", [*NEW, "--K", "x"], "invalid int value: 'x'"),
    case("flag-unknown", [*NEW, "--bogus"], "unrecognized arguments: --bogus"),
    case("flag-missing-value", ["meta-train", "--K"], "expected one argument"),
    case("resume-and-overwrite", ["meta-train", "--resume", "{run}", "--overwrite", NP], "give one of them"),
    case("resume-and-config", [*RESUME, "--config", "{run}/config.json"], "leave out --config"),
    case("resume-without-a-directory", ["meta-train", "--resume", NP], "--resume needs the run directory"),
    case("resume-to-another-out", [*RESUME, "--out", "{tmp}/other"], "name different directories"),
    case("existing-run-without-overwrite", ["meta-train", *TINY, NP, "--out", "{run}"], "already holds a run"),
    case("overwrite-bad-setting", ["meta-train", *TINY, NP, "--out", "{run}", "--overwrite", "--M", "0"],
         "--M must be a positive integer"),
    case("overwrite-dataset-check", ["meta-train", *TINY, NP, "--out", "{run}", "--overwrite", "--K", "170",
                                     "--Q", "10"], "larger than the smallest class"),
    case("overwrite-devices-0", ["meta-train", *TINY, NP, "--out", "{run}", "--overwrite", "--devices", "0"],
         "--devices must be a positive integer"),
    case("overwrite-too-big", ["meta-train", *TINY, NP, "--out", "{run}", "--overwrite", "--hidden", "1000000000"],
         "needs at least"),
    case("overwrite-locked-elsewhere", ["meta-train", *TINY, NP, "--out", "{run}", "--overwrite"],
         "locked by pid 1 on host elsewhere", other_host_lock),
    case("new-run-over-quarantined-checkpoints", ["meta-train", *TINY, NP, "--out", "{run}"], "already holds files",
         both(remove("{run}/metrics.jsonl", "{run}/checkpoints"), write("{run}/checkpoints_bad/3/x", "x"))),
    case("new-run-over-a-config-json", ["meta-train", *TINY, NP, "--out", "{tmp}/half"], "already holds files",
         write("{tmp}/half/config.json", "{}")),
    case("new-run-over-checkpoints", ["meta-train", *TINY, NP, "--out", "{run}"], "holds checkpoints",
         remove("{run}/metrics.jsonl")),
    case("new-run-over-a-run-offers-resume", ["meta-train", *TINY, NP, "--out", "{run}"],
         "continue it with plastic-jax meta-train --resume"),
    case("out-with-a-newline", [*NEW[:-1], "{tmp}/new\nline"], "control character '\\n'"),
    case("out-with-an-escape", [*NEW[:-1], "{tmp}/new\x1b[2J"], "control character '\\x1b'"),
    case("out-with-a-carriage-return", [*NEW[:-1], "{tmp}/new\rx"], "control character '\\r'"),
    case("out-not-utf8", [*NEW[:-1], "{tmp}/bad\udcffdir"], "is not valid UTF-8"),
    case("out-too-long-for-checkpoints", [*NEW[:-1], "{tmp}/" + "/".join(["d" * 200] * 20)], "--out is too long"),
    case("overwrite-through-a-symlinked-lock", ["meta-train", *TINY, NP, "--out", "{run}", "--overwrite"],
         "is a symbolic link", symlink("{run}/.lock", "{tmp}/victim.txt", "precious")),
    case("new-run-into-a-symlinked-lock", [*NEW[:-1], "{tmp}/half"], "is a symbolic link",
         both(write("{tmp}/half/README", "x"), symlink("{tmp}/half/.lock", "{tmp}/victim.txt", "precious"))),
]

CONFIG_FILES = [
    case("toml-does-not-parse", ["meta-train", "--config", "{tmp}/c.toml", NP], "does not parse", config("K = \n")),
    case("json-does-not-parse", ["meta-train", "--config", "{tmp}/c.json", NP], "does not parse",
         config("{", "c.json")),
    case("json-list", ["meta-train", "--config", "{tmp}/c.json", NP], "must hold a table of settings",
         config("[1, 2]", "c.json")),
    case("nested-table", ["meta-train", "--config", "{tmp}/c.toml", NP], "unknown config key(s): section",
         config("[section]\nK = 3\n")),
    case("table-for-a-list", ["meta-train", "--config", "{tmp}/c.toml", NP], "must be a list of integers",
         config("[hidden]\na = 3\n")),
    case("bool-for-int", ["meta-train", "--config", "{tmp}/c.toml", NP], "K (--K) must be an integer",
         config("K = true\n")),
    case("string-for-int", ["meta-train", "--config", "{tmp}/c.toml", NP], "K (--K) must be an integer",
         config('K = "5"\n')),
    case("float-for-int", ["meta-train", "--config", "{tmp}/c.toml", NP], "K (--K) must be an integer",
         config("K = 5.5\n")),
    case("null-for-int", ["meta-train", "--config", "{tmp}/c.json", NP], "K (--K) must be an integer",
         config('{"K": null}', "c.json")),
    case("int-for-string", ["meta-train", "--config", "{tmp}/c.json", NP], "dataset (--dataset) must be a string",
         config('{"dataset": 5}', "c.json")),
    case("string-for-bool", ["meta-train", "--config", "{tmp}/c.toml", NP], "must be true or false",
         config('download = "yes"\n')),
    case("date-for-int", ["meta-train", "--config", "{tmp}/c.toml", NP], "seed (--seed) must be an integer",
         config("seed = 1979-05-27\n")),
    case("huge-int-in-a-list", ["meta-train", "--config", "{tmp}/c.toml", NP], "--hidden must be at most",
         config("hidden = [100000000000000000000]\n")),
    case("huge-int", ["meta-train", "--config", "{tmp}/c.toml", NP], "--seeds must be at most",
         config("seeds = 4294967296\n")),
    case("1e400-is-inf", ["meta-train", "--config", "{tmp}/c.json", NP], "--meta-lr must be finite",
         config('{"meta_lr": 1e400}', "c.json")),
    case("NaN", ["meta-train", "--config", "{tmp}/c.json", NP], "--meta-lr must be finite",
         config('{"meta_lr": NaN}', "c.json")),
    case("Infinity", ["meta-train", "--config", "{tmp}/c.json", NP], "--l1 must be finite",
         config('{"l1": Infinity}', "c.json")),
    case("toml-nan", ["meta-train", "--config", "{tmp}/c.toml", NP], "--theta0 must be finite",
         config("theta0 = nan\n")),
    case("float32-overflow", ["meta-train", "--config", "{tmp}/c.toml", NP], "finite in float32",
         config("theta0 = 1e39\n")),
    case("negative", ["meta-train", "--config", "{tmp}/c.toml", NP], "--episodes must be a positive integer",
         config("episodes = -3\n")),
    case("empty-hidden", ["meta-train", "--config", "{tmp}/c.toml", NP], "at least one hidden layer",
         config("hidden = []\n")),
    case("empty-classes", ["meta-train", "--config", "{tmp}/c.toml", NP], "--train-classes is empty",
         config("train_classes = []\n")),
    case("string-for-list", ["meta-train", "--config", "{tmp}/c.toml", NP], "must be a list of integers or null",
         config('train_classes = "0,1,2"\n')),
    case("nested-too-deep", ["meta-train", "--config", "{tmp}/c.json", NP], "nested too deeply",
         config("[" * 100000 + "]" * 100000, "c.json")),
    case("string-for-table", ["meta-train", "--config", "{tmp}/c.toml", NP], "extra (--extra) must be a table",
         config('extra = "x"\n')),
    case("out-empty", ["meta-train", "--config", "{tmp}/c.toml", NP], "--out is empty", config('out = ""\n')),
    case("out-with-NUL", ["meta-train", "--config", "{tmp}/c.json", NP], "NUL character",
         config('{"out": "a\\u0000b"}', "c.json")),
    case("unknown-key", ["meta-train", "--config", "{tmp}/c.toml", NP], "unknown config key(s): episodez",
         config('rule = "bio"\nepisodez = 3\n')),
    case("terms-twice", ["meta-train", "--config", "{tmp}/c.toml", NP], "lists term 2 twice",
         config('terms = "0,2,2"\n')),
    case("not-utf8", ["meta-train", "--config", "{tmp}/c.toml", NP], "does not parse", config(b"\xff\xfe\x00")),
    case("a-directory", ["meta-train", "--config", "{tmp}", NP], "cannot read --config"),
    case("missing", ["meta-train", "--config", "{tmp}/nope.toml", NP], "cannot read --config"),
    case("a-runs-config-reruns-onto-it", ["meta-train", "--config", "{run}/config.json", NP], "already holds a run"),
]

RESUME_CASES = [
    case("no-config-json", RESUME, "holds no run (no config.json)", remove("{run}/config.json")),
    case("config-json-damaged", RESUME, "config.json is not valid JSON", write("{run}/config.json", '{"rule": ')),
    case("config-json-bad-value", RESUME, "config.json: --M must be a positive integer",
         write("{run}/config.json", '{"M": -1}')),
    case("config-json-unknown-key", RESUME, "unknown config key(s): episodez",
         write("{run}/config.json", '{"episodez": 3}')),
    case("config-json-a-list", RESUME, "config.json must hold a table", write("{run}/config.json", "[1]")),
    case("every-checkpoint-damaged-data", RESUME, "no usable checkpoint", damage_checkpoints("data")),
    case("every-checkpoint-damaged-metadata", RESUME, "no usable checkpoint", damage_checkpoints("meta")),
    case("every-checkpoint-missing-its-data", RESUME, "nothing was changed", damage_checkpoints("gone")),
    case("checkpoints-quarantined-earlier", RESUME, "checkpoints_bad/ by an earlier resume", quarantined),
    case("changed-hidden", [*RESUME, "--hidden", "9"], "hidden is [8] in"),
    case("changed-rule", [*RESUME, "--rule", "oja"], "rule is 'f0' in"),
    case("changed-seed", [*RESUME, "--seed", "5"], "seed is 0 in"),
    case("fewer-episodes-than-done", [*RESUME, "--episodes", "2"], "beyond --episodes 2"),
    case("metrics-damaged-mid-file", RESUME, "line 2 is not JSON",
         metrics(records(REC) + "xx\n" + records({**REC, "episode": 1}))),
    case("metrics-seed-a-string", RESUME, "'seed' must be an integer", metrics(records({**REC, "seed": "a"}))),
    case("metrics-accuracy-a-string", RESUME, "'accuracy' must be a number",
         metrics(records({**REC, "accuracy": "x"}))),
    case("metrics-episode-negative", RESUME, "'episode' must be a non-negative",
         metrics(records({**REC, "episode": -1}))),
    case("metrics-cut-short", RESUME, "beyond the 1 complete episode(s)", metrics(records(REC))),
    case("locked-by-another-host", RESUME, "locked by pid 1 on host elsewhere", other_host_lock),
    case("checkpoints-a-file", RESUME, "is a file, not a checkpoint directory",
         both(remove("{run}/checkpoints"), write("{run}/checkpoints", "x"))),
    case("missing-directory", ["meta-train", "--resume", "{tmp}/none", NP], "holds no run"),
    case("metrics-a-directory", RESUME, "cannot read", both(remove("{run}/metrics.jsonl"),
                                                              write("{run}/metrics.jsonl/x", "x"))),
    case("lock-a-directory", RESUME, "cannot write to --out", write("{run}/.lock/x", "x")),
    case("lock-a-symlink", RESUME, "is a symbolic link", symlink("{run}/.lock", "{tmp}/victim.txt", "precious")),
    case("config-json-lacks-hidden", RESUME, "lacks the setting 'hidden'", without("hidden")),
    case("config-json-lacks-K", RESUME, "lacks the setting 'K'", without("K")),
    case("config-json-lacks-rule", RESUME, "lacks the setting 'rule'", without("rule")),
    case("config-json-lacks-two", RESUME, "lacks the setting 'M' (--M) and 1 more",
         edit_config(lambda d: (d.pop("M"), d.pop("Q")))),
    case("data-other-contents", RESUME, "dataset's contents differ", fingerprint(data_sha256="0" * 64)),
    case("data-other-shape", RESUME, "x has shape (9, 64) in the run but (1797, 64) now", fingerprint(x=[9, 64])),
    case("data-other-class-split", RESUME, "class split differs", fingerprint(train_classes=[0, 1, 2])),
    case("data-fingerprint-garbage", RESUME, "not a table", edit_config(lambda d: d["extra"].update(fingerprint=3))),
    case("checkpoints-of-another-run", RESUME, "written by another run",
         edit_config(lambda d: d["extra"].update(run_id="f" * 32))),
    case("summary-a-directory", RESUME, "summary.json: it is a directory",
         both(NO_SUMMARY, write("{run}/summary.json/x", "x"))),
    case("metrics-cut-a-directory", RESUME, "metrics_cut.jsonl: it is a directory",
         write("{run}/metrics_cut.jsonl/x", "x")),
    case("checkpoints-bad-a-file", RESUME, "checkpoints_bad is a file", write("{run}/checkpoints_bad", "x")),
    case("metrics-a-symlink", RESUME, "metrics.jsonl is a symbolic link",
         symlink("{run}/metrics.jsonl", "{tmp}/elsewhere.jsonl")),
    case("config-a-symlink", RESUME, "config.json is a symbolic link", symlink("{run}/config.json", "{tmp}/c.json")),
    case("summary-a-symlink", RESUME, "summary.json is a symbolic link", symlink("{run}/summary.json", "{tmp}/s.json")),
    case("metrics-cut-a-symlink", RESUME, "metrics_cut.jsonl is a symbolic link",
         symlink("{run}/metrics_cut.jsonl", "{tmp}/other-run-metrics.jsonl", "{}\n")),
]

DATASETS = [
    case("emnist-not-there", [*NEW, "--dataset", "emnist", "--data-dir", "{tmp}/data"], "EMNIST",
         write("{tmp}/data/README", "empty")),
    case("emnist-damaged-idx", [*NEW, "--dataset", "emnist", "--data-dir", "{tmp}/data"], "is damaged",
         emnist_garbage),
    case("emnist-damaged-zip", [*NEW, "--dataset", "emnist", "--data-dir", "{tmp}/data"], "damaged",
         write("{tmp}/data/emnist/gzip.zip", b"PK\x03\x04 not a zip")),
    case("emnist-bad-split", [*NEW, "--dataset", "emnist", "--data-dir", "{tmp}/data", "--split", "test[9:x]"],
         "split", emnist_garbage),
    case("data-dir-with-NUL", ["meta-train", "--config", "{tmp}/c.json", NP], "NUL character",
         config('{"data_dir": "a\\u0000b"}', "c.json")),
]

EVALUATE = [
    case("theta-nan", [*EVH, "--theta", "nan"], "--theta must be finite"),
    case("theta-inf", [*EVH, "--theta", "inf"], "--theta must be finite"),
    case("theta-1e39", [*EVH, "--theta", "1e39"], "--theta must be finite"),
    case("theta-too-many", [*EVH, "--theta", "0.1,0.2"], "--theta has 2 value(s) but the rule has 1"),
    case("theta-none", [*EVH, "--theta", ""], "--theta has 0 value(s)"),
    case("theta-not-numbers", [*EVH, "--theta", "a,b"], "expected comma-separated numbers"),
    case("terms-empty", [*EVH, "--terms", "", "--theta", "0.1"], "--terms is empty"),
    case("terms-without-theta", [*EV, "--terms", "0,2"], "need --theta"),
    case("rule-unknown", [*EVH, "--rule", "nope", "--theta", "0.1"], "unknown rule or term id"),
    case("tasks-0", [*EV[:2], "--tasks", "0"], "--tasks must be at least 2"),
    case("tasks-negative", [*EV[:2], "--tasks", "-1"], "--tasks must be at least 2"),
    case("tasks-1e11", [*EV[:2], "--tasks", "100000000000"], "--tasks must be at most"),
    case("tasks-2e9", [*EV[:2], "--tasks", "2000000000", "--baseline-lr", "0.1"], "needs at least"),
    case("tune-tasks-0", [*EV[:2], "--tune-tasks", "0"], "--tune-tasks must be a positive integer"),
    case("tune-tasks-1e9", [*EV[:2], "--tasks", "2", "--tune-tasks", "1000000000"], "needs at least"),
    case("seed-index-negative", [*EV, "--seed-index", "-1"], "--seed-index must be a non-negative"),
    case("seed-index-too-big", [*EV, "--seed-index", "5"], "the run has 1 seed(s)"),
    case("seed-1e20", [*EV, "--seed", "100000000000000000000"], "--seed must be in 0"),
    case("seed-negative", [*EV, "--seed", "-1"], "--seed must be in 0"),
    case("baseline-grid-inf", [*EV[:4], "--baseline-grid", "inf"], "--baseline-grid must list positive finite"),
    case("baseline-grid-0", [*EV[:4], "--baseline-grid", "0"], "--baseline-grid must list positive finite"),
    case("baseline-grid-empty", [*EV[:4], "--baseline-grid", ""], "--baseline-grid must list positive finite"),
    case("baseline-lr-inf", [*EV[:4], "--baseline-lr", "inf"], "--baseline-lr must be positive and finite"),
    case("baseline-lr-nan", [*EV[:4], "--baseline-lr", "nan"], "--baseline-lr must be positive and finite"),
    case("baseline-lr-0", [*EV[:4], "--baseline-lr", "0"], "--baseline-lr must be positive and finite"),
    case("json-a-directory", [*EV, "--json", "{tmp}"], "is a directory"),
    case("json-under-a-file", [*EV, "--json", "{run}/config.json/x.json"], "is not a directory"),
    case("json-in-a-missing-folder", [*EV, "--json", "{tmp}/no/such/x.json"], "does not exist"),
    case("run-missing", ["evaluate", "{tmp}/none"], "is not a run directory"),
    case("no-summary-no-metrics", EV, "holds neither summary.json nor metrics.jsonl",
         remove("{run}/summary.json", "{run}/metrics.jsonl")),
    case("summary-garbage", EV, "summary.json is not valid JSON", summary("garbage")),
    case("summary-nested-too-deep", EV, "summary.json is not valid JSON", summary("[" * 100000 + "]" * 100000)),
    case("summary-a-list", EV, "summary.json must hold a table", summary([1, 2])),
    case("summary-a-directory", EV, "cannot read", both(NO_SUMMARY, write("{run}/summary.json/x", "x"))),
    case("config-a-directory", EV, "cannot read", both(remove("{run}/config.json"), write("{run}/config.json/x", "x"))),
    case("summary-theta-a-table", EV, "'theta' must be a list", summary({"theta": {"F0": 1}})),
    case("summary-theta-a-string", EV, "must hold finite numbers", summary({"theta": [{"F0": "x"}]})),
    case("summary-theta-NaN", EV, "must hold finite numbers", summary('{"theta": [{"F0": NaN}]}')),
    case("summary-theta-null", EV, "must hold finite numbers", summary({"theta": [{"F0": None}]})),
    case("summary-theta-bool", EV, "must hold finite numbers", summary({"theta": [{"F0": True}]})),
    case("summary-theta-1e39", EV, "must hold finite numbers", summary({"theta": [{"F0": 1e39}]})),
    case("summary-theta-rows", EV, "holds no Θ table", summary({"theta": [[1]]})),
    case("summary-theta-lacks-a-term", EV, "lacks F0", summary({"theta": [{"F2": 0.1}]})),
    case("config-garbage", EV, "config.json is not valid JSON", write("{run}/config.json", b"\x00\x01garbage")),
    case("config-lacks-hidden", EV, "lacks the setting 'hidden'", without("hidden")),
    case("config-lacks-feedback", EV, "lacks the setting 'feedback'", without("feedback")),
    case("config-bad-value", EV, "config.json: --M must be a positive integer",
         write("{run}/config.json", '{"M": -1}')),
    case("config-bad-type", EV, "hidden (--hidden) must be a list of integers",
         write("{run}/config.json", '{"hidden": "8"}')),
    case("metrics-wrong-shape", EV, "'theta' must be a table",
         both(NO_SUMMARY, metrics(records({**REC, "theta": 5})))),
    case("metrics-theta-nan", EV, "must hold finite numbers",
         both(NO_SUMMARY, metrics(records({**REC, "theta": {"F0": None}})))),
    case("metrics-of-another-seed", EV, "has no record of seed 0",
         both(NO_SUMMARY, metrics(records({**REC, "seed": 7})))),
    case("hidden-1e9", [*EV, "--hidden", "1000000000"], "needs at least"),
    case("hidden-empty", [*EV, "--hidden", ""], "at least one hidden layer"),
    case("M-too-many", [*EV, "--M", "1000"], "larger than the dataset's 10 classes"),
    case("holdout-1", [*EV, "--holdout", "1"], "--holdout must be a fraction"),
    case("dataset-unknown", [*EV, "--dataset", "mnist"], "unknown dataset"),
    case("no-run-no-theta", ["evaluate"], "give a RUN_DIR"),
    case("tasks-not-an-int", [*EV[:2], "--tasks", "x"], "invalid int value"),
]

PLOT_CASES = [
    case("run-missing", ["plot", "{tmp}/none"], "holds no run (no metrics.jsonl)"),
    case("no-run-given", ["plot"], "the following arguments are required: RUN_DIR"),
    case("one-of-two-missing", ["plot", "{run}", "{tmp}/none", "--out", "{tmp}/figs"], "holds no run"),
    case("metrics-empty", PLOT, "metrics.jsonl' is empty", metrics("")),
    case("metrics-only-a-torn-line", PLOT, "metrics.jsonl' is empty", metrics('{"episo')),
    case("metrics-a-directory", PLOT, "holds no run", both(remove("{run}/metrics.jsonl"),
                                                              write("{run}/metrics.jsonl/x", "x"))),
    case("metrics-damaged-mid-file", PLOT, "line 1 is not JSON", metrics("xx\n" + records(REC))),
    case("record-without-accuracy", PLOT, "has no 'accuracy'", metrics(records({"episode": 0, "seed": 0}))),
    case("record-theta-an-int", PLOT, "'theta' must be a table", metrics(records({**REC, "theta": 3}))),
    case("record-accuracy-a-string", PLOT, "'accuracy' must be a number", metrics(records({**REC, "accuracy": "x"}))),
    case("record-theta-bad-name", PLOT, "'theta' must be a table", metrics(records({**REC, "theta": {"Fx": 1}}))),
    case("record-theta-a-string", PLOT, "'theta' F0 must be a number", metrics(records({**REC, "theta": {"F0": "a"}}))),
    case("record-seed-a-string", PLOT, "'seed' must be an integer", metrics(records({**REC, "seed": "a"}))),
    case("record-episode-a-float", PLOT, "not a valid record", metrics(records({**REC, "episode": 1.5}))),
    case("record-episode-1e30", PLOT, "'episode' must be", metrics(records(REC, {**REC, "episode": 10**30}))),
    case("record-seed-1e30", PLOT, "'seed' must be an integer", metrics(records({**REC, "seed": 10**30}))),
    case("record-alignment-ragged", PLOT, "one value per layer",
         metrics(records({**REC, "alignment": [1, 2], "orthonormality": [1, 2]},
                         {**REC, "episode": 1, "alignment": [1], "orthonormality": [1]}))),
    case("record-alignment-not-numbers", PLOT, "'alignment' must be a list of numbers",
         metrics(records({**REC, "alignment": ["a"], "orthonormality": [1]}))),
    case("records-without-theta", PLOT, "holds no Θ", metrics(records({k: v for k, v in REC.items() if k != "theta"}))),
    case("record-a-list", PLOT, "line 1 is not a record", metrics("[1, 2]\n" + records(REC))),
    case("config-garbage", PLOT, "config.json is not valid JSON", write("{run}/config.json", "{not json")),
    case("window-0", [*PLOT, "--window", "0"], "--window must be a positive integer"),
    case("window-negative", [*PLOT, "--window", "-1"], "--window must be a positive integer"),
    case("window-not-an-int", [*PLOT, "--window", "x"], "invalid int value"),
    case("out-a-file", ["plot", "{run}", "--out", "{run}/config.json"], "is a file, not a directory"),
    case("out-under-a-file", ["plot", "{run}", "--out", "{run}/config.json/figs"], "cannot write figures"),
    case("title-bad-mathtext", [*PLOT, "--title", "$\\frac$"], "--title"),
]

BENCHMARK = [
    case("json-a-directory", [*BENCH, "--json", "{tmp}"], "is a directory"),
    case("json-under-a-file", [*BENCH, "--json", "{run}/config.json/b.json"], "is not a directory"),
    case("repeats-0", [*BENCH, "--repeats", "0"], "--repeats must be in 1"),
    case("repeats-1e9", [*BENCH, "--repeats", "1000000000"], "--repeats must be in 1"),
    case("T-not-a-multiple", [*BENCH, "--T", "7"], "--T must be positive multiples"),
    case("T-0", [*BENCH, "--T", "0"], "--T must be positive multiples"),
    case("T-1e20", [*BENCH, "--T", "100000000000000000000"], "--T must be positive multiples"),
    case("T-not-an-int", [*BENCH, "--T", "x"], "invalid parse value"),
    case("rule-unknown", [*BENCH, "--rule", "oja"], "unknown oja"),
    case("feedback-unknown", [*BENCH, "--feedback", "xx"], "unknown xx"),
    case("estimator-unknown", [*BENCH, "--estimator", "bogus"], "unknown bogus"),
    case("estimator-empty", [*BENCH, "--estimator", ","], "empty list"),
    case("sizes-one-layer", [*BENCH, "--sizes", "4"], "--sizes needs"),
    case("sizes-zero", [*BENCH, "--sizes", "0,5"], "--sizes needs"),
    case("sizes-1e20", [*BENCH, "--sizes", "4,100000000000000000000"], "--sizes needs"),
    case("meta-batch-0", [*BENCH, "--meta-batch", "0"], "--meta-batch must be positive"),
    case("max-mem-negative", [*BENCH, "--max-mem-gb", "-1"], "--max-mem-gb must be a positive number"),
    case("max-mem-nan", [*BENCH, "--max-mem-gb", "nan"], "--max-mem-gb must be a positive number"),
    case("max-mem-inf", [*BENCH, "--max-mem-gb", "inf"], "--max-mem-gb must be a positive number"),
    case("naive-unknown", [*BENCH, "--naive", "maybe"], "invalid choice"),
    case("worker-not-json", ["benchmark", "--worker", "{bad"], "needs one case as a JSON object"),
    case("worker-a-list", ["benchmark", "--worker", "[1]"], "needs one case as a JSON object"),
]

TOP = [
    case("no-command", [], "the following arguments are required: COMMAND"),
    case("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
]

TABLE = {"meta-train": META_TRAIN, "config": CONFIG_FILES, "resume": RESUME_CASES, "data": DATASETS,
         "evaluate": EVALUATE, "plot": PLOT_CASES, "benchmark": BENCHMARK, "cli": TOP}
ALL = [pytest.param(p.values[0], id=f"{group}:{p.id}") for group, cases in TABLE.items() for p in cases]


def _snapshot(root: str) -> dict[str, str]:
    """Every file (sha256 of its bytes) and folder under ``root``."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(d, name), root)] = "<dir>"
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.mark.parametrize("case", ALL)
def test_bad_input(case: Case, finished, tmp_path, capsys):
    tmp = str(tmp_path)
    run = os.path.join(tmp, "run")
    shutil.copytree(finished, run)
    if case.setup is not None:
        case.setup(run, tmp)
    before = _snapshot(tmp)
    argv = [a.replace("{run}", run).replace("{tmp}", tmp) for a in case.argv]
    capsys.readouterr()
    t0 = time.monotonic()
    code = main(argv)
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert case.words in lines[0], lines[0]
    assert took < 30, f"{took:.1f} s"
    assert _snapshot(tmp) == before  # the earlier run byte-identical, nothing half-made, no stray file


def test_the_table_is_large():
    assert len(ALL) > 100 and len({p.id for p in ALL}) == len(ALL)


# --------------------------------------------------------------------------- beyond the table


def test_a_failed_resume_changes_nothing_and_says_the_same_again(tmp_path, finished, capsys):
    """Every checkpoint damaged: the resume stops with one line and moves nothing; a second resume
    finds the same and says the same (it never restarts at episode 0 and cuts metrics.jsonl)."""
    run = str(tmp_path / "run")
    shutil.copytree(finished, run)
    damage_checkpoints("data")(run, str(tmp_path))
    before = _snapshot(run)
    said = []
    for _ in range(2):
        assert main(RESUME[:2] + [run, NP]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "no usable checkpoint" in err and "--overwrite" in err
        said.append(err)
        assert _snapshot(run) == before
    assert said[0] == said[1]


def test_a_new_run_that_fails_before_its_first_record_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A failure after the directory was claimed (here: out of memory building the state) removes
    config.json and the empty metrics.jsonl it wrote, and the directory it made."""
    from plastic_jax import train

    def no_memory(*a, **k):
        raise MemoryError("Unable to allocate 7.28 TiB")

    monkeypatch.setattr(train, "init_state", no_memory)
    out = tmp_path / "new"
    assert main(["meta-train", *TINY, "--episodes", "2", NP, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "out of memory" in err
    assert not out.exists()


def test_disk_full_mid_run_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    """ENOSPC while appending episode 2's records: one line, exit 2; the records and checkpoints
    written before stay readable, no temporary file is left, and --resume finishes the run."""
    out = str(tmp_path / "run")

    class FullDisk:
        """metrics.jsonl on a disk that fills up in the middle of episode 2's record."""

        def __init__(self, f):
            self.f = f

        def write(self, text):
            if text.startswith('{"episode": 2,'):
                self.f.write(text[:20])  # what reached the disk
                self.f.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

    real = rundir.RunWriter.start

    def start(self, target, legacy=None):
        got = real(self, target, legacy)
        self._log = FullDisk(self._log)
        return got

    monkeypatch.setattr(rundir.RunWriter, "start", start)
    args = ["meta-train", *TINY, "--episodes", "4", "--checkpoint-every", "1", NP, "--out", out]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err and "--resume" in err
    assert [r["episode"] for r in rundir.read_records(out)] == [0, 1]  # the torn line is dropped
    assert not glob.glob(os.path.join(out, "*.tmp*"))
    monkeypatch.setattr(rundir.RunWriter, "start", real)
    assert main(["meta-train", "--resume", out, NP]) == 0
    assert [r["episode"] for r in rundir.read_records(out)] == [0, 1, 2, 3]


def test_a_checkpoint_that_refuses_a_non_finite_state_stops_with_one_line(tmp_path, capsys, monkeypatch):
    from plastic_jax.checkpoint import Checkpointer, CheckpointError

    real = Checkpointer.save

    def save(self, episode, state):
        if episode == 2:
            raise CheckpointError(f"refusing to checkpoint a non-finite state at episode {episode}")
        real(self, episode, state)

    monkeypatch.setattr(Checkpointer, "save", save)
    out = str(tmp_path / "run")
    assert main(["meta-train", *TINY, "--episodes", "4", "--checkpoint-every", "1", NP, "--out", out]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refusing to checkpoint a non-finite state at episode 2" in err
    assert os.listdir(os.path.join(out, "checkpoints")) == ["1"]
    assert [r["episode"] for r in rundir.read_records(out)] == [0, 1]


def test_records_are_strict_json_and_the_reader_takes_null_and_nan(tmp_path):
    """A non-finite number is written as null; old files spelled it NaN: both read back as NaN."""
    line = rundir.record_line({**REC, "meta_loss": float("nan"), "theta": {"F0": float("inf")},
                               "alignment": [1.0, float("nan")], "orthonormality": [1.0, 2.0]})
    assert "NaN" not in line and "Infinity" not in line and json.loads(line)["meta_loss"] is None
    old = json.dumps({**REC, "episode": 1, "meta_loss": float("nan")}) + "\n"
    assert "NaN" in old
    with open(tmp_path / rundir.METRICS, "w") as f:
        f.write(line + old)
    a, b = rundir.read_records(str(tmp_path))
    assert math.isnan(a["meta_loss"]) and math.isnan(b["meta_loss"])
    assert math.isnan(a["theta"]["F0"]) and math.isnan(a["alignment"][1])


def test_a_nan_meta_loss_does_not_blank_the_rest_of_the_curve(tmp_path):
    from plastic_jax.plots import load_run, nan_moving_average

    recs = [{**REC, "episode": e, "meta_loss": None if e == 3 else 1.0 + e} for e in range(10)]
    with open(tmp_path / rundir.METRICS, "w") as f:
        f.write("".join(rundir.record_line(r) for r in recs))
    run = load_run(str(tmp_path))
    assert np.isnan(run.meta_loss[0, 3])
    smooth = nan_moving_average(run.meta_loss, 4, axis=1)
    assert np.all(np.isfinite(smooth))


def test_a_torn_last_line_is_dropped_by_every_reader(tmp_path, finished):
    from plastic_jax.config import TrainConfig
    from plastic_jax.evaluate import read_learned_theta
    from plastic_jax.plots import load_run

    run = str(tmp_path / "run")
    shutil.copytree(finished, run)
    os.remove(os.path.join(run, rundir.SUMMARY))
    with open(os.path.join(run, rundir.METRICS), "a") as f:
        f.write('{"episode": 3, "seed": 0, "meta_lo')
    assert load_run(run).accuracy.shape == (1, 3)
    theta, source = read_learned_theta(run, TrainConfig(), (0,))
    assert "episode 2" in source and np.isfinite(theta).all()


def test_seed_keys_are_the_per_seed_keys():
    """The vectorised base keys equal PRNGKey(seed + s) of each seed, to the last 32-bit seed."""
    from plastic_jax.config import TrainConfig
    from plastic_jax.train import seed_keys

    for seed, n in ((0, 3), (2**32 - 3, 3), (12345, 1)):
        got = np.asarray(seed_keys(TrainConfig(seed=seed, seeds=n)))
        want = np.stack([np.asarray(jax.random.PRNGKey(seed + s)) for s in range(n)])
        assert np.array_equal(got, want)


def test_glyphs_with_a_damaged_cache_is_regenerated_through_the_cli(tmp_path, capsys, monkeypatch):
    """The cache is damaged: glyphs says so, makes the images again and rewrites the cache; the
    command then goes on (here to a dataset check that fails)."""
    from plastic_jax.data import glyphs as G

    def fake(seed=0, n_per_class=G.DEFAULT_PER_CLASS, protos=None, chunk=1024):
        y = np.repeat(np.arange(G.N_CLASSES, dtype=np.int32), n_per_class)
        return np.zeros((len(y), 784), np.uint8), y

    monkeypatch.setattr(G, "build_prototypes", lambda fonts=None: types.SimpleNamespace(fingerprint="f"))
    monkeypatch.setattr(G, "generate_glyphs", fake)
    monkeypatch.setattr(G, "fingerprint", lambda fonts: "f")
    path = G.cache_path(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"not a zip file")
    code = main(["meta-train", "--dataset", "glyphs", "--data-dir", str(tmp_path), "--K", "400", NP,
                 "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "regenerating" in err and "larger than the smallest class" in err.strip().splitlines()[-1]
    x, y, fp = G._read_cache(path, G.DEFAULT_PER_CLASS)  # whole again
    assert fp == "f" and not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- real processes


@pytest.mark.parametrize("argv,words", [
    (["meta-train", "--seed", "100000000000000000000", "--out", "{tmp}/r"], "--seed must be at most"),
    (["evaluate", "--hidden", "8", "--M", "3", "--K", "3", "--Q", "2", "--theta", "nan"], "--theta must be finite"),
    (["plot", "{tmp}", "--window", "0"], "--window must be a positive integer"),
    (["benchmark", "--T", "x"], "invalid parse value"),
])
def test_the_console_script_prints_one_line_and_no_traceback(tmp_path, argv, words):
    proc = subprocess.run(CLI + [a.replace("{tmp}", str(tmp_path)) for a in argv], capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert words in proc.stderr


def test_damaged_checkpoints_print_no_orbax_noise(tmp_path, finished):
    """Missing data files make orbax fail while other reads are in flight; that printed
    "Event loop is closed" tracebacks although the outcome was right."""
    run = str(tmp_path / "run")
    shutil.copytree(finished, run)
    damage_checkpoints("gone")(run, str(tmp_path))
    before = _snapshot(run)
    proc = subprocess.run(CLI + ["meta-train", "--resume", run, NP], capture_output=True, text=True, env=_env(),
                          timeout=120)
    assert proc.returncode == 2
    assert "Event loop" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "no usable checkpoint" in proc.stderr
    assert _snapshot(run) == before


def test_a_second_writer_is_refused_while_the_first_process_writes(tmp_path, capsys):
    """Two real processes: while one meta-trains a run, another resume or --overwrite of the same
    directory is refused with one line naming the first's pid; the run is untouched by it."""
    run = str(tmp_path / "run")
    first = subprocess.Popen(CLI + ["meta-train", *TINY, "--episodes", "100000", "--analysis-every", "0", NP,
                                    "--checkpoint-every", "1000", "--out", run],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 180
        while not (os.path.exists(os.path.join(run, rundir.METRICS))
                   and os.path.getsize(os.path.join(run, rundir.METRICS)) > 0):
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first writer did not start"
            time.sleep(0.2)
        config_before = open(os.path.join(run, rundir.CONFIG)).read()
        second = subprocess.run(CLI + ["meta-train", "--resume", run, NP], capture_output=True, text=True,
                                env=_env(), timeout=120)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip()
        assert "\n" not in err and f"being written by pid {first.pid}" in err, err
        # and this process (a third writer) with --overwrite: refused before anything is deleted
        assert main(["meta-train", *TINY, "--episodes", "3", NP, "--out", run, "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"being written by pid {first.pid}" in err, err
        assert first.poll() is None  # still writing, undisturbed
        assert open(os.path.join(run, rundir.CONFIG)).read() == config_before
        assert json.load(open(os.path.join(run, rundir.LOCK)))["pid"] == first.pid
    finally:
        first.kill()
        first.wait()
    assert rundir.read_records(run)  # what the killed writer wrote reads back


@pytest.mark.slow  # end to end; the default suite's time (README)
def test_a_file_size_limit_is_one_line_and_leaves_a_resumable_run(tmp_path):
    """``ulimit -f`` (Python ignores SIGXFSZ, so writes fail with EFBIG, as on a full disk): the
    run stops with one line; what it wrote reads back; a resume under the same limit fails with
    one line leaving no temporary file and every file as it was; without the limit it finishes."""
    run = str(tmp_path / "run")
    args = ["meta-train", *TINY, "--episodes", "60", "--checkpoint-every", "5", "--analysis-every", "0", NP,
            "--out", run]

    def limited(argv, kb):
        cmd = " ".join(["ulimit", "-f", str(kb), ";", "exec", *[f"'{a}'" for a in CLI + argv]])
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=_env(), timeout=300)

    proc = limited(args, 8)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip()
    assert "Traceback" not in err and "\n" not in err and "File too large" in err and "--resume" in err, err
    done = rundir.read_records(run)
    assert 0 < len(done) < 60 and [r["episode"] for r in done] == list(range(len(done)))
    assert not [p for p in glob.glob(os.path.join(run, "**", "*tmp*"), recursive=True) if "checkpoints" not in p]
    before = _snapshot(run)
    proc = limited(["meta-train", "--resume", run, NP], 1)  # rewriting metrics.jsonl cannot fit
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "File too large" in proc.stderr
    assert _snapshot(run) == before
    assert main(["meta-train", "--resume", run, NP]) == 0
    assert [r["episode"] for r in rundir.read_records(run)] == list(range(60))
