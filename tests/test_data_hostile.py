"""Hostile input files: a user's ``--dataset FILE.npz`` and ``--config FILE``.

Every bad file is one line on stderr naming the file (and the fix), exit code 2, within seconds:
never a hang (a FIFO, /dev/zero), never "out of memory" for a label or a header that asks for
terabytes, never a traceback, never a silently accepted value.
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from plastic_jax.cli import main
from plastic_jax.data import npz as npz_mod
from plastic_jax.data.npz import load_npz

N, D, C = 24, 6, 4
#: the most classes a file may name (``npz.MAX_CLASSES``)
MAX_CLASSES = 100_000
#: a by-hand evaluate that stops at the data (every case here is refused while loading it)
EVH = ["evaluate", "--rule", "f0", "--theta", "0.1", "--hidden", "8", "--K", "3", "--Q", "2", "--M", "3",
       "--tasks", "2", "--baseline-lr", "0.1"]


def _xy(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (N, D)).astype(np.float32), np.arange(N) % C


def _save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _main_within(argv, seconds=60.0):
    """``main(argv)`` in a daemon thread: its exit code, or None when it has not returned in time
    (a hang must fail the test, not block the suite)."""
    box: list[int] = []
    t = threading.Thread(target=lambda: box.append(main(argv)), daemon=True)
    t.start()
    t.join(seconds)
    return box[0] if box else None


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err and "internal error" not in err, err
    return err


def _limit_memory():  # the child may not eat the machine's memory when the loader is broken
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def _cli(argv, cwd):
    """The console script in a fresh process, at most 60 s and 4 GiB."""
    return subprocess.run([sys.executable, "-m", "plastic_jax.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=60, preexec_fn=_limit_memory)


# --- 1. things that are not regular files: refused before they are opened -------------------


def test_a_fifo_named_x_npz_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "x.npz"
    os.mkfifo(fifo)
    r = _cli([*EVH, "--dataset", str(fifo)], tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "\n" not in err and str(fifo) in err and "FIFO" in err and "not a regular file" in err, err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_not_read(tmp_path):
    r = _cli([*EVH, "--dataset", "/dev/zero"], tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "\n" not in err and "/dev/zero" in err and "character device" in err, err


def test_a_fifo_is_refused_in_process_too(tmp_path, capsys):
    fifo = tmp_path / "in.npz"
    os.mkfifo(fifo)
    assert _main_within([*EVH, "--dataset", str(fifo)]) == 2
    assert "not a regular file" in _one_line(capsys)


def test_a_directory_named_x_npz(tmp_path, capsys):
    (tmp_path / "x.npz").mkdir()
    assert main([*EVH, "--dataset", str(tmp_path / "x.npz")]) == 2
    assert "is a directory" in _one_line(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_an_unreadable_file_says_so(tmp_path, capsys):
    x, y = _xy()
    path = _save(tmp_path, x=x, y=y)
    os.chmod(path, 0)
    try:
        assert main([*EVH, "--dataset", path]) == 2
        err = _one_line(capsys)
        assert path in err and "cannot be read" in err and "ermission" in err, err
    finally:
        os.chmod(path, 0o644)


# --- 1b. sizes: refused against the memory available, before anything is unpacked ------------


def test_a_file_larger_than_the_memory_available_is_refused(tmp_path, monkeypatch, capsys):
    x, y = _xy()
    path = _save(tmp_path, x=x, y=y)
    monkeypatch.setattr(npz_mod, "available_memory", lambda: 100)
    assert main([*EVH, "--dataset", path]) == 2
    err = _one_line(capsys)
    assert path in err and "memory available" in err and "smaller file" in err, err


def test_arrays_that_unpack_beyond_the_memory_are_refused_from_their_headers(tmp_path, capsys):
    """A few hundred bytes whose .npy header claims 10^12 float64 values (a zip bomb's shape)."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    y = io.BytesIO()
    np.save(y, np.arange(N) % C)
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", head.getvalue() + b"\0" * 4096)
        z.writestr("y.npy", y.getvalue())
    assert _main_within([*EVH, "--dataset", str(path)]) == 2
    err = _one_line(capsys)
    assert str(path) in err and "need about" in err and "available" in err, err


# --- 2. labels: bounded, checked against the examples and n_classes, the file named ------------


@pytest.mark.parametrize("label,words", [
    (10**12, ["1000000000000", f"at most {MAX_CLASSES}"]),
    (MAX_CLASSES, [str(MAX_CLASSES), f"at most {MAX_CLASSES}"]),
    (100, ["label 100", "only 24 example(s)"]),
])
def test_a_huge_label_names_the_file_and_the_label(tmp_path, capsys, label, words):
    x, y = _xy()
    y = y.astype(np.int64)
    y[-1] = label
    path = _save(tmp_path, x=x, y=y)
    assert _main_within([*EVH, "--dataset", path]) == 2
    err = _one_line(capsys)
    assert path in err and "out of memory" not in err and all(w in err for w in words), err


@pytest.mark.parametrize("n_classes,words", [
    (10**12, f"n_classes is 1000000000000; at most {MAX_CLASSES}"),
    (-5, "n_classes is -5; a task needs at least 2"),
    (50, "only 24 example(s)"),
])
def test_a_huge_or_negative_n_classes(tmp_path, capsys, n_classes, words):
    x, y = _xy()
    path = _save(tmp_path, x=x, y=y, n_classes=np.int64(n_classes))
    assert _main_within([*EVH, "--dataset", path]) == 2
    err = _one_line(capsys)
    assert path in err and words in err, err


def test_unsigned_64_bit_labels_load(tmp_path):
    x, y = _xy()
    d = load_npz(_save(tmp_path, x=x, y=y.astype(np.uint64)))
    assert d.n_classes == C and d.y.dtype == np.int32
    np.testing.assert_array_equal(d.y, y)


# --- 6. more hostile contents -------------------------------------------------------------------


def _raw_member(tmp_path):
    path = tmp_path / "raw.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x", b"not an array")
        z.writestr("y.npy", b"")
    return str(path)


