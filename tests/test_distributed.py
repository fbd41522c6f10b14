"""README's multi-host recipe on one machine: two processes under JAX's distributed runtime (CPU,
coordinator on localhost), each training its own seeds into its own run directory, equal the
single-process runs of the same seeds; each host's checkpoints are its own and restore."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from plastic_jax import rundir
from plastic_jax.checkpoint import Checkpointer, state_digest
from plastic_jax.config import TrainConfig
from plastic_jax.meta import meta_init
from plastic_jax.train import meta_train

CHILD = os.path.join(os.path.dirname(__file__), "_distributed_run.py")
# the small program of test_checkpoint.py, two seeds per process
CONFIG = {"rule": "bio", "hidden": [8], "M": 2, "K": 3, "Q": 1, "episodes": 3, "seeds": 2, "analysis_every": 2,
          "checkpoint_every": 2}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_the_single_process_runs_of_their_seeds(tmp_path):
    root = str(tmp_path / "dist")
    os.makedirs(root)
    port = _free_port()
    cache = jax.config.jax_compilation_cache_dir or ""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    procs = [subprocess.Popen([sys.executable, CHILD, str(port), "2", str(i), root, json.dumps(CONFIG)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    target = jax.tree.map(lambda x: np.stack([x, x]), meta_init(np.zeros(3, np.float32), optax.adam(1e-3)))
    for pid in range(2):
        seen = json.load(open(os.path.join(root, f"host{pid}.json")))
        assert seen == {"process_index": pid, "process_count": 2, "local_devices": 1, "devices": 2}
        host = os.path.join(root, f"host{pid}")
        single = str(tmp_path / f"single{pid}")
        meta_train(TrainConfig.from_json({**CONFIG, "seed": 100 * pid, "out": single}), progress=False)
        assert sorted({r["seed"] for r in rundir.read_records(host)}) == [100 * pid, 100 * pid + 1]
        for name in (rundir.METRICS, rundir.SUMMARY):
            with open(os.path.join(host, name)) as a, open(os.path.join(single, name)) as b:
                assert a.read() == b.read(), name
        # the host's own checkpoints (orbax would write process 1's from process 0 only)
        got = [Checkpointer(os.path.join(d, rundir.CHECKPOINTS)).restore_latest(target) for d in (host, single)]
        assert got[0].episode == got[1].episode == 3
        assert state_digest(got[0].state) == state_digest(got[1].state)
