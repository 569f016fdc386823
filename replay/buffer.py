"""A replay buffer that is a pytree: add, uniform / LAP sampling, subsequences.

Everything here is a pure function of a `ReplayBuffer` and works under `jit`
and `vmap` (one buffer per seed: `jax.vmap(create, ...)`, then vmap `add` and
the samplers). The buffer lives on the accelerator next to the networks.

Layout. Each observation is stored once. Slot i holds obs_i and the transition
that leaves it (action_i, reward_i, terminated_i). The next observation of a
transition is obs in slot i + 1; when an episode ends, its true final
observation goes into slot i + 1, which then holds no transition, and the next
episode starts in slot i + 2. This is MR.Q's layout: it halves the memory of
storing (obs, next_obs) pairs and makes subsequences contiguous slices.

Subsequences. `can_start[i]` is 1 when a window of `horizon` transitions may
start at slot i:
  * all `horizon` transitions lie in one episode, or
  * the episode TERMINATED inside the window; the steps after the terminal are
    then masked out (`Subsequence.mask`), so no loss ever mixes two episodes.
Windows that would run past a TRUNCATED episode end are never sampled (there is
no true continuation to learn from). Shorter windows (e.g. MR.Q's 3-step
returns inside its 5-step encoder windows) use the same starts.

Sampling. Starts are drawn with probability proportional to a weight per slot:
can_start (uniform over valid starts) or, in a `prioritized` buffer, can_start x
LAP priority. A sum tree over the weights (replay/sumtree.py) is refreshed at
the few slots each `add` or `update_priority` changes, so a draw costs
O(batch x log capacity) instead of a cumulative sum over the whole buffer.

Memory. Per slot: obs_dim + action_dim floats plus 5 scalars (reward,
terminated, has_transition, can_start, priority) and about one float of sum
tree, all float32: (obs_dim + action_dim + 6) * 4 bytes. At the default 1e6
slots that is e.g. 116 MB per seed on cheetah-run (17 + 6), 316 MB on humanoid
(67 + 21), so 10 seeds x 1e6 transitions on humanoid take about 3.2 GB of
device memory. `capacity_for` sizes a buffer to what a run can actually fill.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from replay import sumtree


class Transition(NamedTuple):
    """One environment step as the training loops hand it to an agent's `store` (one seed)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array    # the TRUE next observation, also at episode ends (not the reset obs)
    terminated: jax.Array
    truncated: jax.Array


@struct.dataclass
class ReplayBuffer:
    obs: jax.Array             # [C, obs_dim]
    action: jax.Array          # [C, action_dim]   action taken in slot i
    reward: jax.Array          # [C]
    terminated: jax.Array      # [C]  1.0 if the transition from slot i reached a terminal state
    has_transition: jax.Array  # [C]  1.0 if slot i holds a transition (not an episode's final obs)
    can_start: jax.Array       # [C]  1.0 if a `horizon`-window may start at slot i (see module doc)
    priority: jax.Array        # [C]  LAP priority
    insert_index: jax.Array    # int32 scalar, next slot to write
    episode_steps: jax.Array   # int32 scalar, transitions of the current episode stored so far
    max_priority: jax.Array    # float32 scalar, priority given to new transitions
    any_terminated: jax.Array  # bool scalar, a terminal transition has been stored
    tree: tuple                # sum tree of the sampling weights above the slots (replay/sumtree.py)
    horizon: int = struct.field(pytree_node=False, default=1)
    prioritized: bool = struct.field(pytree_node=False, default=False)  # weights include the LAP priority

    @property
    def capacity(self) -> int:
        return self.obs.shape[-2]


@struct.dataclass
class Subsequence:
    """`length` consecutive transitions from each sampled start (leading axis: batch)."""

    obs: jax.Array         # [B, length + 1, obs_dim]; obs[:, t + 1] is the next obs of step t
    action: jax.Array      # [B, length, action_dim]
    reward: jax.Array      # [B, length]
    terminated: jax.Array  # [B, length]
    mask: jax.Array        # [B, length]  1.0 while no terminal has occurred BEFORE step t


