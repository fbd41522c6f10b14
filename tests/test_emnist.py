"""The EMNIST source under ``tfds.testing.mock_data``, and its one-line message when data is missing.

``mock_data`` patches ``DatasetBuilder.as_data_source`` to serve ``num_examples`` random examples
built from the real feature spec (image (28, 28, 1) uint8, label in 0..46) and makes
``download_and_prepare`` a no-op; it reports the dataset as not prepared, so the tests that read
mocked data either pass ``download=True`` (mocked) or patch ``is_prepared``.
"""

import gzip
import os
import subprocess
import sys
import zipfile
from unittest import mock

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from plastic_jax.data import DataUnavailableError, load_dataset  # noqa: E402
from plastic_jax.data import emnist as emnist_mod  # noqa: E402

N = 60


@pytest.fixture
def prepared():
    """Mocked EMNIST that counts as prepared; yields the list of splits asked for."""
    asked = []
    with tfds.testing.mock_data(num_examples=N):
        mocked = tfds.core.DatasetBuilder.as_data_source

        def spy(self, split=None, **kw):
            asked.append(split)
            return mocked(self, split, **kw)

        with mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True), \
                mock.patch.object(tfds.core.DatasetBuilder, "as_data_source", spy):
            yield asked


def _raw(split="test"):
    """The mocked records as tfds serves them, read independently of plastic_jax."""
    with tfds.testing.mock_data(num_examples=N):
        src = tfds.data_source("emnist/balanced", split=split, download=True)
        return [src[i] for i in range(len(src))]


def test_shapes_scaling_and_labels(prepared, tmp_path):
    data = load_dataset("emnist", str(tmp_path))
    assert data.name == "emnist" and data.n_classes == 47
    assert data.x.shape == (N, 784) and data.x.dtype == np.float32
    assert data.y.shape == (N,) and data.y.dtype == np.int32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    assert data.y.min() >= 0 and data.y.max() < 47
    assert prepared == ["test"]  # the balanced test split by default (400 per class, as the paper's code)


def test_images_are_transposed_upright_and_divided_by_255(prepared, tmp_path):
    data = load_dataset("emnist", str(tmp_path))
    raw = _raw()
    for i in (0, 7, N - 1):
        img = np.asarray(raw[i]["image"])[:, :, 0].astype(np.float64)
        # upright pixel (r, c) is stored pixel (c, r): independent loop over the 784 values
        expect = np.array([[img[c, r] / 255.0 for c in range(28)] for r in range(28)]).reshape(-1)
        np.testing.assert_allclose(data.x[i], expect, rtol=0, atol=1e-7)
        assert data.y[i] == int(raw[i]["label"])
    # the mock's random images are not symmetric, so the transpose is visible
    assert not np.allclose(data.x[0], np.asarray(raw[0]["image"]).reshape(-1) / 255.0)


def test_split_is_passed_through(prepared, tmp_path):
    load_dataset("emnist", str(tmp_path), split="train[:10%]")
    assert prepared == ["train[:10%]"]


def test_download_flag_prepares_then_reads(tmp_path):
    with tfds.testing.mock_data(num_examples=N):  # not prepared; download_and_prepare is mocked
        data = load_dataset("emnist", str(tmp_path), download=True)
    assert data.x.shape == (N, 784)


def test_missing_data_raises_one_line_without_download(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    calls = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, *a, **k: calls.append(1))
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("emnist", str(tmp_path / "none"))
    msg = str(err.value)
    assert "\n" not in msg and calls == []  # no download attempt
    assert "tfds build emnist/balanced" in msg and str(tmp_path / "none") in msg
    assert "TFDS_DATA_DIR" in msg and "--dataset digits" in msg


def test_data_dir_falls_back_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert emnist_mod.resolve_data_dir(None) == str(tmp_path / "env")
    assert emnist_mod.resolve_data_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
    with pytest.raises(DataUnavailableError, match=str(tmp_path / "env")):
        load_dataset("emnist")


