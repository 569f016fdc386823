"""Where a loop's arrays live: one axis of its state sharded over a 1-D `jax.sharding.Mesh` of devices.

Every loop trains its lanes (lanes.py: seeds, or a sweep's (point, seed) pairs) with one `jit(vmap(...))`
program. The off-policy and offline loops shard the LANE axis -- axis 0 of every array of the agent states
(replay buffers included), env states, trackers and the lanes' keys -- with `NamedSharding(mesh, P("lanes"))`,
and replicate what every lane shares (an offline world, step numbers). XLA (GSPMD) partitions the unchanged
program from these shardings: each device steps, stores and updates its own lanes, and the one collective the
envs use over the lane axis ("did any env of any seed finish", keys.SEED_AXIS) becomes an all-reduce. Lanes
never mix, so a sharded run equals a one-device run (tests/test_sharding.py). The on-policy loop shards its
env axis over the same kind of mesh (`device_mesh`).

Devices: `jax.devices()` -- the local devices, or after `jax.distributed.initialize()` (run.py --distributed)
every device of every host, as in the on-policy loop. Lanes that the device count does not divide go to the
largest number of devices that divides them (6 seeds on 4 devices: 3 devices with 2 lanes each; 7 seeds: 1
device), and the loop says so in one line. Padding to a multiple instead would train lanes nobody asked for and
make a checkpoint's shapes depend on the machine. With several processes every process must hold lanes (each
runs the same program on its own devices), so there the device count must divide the lanes.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

LANE_AXIS = "lanes"   # the mesh axis the lanes are spread over


def all_devices(devices=None) -> list:
    """`devices`, or every device of the run: the local ones, or all hosts' after jax.distributed.initialize()."""
    return list(devices if devices is not None else jax.devices())


def device_mesh(devices, axis: str) -> Mesh:
    """A 1-D mesh named `axis` over `devices`."""
    return Mesh(np.array(devices), (axis,))


def lane_device_count(num_lanes: int, num_devices: int) -> int:
    """The number of devices `num_lanes` lanes are spread over: the largest count up to `num_devices` that
    divides them (every device then holds the same number of lanes)."""
    return max(d for d in range(1, min(num_lanes, num_devices) + 1) if num_lanes % d == 0)


class LanePlacement:
    """The lane axis (axis 0) of a loop's arrays over a 1-D mesh: `lanes` shards it, `replicated` copies an
    array to every device of the mesh; `devices` are the devices in use (what experiments/memory.py counts)."""

    def __init__(self, num_lanes: int, devices=None):
        from experiments.loops.on_policy import LoopError

        devices = all_devices(devices)
        count = lane_device_count(num_lanes, len(devices))
        if count < len(devices):
            if jax.process_count() > 1:
                raise LoopError(f"{num_lanes} lanes (seeds x sweep points) cannot be spread evenly over the "
                                f"{len(devices)} devices of {jax.process_count()} processes, and every process "
                                f"must hold lanes: use a multiple of {len(devices)} (e.g. --num-seeds "
                                f"{-(-num_lanes // len(devices)) * len(devices)})")
            lanes = f"{num_lanes} lane{'s' if num_lanes > 1 else ''}"
            print(f"devices: {lanes} on {count} of {len(devices)} devices ({num_lanes // count} each; "
                  f"the most devices that divide {num_lanes} -- a multiple of {len(devices)} lanes uses them all)",
                  file=sys.stderr, flush=True)
        self.devices = devices[:count]
        self.mesh = device_mesh(self.devices, LANE_AXIS)
        self.lanes = NamedSharding(self.mesh, P(LANE_AXIS))
        self.replicated = NamedSharding(self.mesh, P())

    def put(self, tree: Any) -> Any:
        """Every array of `tree` (host or device) with its axis 0 sharded over the lanes' devices."""
        return place(tree, self.lanes)

    def from_host(self, tree: Any) -> Any:
        """Host arrays (observations, transitions) for a program whose inputs are lane-sharded: as they are with
        one process -- jit places them on its fast path, where a device_put per step would cost more than the
        step's dispatch -- and as global arrays with several, where jit refuses sharded numpy inputs."""
        return tree if jax.process_count() == 1 else self.put(tree)

    def replicate(self, tree: Any) -> Any:
        """Every array of `tree` copied to each of the lanes' devices (an offline world every lane reads)."""
        return place(tree, self.replicated)


def place(tree: Any, sharding: NamedSharding) -> Any:
    """Every array of `tree` on `sharding` (a no-op for arrays already there). With several processes, every
    process holds the same whole host array and hands over the slices of its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:     # already global: reshard
            return jax.device_put(x, sharding)
        whole = np.asarray(x)
        return jax.make_array_from_callback(whole.shape, sharding, lambda index: whole[index])

    return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
    """numpy copies of every array of `tree`; an array spread over several processes' devices is gathered, so
    every process reads all lanes (metrics, returns, actions for host envs)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)
