"""Stateless per-lane random keys, shared by every loop.

Keys are fold_in(fold_in(seed_key, step), tag): a resumed run draws exactly
the keys an uninterrupted one would, and each purpose (tag) has its own stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

INIT, ACT, UPDATE, ENV_RESET, EVAL, DIAGNOSE = range(6)   # fold_in tags: one independent key stream per purpose

SEED_AXIS = "seeds"   # the name of the vmapped seed axis (lets envs reduce "any env done" over seeds)


def step_key(seed_key: jax.Array, step, tag: int) -> jax.Array:
    """The key of one seed for step `step` (env step or update) and purpose `tag`."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, step), tag)


def step_keys(keys: jax.Array, step, tag: int) -> jax.Array:
    """`step_key` for every seed: [num_seeds] keys."""
    return jax.vmap(step_key, in_axes=(0, None, None))(keys, step, tag)


def env_keys(key: jax.Array, num_envs: int) -> jax.Array:
    """[num_envs] keys for a seed's envs from the seed's `key`: env 0 takes `key` itself, so that one env per
    seed resets exactly as it always did; env e > 0 takes fold_in(key, e)."""
    others = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(1, num_envs))
    return jnp.concatenate([key[None], others])
