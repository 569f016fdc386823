"""Will a run fit? One estimate per loop, checked before anything is written.

Each loop reports `memory_estimate() -> {part: bytes}` from shapes alone (`jax.eval_shape` of what it
would allocate: agent states with their replay buffers, env states, one update's rollout) and
`memory_advice(available) -> str` (what to change so that it fits). `check(loop)` compares the total
with the memory of the devices the loop runs on -- the device's `bytes_limit`, or the host's physical
memory on a CPU -- and refuses a run that needs more than 90% of it. The same message ends a run whose
allocation fails anyway (`is_out_of_memory`: XLA says RESOURCE_EXHAUSTED on accelerators and
"Out of memory" on the CPU). Activations and compiler scratch are not counted: the check catches the
runs that cannot fit, not every run that will not.
"""

from __future__ import annotations

import os

import jax
import numpy as np

FRACTION = 0.9      # of the available memory a run may plan to use


class OutOfMemory(ValueError):
    """A run that cannot fit: the message names what it needs, what there is, and what would fit."""


def tree_bytes(tree) -> int:
    """Bytes of a pytree of arrays or ShapeDtypeStructs."""
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def available(devices=None) -> tuple[float, str]:
    """(bytes, where): the summed `bytes_limit` of the devices (a loop's `devices`: every device its lanes or
    envs are spread over, on every host), or the host's physical memory on a CPU."""
    devices = list(devices if devices is not None else jax.local_devices())
    # Only a device of this process reports its memory; the devices of a run are all of one kind.
    probe = next((d for d in devices if d.process_index == jax.process_index()), devices[0])
    stats = probe.memory_stats() if hasattr(probe, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"]) * len(devices), f"{len(devices)} x {devices[0].device_kind}"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host memory"


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def describe(loop) -> str:
    """What the run needs, what there is, and the loop's advice."""
    parts = loop.memory_estimate()
    limit, where = available(loop.devices)
    need = sum(parts.values())
    detail = ", ".join(f"{name} {gib(value)}" for name, value in parts.items())
    return (f"the run needs about {gib(need)} ({detail}; before activations) and {where} holds {gib(limit)}; "
            + loop.memory_advice(FRACTION * limit))


def check(loop) -> None:
    """Raise OutOfMemory if the loop's estimate exceeds FRACTION of the memory it runs on."""
    limit, _ = available(loop.devices)
    if sum(loop.memory_estimate().values()) > FRACTION * limit:
        raise OutOfMemory(f"out of memory: {describe(loop)}")


def is_out_of_memory(error: BaseException) -> bool:
    """An XLA allocation failure (GPU/TPU: RESOURCE_EXHAUSTED; CPU: "Out of memory")."""
    text = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and (
        "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower())


def largest_fitting(budget: float, per_unit: float, fixed: float = 0.0) -> int:
    """The largest count n with fixed + n * per_unit <= budget (0 if none)."""
    return max(0, int((budget - fixed) // max(per_unit, 1.0)))
