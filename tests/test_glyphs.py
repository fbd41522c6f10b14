"""The offline ``glyphs`` source: printed-font characters at EMNIST balanced's shape.

Most tests use a few images per class through ``n_per_class`` and share one set of rendered
prototypes (``build_prototypes`` is patched to return it); one test generates the full default
dataset (400 per class) through ``load_dataset`` and probes how learnable it is.
"""

import os

import numpy as np
import pytest

from plastic_jax.data import SOURCES, load_dataset
from plastic_jax.data import glyphs as G

N = 5  # images per class in the small tests


@pytest.fixture(scope="module")
def protos():
    return G.build_prototypes()


@pytest.fixture
def fast(monkeypatch, protos):
    """load_glyphs without re-rendering the fonts; returns a list counting generator calls."""
    calls = []
    real = G.generate_glyphs

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(G, "build_prototypes", lambda fonts=None: protos)
    monkeypatch.setattr(G, "generate_glyphs", counting)
    return calls


def test_label_order_is_emnist_balanced():
    assert G.CHARS == "0123456789" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abdefghnqrt"
    assert G.N_CLASSES == 47 and len(set(G.CHARS)) == 47


def test_fonts_are_checked_per_character(protos):
    fonts = dict((os.path.basename(p), cov) for p, cov in G.find_fonts())
    assert "LastResortHE-Regular.ttf" not in fonts  # maps everything to one placeholder glyph
    assert "cmex10.ttf" not in fonts  # maps Latin code points to big delimiters
    assert "DejaVuSans.ttf" in fonts and fonts["DejaVuSans.ttf"] == G.CHARS
    if "cmmi10.ttf" in fonts:  # old-style digits are not the standard glyphs
        assert not any(c.isdigit() for c in fonts["cmmi10.ttf"])
    per_class = np.bincount(protos.label, minlength=47)
    assert per_class.min() >= 10  # every class has many fonts
    s = len(G.STROKES)
    assert protos.images.shape == (len(protos.label) * s, G.CANVAS, G.CANVAS)
    assert protos.hull.shape == (len(protos.label) * s, G.HULL, 2)


def test_deterministic_in_the_seed(protos):
    x1, y1 = G.generate_glyphs(3, N, protos)
    x2, y2 = G.generate_glyphs(3, N, protos, chunk=7)  # chunking only bounds memory
    assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
    x3, y3 = G.generate_glyphs(4, N, protos)
    assert x1.tobytes() != x3.tobytes()
    assert np.all(np.bincount(y3, minlength=47) == N)


def test_load_shape_range_balance_and_cache(tmp_path, fast):
    data = G.load_glyphs(str(tmp_path), n_per_class=N)
    assert data.name == "glyphs" and data.n_classes == 47
    assert data.x.shape == (47 * N, 784) and data.x.dtype == np.float32
    assert data.y.shape == (47 * N,) and data.y.dtype == np.int32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert np.all(data.class_counts() == N)
    path = G.cache_path(str(tmp_path), 0, N)
    assert path == os.path.join(str(tmp_path), "glyphs", f"glyphs-{G.VERSION}-seed0-n{N}.npz")
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]  # no temporary file left
    assert len(fast) == 1
    again = G.load_glyphs(str(tmp_path), n_per_class=N)
    assert len(fast) == 1  # read from the cache, not generated
    assert again.x.tobytes() == data.x.tobytes() and again.y.tobytes() == data.y.tobytes()
    other = G.load_glyphs(str(tmp_path), seed=1, n_per_class=N)
    assert len(fast) == 2 and other.x.tobytes() != data.x.tobytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_arrays", "other_fonts"])