def test_cli_exits_2_with_one_line_when_emnist_is_missing(tmp_path):
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    proc = subprocess.run(
        [sys.executable, "-m", "plastic_jax.cli", "meta-train", "--dataset", "emnist", "--episodes", "1",
         "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "EMNIST balanced is not prepared" in lines[0]
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_split_flag_is_refused_for_digits(tmp_path, capsys):
    from plastic_jax.cli import main

    assert main(["meta-train", "--split", "train", "--episodes", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 2
    assert "has no splits" in capsys.readouterr().err


def test_importing_the_package_and_digits_does_not_import_tfds():
    code = (
        "import sys; import plastic_jax, plastic_jax.cli, plastic_jax.train, plastic_jax.evaluate; "
        "from plastic_jax.data import load_dataset; load_dataset('digits'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow_datasets', 'tensorflow')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- NIST idx files, no tfds

IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801


def _handmade(n, shift=0):
    """n stored (transposed) 28x28 images with asymmetric hand-made strokes, labels 0..46 cycling."""
    imgs = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        k = i + shift
        imgs[i, 2 + k % 20, 3:20] = 255          # a horizontal bar, its row depending on the image
        imgs[i, 4:25, 5 + k % 7] = 128           # a vertical bar
        imgs[i, 0, 27] = 7 + k % 200             # top-right marker: makes img != img.T
        imgs[i, 27, 1] = 200
        imgs[i, 10:14, 20:26] = 30 + k % 100     # an off-diagonal block
    labels = (np.arange(n) + shift) % 47
    return imgs, labels.astype(np.uint8)


SPLITS = {"test": _handmade(50), "train": _handmade(9, shift=5)}


def _idx(arr, magic):
    arr = np.asarray(arr, np.uint8)
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def _name(split, kind):
    return emnist_mod.idx_file_name(split, kind)


def _files(splits=SPLITS):
    """{file name without .gz: raw idx bytes} for the given splits."""
    out = {}
    for split, (imgs, labels) in splits.items():
        out[_name(split, "images")] = _idx(imgs, IMAGE_MAGIC)
        out[_name(split, "labels")] = _idx(labels, LABEL_MAGIC)
    return out


def _write(folder, files, gz=True):
    os.makedirs(folder, exist_ok=True)
    for name, raw in files.items():
        with open(os.path.join(folder, name + (".gz" if gz else "")), "wb") as f:
            f.write(gzip.compress(raw) if gz else raw)


def _write_zip(path, files):
    """The NIST archive's layout: gzip/<name>.gz members, with other subsets alongside."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("gzip/", b"")
        other = gzip.compress(_idx(np.ones((2, 28, 28)), IMAGE_MAGIC))
        zf.writestr("gzip/emnist-digits-test-images-idx3-ubyte.gz", other)
        zf.writestr("gzip/emnist-balanced-mapping.txt", b"0 48\n")
        for name, raw in files.items():
            zf.writestr(f"gzip/{name}.gz", gzip.compress(raw))


@pytest.fixture
def no_tfds(monkeypatch):
    """Fail if the tfds path is taken."""
    def boom(*a, **k):
        raise AssertionError("the tfds path was used")
    monkeypatch.setattr(tfds, "builder", boom)


def _mocked_tfds_load(data_dir, split):
    """The tfds path, with tfds serving SPLITS' stored images (as tfds records: (28, 28, 1) uint8)."""
    def as_data_source(self, split=None, **kw):
        imgs, labels = SPLITS[split]
        return [{"image": img[:, :, None], "label": int(y)} for img, y in zip(imgs, labels)]

    with tfds.testing.mock_data(as_data_source_fn=as_data_source), \
            mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True):
        return load_dataset("emnist", data_dir, split=split)


@pytest.mark.parametrize("split", ["test", "train"])
def test_idx_files_give_the_same_arrays_as_the_tfds_path(split, tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    via_tfds = _mocked_tfds_load(str(tmp_path / "tfds"), split)  # no idx files there: tfds path
    _write(tmp_path / "nist" / "emnist", _files())
    monkeypatch.setattr(tfds, "builder", lambda *a, **k: pytest.fail("tfds path used"))
    via_idx = load_dataset("emnist", str(tmp_path / "nist"), split=split if split != "test" else None)
    imgs, labels = SPLITS[split]
    assert via_idx.name == "emnist" and via_idx.n_classes == 47
    assert via_idx.x.dtype == np.float32 and via_idx.y.dtype == np.int32
    np.testing.assert_array_equal(via_idx.x, via_tfds.x)
    np.testing.assert_array_equal(via_idx.y, via_tfds.y)
    np.testing.assert_array_equal(via_idx.y, labels)
    # upright pixel (r, c) is stored pixel (c, r), divided by 255
    np.testing.assert_allclose(via_idx.x[3].reshape(28, 28), imgs[3].T / 255.0, rtol=0, atol=1e-7)
    assert not np.allclose(via_idx.x[3], imgs[3].reshape(-1) / 255.0)  # the transpose is visible


LAYOUTS = {
    "zip under emnist/": lambda root, files: _write_zip(root / "emnist" / "gzip.zip", files),
    "zip in the data dir": lambda root, files: _write_zip(root / "gzip.zip", files),
    ".gz under emnist/": lambda root, files: _write(root / "emnist", files),
    ".gz under emnist/gzip/ (unzipped)": lambda root, files: _write(root / "emnist" / "gzip", files),
    "un-gzipped under emnist/": lambda root, files: _write(root / "emnist", files, gz=False),
    "un-gzipped in the data dir": lambda root, files: _write(root, files, gz=False),
    ".gz in the data dir's gzip/": lambda root, files: _write(root / "gzip", files),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_documented_form_and_place_reads_the_same(layout, tmp_path, no_tfds):
    LAYOUTS[layout](tmp_path, _files())
    data = load_dataset("emnist", str(tmp_path))
    imgs, labels = SPLITS["test"]
    np.testing.assert_array_equal(data.x, emnist_mod.to_upright(imgs))
    np.testing.assert_array_equal(data.y, labels)


def test_data_dir_from_env_and_labels_cover_0_to_46(tmp_path, monkeypatch, no_tfds):
    imgs, labels = _handmade(47 * 2)
    _write(tmp_path / "env" / "emnist", _files({"test": (imgs, labels)}))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    data = load_dataset("emnist")
    assert data.x.shape == (94, 784) and data.n_classes == 47
    assert set(data.y.tolist()) == set(range(47)) and data.y.min() == 0 and data.y.max() == 46
    np.testing.assert_array_equal(data.class_counts(), np.full(47, 2))


def test_emnist_folder_wins_over_the_data_dir_and_gz_over_raw(tmp_path, no_tfds):
    _write(tmp_path / "emnist", _files())
    _write(tmp_path / "emnist", _files({"test": _handmade(3, shift=1)}), gz=False)  # ignored: .gz first
    _write(tmp_path, _files({"test": _handmade(4, shift=2)}))  # ignored: emnist/ first
    data = load_dataset("emnist", str(tmp_path))
    np.testing.assert_array_equal(data.y, SPLITS["test"][1])


def test_idx_path_does_not_import_tensorflow_datasets(tmp_path):
    _write_zip(tmp_path / "emnist" / "gzip.zip", _files())
    code = (
        "import sys; from plastic_jax.data import load_dataset; "
        f"d = load_dataset('emnist', {str(tmp_path)!r}, split='train'); assert d.x.shape == (9, 784); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow_datasets', 'tensorflow')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _truncate_gz(folder):
    p = folder / (_name("test", "images") + ".gz")
    p.write_bytes(p.read_bytes()[:-40])
    return _name("test", "images") + ".gz"


def _wrong_magic(folder):
    p = folder / (_name("test", "images") + ".gz")
    p.write_bytes(gzip.compress(_idx(SPLITS["test"][0], 0x00000801)))
    return _name("test", "images") + ".gz"


def _count_mismatch(folder):
    p = folder / (_name("test", "labels") + ".gz")
    p.write_bytes(gzip.compress(_idx(SPLITS["test"][1][:-1], LABEL_MAGIC)))
    return _name("test", "labels") + ".gz"


def _label_out_of_range(folder):
    labels = SPLITS["test"][1].copy()
    labels[5] = 47
    (folder / (_name("test", "labels") + ".gz")).write_bytes(gzip.compress(_idx(labels, LABEL_MAGIC)))
    return _name("test", "labels") + ".gz"


def _missing_labels(folder):
    os.remove(folder / (_name("test", "labels") + ".gz"))
    return _name("test", "labels")


def _truncated_pixels(folder):
    p = folder / (_name("test", "images") + ".gz")
    p.write_bytes(gzip.compress(_idx(SPLITS["test"][0], IMAGE_MAGIC)[:-100]))
    return _name("test", "images") + ".gz"


def _wrong_size(folder):
    p = folder / (_name("test", "images") + ".gz")
    p.write_bytes(gzip.compress(_idx(np.zeros((50, 27, 28)), IMAGE_MAGIC)))
    return _name("test", "images") + ".gz"


DAMAGE = {
    "truncated .gz": (_truncate_gz, "truncated gzip"),
    "wrong magic": (_wrong_magic, "magic number 0x00000801, expected 0x00000803"),
    "image/label count mismatch": (_count_mismatch, "50 images but"),
    "label out of range": (_label_out_of_range, "label 47 outside 0..46"),
    "missing labels file": (_missing_labels, "is missing from"),
    "truncated pixels": (_truncated_pixels, "(truncated)"),
    "not 28x28": (_wrong_size, "27x28"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_or_missing_file_is_one_line_naming_it(case, tmp_path, no_tfds):
    folder = tmp_path / "emnist"
    _write(folder, _files())
    damage, why = DAMAGE[case]
    name = damage(folder)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("emnist", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg
    assert name in msg and why in msg and str(folder) in msg
    assert "gzip.zip" in msg and "emnist-dataset" in msg and "tfds build emnist/balanced" in msg


def test_damaged_zip_and_zip_without_the_balanced_files(tmp_path, no_tfds):
    zpath = tmp_path / "emnist" / "gzip.zip"
    _write_zip(zpath, _files())
    zpath.write_bytes(zpath.read_bytes()[:-200])  # cut off the central directory
    with pytest.raises(DataUnavailableError, match="gzip.zip is damaged") as err:
        load_dataset("emnist", str(tmp_path))
    assert "\n" not in str(err.value)
    _write_zip(zpath, {k: v for k, v in _files().items() if "labels" not in k})
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("emnist", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and f"{_name('test', 'labels')}.gz is missing from {zpath}" in msg


def test_missing_split_files_are_named(tmp_path, no_tfds):
    _write(tmp_path / "emnist", _files({"test": SPLITS["test"]}))
    with pytest.raises(DataUnavailableError, match=_name("train", "images")):
        load_dataset("emnist", str(tmp_path), split="train")


@pytest.mark.parametrize("spec", ["train[:10%]", "train[10%:]", "train[33%:67%]", "train[-25%:]",
                                  "train[12.5%:50%]", "train[:3]", "train[2:5]", "train[-3:]", "train[:-2]",
                                  "test[1_0:20]", "train[0%:100%]", "train[5%:6%]"])
def test_slices_select_the_rows_tfds_selects(spec, tmp_path, no_tfds):
    import types

    n = 9 if spec.startswith("train") else 50
    name = spec.split("[")[0]
    (abs_instr,) = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
        {name: types.SimpleNamespace(num_examples=n)})
    expect = np.arange(n)[abs_instr.from_:abs_instr.to]
    assert np.array_equal(np.arange(n)[emnist_mod.split_rows(spec, n)], expect)
    if len(expect):
        _write(tmp_path / "emnist", _files())
        data = load_dataset("emnist", str(tmp_path), split=spec)
        np.testing.assert_array_equal(data.y, SPLITS[name][1][expect])


@pytest.mark.parametrize("spec", ["validation", "train+test", "train[3shard]", "train[10%:5]", "train[1.5:3]",
                                  "train[5]", "train[::2]", "train[:]", "train[_:5]",
                                  "all", "train[:10%"])
def test_unsupported_splits_are_one_line(spec, tmp_path, no_tfds):
    _write(tmp_path / "emnist", _files())
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("emnist", str(tmp_path), split=spec)
    msg = str(err.value)
    assert "\n" not in msg and repr(spec) in msg and "'train[:10%]'" in msg


def test_out_of_range_or_empty_slice_is_one_line(tmp_path, no_tfds):
    _write(tmp_path / "emnist", _files())
    for spec in ("train[:20]", "train[5:5]"):
        with pytest.raises(DataUnavailableError) as err:
            load_dataset("emnist", str(tmp_path), split=spec)
        assert "\n" not in str(err.value) and repr(spec) in str(err.value)


@pytest.mark.parametrize("case", ["empty data dir", "damaged file"])
def test_cli_exits_2_with_one_line_for_idx_problems(case, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if case == "damaged file":
        _write(data_dir / "emnist", _files())
        _truncate_gz(data_dir / "emnist")
    proc = subprocess.run(
        [sys.executable, "-m", "plastic_jax.cli", "meta-train", "--dataset", "emnist", "--data-dir", str(data_dir),
         "--episodes", "1", "--out", str(tmp_path / "run"), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    if case == "damaged file":
        assert f"{_name('test', 'images')}.gz is damaged (truncated gzip stream)" in lines[0]
    else:
        assert "EMNIST balanced is not prepared" in lines[0] and "gzip.zip" in lines[0]
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


@pytest.mark.parametrize("module", ["importlib_resources", "tensorflow"])
def test_download_without_the_extra_names_the_install_line(tmp_path, monkeypatch, module):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)

    def prepare(self, *a, **k):  # what tfds raises when the emnist extra is not installed
        try:
            raise ModuleNotFoundError(f"No module named '{module}'", name=module)
        except ModuleNotFoundError as e:
            raise RuntimeError(f"Failed importing {module}. This likely means ...") from e

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", prepare)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("emnist", str(tmp_path / "none"), download=True)
    msg = str(err.value)
    assert "\n" not in msg and f"{module} is not installed" in msg
    assert "pip install 'plastic_jax[emnist]'" in msg
    assert "rerun with --download)" not in msg.split("pip install")[0]  # the fix comes first, not "rerun"
