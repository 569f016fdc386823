"""Stateless per-lane random keys, shared by every loop.

Keys are fold_in(fold_in(seed_key, step), tag): a resumed run draws exactly
the keys an uninterrupted one would, and each purpose (tag) has its own stream.
"""

from __future__ import annotations

import jax

INIT, ACT, UPDATE, ENV_RESET, EVAL, DIAGNOSE = range(6)   # fold_in tags: one independent key stream per purpose

SEED_AXIS = "seeds"   # the name of the vmapped seed axis (lets envs reduce "any env done" over seeds)


def step_key(seed_key: jax.Array, step, tag: int) -> jax.Array:
    """The key of one seed for step `step` (env step or update) and purpose `tag`."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, step), tag)


def step_keys(keys: jax.Array, step, tag: int) -> jax.Array:
    """`step_key` for every seed: [num_seeds] keys."""
    return jax.vmap(step_key, in_axes=(0, None, None))(keys, step, tag)
