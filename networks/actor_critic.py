"""Actors and critics on raw observations, shared by SAC, TD3 and the agents built on them.

    QEnsemble          Q_1..Q_N(s, a)   N independent MLPs on [s, a], one batched call: [..., N]
    GaussianActor      pi(.|s) = tanh(N(mu(s), sigma(s)))   (SAC; log sigma squashed into [min, max])
    DeterministicActor mu(s) = tanh(MLP(s))                 (TD3)

Defaults follow CleanRL's SAC and TD3: 256 x 256 ReLU MLPs without LayerNorm,
PyTorch's default Linear initialization.

Initialization schemes (`scheme`, INIT_SCHEMES; the kernels of the hidden layers always come from
`initializer`):

    "default"  every bias 0; the output layer like the hidden ones (CleanRL here)
    "edac"     EDAC (An et al. 2021, arXiv 2110.01548; CORL's edac.py, which RAVL's code adapts):
               hidden biases 0.1; the critics' last layer, kernel and bias, U(+-3e-3); the actor's
               mean and log-std heads, kernels and biases, U(+-1e-3)
    "neubay"   NEUBAY's (twni2016/neubay, Equinox Linear defaults): hidden biases U(+-1/sqrt(fan_in));
               the critics' last layer U(+-sqrt(0.01 / fan_in)) with a zero bias (`final_linear`,
               scale 0.01); the actor's output layer Equinox's default, kernel and bias U(+-1/sqrt(fan_in))

The actor's log-std (`log_std_mode`): "tanh" squashes the raw head into [min, max]
(log sigma = min + (max - min) (tanh(raw) + 1) / 2; CleanRL, SpinningUp: sigma ~ 0.22 at raw 0 for
[-5, 2]); "clip" clips it hard, log sigma = clip(raw, min, max) (EDAC, RAVL and NEUBAY, [-5, 2]:
sigma = 1 at raw 0; zero gradient outside the range, as torch.clip).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.distributions import TanhGaussian
from networks.mlp import MLP, ensemble

# name -> {hidden_bias, critic_out_kernel, critic_out_bias, actor_out_kernel, actor_out_bias} as
# networks.mlp.param_init names (None: the hidden layers' kernel init). See the module docstring.
INIT_SCHEMES: dict[str, dict[str, str | None]] = {
    "default": {"hidden_bias": "zeros", "critic_out_kernel": None, "critic_out_bias": "zeros",
                "actor_out_kernel": None, "actor_out_bias": "zeros"},
    "edac": {"hidden_bias": "const:0.1", "critic_out_kernel": "uniform:3e-3", "critic_out_bias": "uniform:3e-3",
             "actor_out_kernel": "uniform:1e-3", "actor_out_bias": "uniform:1e-3"},
    "neubay": {"hidden_bias": "fan_in:1", "critic_out_kernel": "fan_in:0.01", "critic_out_bias": "zeros",
               "actor_out_kernel": "fan_in:1", "actor_out_bias": "fan_in:1"},
}
LOG_STD_MODES = ("tanh", "clip")


def init_scheme(name: str) -> dict[str, str | None]:
    if name not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {name!r}; valid: {', '.join(INIT_SCHEMES)}")
    return INIT_SCHEMES[name]


class QNetwork(nn.Module):
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"
    scheme: str = "default"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        init = init_scheme(self.scheme)
        return MLP(self.hidden, 1, self.act, self.use_layer_norm, initializer=self.initializer,
                   bias_init=init["hidden_bias"], out_kernel_init=init["critic_out_kernel"],
                   out_bias_init=init["critic_out_bias"])(x)[..., 0]


class QEnsemble(nn.Module):
    """`num_critics` critics evaluated in one batched call; parameters carry a leading member axis."""

    num_critics: int = 2
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"
    scheme: str = "default"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        members = ensemble(QNetwork, self.num_critics)
        return members(self.hidden, self.act, self.use_layer_norm, self.initializer, self.scheme,
                       name="critics")(obs, action)


class GaussianActor(nn.Module):
    """SAC's actor: mean and log-std heads (one output layer of 2 |A|); log sigma from the raw head by
    `log_std_mode`: "tanh", min + (max - min) (tanh(raw) + 1) / 2 (CleanRL, SpinningUp), or "clip",
    clip(raw, min, max) (EDAC, RAVL, NEUBAY)."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    act: str = "relu"
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    use_layer_norm: bool = False
    initializer: str = "pytorch_default"
    scheme: str = "default"
    log_std_mode: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> TanhGaussian:
        init = init_scheme(self.scheme)
        out = MLP(self.hidden, 2 * self.action_dim, self.act, self.use_layer_norm, initializer=self.initializer,
                  bias_init=init["hidden_bias"], out_kernel_init=init["actor_out_kernel"],
                  out_bias_init=init["actor_out_bias"])(obs)
        loc, raw_log_std = jnp.split(out, 2, axis=-1)
        if self.log_std_mode == "clip":
            log_std = jnp.clip(raw_log_std, self.log_std_min, self.log_std_max)
        elif self.log_std_mode == "tanh":
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(raw_log_std) + 1.0)
        else:
            raise ValueError(f"unknown log_std_mode {self.log_std_mode!r}; valid: {', '.join(LOG_STD_MODES)}")
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