def capacity_for(total_steps: int, buffer_size: int, max_episode_steps: int) -> int:
    """Slots needed to hold `min(total_steps, buffer_size)` transitions plus one final obs per episode.

    Episodes that terminate early use more final-obs slots; the buffer then just
    wraps around sooner, as a full buffer would.
    """
    transitions = min(total_steps, buffer_size)
    return int(transitions + math.ceil(transitions / max(max_episode_steps, 1)) + 1)


def create(capacity: int, obs_dim: int, action_dim: int, horizon: int, initial_priority: float = 1.0,
           prioritized: bool = False) -> ReplayBuffer:
    """An empty buffer whose starts allow windows of up to `horizon` transitions, sampled uniformly or, when
    `prioritized`, in proportion to their LAP priority."""
    if capacity <= horizon + 1:
        raise ValueError(f"replay capacity {capacity} must exceed the subsequence horizon {horizon} + 1")
    zeros = jnp.zeros((capacity,), jnp.float32)
    return ReplayBuffer(
        obs=jnp.zeros((capacity, obs_dim), jnp.float32),
        action=jnp.zeros((capacity, action_dim), jnp.float32),
        reward=zeros, terminated=zeros, has_transition=zeros, can_start=zeros, priority=zeros,
        insert_index=jnp.zeros((), jnp.int32),
        episode_steps=jnp.zeros((), jnp.int32),
        max_priority=jnp.asarray(initial_priority, jnp.float32),
        any_terminated=jnp.zeros((), bool),
        tree=sumtree.create(capacity),
        horizon=horizon,
        prioritized=prioritized,
    )


def sampling_weight(buffer: ReplayBuffer, index: jax.Array, stream: jax.Array | None = None) -> jax.Array:
    """The weights of slots `index` in the sampling law (0 past the end): can_start, times the priority in a
    prioritized buffer. `stream`: as in `subsequence`, for stacked streams."""
    at = index if stream is None else (stream, index)
    weight = buffer.can_start.at[at].get(mode="fill", fill_value=0.0)
    if buffer.prioritized:
        weight = weight * buffer.priority.at[at].get(mode="fill", fill_value=0.0)
    return weight


def _refreshed(buffer: ReplayBuffer, index: jax.Array) -> ReplayBuffer:
    """`buffer` with its sum tree brought up to date after the slots `index` changed."""
    return buffer.replace(tree=sumtree.refresh(buffer.tree, lambda i: sampling_weight(buffer, i), index))


def add(buffer: ReplayBuffer, obs, action, reward, next_obs, terminated, truncated) -> ReplayBuffer:
    """Store one transition (one seed). `next_obs` is the TRUE next observation (not a reset obs)."""
    capacity, horizon = buffer.capacity, buffer.horizon
    i = buffer.insert_index
    after = (i + 1) % capacity
    terminated = jnp.asarray(terminated, bool)
    done = terminated | jnp.asarray(truncated, bool)
    episode_steps = buffer.episode_steps + 1

    # Writing next_obs into the following slot is right either way: if the episode
    # goes on, the next `add` writes the same obs there again with its transition.
    obs_table = buffer.obs.at[i].set(obs).at[after].set(next_obs)
    # Windows starting at the two overwritten slots held old data: close them.
    can_start = buffer.can_start.at[i].set(0.0).at[after].set(0.0)
    has_transition = buffer.has_transition.at[i].set(1.0).at[after].set(0.0)
    # The window of `horizon` transitions ending with this one is now complete
    # (its next obs is in slot `after`), if it lies inside the episode.
    full_start = (i - horizon + 1) % capacity
    can_start = can_start.at[full_start].set(jnp.where(episode_steps >= horizon, 1.0, can_start[full_start]))
    # At a terminal, the shorter windows that run into it open too (masked after it);
    # at a truncation they stay closed.
    k = jnp.arange(horizon - 1)                  # windows that start k steps before slot i
    starts = (i - k) % capacity
    opens = done & terminated & (k < episode_steps)
    can_start = can_start.at[starts].set(jnp.where(opens, 1.0, can_start[starts]))

    buffer = buffer.replace(
        obs=obs_table,
        action=buffer.action.at[i].set(action),
        reward=buffer.reward.at[i].set(reward),
        terminated=buffer.terminated.at[i].set(terminated.astype(jnp.float32)),
        has_transition=has_transition,
        can_start=can_start,
        priority=buffer.priority.at[i].set(buffer.max_priority),
        insert_index=((i + 1 + done.astype(jnp.int32)) % capacity).astype(jnp.int32),
        episode_steps=jnp.where(done, 0, episode_steps).astype(jnp.int32),
        any_terminated=buffer.any_terminated | terminated,
    )
    # The slots whose can_start or priority this add may have changed.
    return _refreshed(buffer, jnp.concatenate([jnp.stack([i, after, full_start]), starts]))


