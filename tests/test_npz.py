"""Bring your own data: ``--dataset path/to/file.npz`` trains and evaluates like a built-in
dataset; every bad file is one line on stderr and exit code 2."""

import json
import os
import re

import numpy as np
import pytest

from plastic_jax.cli import main
from plastic_jax.data import DataUnavailableError, load_dataset
from plastic_jax.data.npz import load_npz

C, PER_CLASS, D = 6, 12, 16


def _data(seed=0):
    """C classes of noisy prototypes in [0, 1]: x (C·PER_CLASS, D) float32, y int64."""
    rng = np.random.default_rng(seed)
    protos = rng.uniform(0, 1, (C, D))
    y = np.repeat(np.arange(C), PER_CLASS)
    x = np.clip(protos[y] + rng.normal(0, 0.1, (len(y), D)), 0, 1).astype(np.float32)
    return x, y


@pytest.fixture()
def good(tmp_path):
    x, y = _data()
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    return str(path)


def test_load_npz_reads_x_and_y_and_infers_the_classes(good):
    d = load_dataset(good)
    x, y = _data()
    assert d.name == "mine.npz" and d.n_classes == C and d.dim == D
    assert d.x.dtype == np.float32 and d.y.dtype == np.int32
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y)
    assert list(d.class_counts()) == [PER_CLASS] * C


def test_uint8_pixels_are_divided_by_255_and_n_classes_may_be_declared(tmp_path):
    x = np.array([[0, 255], [51, 102], [255, 0], [0, 0]], np.uint8)
    path = tmp_path / "u8.npz"
    np.savez(path, x=x, y=np.array([0, 1, 2, 1]), n_classes=np.int64(3), extra=np.zeros(3))
    d = load_npz(str(path))
    np.testing.assert_allclose(d.x, x / 255.0, rtol=1e-6)
    assert d.n_classes == 3


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_an_npz_trains_end_to_end_through_the_cli_with_holdout_and_evaluate(good, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["--dataset", good, "--holdout", "0.5", "--M", "3", "--K", "3", "--Q", "2", "--hidden", "8"]
    assert main(["meta-train", *args, "--rule", "ehebb", "--episodes", "3", "--analysis-every", "0",
                 "--out", out]) == 0
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["dataset"] == good
    split = cfg["extra"]["class_split"]
    assert len(split["train"]) == len(split["test"]) == 3 and sorted(split["train"] + split["test"]) == list(range(C))
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert len(records) == 3 and all(np.isfinite(r["query_loss"]) for r in records)
    capsys.readouterr()
    res_path = str(tmp_path / "eval.json")
    assert main(["evaluate", out, "--tasks", "3", "--baseline-lr", "0.01", "--json", res_path]) == 0
    res = json.load(open(res_path))
    assert res["dataset"] == good and res["held_out"] and res["test_classes"] == split["test"]
    assert [r["name"] for r in res["rules"]] == ["learned", "f0+bp", "f0+fa"]
    assert all(0.0 <= r["mean_accuracy"] <= 1.0 for r in res["rules"])


def _write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


X, Y = _data()
BAD_FILES = [
    # (how the file is made, what the one line says)
    (lambda p: str(p / "missing.npz"), "no such file"),
    (lambda p: (os.mkdir(p / "adir.npz"), str(p / "adir.npz"))[1], "is a directory"),
    (lambda p: ((p / "text.npz").write_text("x,y\n1,2\n"), str(p / "text.npz"))[1], "is not an .npz archive"),
    (lambda p: (np.save(p / "arr.npy", X), str(p / "arr.npy"))[1], "is not an .npz archive"),
    (lambda p: _write(p, "noy.npz", x=X), "has no array 'y'"),
    (lambda p: _write(p, "none.npz", a=X), "has no array 'x' or 'y'"),
    (lambda p: _write(p, "img.npz", x=X.reshape(-1, 4, 4), y=Y), r"x must be 2-D .*flatten images"),
    (lambda p: _write(p, "empty.npz", x=X[:0], y=Y[:0]), "x is empty"),
    (lambda p: _write(p, "big.npz", x=X * 255, y=Y), r"x must lie in \[0, 1\], found values in"),
    (lambda p: _write(p, "neg.npz", x=X - 0.5, y=Y), r"x must lie in \[0, 1\]"),
    (lambda p: _write(p, "nan.npz", x=np.where(X > 0.9, np.nan, X), y=Y), "NaN or infinite"),
    (lambda p: _write(p, "int.npz", x=(X > 0.5).astype(np.int64), y=Y), "x has dtype int64"),
    (lambda p: _write(p, "obj.npz", x=np.array([X, "a"], dtype=object), y=Y), "cannot be read"),
    (lambda p: _write(p, "yfloat.npz", x=X, y=Y.astype(float)), "labels must be integers"),
    (lambda p: _write(p, "ylen.npz", x=X, y=Y[:-1]), r"y must have shape \(72,\)"),
    (lambda p: _write(p, "y2d.npz", x=X, y=Y[:, None]), "y must have shape"),
    (lambda p: _write(p, "yneg.npz", x=X, y=Y - 1), "negative label -1"),
    (lambda p: _write(p, "gap.npz", x=X, y=np.where(Y == 2, 7, Y)), r"class\(es\) 2, 6 of 0..7 have no example"),
    (lambda p: _write(p, "ncls.npz", x=X, y=Y, n_classes=np.int64(4)), "holds the label 5 but n_classes is 4"),
    (lambda p: _write(p, "ncls2.npz", x=X, y=Y, n_classes=np.float64(6)), "n_classes must be an integer scalar"),
    (lambda p: _write(p, "one.npz", x=X, y=np.zeros_like(Y)), "a task needs at least 2"),
]


@pytest.mark.parametrize("make,message", BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_a_bad_file_is_one_line_and_exit_2(make, message, tmp_path, capsys):
    path = make(tmp_path)
    with pytest.raises(DataUnavailableError, match=message):
        load_dataset(path)
    assert main(["meta-train", "--dataset", path, "--episodes", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and path in err and re.search(message, err), err
    assert not os.path.exists(tmp_path / "run")


def test_split_and_unknown_names_are_one_line(good, tmp_path, capsys):
    assert main(["meta-train", "--dataset", good, "--split", "train", "--out", str(tmp_path / "r")]) == 2
    assert "an .npz file has no splits" in capsys.readouterr().err
    assert main(["meta-train", "--dataset", "digts", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'digts'" in err and ".npz" in err and len(err.strip().splitlines()) == 1


def test_the_data_must_fit_the_task(good, tmp_path, capsys):
    # 12 examples per class: K + Q = 13 is refused before training, as for a built-in dataset
    assert main(["meta-train", "--dataset", good, "--K", "10", "--Q", "3", "--out", str(tmp_path / "r")]) == 2
    assert "smallest class (12 examples)" in capsys.readouterr().err
