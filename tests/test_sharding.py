"""The seed axis sharded over 4 (forced host) devices gives the single-device results."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from plastic_jax.sharding import n_shards, seed_shardings

CHILD = os.path.join(os.path.dirname(__file__), "_sharded_run.py")


@pytest.mark.parametrize("seeds,devices,expected", [(4, 4, 4), (8, 4, 4), (6, 4, 3), (5, 4, 1), (3, 8, 3), (1, 4, 1)])
def test_n_shards_is_the_largest_divisor_that_fits(seeds, devices, expected):
    assert n_shards(seeds, devices) == expected


def test_seed_shardings_in_this_process():
    seeds, repl = seed_shardings(3)
    assert seeds.spec == jax.sharding.PartitionSpec("seeds") and repl.spec == jax.sharding.PartitionSpec()
    assert len(seeds.device_set) == n_shards(3, len(jax.local_devices()))


def _run(tmp_path, seeds, episodes, analysis_every):
    out = str(tmp_path)
    flags = os.environ.get("XLA_FLAGS", "")  # conftest's: the child compiles as this process does
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4".strip(),
           "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or "",
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    proc = subprocess.run([sys.executable, CHILD, out, str(seeds), str(episodes), str(analysis_every)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = {}
    for run in ("multi", "single"):
        with open(os.path.join(out, run, "metrics.jsonl")) as f:
            recs[run] = [json.loads(line) for line in f]
    with open(os.path.join(out, "placement.json")) as f:
        return recs["multi"], recs["single"], json.load(f)


def _assert_same(multi, single):
    assert [(r["episode"], r["seed"]) for r in multi] == [(r["episode"], r["seed"]) for r in single]
    for a, b in zip(multi, single):
        # each device runs its seeds as a vmap of a smaller batch than the single device's; XLA
        # may then order a reduction differently, so floats agree to float32 rounding: measured
        # 0 on the losses and at most 2 ulp (~2e-10 at |θ| ~ 1e-3) on Θ after a few Adam steps.
        # rtol 1e-5 allows ~80 ulp and still catches any mix-up of seeds or keys (those differ at
        # 1e-2 and more).
        assert a["accuracy"] == b["accuracy"] and a["skipped"] == b["skipped"]
        for k in ("meta_loss", "query_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), k
        for k in a["theta"]:
            assert a["theta"][k] == pytest.approx(b["theta"][k], rel=1e-5, abs=1e-9), k
        if "alignment" in a:
            np.testing.assert_allclose(a["alignment"], b["alignment"], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(a["orthonormality"], b["orthonormality"], rtol=1e-4)


def test_four_seeds_on_four_devices_equal_one_device(tmp_path):
    multi, single, placed = _run(tmp_path, seeds=4, episodes=2, analysis_every=0)
    assert placed["n_devices"] == 4
    assert placed["multi"] == {"state": 4, "metrics": 4, "by_seed": True}
    assert placed["single"]["state"] == 1
    _assert_same(multi, single)
    assert len({r["meta_loss"] for r in multi if r["episode"] == 0}) == 4  # the seeds differ


@pytest.mark.slow
def test_six_seeds_on_three_of_four_devices_with_analysis(tmp_path):
    multi, single, placed = _run(tmp_path, seeds=6, episodes=3, analysis_every=2)
    assert placed["multi"]["state"] == 3
    _assert_same(multi, single)
