"""What every gradient-trained network carries, the ways a target follows it, and the off-policy update schedule.

`Trained` bundles one network's parameters, its optimizer state and its target
copy (None for networks without one); agents keep one per network (critic,
actor, encoder, ...). The optimizer itself is rebuilt from the config where it
is used: it holds no state.

`scheduled_updates` runs the updates an off-policy agent owes after its
`step`-th environment step, for any update-to-data ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from typing import Callable

from flax import struct


@struct.dataclass
class Trained:
    """Parameters of one network with its optimizer state and its target copy."""

    params: dict
    target_params: dict
    opt_state: optax.OptState


def trained(params: dict, optimizer: optax.GradientTransformation, target: bool = True) -> Trained:
    """Fresh optimizer state; the target is a copy, not an alias, so the loops may donate the state's buffers."""
    target_params = jax.tree.map(jnp.copy, params) if target else None
    return Trained(params=params, target_params=target_params, opt_state=optimizer.init(params))


def apply_gradients(network: Trained, grads, optimizer: optax.GradientTransformation) -> Trained:
    """One optimizer step on `network.params`; the target is left alone."""
    updates, opt_state = optimizer.update(grads, network.opt_state, network.params)
    return network.replace(params=optax.apply_updates(network.params, updates), opt_state=opt_state)


def polyak(network: Trained, tau: float | jax.Array) -> Trained:
    """Soft target update: target <- tau * params + (1 - tau) * target."""
    target = jax.tree.map(lambda p, t: tau * p + (1.0 - tau) * t, network.params, network.target_params)
    return network.replace(target_params=target)


def hard_copy(network: Trained) -> Trained:
    """Hard target update: target <- params."""
    return network.replace(target_params=network.params)


def updates_before(step: jax.Array, learning_starts: int, updates_per_step: float) -> jax.Array:
    """Updates owed once `step` env steps are stored: floor((step - learning_starts) * ratio), at least 0."""
    return jnp.floor(jnp.maximum(step - learning_starts, 0) * updates_per_step).astype(jnp.int32)


def scheduled_updates(update_once: Callable, state, key: jax.Array, step: jax.Array, learning_starts: int,
                      updates_per_step: float):
    """Run the updates due after the `step`-th stored transition (`step` counts from 1).

    The first update follows step `learning_starts + 1` (CleanRL's `global_step >
    learning_starts`); from then on the update-to-data ratio `updates_per_step`
    holds on average: 2 means two updates per step, 0.5 one update every other
    step. `update_once(state, key, index) -> (state, metrics)` receives the
    global update index; `step` must be the same for every seed (passed
    unbatched), so the loop count and any schedule on `index` (e.g. a delayed
    actor) are real branches under `vmap`, not selects. Metrics are those of
    the last update, zeros when none ran.
    """
    first = updates_before(step - 1, learning_starts, updates_per_step)
    count = updates_before(step, learning_starts, updates_per_step) - first
    metric_shapes = jax.eval_shape(update_once, state, key, first)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

    def body(i, carry):
        state, _ = carry
        return update_once(state, jax.random.fold_in(key, i), first + i)

    return jax.lax.fori_loop(0, count, body, (state, zeros))
