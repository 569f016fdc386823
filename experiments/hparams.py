"""Traced hyperparameters: sweep an agent's flags inside ONE compiled program, without touching the agent.

An agent reads its hyperparameters from its frozen `Config` (a static field of
its state). To vmap over a hyperparameter, its value must be a traced array
while the agent's functions are traced, yet the config must stay hashable and
concrete for `jit`. `swept(config)` returns the same config in a subclass
whose attribute reads return the TRACED value of a field while an
`overriding({...})` context is active (during tracing of the wrapped call),
and the stored concrete value otherwise; hashing and equality use the stored
values. Agents rebuild their optax optimizers from the config inside every
update (`optax.adam(config.learning_rate)`), so learning rates, coefficients
and discounts become traced the same way, with no change to agent code.

`SweptAgent(agent)` wraps an agent module: its state carries the lane's values
(`SweepState(inner, hparams)`), and every function call on it runs inside
`overriding(state.hparams)`. The loops vmap over lanes (points x seeds)
exactly as over seeds.

A field that the agent uses in Python control flow or in shapes (widths,
batch sizes, number of envs, an int loop count) cannot be traced: tracing
fails with a concretization error, which `traceable_fields` turns into the
verdict "static" -- such fields are swept by one program per value.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

_OVERRIDES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hparam_overrides", default=None)
_CLASSES: dict[type, type] = {}


@contextlib.contextmanager
def overriding(values: dict):
    """While active, swept configs return `values[name]` for the fields it names."""
    token = _OVERRIDES.set(dict(values))
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def _swept_class(cls: type) -> type:
    if cls in _CLASSES:
        return _CLASSES[cls]

    def __getattribute__(self, name):
        overrides = _OVERRIDES.get()
        if overrides is not None and name in overrides:
            return overrides[name]
        return object.__getattribute__(self, name)

    def _stored(self) -> tuple:
        return tuple(sorted(object.__getattribute__(self, "__dict__").items()))

    def __hash__(self):
        return hash((cls, _stored(self)))

    def __eq__(self, other):
        return type(self) is type(other) and _stored(self) == _stored(other)

    sub = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__, "__hash__": __hash__,
                                       "__eq__": __eq__, "__module__": cls.__module__})
    _CLASSES[cls] = sub
    return sub


def swept(config: Any) -> Any:
    """`config` (a frozen dataclass) whose fields can be overridden by traced values during tracing."""
    base = type(config)
    cls = base if base in _CLASSES.values() else _swept_class(base)
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


class SweepState(struct.PyTreeNode):
    inner: Any                 # the agent's own state
    hparams: dict              # this lane's swept values (float32 scalars)


def _wrap_outputs(out, inner_type, hparams):
    if isinstance(out, inner_type):
        return SweepState(out, hparams)
    if isinstance(out, tuple) and not hasattr(out, "_fields"):
        return tuple(_wrap_outputs(o, inner_type, hparams) for o in out)
    return out


class SweptAgent:
    """An agent module whose state carries swept hyperparameters; every call runs under `overriding`."""

    STATEFUL = ("act", "store", "update", "train_step", "collect", "diagnostics", "early_stop")

    def __init__(self, agent):
        self.agent = agent
        self.__name__ = agent.__name__

    def __getattr__(self, name):
        attr = getattr(self.agent, name)
        if name not in self.STATEFUL:
            return attr

        def call(state, *args, **kwargs):
            with overriding(state.hparams):
                out = attr(state.inner, *args, **kwargs)
            return _wrap_outputs(out, type(state.inner), state.hparams)

        return call

    def init(self, key, spec, config, *args, hparams: dict):
        with overriding(hparams):
            inner = self.agent.init(key, spec, config, *args)
        return SweepState(inner, hparams)


def traceable_fields(agent, config, names: list[str], check) -> dict[str, bool]:
    """For each name: can it be traced? `check(agent, config, hparams)` traces a representative piece of
    training (e.g. `jax.eval_shape` of init + one step) with `hparams` as traced scalars; a concretization
    or type error means the field is used as a Python value (static)."""
    verdict = {}
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            verdict[name] = False
            continue
        try:
            check(SweptAgent(agent), swept(config), {name: jnp.float32(value)})
            verdict[name] = True
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                jax.errors.TracerIntegerConversionError, TypeError):
            verdict[name] = False
    return verdict


def for_lanes(agent, config, lane_hparams: dict | None):
    """(agent, config) as a loop should use them: wrapped for sweeps when `lane_hparams` ({name: [lanes]}) is
    given, unchanged otherwise."""
    if not lane_hparams:
        return agent, config, None
    values = {name: jnp.asarray(v, jnp.float32) for name, v in lane_hparams.items()}
    return SweptAgent(agent), swept(config), values


def init_lanes(init_one, keys: jax.Array, lane_hparams: dict | None):
    """vmap `init_one(key, **kw)` over lanes, passing each lane's `hparams` when sweeping."""
    if lane_hparams is None:
        return jax.vmap(lambda k: init_one(k))(keys)
    return jax.vmap(lambda k, h: init_one(k, hparams=h))(keys, lane_hparams)


def lane_keys(lane_seeds) -> jax.Array:
    """The root key of each lane: PRNGKey(seed of the lane), as `seeding.seed_keys` gives a run of that seed."""
    return jax.vmap(jax.random.PRNGKey)(jnp.asarray(lane_seeds))
