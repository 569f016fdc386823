"""A flat ring of one-step transitions, for data an agent generates in batches (model rollouts).

Unlike replay/buffer.py (episodes stored contiguously, one observation per
slot), model rollouts arrive as a batch of independent short branches, so each
slot here holds a whole transition. `add` writes only the rows of a batch
whose `valid` flag is set (e.g. the steps of a rollout before it terminated),
packed at the insert position; the oldest slots are overwritten first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from replay.buffer import TransitionBatch


@struct.dataclass
class TransitionRing:
    data: TransitionBatch       # leaves [capacity, ...]
    insert_index: jax.Array     # int32: the next slot to write
    size: jax.Array             # int32: slots holding a transition

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[-1]


def create(capacity: int, obs_dim: int, action_dim: int) -> TransitionRing:
    zeros = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)
    return TransitionRing(TransitionBatch(zeros(obs_dim), zeros(action_dim), zeros(), zeros(obs_dim), zeros()),
                          jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def add(ring: TransitionRing, batch: TransitionBatch, valid: jax.Array) -> TransitionRing:
    """Append the rows of `batch` [B, ...] where `valid` [B] is set, in order."""
    capacity = ring.capacity
    valid = valid.astype(bool)
    offset = jnp.cumsum(valid) - 1
    slots = jnp.where(valid, (ring.insert_index + offset) % capacity, capacity)   # `capacity`: dropped
    count = jnp.sum(valid).astype(jnp.int32)
    data = jax.tree.map(lambda table, rows: table.at[slots].set(rows.astype(table.dtype), mode="drop"),
                        ring.data, batch)
    return TransitionRing(data, ((ring.insert_index + count) % capacity).astype(jnp.int32),
                          jnp.minimum(ring.size + count, capacity).astype(jnp.int32))


def sample(ring: TransitionRing, key: jax.Array, batch_size: int) -> TransitionBatch:
    """Uniform over the filled slots (the ring must hold at least one transition)."""
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(ring.size, 1))
    return jax.tree.map(lambda table: table[index], ring.data)
