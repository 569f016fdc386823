"""SIGReg-PPO: PPO whose shared actor-critic representation is regularized toward an isotropic Gaussian.

"Stable Deep Reinforcement Learning via Isotropic Gaussian Representations"
(arXiv 2602.19373, code asahebpa/IsoGaussian-DRL), using SIGReg from LeJEPA
(arXiv 2511.08544). Non-stationary targets make deep RL representations
collapse (low effective rank, dormant units); SIGReg keeps the
representation z close to N(0, I), which preserves rank and plasticity.

Networks (`--network`):

    shared_trunk (the paper's agent, with an MLP trunk for state inputs):
        z      = trunk(s)                 an MLP whose LAST layer has no activation: z is a pre-activation
        pi     = tanh-Gaussian( Linear(act(z)) )
        V      = Linear(act(z))
    separate (PPO's two MLPs, agents/ppo.py's SeparateActorCritic, unchanged):
        z      = the last hidden pre-activation of the value MLP (`--regularized value`) or of the
                 policy MLP (`--regularized policy`); the other network is not regularized.

Why both. With the shared trunk on state inputs, the value loss's gradient on
the trunk is about 50x the policy's and ~350x lambda * SIGReg's at
initialisation (PPO's rewards x10 and unnormalised returns); the shared
network collapses with the regulariser OFF as well (lambda = 0: srank 1 and a
feature norm ~1e3 before the first switch of compare.py's PointMass), so a
comparison on it measures the network, not SIGReg. `separate` keeps PPO's
networks, whose lambda = 0 twin is plain PPO and does not collapse; SIGReg
then acts on one network's representation. The default is `separate`, by
measurement (compare.py's PointMass, cpu preset, 256 envs, 5 seeds, lambda =
0, stationary phase 0): shared_trunk's return is -475 [-556, -328] at 376k
steps, separate's -23 [-29, -16] (experiments/results/sigreg_twin_*,
experiments/results/claims.md).

Loss, per minibatch (everything else is PPO's, imported from agents/ppo.py):

    L = L_PPO + lambda * SIGReg(z)     z of the minibatch's (normalized) observations, flattened to [B*T, D]

SIGReg (networks/regularizers.py): the Epps-Pulley distance between the
empirical characteristic function of K random 1-D projections of z and that
of N(0, 1); the RL paper's variant (16 fresh directions per step, 8 points on
[-5, 5], unweighted) by default, LeJEPA's as `--sigreg-variant lejepa`.
lambda = 0.2, the smaller non-zero value of the authors' sweep {0, 0.2, 1.0}
(run_ppo.sh); `--sigreg-coef 0` is the same network without the regularizer (for
`separate`: exactly PPO). With the shared trunk `--policy-hidden` /
`--value-hidden` are unused (both heads are linear on act(z)); with `separate`
the trunk flags are.

Not built: the authors' Atari setting (clipped rewards, 4 epochs, clip 0.1
with value clipping, gradient-norm clip 0.5, orthogonal init, ReLU, SIGReg on
256 samples); most of it is reachable through PPO's flags.

Diagnostics at every evaluation: dormant ratio of the trunk's units, effective
rank (srank) and norm of z, and the eigenvalue spread of z's covariance.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import jax

from agents import ppo
from agents.contract import OnPolicyAgent
from agents.config import field, hyperparameters
from envs import EnvSpec, JaxEnv, JaxEnvState
from networks import regularizers
from networks.mlp import MLP, activation, kernel_init



@hyperparameters
class Config(ppo.Config):
    """PPO's hyperparameters plus the shared trunk and SIGReg."""

    sigreg_coef: float = field(0.2, ">= 0", about="lambda")
    """lambda: weight of SIGReg(z) in the loss (0 = shared-trunk PPO without the regularizer)."""
    sigreg_variant: Literal["rl", "lejepa"] = "rl"
    """The RL paper's statistic (default) or LeJEPA's (Gaussian window, trapezoid rule, times N)."""
    sigreg_directions: int | None = field(None, ">= 1", about="SIGReg's num_directions")
    """Random projection directions per step (None: 16 for rl, 256 for lejepa)."""
    sigreg_points: int | None = field(None, ">= 1", about="SIGReg's num_points")
    """Frequencies t of the grid (None: 8 for rl, 17 for lejepa)."""
    trunk_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the trunk MLP (each followed by the activation)."""
    trunk_dim: int = field(256, ">= 1")
    """Width of the representation z (the trunk's last, linear layer)."""
    network: Literal["shared_trunk", "separate"] = "separate"
    """separate: PPO's two MLPs (default: its lambda = 0 twin does not collapse); shared_trunk: one trunk, linear
    policy and value heads (the paper's)."""
    regularized: Literal["value", "policy"] = "value"
    """With --network separate: whose last hidden pre-activation SIGReg shapes."""

    def validate(self) -> None:
        super().validate()
        regularizers.resolve(self.sigreg_variant, self.sigreg_directions, self.sigreg_points)   # raises with choices
        if self.network not in ("shared_trunk", "separate"):
            raise ValueError(f"--network must be shared_trunk or separate, got {self.network!r}")
        if self.regularized not in ("value", "policy"):
            raise ValueError(f"--regularized must be value or policy, got {self.regularized!r}")

    def networks(self, spec: EnvSpec):
        if self.network == "separate":
            return RegularizedSeparateActorCritic(self, spec)
        return SharedTrunkActorCritic(self, spec)


class TrunkModule(nn.Module):
    """z = trunk(x) (pre-activation), and the two linear heads on act(z)."""

    action_dim: int
    trunk_hidden: tuple[int, ...]
    trunk_dim: int
    act: str

    def setup(self):
        self.trunk = MLP(self.trunk_hidden, self.trunk_dim, self.act, use_layer_norm=False,
                         initializer="lecun_uniform")
        self.policy_head = nn.Dense(2 * self.action_dim, kernel_init=kernel_init("lecun_uniform"))
        self.value_head = nn.Dense(1, kernel_init=kernel_init("lecun_uniform"))

    def representation(self, x: jax.Array) -> jax.Array:
        return self.trunk(x)

    def policy(self, x: jax.Array) -> jax.Array:
        return self.policy_head(activation(self.act)(self.trunk(x)))

    def value(self, x: jax.Array) -> jax.Array:
        return self.value_head(activation(self.act)(self.trunk(x)))[..., 0]

    def __call__(self, x: jax.Array):
        return self.policy(x), self.value(x)


@dataclasses.dataclass(frozen=True)
class SharedTrunkActorCritic:
    """PPO's network interface (see ppo.SeparateActorCritic) for the shared trunk."""

    config: Config
    spec: EnvSpec

    @property
    def module(self) -> TrunkModule:
        c = self.config
        return TrunkModule(self.spec.action_dim, tuple(c.trunk_hidden), c.trunk_dim, c.activation)

    def init(self, key: jax.Array, obs: jax.Array) -> dict:
        return self.module.init(key, obs)["params"]

    def policy(self, params: dict, x: jax.Array) -> jax.Array:
        return self.module.apply({"params": params}, x, method=TrunkModule.policy)

    def value(self, params: dict, x: jax.Array) -> jax.Array:
        return self.module.apply({"params": params}, x, method=TrunkModule.value)

    def representation(self, params: dict, x: jax.Array) -> jax.Array:
        return self.module.apply({"params": params}, x, method=TrunkModule.representation)

    def probe(self, params: dict, x: jax.Array) -> dict:
        """The trunk's hidden post-activations plus act(z), and the representation z."""
        trunk = MLP(tuple(self.config.trunk_hidden), self.config.trunk_dim, self.config.activation,
                    use_layer_norm=False, initializer="lecun_uniform")
        activations, _ = ppo.mlp_probe(trunk, params["trunk"], x)
        z = self.representation(params, x)
        return {"trunk": ({**activations, "representation": activation(self.config.activation)(z)}, z)}


@dataclasses.dataclass(frozen=True)
class RegularizedSeparateActorCritic(ppo.SeparateActorCritic):
    """PPO's two MLPs; the representation SIGReg shapes is one network's last hidden pre-activation."""

    def representation(self, params: ppo.Params, x: jax.Array) -> jax.Array:
        if self.config.regularized == "policy":
            return ppo.mlp_probe(ppo.policy_network(self.config, self.spec), params.policy, x)[1]
        return ppo.mlp_probe(ppo.value_network(self.config), params.value, x)[1]


def sigreg_loss(params: dict, obs: jax.Array, key: jax.Array, state: ppo.PPOState) -> tuple[jax.Array, dict]:
    """lambda * SIGReg(z) on the minibatch's normalized observations [B, T, obs_dim]."""
    config = state.config
    z = state.networks.representation(params, obs.reshape(-1, obs.shape[-1]))
    statistic = regularizers.sigreg(z, key, variant=config.sigreg_variant, num_directions=config.sigreg_directions,
                                    num_points=config.sigreg_points)
    return config.sigreg_coef * statistic, {"sigreg/statistic": statistic}


def init(key: jax.Array, spec: EnvSpec, config: Config) -> ppo.PPOState:
    return ppo.init(key, spec, config)




def train_step(state: ppo.PPOState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array,
               sync_axes: tuple[str, ...] = ()) -> tuple[ppo.PPOState, JaxEnvState, dict]:
    """PPO's rollout and update with lambda * SIGReg(z) added to every minibatch's loss."""
    collect_key, update_key = jax.random.split(key)
    env_state, batch, episode_stats = ppo.collect(state, env, env_state, collect_key, sync_axes)
    state, metrics = ppo.update(state, batch, update_key,
                                auxiliary_loss=lambda params, obs, k: sigreg_loss(params, obs, k, state))
    return state, env_state, {**metrics, **episode_stats}


# PPO's presets, with a trunk sized like the cpu preset's value MLP on CPUs.
PRESETS = {"playground": {}, "cpu": {**ppo.PRESETS["cpu"], "trunk_hidden": (128, 128), "trunk_dim": 128}}


AGENT = OnPolicyAgent(name="sigreg", Config=Config, init=init, act=ppo.act, train_step=train_step, collect=ppo.collect,
                      layout=ppo.layout, diagnostics=ppo.diagnostics, PRESETS=PRESETS,
                      RUN_DEFAULTS=ppo.RUN_DEFAULTS, curve_points=ppo.CURVE_POINTS, default_preset=ppo.default_preset,
                      task_preset=ppo.task_preset)