def test_damaged_cache_is_regenerated(tmp_path, fast, capsys, damage):
    fresh = G.load_glyphs(str(tmp_path), n_per_class=N)
    path = G.cache_path(str(tmp_path), 0, N)
    if damage == "garbage":
        with open(path, "wb") as f:
            f.write(b"not a zip file")
    elif damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif damage == "wrong_arrays":
        np.savez(path, x=np.zeros((3, 784), np.uint8), y=np.zeros(3, np.int32), fingerprint=np.asarray("x"))
    else:
        x, y, _ = G._read_cache(path, N)
        np.savez(path, x=x, y=y, fingerprint=np.asarray("made-elsewhere"))
    capsys.readouterr()
    data = G.load_glyphs(str(tmp_path), n_per_class=N)
    err = capsys.readouterr().err
    assert "regenerating" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # why, then the one generating line
    assert len(fast) == 2
    assert data.x.tobytes() == fresh.x.tobytes()
    G._read_cache(path, N)  # the cache is whole again


def test_unwritable_cache_dir_still_returns_data(tmp_path, fast, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # works even as root, unlike chmod
    data = G.load_glyphs(str(blocker), n_per_class=N)
    assert data.x.shape == (47 * N, 784) and np.all(data.class_counts() == N)
    err = capsys.readouterr().err
    assert "cannot write the cache" in err and "Traceback" not in err


def test_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASTIC_JAX_DATA_DIR", str(tmp_path / "env"))
    assert G.cache_path("given", 0, 400).startswith(os.path.join("given", "glyphs", ""))
    expect = os.path.join(str(tmp_path / "env"), "glyphs", f"glyphs-{G.VERSION}-seed2-n10.npz")
    assert G.cache_path(None, 2, 10) == expect
    monkeypatch.delenv("PLASTIC_JAX_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert G.cache_path(None).startswith(os.path.join(str(tmp_path / "home"), ".cache", "plastic_jax", "glyphs", ""))


def _probe(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Nearest-class-mean and 1-nearest-neighbour accuracy: train on the first 3/4, test on the rest
    (the image order is already shuffled); 1-NN on the first 1000 test images."""
    from sklearn.neighbors import KNeighborsClassifier

    n = len(y) * 3 // 4
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    mu = np.stack([xtr[ytr == c].mean(0) for c in range(47)])
    d = (mu**2).sum(1)[None] - 2 * xte @ mu.T
    ncm = float((d.argmin(1) == yte).mean())
    nn = float(KNeighborsClassifier(1).fit(xtr, ytr).score(xte[:1000], yte[:1000]))
    return ncm, nn


@pytest.mark.slow  # end to end, >50 s on one core; run with -m slow
def test_full_dataset_is_balanced_distinct_and_learnable_but_not_trivial(tmp_path):
    data = load_dataset("glyphs", str(tmp_path))  # the default: seed 0, 400 per class, real fonts
    assert SOURCES["glyphs"] is G.load_glyphs
    assert data.x.shape == (18800, 784) and data.x.dtype == np.float32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert np.all(data.class_counts() == 400)
    assert os.path.exists(G.cache_path(str(tmp_path)))
    # all 47 classes look different: no two mean images are close (smallest distance measured 1.6, b vs h)
    mu = np.stack([data.x[data.y == c].mean(0) for c in range(47)])
    dist = np.sqrt(((mu[:, None] - mu[None]) ** 2).sum(-1))
    assert dist[~np.eye(47, dtype=bool)].min() > 0.5
    # ink like EMNIST's (mean pixel about 0.17); measured 0.179
    assert 0.12 < data.x.mean() < 0.25
    # Learnable but not trivial. Measured (seeds 0, 1, 2): nearest class mean 0.60 / 0.59 / 0.60,
    # 1-NN 0.86 / 0.85 / 0.84; chance is 1/47 = 0.02. With the distortions and noise switched off
    # the same probes reach 0.91 and 0.9995 (a trivial set), so the upper bounds catch a
    # generator that stopped distorting and the lower bounds one whose labels or images broke.
    ncm, nn = _probe(data.x, data.y)
    assert 0.45 < ncm < 0.75, ncm
    assert 0.70 < nn < 0.95, nn
