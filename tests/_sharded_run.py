"""Child of test_sharding.py: meta-train the same config on N devices and on one device.

``python _sharded_run.py OUT_DIR SEEDS EPISODES ANALYSIS_EVERY`` with
XLA_FLAGS=--xla_force_host_platform_device_count=4 set in the environment (it must be set before
jax is imported, hence a separate process). Writes OUT_DIR/{multi,single}/ and
OUT_DIR/placement.json (the devices the meta-step's state and metrics lived on).
"""

import json
import os
import sys

import jax
from jax.sharding import PartitionSpec

import plastic_jax.train as train
from plastic_jax.config import TrainConfig

out, seeds, episodes, analysis_every = sys.argv[1], *map(int, sys.argv[2:5])
placement = {}
_make_step = train.make_step


def make_step(*args, **kwargs):
    optimizer, step = _make_step(*args, **kwargs)

    def recorded(*args):  # (state, keys, ci, l1): train.make_step's signature
        new, m = step(*args)
        placement.setdefault(run, {"state": len(new.theta.sharding.device_set),
                                   "metrics": len(m["accuracy"].sharding.device_set),
                                   "by_seed": new.theta.sharding.spec == PartitionSpec("seeds")})
        return new, m

    return optimizer, recorded


train.make_step = make_step
cfg = dict(hidden=(8,), M=2, K=3, Q=1, rule="bio", episodes=episodes, seeds=seeds, seed=11,
           analysis_every=analysis_every)
for run, devices in (("multi", None), ("single", 1)):
    train.meta_train(TrainConfig(**cfg, out=os.path.join(out, run)), progress=False, devices=devices)
with open(os.path.join(out, "placement.json"), "w") as f:
    json.dump({"n_devices": len(jax.devices()), **placement}, f)
