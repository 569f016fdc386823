"""A replay buffer of several streams: one `ReplayBuffer` per env of a seed, stacked on a leading axis.

An agent that steps N envs per seed (SAC, TD3 and MR.Q with `--num-envs N`; a multitask env's T tasks,
envs/multitask.py) stores N transitions per loop step. Each env's episodes must stay apart (a subsequence never
runs from one env's episode into another's), so every env writes its own stream: a `ReplayBuffer` of `capacity`
slots with the layout and subsequence rules of replay/buffer.py. The streams are one pytree (every leaf gains a
leading [N] axis), so all of it stays under `jit` and `vmap` over seeds. One env per seed is one stream, and
draws exactly the starts a lone `ReplayBuffer` with the same contents would.

Stream s holds env s of the seed; in a multitask env, env slot e of task t is stream e * T + t, so the task
of stream s is s % T (`task_of`).

Sampling draws (stream, start) pairs:

* uniform: every valid start of every stream equally likely (tasks weighted by how much data they hold,
  which is equal when every task's env steps in lockstep);
* stratified: the batch split evenly over the streams (sample b comes from stream b % N), uniform inside each;
* prioritized: proportional to LAP priority over all streams.

Each stream keeps its own sum tree (replay/sumtree.py): a draw picks a stream from the N stream totals,
then descends that stream's tree, O(N + log capacity) per sample instead of a cumulative sum over all
N x capacity slots. Whether priorities count is fixed when the streams are made (`prioritized`).

Memory: per stream and per slot (obs_dim + action_dim + 6) * 4 bytes (replay/buffer.py). On `dmc:mt4`
(padded obs 9 + one-hot 4 = 13, actions 2): 84 bytes per slot, so 1e5 transitions per task take 8 MB per task
per seed, and the follow-up's 1e6 per task take 80 MB per task per seed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from replay import sumtree
from replay.buffer import (ReplayBuffer, Subsequence, Transition, TransitionBatch, add as add_one,
                           capacity_for as capacity_for_one, create as create_one, sampling_weight, subsequence)

SAMPLING = ("uniform", "stratified", "prioritized")


def create(num_streams: int, capacity: int, obs_dim: int, action_dim: int, horizon: int,
           initial_priority: float = 1.0, prioritized: bool = False) -> ReplayBuffer:
    """`num_streams` empty streams of `capacity` slots each (sampled by priority when `prioritized`)."""
    one = create_one(capacity, obs_dim, action_dim, horizon, initial_priority, prioritized)
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (num_streams,) + leaf.shape), one)


def capacity_for(transitions: int, num_streams: int, max_episode_steps: int) -> int:
    """Slots per stream so that `num_streams` streams together hold `transitions` transitions (each stream an
    equal share, plus its episodes' final observations: replay/buffer.py `capacity_for`)."""
    per_stream = math.ceil(transitions / num_streams)
    return capacity_for_one(per_stream, per_stream, max_episode_steps)


def num_streams(buffer: ReplayBuffer) -> int:
    return buffer.obs.shape[0]


def stream(buffer: ReplayBuffer, index: int) -> ReplayBuffer:
    """Stream `index` alone, as a plain `ReplayBuffer` (to read one env's data with replay/buffer.py)."""
    return jax.tree.map(lambda leaf: leaf[index], buffer)


def add(buffer: ReplayBuffer, obs, action, reward, next_obs, terminated, truncated) -> ReplayBuffer:
    """Store one transition per stream (every argument has a leading [N] axis)."""
    return jax.vmap(add_one)(buffer, obs, action, reward, next_obs, terminated, truncated)


def add_transition(buffer: ReplayBuffer, transition: Transition) -> ReplayBuffer:
    """Store one loop step of a seed's envs: `transition` has a leading [N] axis, row e going to stream e; a
    transition of one env (a scalar reward, as the loops hand over one env per seed) goes to the only stream."""
    if jnp.ndim(transition.reward) == 0:
        transition = jax.tree.map(lambda x: jnp.asarray(x)[None], transition)
    return add(buffer, *transition)


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int,
           sampling: str = "uniform") -> tuple[jax.Array, jax.Array]:
    """(stream [B], start slot [B]) of `batch_size` windows, drawn as the module docstring says."""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
    if (sampling == "prioritized") != buffer.prioritized:
        raise ValueError(f"sampling {sampling!r} from streams made with prioritized={buffer.prioritized}")
    totals = sumtree.total(buffer.tree)                                       # [N]
    before = jnp.cumsum(totals) - totals
    u = jax.random.uniform(key, (batch_size,))
    # One mass in [0, every stream's total): the stream it falls in, then the mass left inside that stream.
    mass = u * jnp.sum(totals)
    stream = jnp.clip(jnp.searchsorted(before + totals, mass, side="right"), 0, totals.shape[0] - 1)
    inside = mass - before[stream]
    if sampling == "stratified":
        # Sample b draws inside stream b % N, uniformly, unless that stream holds no valid start yet.
        own = jnp.arange(batch_size) % totals.shape[0]
        has_data = totals[own] > 0
        stream, inside = jnp.where(has_data, own, stream), jnp.where(has_data, u * totals[own], inside)
    stream = stream.astype(jnp.int32)
    start = sumtree.find(buffer.tree, lambda i: sampling_weight(buffer, i, stream), inside, stream)
    return stream, start


def window(buffer: ReplayBuffer, stream: jax.Array, start: jax.Array, length: int) -> Subsequence:
    """The `length`-step subsequences at (stream, start) (replay/buffer.py's `subsequence`)."""
    return subsequence(buffer, start, length, stream)


def transitions(buffer: ReplayBuffer, stream: jax.Array, index: jax.Array) -> TransitionBatch:
    """The one-step transitions at (stream, index) [B]: the next observation is the stream's next slot."""
    after = (index + 1) % buffer.capacity
    return TransitionBatch(buffer.obs[stream, index], buffer.action[stream, index], buffer.reward[stream, index],
                           buffer.obs[stream, after], buffer.terminated[stream, index])


def update_priority(buffer: ReplayBuffer, stream: jax.Array, index: jax.Array, priority: jax.Array) -> ReplayBuffer:
    """Set the LAP priorities of sampled (stream, index) pairs of prioritized streams. New transitions of every
    stream get the largest priority seen in any stream, as in one buffer."""
    if not buffer.prioritized:
        raise ValueError("update_priority on streams made with prioritized=False (their sampling ignores "
                         "priorities)")
    buffer = buffer.replace(priority=buffer.priority.at[stream, index].set(priority),
                            max_priority=jnp.maximum(buffer.max_priority, jnp.max(priority)))
    # Only the trees above the changed slots are refreshed: O(B log capacity), not one pass per stream.
    tree = sumtree.refresh(buffer.tree, lambda i: sampling_weight(buffer, i, stream), index, stream)
    return buffer.replace(tree=tree)


def task_of(stream: jax.Array, num_tasks: int) -> jax.Array:
    """The task of each stream (env slot e of task t is stream e * T + t)."""
    return stream % num_tasks


def mean_abs_reward_per_task(buffer: ReplayBuffer, num_tasks: int, eps: float = 1e-8) -> jax.Array:
    """[T]: mean |r| over each task's stored transitions (MR.Q's reward scale, per task), at least `eps`."""
    stored = buffer.has_transition.reshape(-1, num_tasks, buffer.capacity)
    total = jnp.sum(jnp.abs(buffer.reward).reshape(stored.shape) * stored, axis=(0, 2))
    return jnp.maximum(total / jnp.maximum(jnp.sum(stored, axis=(0, 2)), 1.0), eps)