def _pickle(tmp_path):
    path = tmp_path / "p.npz"
    x, y = _xy()
    path.write_bytes(pickle.dumps({"x": x, "y": y}))
    return str(path)


def _corrupt(tmp_path):
    x, y = _xy()
    path = tmp_path / "c.npz"
    np.savez_compressed(path, x=x, y=y)
    b = bytearray(path.read_bytes())
    b[60:90] = b"\xff" * 30  # inside x.npy's deflated data
    path.write_bytes(bytes(b))
    return str(path)


def _nan_x():
    x, y = _xy()
    x[3, 2] = np.nan
    return {"x": x, "y": y}


def _inf_x():
    x, y = _xy()
    x[0, 0] = np.inf
    return {"x": x, "y": y}


HOSTILE = {
    "x-object-array": (lambda: {"x": np.array([[1, "a"]] * N, dtype=object), "y": _xy()[1]},
                       "array of Python objects"),
    "y-object-array": (lambda: {"x": _xy()[0], "y": np.array([0, "a"] * (N // 2), dtype=object)},
                       "array of Python objects"),
    "x-nan": (_nan_x, "NaN or infinite"),
    "x-inf": (_inf_x, "NaN or infinite"),
    "y-float-non-integer": (lambda: {"x": _xy()[0], "y": _xy()[1] + 0.5}, "non-integer label 0.5"),
    "y-float-nan": (lambda: {"x": _xy()[0], "y": np.r_[_xy()[1][:-1], np.nan]}, "non-integer label nan"),
    "y-float-integral": (lambda: {"x": _xy()[0], "y": _xy()[1].astype(float)}, "y.astype(int)"),
    "y-column": (lambda: {"x": _xy()[0], "y": _xy()[1][:, None]}, "y.reshape(-1)"),
    "y-bool": (lambda: {"x": _xy()[0], "y": _xy()[1] > 1}, "labels must be integers"),
    "x-complex": (lambda: {"x": _xy()[0].astype(complex), "y": _xy()[1]}, "dtype complex128"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_contents_are_one_line(tmp_path, capsys, name):
    arrays, words = HOSTILE[name]
    path = _save(tmp_path, **arrays())
    assert main([*EVH, "--dataset", path]) == 2
    err = _one_line(capsys)
    assert path in err and words in err, err


@pytest.mark.parametrize("make,words", [
    (_raw_member, "'x' is not a NumPy array"),
    (_pickle, "is not an .npz archive"),
    (_corrupt, "cannot be read"),
])
def test_hostile_archives_are_one_line(tmp_path, capsys, make, words):
    path = make(tmp_path)
    assert main([*EVH, "--dataset", path]) == 2
    err = _one_line(capsys)
    assert path in err and words in err, err


def test_pickles_stay_off(tmp_path, monkeypatch):
    """np.load is always called with allow_pickle=False."""
    seen = []
    real = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    x, y = _xy()
    load_npz(_save(tmp_path, x=x, y=y))
    assert seen == [False]


# --- 5. config files: every value of the file is checked, even one a flag overrides ------------


@pytest.mark.parametrize("text,flags,words", [
    ('M = "five"\n', ["--M", "5"], "M (--M) must be an integer, got 'five'"),
    ('feedback = "xx"\n', ["--feedback", "fa"], "unknown feedback 'xx'"),
    ("hidden = [0]\n", ["--hidden", "8"], "--hidden sizes must be positive"),
    ("episodes = -1\n", ["--episodes", "3"], "--episodes must be a positive integer"),
    ("theta0 = nan\n", ["--theta0", "0.001"], "--theta0 must be finite"),
    ("episodez = 3\n", ["--episodes", "3"], "unknown config key(s): episodez"),
    ('rule = "bio"\nK = true\n', ["--K", "3"], "K (--K) must be an integer"),
])
def test_a_bad_value_in_a_config_file_is_refused_even_when_a_flag_overrides_it(tmp_path, capsys, text, flags,
                                                                                 words):
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = tmp_path / "run"
    # were the file's value dropped, this would be a tiny run of one episode (the flags win)
    small = ["--hidden", "8", "--M", "3", "--K", "3", "--Q", "2", "--episodes", "1", "--analysis-every", "0"]
    assert main(["meta-train", "--config", str(path), *small, *flags, "--out", str(out), "--no-progress"]) == 2
    err = _one_line(capsys)
    assert str(path) in err and words in err, err
    assert not out.exists()


def test_a_json_config_file_is_checked_the_same_way(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"M": "five", "hidden": [8]}')
    assert main(["meta-train", "--config", str(path), "--M", "3", "--K", "3", "--Q", "2", "--episodes", "1",
                 "--analysis-every", "0", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "M (--M) must be an integer" in _one_line(capsys)


@pytest.mark.parametrize("what", ["fifo", "dev-zero"])
def test_config_fifo_and_dev_zero_are_refused_not_read(tmp_path, what):
    path = str(tmp_path / "c.toml") if what == "fifo" else "/dev/zero"
    if what == "fifo":
        os.mkfifo(path)
    elif not os.path.exists(path):
        pytest.skip("no /dev/zero")
    r = _cli(["meta-train", "--config", path, "--out", str(tmp_path / "r"), "--no-progress"], tmp_path)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert "\n" not in err and f"cannot read --config {path!r}" in err and "not a regular file" in err, err
    assert not (tmp_path / "r").exists()


def test_an_oversized_config_file_is_refused(tmp_path, capsys, monkeypatch):
    from plastic_jax import config

    monkeypatch.setattr(config, "CONFIG_FILE_MAX_BYTES", 10)
    path = tmp_path / "c.toml"
    path.write_text('rule = "bio"\nM = 3\nK = 3\nQ = 2\nhidden = [8]\nepisodes = 1\nanalysis_every = 0\n')
    assert main(["meta-train", "--config", str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "more than a config file's 10" in _one_line(capsys)
