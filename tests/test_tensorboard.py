"""--tensorboard: event files per seed, read back with tensorboardX's own record format."""

import glob
import json
import os
import struct

import pytest

from plastic_jax.cli import main

tbx = pytest.importorskip("tensorboardX")
TINY = ["--hidden", "8", "--M", "2", "--K", "3", "--Q", "1", "--rule", "bio", "--episodes", "3",
        "--analysis-every", "2", "--seeds", "2", "--no-progress"]


def read_scalars(path):
    """tag -> [(step, value)] of one event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    out = {}
    with open(path, "rb") as f:
        while header := f.read(12):
            (n,) = struct.unpack("<Q", header[:8])
            ev = event_pb2.Event.FromString(f.read(n))
            f.read(4)
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_scalars_per_seed_equal_the_records(tmp_path):
    out = str(tmp_path / "run")
    assert main(["meta-train", *TINY, "--tensorboard", "--out", out]) == 0
    recs = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
    for seed in (0, 1):
        (events,) = glob.glob(os.path.join(out, "tensorboard", f"seed{seed}", "events.out.tfevents.*"))
        got = read_scalars(events)
        mine = [r for r in recs if r["seed"] == seed]
        assert [s for s, _ in got["accuracy"]] == [0, 1, 2]
        assert [v for _, v in got["query_loss"]] == pytest.approx([r["query_loss"] for r in mine], rel=1e-6)
        assert [v for _, v in got["theta/F0"]] == pytest.approx([r["theta"]["F0"] for r in mine], rel=1e-6)
        assert [s for s, _ in got["alignment/layer1"]] == [0, 2]
        assert {"meta_loss", "orthonormality/layer2"} <= set(got)


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_tbx(name, *a, **k):
        if name.startswith("tensorboardX"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tbx)
    out = str(tmp_path / "run")
    assert main(["meta-train", *TINY, "--tensorboard", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'plastic_jax[tensorboard]'" in err
    assert not os.path.exists(out)
