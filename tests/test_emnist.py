"""The EMNIST source under ``tfds.testing.mock_data``, and its one-line message when data is missing.

``mock_data`` patches ``DatasetBuilder.as_data_source`` to serve ``num_examples`` random examples
built from the real feature spec (image (28, 28, 1) uint8, label in 0..46) and makes
``download_and_prepare`` a no-op; it reports the dataset as not prepared, so the tests that read
mocked data either pass ``download=True`` (mocked) or patch ``is_prepared``.
"""

import os
import subprocess
import sys
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
