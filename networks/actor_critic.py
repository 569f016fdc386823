"""Actors and critics on raw observations, shared by SAC, TD3 and the agents built on them.

    QEnsemble          Q_1..Q_N(s, a)   N independent MLPs on [s, a], one batched call: [..., N]
    GaussianActor      pi(.|s) = tanh(N(mu(s), sigma(s)))   (SAC; log sigma squashed into [min, max])
    DeterministicActor mu(s) = tanh(MLP(s))                 (TD3)

Defaults follow CleanRL's SAC and TD3: 256 x 256 ReLU MLPs without LayerNorm,
PyTorch's default Linear initialization.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.distributions import TanhGaussian
from networks.mlp import MLP, ensemble


class QNetwork(nn.Module):
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        return MLP(self.hidden, 1, self.act, self.use_layer_norm, initializer=self.initializer)(x)[..., 0]


class QEnsemble(nn.Module):
    """`num_critics` critics evaluated in one batched call; parameters carry a leading member axis."""

    num_critics: int = 2
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        members = ensemble(QNetwork, self.num_critics)
        return members(self.hidden, self.act, self.use_layer_norm, self.initializer, name="critics")(obs, action)


class GaussianActor(nn.Module):
    """SAC's actor: mean and log-std heads; log sigma = min + (max - min) (tanh(raw) + 1) / 2 (CleanRL, SpinningUp)."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"

    @nn.compact
    def __call__(self, obs: jax.Array) -> TanhGaussian:
        out = MLP(self.hidden, 2 * self.action_dim, self.act, self.use_layer_norm, initializer=self.initializer)(obs)
        loc, raw_log_std = jnp.split(out, 2, axis=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(raw_log_std) + 1.0)
        return TanhGaussian(loc, jnp.exp(log_std))


class DeterministicActor(nn.Module):
    """TD3's actor: a = tanh(MLP(s)) in [-1, 1]."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden, self.action_dim, self.act, self.use_layer_norm,
                            initializer=self.initializer)(obs))
