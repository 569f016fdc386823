"""The tanh-squashed diagonal Gaussian policy distribution (as in Brax's PPO).

A network outputs `2 * action_dim` numbers: the location and a raw scale of a
Gaussian over pre-squash actions u; scale = softplus(raw) + min_std. The
action is a = tanh(u). Log-probabilities are of u with the change of
variables (Haarnoja et al. 2018, Eq. 21):

    log pi(a) = log N(u; loc, scale) - sum_i log(1 - tanh(u_i)^2)

PPO stores u (not a) so that the ratio pi_new(u) / pi_old(u) is exact; the
Jacobian term cancels in the ratio.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

LOG_2 = math.log(2.0)
HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


class TanhGaussian(NamedTuple):
    loc: jax.Array
    scale: jax.Array


def tanh_gaussian(raw_output: jax.Array, min_std: float = 1e-3) -> TanhGaussian:
    loc, raw_scale = jnp.split(raw_output, 2, axis=-1)
    return TanhGaussian(loc, jax.nn.softplus(raw_scale) + min_std)


def sample_pre_tanh(dist: TanhGaussian, key: jax.Array) -> jax.Array:
    return dist.loc + dist.scale * jax.random.normal(key, dist.loc.shape, dist.loc.dtype)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), numerically stable."""
    return 2.0 * (LOG_2 - u - jax.nn.softplus(-2.0 * u))


def gaussian_log_prob(dist: TanhGaussian, u: jax.Array) -> jax.Array:
    """log N(u; loc, scale), summed over action dimensions."""
    z = (u - dist.loc) / dist.scale
    return jnp.sum(-0.5 * jnp.square(z) - jnp.log(dist.scale) - 0.5 * math.log(2.0 * math.pi), axis=-1)


def log_prob(dist: TanhGaussian, u: jax.Array) -> jax.Array:
    """log pi(tanh(u)): the Gaussian log-density of u minus the squash's log-Jacobian."""
    return gaussian_log_prob(dist, u) - jnp.sum(tanh_log_det_jacobian(u), axis=-1)


def entropy(dist: TanhGaussian, key: jax.Array) -> jax.Array:
    """One-sample estimate of the squashed entropy: H(N) + E[log|d tanh(u)/du|]."""
    gaussian_entropy = jnp.sum(HALF_LOG_2PI_E + jnp.log(dist.scale), axis=-1)
    return gaussian_entropy + jnp.sum(tanh_log_det_jacobian(sample_pre_tanh(dist, key)), axis=-1)


def kl_divergence(p: TanhGaussian, q: TanhGaussian) -> jax.Array:
    """KL(p || q) of the pre-squash Gaussians (equal to that of the squashed ones: tanh is a bijection)."""
    ratio = jnp.square(p.scale / q.scale)
    return jnp.sum(0.5 * (ratio + jnp.square((p.loc - q.loc) / q.scale) - 1.0 - jnp.log(ratio)), axis=-1)


def mode(dist: TanhGaussian) -> jax.Array:
    """The deterministic action tanh(loc), used for evaluation."""
    return jnp.tanh(dist.loc)
