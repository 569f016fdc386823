"""A sum tree over a replay buffer's sampling weights: O(log C) work per changed slot and per sample.

Inverse-CDF sampling from a cumulative sum costs O(C) per draw: at 5e5 slots that is ~10 ms on a CPU, paid
once per update. The tree keeps the partial sums instead. Its leaves are the C weights themselves, which the
tree does not store (a `leaf(index)` function reads them from the buffer, e.g. can_start * priority), so it
adds about one float per slot:

    levels[0][j]   = w[2j] + w[2j + 1]                      ceil(C / 2) nodes
    levels[k][j]   = levels[k-1][2j] + levels[k-1][2j + 1]  ceil(C / 2^(k+1)) nodes
    levels[-1][0]  = the total weight                       1 node

A node's missing right child (an odd-sized level) counts as 0.

Exactness. After slots change, `refresh` recomputes the parents of the changed slots, level by level, from
their children (never by adding a difference), so the sums never drift, and repeated indices are harmless:
every write to one node writes the same value.

Sampling descends from the root: with u uniform in [0, total), go right when u >= the left child's sum (and
subtract it), left otherwise; the leaf reached is slot i with probability w_i / total, the same law as
`searchsorted(cumsum(w), u)`. A child of zero weight is never entered (rounding cannot land on an empty slot).

Everything here is pure and works under `jit` and `vmap` (one tree per seed, or per replay stream: the
levels then carry leading axes and `stream` picks a tree per sample).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Levels = tuple[jax.Array, ...]
Leaf = Callable[[jax.Array], jax.Array]
"""leaf(index [K]) -> the weights [K] of those slots (0 past the end)."""


def level_sizes(capacity: int) -> list[int]:
    """Node counts of the levels above the leaves, bottom to root."""
    sizes, size = [], capacity
    while size > 1:
        size = -(-size // 2)
        sizes.append(size)
    return sizes or [1]


def create(capacity: int) -> Levels:
    """The levels of a tree over `capacity` zero weights."""
    return tuple(jnp.zeros((size,), jnp.float32) for size in level_sizes(capacity))


def _get(array: jax.Array, index: jax.Array, stream: jax.Array | None = None) -> jax.Array:
    """array[index] (array[stream, index] for stacked trees), 0 where index is past the end."""
    at = index if stream is None else (stream, index)
    return array.at[at].get(mode="fill", fill_value=0.0)


def refresh(levels: Levels, leaf: Leaf, index: jax.Array, stream: jax.Array | None = None) -> Levels:
    """The tree after the weights of slots `index` [K] changed (`leaf` reads the new ones). `stream` [K]: the
    tree of each slot, for trees stacked on a leading axis (`leaf` then reads slot index[k] of stream[k])."""
    index = jnp.asarray(index, jnp.int32).reshape(-1)
    if stream is not None:
        stream = jnp.asarray(stream, jnp.int32).reshape(-1)
    new_levels, below = [], None
    for level in levels:
        index = index // 2
        left, right = 2 * index, 2 * index + 1
        children = (leaf(left) + leaf(right) if below is None
                    else _get(below, left, stream) + _get(below, right, stream))
        below = level.at[index if stream is None else (stream, index)].set(children)
        new_levels.append(below)
    return tuple(new_levels)


def rebuild(capacity: int, weights: jax.Array) -> Levels:
    """A tree built from all `capacity` weights at once (O(C); for tests and for converting old buffers)."""
    new_levels, below = [], weights
    for size in level_sizes(capacity):
        padded = jnp.zeros((2 * size,), jnp.float32).at[: below.shape[0]].set(below)
        below = padded[0::2] + padded[1::2]
        new_levels.append(below)
    return tuple(new_levels)


def total(levels: Levels) -> jax.Array:
    """The sum of all weights (per tree, for stacked trees)."""
    return levels[-1][..., 0]


def find(levels: Levels, leaf: Leaf, u: jax.Array, stream: jax.Array | None = None) -> jax.Array:
    """The slot of each target mass `u` [B] in [0, total): the i with cumsum(w)[i-1] <= u < cumsum(w)[i].
    `stream` [B]: the tree of each sample, for trees stacked on a leading axis."""
    node = jnp.zeros(u.shape, jnp.int32)
    for level_below in (*reversed(levels[:-1]), None):
        left, right = 2 * node, 2 * node + 1
        if level_below is None:
            left_mass, right_mass = leaf(left), leaf(right)
        else:
            left_mass, right_mass = _get(level_below, left, stream), _get(level_below, right, stream)
        go_right = ((u >= left_mass) & (right_mass > 0)) | (left_mass <= 0)
        u = jnp.where(go_right, u - left_mass, u)
        node = jnp.where(go_right, right, left)
    return node
