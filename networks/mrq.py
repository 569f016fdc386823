"""MR.Q's networks (Fujimoto et al., 2025, arXiv 2501.16142, Appendix B).

    zs  = ELU(LN(MLP_elu(s)))                    state embedding        (512)
    za  = ELU(Linear(a))                         action embedding       (256)
    zsa = MLP_elu([zs, za])                      state-action embedding (512)
    [done logit, zs', reward logits] = Linear(zsa)   the latent model head

The value function sees only zsa and the policy only zs. Every Linear uses
xavier-uniform at the ReLU gain and zero bias; LayerNorms have no scale/bias.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, activation, dense, ensemble, layer_norm


class MRQEncoder(nn.Module):
    """State encoder f(s) -> zs, state-action encoder g(zs, a) -> zsa, and the model head."""

    zs_dim: int = 512
    za_dim: int = 256
    zsa_dim: int = 512
    hidden_dim: int = 512
    num_bins: int = 65
    act: str = "elu"

    def setup(self):
        self.state_mlp = MLP((self.hidden_dim, self.hidden_dim), self.zs_dim, self.act)
        self.action_layer = dense(self.za_dim)
        self.state_action_mlp = MLP((self.hidden_dim, self.hidden_dim), self.zsa_dim, self.act)
        self.model_head = dense(1 + self.zs_dim + self.num_bins)

    def zs(self, obs: jax.Array) -> jax.Array:
        return activation(self.act)(layer_norm(self.state_mlp(obs)))

    def zsa(self, zs: jax.Array, action: jax.Array) -> jax.Array:
        za = activation(self.act)(self.action_layer(action))
        return self.state_action_mlp(jnp.concatenate([zs, za], axis=-1))

    def model(self, zsa: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Latent model: (done logit [...], next zs [..., zs_dim], reward logits [..., num_bins])."""
        out = self.model_head(zsa)
        return out[..., 0], out[..., 1:1 + self.zs_dim], out[..., 1 + self.zs_dim:]

    def __call__(self, obs: jax.Array, action: jax.Array):
        """Touches every layer; used only to initialize the parameters."""
        return self.model(self.zsa(self.zs(obs), action))


class QNetwork(nn.Module):
    """One critic on zsa: three Linear-LN-act layers, then a scalar."""

    hidden_dim: int = 512
    act: str = "elu"

    @nn.compact
    def __call__(self, zsa: jax.Array) -> jax.Array:
        return MLP((self.hidden_dim,) * 3, 1, self.act)(zsa)[..., 0]


class TwinQ(nn.Module):
    """Two independent critics evaluated in one batched call: output [..., 2]."""

    hidden_dim: int = 512
    act: str = "elu"

    @nn.compact
    def __call__(self, zsa: jax.Array) -> jax.Array:
        return ensemble(QNetwork, 2)(self.hidden_dim, self.act)(zsa)


class DeterministicPolicy(nn.Module):
    """a = tanh(MLP(zs)); also returns the pre-tanh activation for MR.Q's penalty on it."""

    action_dim: int
    hidden_dim: int = 512
    act: str = "relu"

    @nn.compact
    def __call__(self, zs: jax.Array) -> tuple[jax.Array, jax.Array]:
        pre_tanh = MLP((self.hidden_dim, self.hidden_dim), self.action_dim, self.act)(zs)
        return jnp.tanh(pre_tanh), pre_tanh
