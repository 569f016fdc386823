"""What every gradient-trained network carries, and the ways a target follows it.

`Trained` bundles one network's parameters, its optimizer state and its target
copy (None for networks without one); agents keep one per network (critic,
actor, encoder, ...). The optimizer itself is rebuilt from the config where it
is used: it holds no state.

(The off-policy update-to-data schedule is agents/critic.py's `scheduled_updates`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

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
