"""MR.Q's networks (Fujimoto et al., 2025, arXiv 2501.16142, Appendix B).

    zs  = ELU(LN(MLP_elu(s)))                    state embedding        (512)
    za  = ELU(Linear(a))                         action embedding       (256)
    zsa = MLP_elu([zs, za])                      state-action embedding (512)
    [done logit, zs', reward logits] = Linear(zsa)   the latent model head

The value function sees only zsa and the policy only zs. Every Linear uses
xavier-uniform at the ReLU gain and zero bias; LayerNorms have no scale/bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import MLP, activation, dense, ensemble, layer_norm, mish


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


# ----------------------------------------------------------------------------
# The multitask follow-up's networks (agents/mrq_multitask.py; TD-MPC2's blocks)
# ----------------------------------------------------------------------------
#
#   zs  = SimNorm(LN(Linear(NormedMLP(obs ++ task))))     state embedding, simplices of `simnorm_dim`
#   za  = ELU(Linear(a))                                  action embedding
#   zsa = NormedMLP([zs, za])                             state-action embedding (latent_dim)
#   [zs', reward logits] = Linear(zsa)                    the latent model head (no done head)
#   Q_i = NormedMLP(zsa) -> num_bins logits, i = 1..num_q    a distributional critic ensemble
#   pi  = tanh(NormedMLP([zs, task]))
#
# A NormedMLP block is Linear -> LayerNorm (with scale and bias) -> Mish; every Linear starts from a
# truncated normal of std 0.02 with zero bias.

TRUNC_NORMAL = nn.initializers.truncated_normal(0.02)


def simnorm(x: jax.Array, group: int) -> jax.Array:
    """Simplicial normalisation: a softmax over each consecutive group of `group` features."""
    groups = x.reshape(*x.shape[:-1], -1, group)
    return jax.nn.softmax(groups, axis=-1).reshape(x.shape)


class NormedMLP(nn.Module):
    """(Linear -> LN -> Mish) per hidden width, then a Linear output; `simnorm_dim` > 0 ends instead with
    Linear -> LN -> SimNorm (TD-MPC2's encoder output)."""

    hidden: Sequence[int]
    out_dim: int
    simnorm_dim: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = mish(nn.LayerNorm()(nn.Dense(width, kernel_init=TRUNC_NORMAL)(x)))
        x = nn.Dense(self.out_dim, kernel_init=TRUNC_NORMAL)(x)
        return simnorm(nn.LayerNorm()(x), self.simnorm_dim) if self.simnorm_dim else x


class ScaledEncoder(nn.Module):
    """The follow-up's encoder: zs (SimNorm), zsa and the model head [next zs, reward logits]."""

    latent_dim: int
    za_dim: int
    enc_dim: int
    mlp_dim: int
    enc_layers: int
    num_bins: int
    simnorm_dim: int = 8

    def setup(self):
        self.state_mlp = NormedMLP((self.enc_dim,) * max(self.enc_layers - 1, 1), self.latent_dim, self.simnorm_dim)
        self.action_layer = nn.Dense(self.za_dim, kernel_init=TRUNC_NORMAL)
        self.state_action_mlp = NormedMLP((self.mlp_dim,) * 2, self.latent_dim)
        self.model_head = nn.Dense(self.latent_dim + self.num_bins, kernel_init=TRUNC_NORMAL)

    def zs(self, obs: jax.Array) -> jax.Array:
        return self.state_mlp(obs)

    def zsa(self, zs: jax.Array, action: jax.Array) -> jax.Array:
        return self.state_action_mlp(jnp.concatenate([zs, nn.elu(self.action_layer(action))], axis=-1))

    def model(self, zsa: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(next zs [..., latent_dim], reward logits [..., num_bins])."""
        out = self.model_head(zsa)
        return out[..., : self.latent_dim], out[..., self.latent_dim:]

    def __call__(self, obs: jax.Array, action: jax.Array):
        return self.model(self.zsa(self.zs(obs), action))


class DistributionalCritic(nn.Module):
    """One critic on zsa: two normed hidden layers, then `num_bins` logits."""

    mlp_dim: int
    num_bins: int

    @nn.compact
    def __call__(self, zsa: jax.Array) -> jax.Array:
        return NormedMLP((self.mlp_dim,) * 2, self.num_bins)(zsa)


class CriticEnsemble(nn.Module):
    """`num_q` independent distributional critics in one call: logits [..., num_q, num_bins]."""

    num_q: int
    mlp_dim: int
    num_bins: int

    @nn.compact
    def __call__(self, zsa: jax.Array) -> jax.Array:
        return ensemble(DistributionalCritic, self.num_q, out_axis=-2)(self.mlp_dim, self.num_bins)(zsa)


class NormedPolicy(nn.Module):
    """a = tanh(NormedMLP([zs, task])); also the pre-tanh activation (MR.Q's penalty on it)."""

    action_dim: int
    mlp_dim: int

    @nn.compact
    def __call__(self, zs_and_task: jax.Array) -> tuple[jax.Array, jax.Array]:
        pre_tanh = NormedMLP((self.mlp_dim,) * 2, self.action_dim)(zs_and_task)
        return jnp.tanh(pre_tanh), pre_tanh
