"""Child of test_distributed.py: one process of a JAX distributed run, as README's multi-host
section describes (each process trains its own seeds into its own run directory).

``python _distributed_run.py PORT N_PROCESSES PROCESS_ID OUT_ROOT CONFIG_JSON``: initialises the
distributed runtime with a coordinator on localhost:PORT, then meta-trains CONFIG_JSON (a
TrainConfig as JSON) with ``seed = 100 * process_id`` into ``OUT_ROOT/host<process_id>``, and
writes ``OUT_ROOT/host<process_id>.json`` with what the process saw of the runtime.
"""

import json
import os
import sys

import jax

port, n_processes, process_id = map(int, sys.argv[1:4])
out_root, config = sys.argv[4], json.loads(sys.argv[5])
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=n_processes,
                           process_id=process_id)

from plastic_jax.config import TrainConfig  # noqa: E402
from plastic_jax.train import meta_train  # noqa: E402

pid = jax.process_index()
cfg = TrainConfig.from_json({**config, "seed": 100 * pid, "out": os.path.join(out_root, f"host{pid}")})
meta_train(cfg, progress=False)
with open(os.path.join(out_root, f"host{pid}.json"), "w") as f:
    json.dump({"process_index": pid, "process_count": jax.process_count(),
               "local_devices": len(jax.local_devices()), "devices": len(jax.devices())}, f)
jax.distributed.shutdown()