def sample_indices(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> jax.Array:
    """Start slots drawn with probability proportional to the buffer's sampling weight: uniformly among valid
    starts, or by LAP priority in a prioritized buffer.

    Inverse-CDF sampling down the sum tree: O(batch x log capacity). Never returns a slot with zero weight
    (unless the buffer holds no valid start at all).
    """
    u = jax.random.uniform(key, (batch_size,)) * sumtree.total(buffer.tree)
    return sumtree.find(buffer.tree, lambda i: sampling_weight(buffer, i), u)


def subsequence(buffer: ReplayBuffer, start: jax.Array, length: int, stream: jax.Array | None = None) -> Subsequence:
    """The `length` transitions following each start slot, with a mask that stops at a terminal.

    `stream` [B]: for a buffer of several streams (replay/streams.py, a leading stream axis), the stream of
    each start."""
    if length > buffer.horizon:
        raise ValueError(f"subsequence length {length} exceeds the buffer's horizon {buffer.horizon}")
    steps = (start[:, None] + jnp.arange(length + 1)) % buffer.capacity
    at = steps if stream is None else (stream[:, None], steps)
    before_last = steps[:, :-1] if stream is None else (stream[:, None], steps[:, :-1])
    terminated = buffer.terminated[before_last]
    alive_before = jnp.cumprod(1.0 - terminated, axis=1)
    mask = jnp.concatenate([jnp.ones_like(alive_before[:, :1]), alive_before[:, :-1]], axis=1)
    return Subsequence(
        obs=buffer.obs[at],
        action=buffer.action[before_last],
        reward=buffer.reward[before_last],
        terminated=terminated,
        mask=mask,
    )


def update_priority(buffer: ReplayBuffer, index: jax.Array, priority: jax.Array) -> ReplayBuffer:
    """Set the priorities of sampled slots of a prioritized buffer; new transitions get the largest priority
    seen."""
    if not buffer.prioritized:
        raise ValueError("update_priority on a buffer made with prioritized=False (its sampling ignores priorities)")
    buffer = buffer.replace(
        priority=buffer.priority.at[index].set(priority),
        max_priority=jnp.maximum(buffer.max_priority, jnp.max(priority)),
    )
    return _refreshed(buffer, index)


def mean_abs_reward(buffer: ReplayBuffer, eps: float = 1e-8) -> jax.Array:
    """Mean |r| over stored transitions (MR.Q's reward scale), at least `eps`."""
    total = jnp.sum(jnp.abs(buffer.reward) * buffer.has_transition)
    return jnp.maximum(total / jnp.maximum(jnp.sum(buffer.has_transition), 1.0), eps)


class TransitionBatch(NamedTuple):
    """One-step transitions sampled from a buffer (leading axis: batch)."""

    obs: jax.Array         # [B, obs_dim]
    action: jax.Array      # [B, action_dim]
    reward: jax.Array      # [B]
    next_obs: jax.Array    # [B, obs_dim]: the true next observation, also at episode ends
    terminated: jax.Array  # [B]  1.0 if next_obs is terminal (no bootstrap); truncation stays 0


def sample_transitions(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> tuple[TransitionBatch, jax.Array]:
    """`batch_size` one-step transitions (uniform, or by priority in a prioritized buffer) and their slots."""
    index = sample_indices(buffer, key, batch_size)
    after = (index + 1) % buffer.capacity
    batch = TransitionBatch(buffer.obs[index], buffer.action[index], buffer.reward[index], buffer.obs[after],
                            buffer.terminated[index])
    return batch, index
