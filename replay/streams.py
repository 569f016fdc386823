"""A replay buffer of several streams: one `ReplayBuffer` per env of a seed, stacked on a leading axis.

An agent that steps N envs per seed (a multitask env's T tasks, envs/multitask.py) stores N transitions per
step. Each env's episodes must stay apart (a subsequence never runs from one env's episode into another's), so
every env writes its own stream: a `ReplayBuffer` of `capacity` slots with the layout and subsequence rules of
replay/buffer.py. The streams are one pytree (every leaf gains a leading [N] axis), so all of it stays under
`jit` and `vmap` over seeds.

Stream s holds env s of the seed; in a multitask env, env slot e of task t is stream e * T + t, so the task
of stream s is s % T (`task_of`).

Sampling draws (stream, start) pairs:

* uniform: every valid start of every stream equally likely (tasks weighted by how much data they hold,
  which is equal when every task's env steps in lockstep);
* stratified: the batch split evenly over the streams (sample b comes from stream b % N), uniform inside each;
* prioritized: proportional to LAP priority over all streams.

All three draw from one cumulative sum over the N x capacity weights, then one search per sample.

Memory: per stream and per slot (obs_dim + action_dim + 5) * 4 bytes (replay/buffer.py). On `dmc:mt4`
(padded obs 9 + one-hot 4 = 13, actions 2): 80 bytes per slot, so 1e5 transitions per task take 8 MB per task
per seed, and the follow-up's 1e6 per task take 80 MB per task per seed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from replay.buffer import ReplayBuffer, Subsequence, add as add_one, create as create_one, subsequence

SAMPLING = ("uniform", "stratified", "prioritized")


def create(num_streams: int, capacity: int, obs_dim: int, action_dim: int, horizon: int,
           initial_priority: float = 1.0) -> ReplayBuffer:
    """`num_streams` empty streams of `capacity` slots each."""
    one = create_one(capacity, obs_dim, action_dim, horizon, initial_priority)
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (num_streams,) + leaf.shape), one)


def num_streams(buffer: ReplayBuffer) -> int:
    return buffer.obs.shape[0]


def add(buffer: ReplayBuffer, obs, action, reward, next_obs, terminated, truncated) -> ReplayBuffer:
    """Store one transition per stream (every argument has a leading [N] axis)."""
    return jax.vmap(add_one)(buffer, obs, action, reward, next_obs, terminated, truncated)


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int,
           sampling: str = "uniform") -> tuple[jax.Array, jax.Array]:
    """(stream [B], start slot [B]) of `batch_size` windows, drawn as the module docstring says."""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
    n, capacity = buffer.can_start.shape
    weights = buffer.can_start * buffer.priority if sampling == "prioritized" else buffer.can_start
    cumulative = jnp.cumsum(weights.reshape(-1))
    u = jax.random.uniform(key, (batch_size,))
    if sampling == "stratified":
        # Sample b searches inside stream b % N: between the cumulative totals before and after that stream.
        totals = jnp.sum(weights, axis=1)
        before = jnp.cumsum(totals) - totals
        stream = jnp.arange(batch_size) % n
        target = before[stream] + u * totals[stream]
    else:
        target = u * cumulative[-1]
    index = jnp.minimum(jnp.searchsorted(cumulative, target, side="right"), n * capacity - 1)
    return (index // capacity).astype(jnp.int32), (index % capacity).astype(jnp.int32)


def window(buffer: ReplayBuffer, stream: jax.Array, start: jax.Array, length: int) -> Subsequence:
    """The `length`-step subsequences at (stream, start) (replay/buffer.py's `subsequence`)."""
    return subsequence(buffer, start, length, stream)


def task_of(stream: jax.Array, num_tasks: int) -> jax.Array:
    """The task of each stream (env slot e of task t is stream e * T + t)."""
    return stream % num_tasks


def mean_abs_reward_per_task(buffer: ReplayBuffer, num_tasks: int, eps: float = 1e-8) -> jax.Array:
    """[T]: mean |r| over each task's stored transitions (MR.Q's reward scale, per task), at least `eps`."""
    stored = buffer.has_transition.reshape(-1, num_tasks, buffer.capacity)
    total = jnp.sum(jnp.abs(buffer.reward).reshape(stored.shape) * stored, axis=(0, 2))
    return jnp.maximum(total / jnp.maximum(jnp.sum(stored, axis=(0, 2)), 1.0), eps)
