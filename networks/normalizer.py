"""Running observation statistics (mean, variance) and normalization, as a pytree.

Updated with whole batches by the parallel form of Welford's algorithm (Chan et
al. 1979), so that a batch of a million envs costs one reduction. Standard
deviations are clipped to [1e-6, 1e6] as in Brax's `running_statistics`.

With `decay` < 1 the statistics forget: before each merge the seen
observations' weight (count and sum of squared deviations) is multiplied by
`decay`, so they are exponentially weighted moments with a memory of about
batch / (1 - decay) observations. A non-stationary task that permutes or
shifts observations needs this; `decay` = 1 is the exact running moment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

STD_MIN, STD_MAX = 1e-6, 1e6


class RunningStats(struct.PyTreeNode):
    count: jax.Array         # observations seen, float32 (exact to 2^24; relative error ~1e-7 after)
    mean: jax.Array          # [dim]
    sum_sq_dev: jax.Array    # [dim], sum over seen observations of (x - mean)^2


def init_stats(dim: int) -> RunningStats:
    return RunningStats(jnp.zeros((), jnp.float32), jnp.zeros(dim, jnp.float32), jnp.zeros(dim, jnp.float32))


def update_stats(stats: RunningStats, batch: jax.Array, decay: float | jax.Array = 1.0) -> RunningStats:
    """Fold a batch `[..., dim]` into the statistics (exact merge of two sample moments, the old ones
    down-weighted by `decay`)."""
    stats = RunningStats(stats.count * decay, stats.mean, stats.sum_sq_dev * decay)
    batch = batch.reshape(-1, batch.shape[-1]).astype(jnp.float32)
    batch_count = jnp.float32(batch.shape[0])
    batch_mean = jnp.mean(batch, axis=0)
    batch_sum_sq_dev = jnp.sum(jnp.square(batch - batch_mean), axis=0)
    count = stats.count + batch_count
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * (batch_count / count)
    sum_sq_dev = stats.sum_sq_dev + batch_sum_sq_dev + jnp.square(delta) * (stats.count * batch_count / count)
    return RunningStats(count, mean, sum_sq_dev)


def std(stats: RunningStats) -> jax.Array:
    variance = stats.sum_sq_dev / jnp.maximum(stats.count, 1.0)
    return jnp.where(stats.count > 0, jnp.clip(jnp.sqrt(variance), STD_MIN, STD_MAX), 1.0)


def normalize(stats: RunningStats, x: jax.Array) -> jax.Array:
    """(x - mean) / std; the identity before the first update."""
    return (x - stats.mean) / std(stats)
