"""Symlog / symexp and two-hot encoding of scalars over a fixed set of bins.

MR.Q predicts rewards as a categorical distribution over 65 bins placed at
symexp(linspace(-10, 10, 65)) and trains them with cross-entropy against the
two-hot encoding of the raw reward (DreamerV3-style, but without symlog on the
target: the bins are already spaced symmetrically-exponentially).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def symlog(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def symexp_bins(lower: float = -10.0, upper: float = 10.0, num_bins: int = 65) -> jax.Array:
    """Bin locations symexp(linspace(lower, upper, num_bins)), sorted ascending."""
    return symexp(jnp.linspace(lower, upper, num_bins))


def two_hot(x: jax.Array, bins: jax.Array) -> jax.Array:
    """Encode each scalar of `x` as weights on its two neighbouring bins.

    The weights are (1 - w) on the bin below and w on the bin above with
    w = (x - lower) / (upper - lower), so sum_k weight_k * bins_k == x for x inside
    [bins[0], bins[-1]]; values outside are clipped onto the end bins.
    Returns shape x.shape + (num_bins,).
    """
    num_bins = bins.shape[0]
    x = jnp.clip(x, bins[0], bins[-1])
    lower_index = jnp.clip(jnp.searchsorted(bins, x, side="right") - 1, 0, num_bins - 2)
    lower, upper = bins[lower_index], bins[lower_index + 1]
    upper_weight = jnp.clip((x - lower) / (upper - lower), 0.0, 1.0)
    return (jax.nn.one_hot(lower_index, num_bins) * (1.0 - upper_weight)[..., None]
            + jax.nn.one_hot(lower_index + 1, num_bins) * upper_weight[..., None])


def two_hot_decode(logits: jax.Array, bins: jax.Array) -> jax.Array:
    """Expected value of the categorical distribution softmax(logits) over `bins`."""
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1)


def two_hot_cross_entropy(logits: jax.Array, target: jax.Array, bins: jax.Array) -> jax.Array:
    """-sum_k two_hot(target)_k * log softmax(logits)_k, one value per scalar target."""
    return -jnp.sum(two_hot(target, bins) * jax.nn.log_softmax(logits, axis=-1), axis=-1)
