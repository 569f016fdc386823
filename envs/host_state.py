"""The checkpoint format of a host env's state (``HostVecEnv.get_state`` / ``set_state``).

A pickle of a small versioned dict: the ``EnvSpec`` and number of instances it
came from (checked on restore), whether ``reset`` is still due, and each
instance's ``get_state`` dict with its type name. Loading refuses every global
but numpy's array, dtype and scalar reconstructors, so a blob can never run
other code; the dicts inside are builtins and numpy arrays only.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any, Sequence

import numpy as np

VERSION = 1
CORRUPT = "host env state is corrupt or from another env"

# The only globals a host env state may reference: what pickling numpy arrays,
# dtypes and scalars needs (numpy 2 and numpy 1 spellings). Everything else in
# a state is builtins, so loading a blob can never run other code.
_STATE_GLOBALS = frozenset(
    (module, name)
    for core in ("numpy._core", "numpy.core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}
_KEYS = {"version", "spec", "num_envs", "needs_reset", "instances"}


def array_fields(struct: Any) -> dict[str, np.ndarray]:
    """Every public numpy-array attribute of ``struct`` (e.g. an ``MjModel``), as live views.

    MuJoCo's bindings expose each model/data field as such an attribute, so
    this lists them without hard-coding names that change between versions.
    """
    arrays = {}
    for name in dir(struct):
        if not name.startswith("_"):
            value = getattr(struct, name)
            if isinstance(value, np.ndarray):
                arrays[name] = value
    return arrays


class _StateUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside ``_STATE_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _STATE_GLOBALS:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a host env state never contains"
            )
        return super().find_class(module, name)


def dumps(spec: Any, needs_reset: bool, instances: Sequence[tuple[str, dict]]) -> bytes:
    """The blob of an env with ``spec`` (an ``EnvSpec``) whose instances are ``[(type name, state dict)]``."""
    state = {
        "version": VERSION,
        "spec": dataclasses.asdict(spec),
        "num_envs": len(instances),
        "needs_reset": needs_reset,
        "instances": list(instances),
    }
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    # Fail now, not at resume time, if an instance put in something that loads would refuse.
    loads(blob)
    return blob


def loads(blob: bytes) -> dict[str, Any]:
    """Unpickle a ``dumps`` blob and check its outer format; ``ValueError`` names what is wrong."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"{CORRUPT}: expected bytes, got {type(blob).__name__}.")
    try:
        state = _StateUnpickler(io.BytesIO(blob)).load()
    except Exception as error:  # garbage bytes fail in many ways; all mean the same
        raise ValueError(f"{CORRUPT}: cannot unpickle it ({error}).") from error
    if not isinstance(state, dict) or set(state) != _KEYS:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{CORRUPT}: expected a dict with keys {sorted(_KEYS)}, got {found}.")
    if state["version"] != VERSION:
        raise ValueError(f"{CORRUPT}: format version {state['version']!r}, this code reads {VERSION}.")
    return state


def check_compatible(state: dict[str, Any], spec: Any, instance_types: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``state`` (from ``loads``) was saved by an env with ``spec`` whose
    instances have the type names ``instance_types``."""
    here = dataclasses.asdict(spec)
    saved = state["spec"]
    if saved != here:
        if not isinstance(saved, dict):
            raise ValueError(f"{CORRUPT}: its spec is a {type(saved).__name__}, not a dict.")
        differences = ", ".join(
            f"{key} {saved.get(key)!r} != {here.get(key)!r}"
            for key in sorted(set(saved) | set(here))
            if saved.get(key) != here.get(key)
        )
        raise ValueError(
            f"{CORRUPT}: saved from {saved.get('env_id')!r}, this env is "
            f"{spec.env_id!r} (saved vs this: {differences})."
        )
    num_envs = len(instance_types)
    if state["num_envs"] != num_envs:
        raise ValueError(
            f"{CORRUPT}: saved with num_envs={state['num_envs']!r}, "
            f"this {spec.env_id!r} env has num_envs={num_envs}."
        )
    instances = state["instances"]
    if not isinstance(instances, list) or len(instances) != num_envs:
        raise ValueError(f"{CORRUPT}: expected a list of {num_envs} instance states.")
    for i, (kind, entry) in enumerate(zip(instance_types, instances)):
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], dict)):
            raise ValueError(f"{CORRUPT}: instance {i} is not a (type, state dict) pair.")
        if entry[0] != kind:
            raise ValueError(f"{CORRUPT}: instance {i} was a {entry[0]!r}, here it is a {kind!r}.")
