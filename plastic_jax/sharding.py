"""Placing the seed axis of meta-training on the local devices (jax.sharding).

Seeds are independent, so the vmapped meta-step partitions along its leading (seed) axis with no
communication: a 1-D mesh ``("seeds",)`` over ``d`` devices, where ``d`` is the largest divisor of
the number of seeds that does not exceed the device count, and ``NamedSharding(mesh,
P("seeds"))`` for the state, the base keys and every metric. The class index is replicated.
Each device then runs the same per-seed program as a single-device run, on its own seeds.

The mesh spans the *local* devices (``jax.local_devices()``), so the driver can read every
result back with ``jax.device_get``. Several hosts: see README, "Runs that survive".
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def n_shards(n_seeds: int, n_devices: int) -> int:
    """The largest divisor of ``n_seeds`` that is at most ``n_devices``."""
    return max(d for d in range(1, min(n_seeds, n_devices) + 1) if n_seeds % d == 0)


def seed_shardings(n_seeds: int, devices: Sequence[jax.Device] | int | None = None):
    """``(seeds, replicated)`` NamedShardings over the devices used for ``n_seeds`` seeds.

    ``devices``: a list of devices, a count (the first ``n`` local devices) or None (all local).
    """
    if devices is None:
        devices = jax.local_devices()
    elif isinstance(devices, int):
        devices = jax.local_devices()[:devices]
    devices = list(devices)
    d = n_shards(n_seeds, len(devices))
    mesh = Mesh(np.array(devices[:d]), ("seeds",))
    return NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())
