# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Extend an agent: a new auxiliary loss side by side with the original, and a new agent in one file
#
# An agent is a module of pure functions. To try an idea you import them, change one piece, and hand the
# result to the same training loop. Here: PPO plus SIGReg (isotropic Gaussian regularization,
# `networks/regularizers.py`) on the value network's last hidden layer -- a variant that exists in no
# agent file. `ppo.update` takes an `auxiliary_loss`; the variant's coefficient is a new config field.
#
# Side by side, vmapped: the coefficient is a traced hyperparameter (a float field of a `@hyperparameters`
# config is a pytree leaf, `agents/config.py`; `experiments/loops/lanes.py` stacks one config per lane), so the
# original (coefficient 0) and the variant (0.5), 2 seeds each, are four lanes of ONE compiled program.

# %%
import dataclasses
import os
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "agents").is_dir())
sys.path.insert(0, str(ROOT))
TINY = os.environ.get("CTRLRL_NOTEBOOK_TINY") == "1"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import ppo  # noqa: E402
from agents.config import hyperparameters  # noqa: E402
from experiments.loops.lanes import Lanes  # noqa: E402
from experiments.loops.on_policy import OnPolicyLoop  # noqa: E402
from networks.regularizers import sigreg  # noqa: E402

# %% [markdown]
# The variant: a config with one more field, and a `train_step` that passes the extra loss to PPO's update.

# %%
@hyperparameters
class VariantConfig(ppo.Config):
    aux_coef: float = 0.0
    """Weight of SIGReg on the value network's last hidden pre-activation."""


def value_features(state, params, obs):
    """The value MLP's last hidden pre-activation (the MLP sows it; see networks/mlp.py)."""
    network = ppo.value_network(state.config)
    _, features = ppo.mlp_probe(network, params.value, obs.reshape(-1, obs.shape[-1]))
    return features


def train_step(state, env, env_state, key, sync_axes=()):
    collect_key, update_key = jax.random.split(key)
    env_state, batch, stats = ppo.collect(state, env, env_state, collect_key, sync_axes)

    def auxiliary(params, obs, k):
        statistic = sigreg(value_features(state, params, obs), k)
        return state.config.aux_coef * statistic, {"aux/sigreg": statistic}

    state, metrics = ppo.update(state, batch, update_key, auxiliary_loss=auxiliary)
    return state, env_state, {**metrics, **stats}


# The agent record (agents/contract.py): PPO's, with the new config and train step. `agents.register(variant)`
# would also make it `--agent ppo_sigreg_value` for run.py and sweep.py.
variant = dataclasses.replace(ppo.AGENT, name="ppo_sigreg_value", Config=VariantConfig, train_step=train_step)

# %% [markdown]
# Four lanes: (coefficient, seed) in {0, 0.5} x {0, 1}. Lane (c, s) uses seed s's keys, so the coefficient-0
# lanes are exactly PPO's runs with those seeds.

# %%
config = VariantConfig(**{**ppo.PRESETS["cpu"], "num_envs": 64 if TINY else 256, "batch_size": 16 if TINY else 64,
                          "num_epochs": 2 if TINY else 8, "value_hidden": (32, 32) if TINY else (128, 128)})
coefs, seeds = [0.0, 0.5], [0, 1]
lanes = [(c, s) for c in coefs for s in seeds]
loop = OnPolicyLoop(variant, config, "jax:PointMass", len(lanes), 0,
                    lanes=Lanes.of_sweep([dataclasses.replace(config, aux_coef=c) for c in coefs], seeds))
state, step, curve = loop.init(), 0, []
for _ in range(2 if TINY else 6):
    state, metrics = loop.run(state, step, (1 if TINY else 10) * loop.granularity)
    step += (1 if TINY else 10) * loop.granularity
    curve.append((step, loop.evaluate(state, step, 4).returns.mean(axis=1), metrics["aux/sigreg"]))
for step, returns, statistic in curve:
    print(step, "returns", np.round(returns, 1), "SIGReg statistic", np.round(statistic, 4))

# %% [markdown]
# The representation's effective rank per lane (PPO's diagnostics, logged by `run.py` at every evaluation).

# %%
diagnostics = loop.diagnostics(state, step)
for (c, s), rank in zip(lanes, diagnostics["value/srank"]):
    print(f"coef {c}, seed {s}: value srank {rank:.0f}")

# %% [markdown]
# ## A new agent in one new file
#
# An agent is one file that ends with its record (`agents/contract.py`). Below, DDPG, written with the
# off-policy critic pieces that SAC and TD3 share (`agents/critic.py`: storing, the critic, its TD loss,
# the update-to-data schedule). The cell writes the file into a scratch folder; nothing in the repository
# changes. `agents.register` makes it `--agent ddpg` for `experiments.train` (and for `run.py` or `sweep.py`
# in the same process); `validate()` is the declared ranges' check, which `@hyperparameters` supplies.

# %%
import tempfile  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="my_agents_"))
agent_file = scratch / "ddpg.py"

# %%
# %%writefile {agent_file}
"""DDPG: Lillicrap et al. 2015, "Continuous control with deep reinforcement learning" (arXiv 1509.02971).

    y     = r + gamma (1 - terminated) Q'(s', mu'(s'))        L_Q  = mean (Q(s, a) - y)^2
    L_mu  = -mean Q(s, mu(s))                                 targets <- Polyak(tau), every update

One critic, Gaussian exploration noise (the paper's Ornstein-Uhlenbeck noise is not needed on these tasks).
Storing, the critic, its TD loss and the update schedule are agents/critic.py's; nothing outside this file
changes: `agents.register(AGENT)` makes it `--agent ddpg`.
"""

import jax
import jax.numpy as jnp
import optax
from flax import struct

import replay
from agents import critic
from agents.config import field, hyperparameters
from agents.contract import OffPolicyAgent
from envs import EnvSpec
from networks.actor_critic import DeterministicActor
from networks.training import Trained, apply_gradients, polyak, trained
from replay import streams


@hyperparameters
class Config:
    buffer_size: int = field(100_000, ">= 1")
    """Replay capacity in transitions."""
    batch_size: int = field(256, ">= 1")
    """Transitions per gradient step."""
    discount: float = field(0.99, "[0, 1]")
    """gamma."""
    tau: float = field(0.005, "(0, 1]")
    """Polyak rate of both target networks."""
    critic_lr: float = field(1e-3, "> 0")
    """Adam learning rate of the critic."""
    actor_lr: float = field(1e-3, "> 0")
    """Adam learning rate of the actor."""
    learning_starts: int = field(1_000, ">= 0")
    """Uniform random actions and no updates for this many env steps."""
    updates_per_step: float = field(1.0, "(0, 1024]")
    """Updates per env step."""
    exploration_noise: float = field(0.1, ">= 0")
    """Std of the Gaussian noise added to mu(s) while acting."""
    num_critics: int = field(1, ">= 1")
    """Critics (DDPG has one)."""
    critic_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the critic."""
    actor_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the actor."""
    activation: str = "relu"
    """Hidden activation."""
    layer_norm: bool = False
    """LayerNorm after every hidden Linear."""
    initializer: str = "pytorch_default"
    """Weight initializer."""


@struct.dataclass
class DDPGState:
    critic: Trained
    actor: Trained
    replay: replay.ReplayBuffer       # replay/streams.py: one stream per env of the seed (here one env)
    env_steps: jax.Array
    config: Config
    spec: EnvSpec = struct.field(pytree_node=False)


def actor_network(config: Config, spec: EnvSpec) -> DeterministicActor:
    return DeterministicActor(spec.action_dim, config.actor_hidden, config.activation, config.layer_norm,
                              config.initializer)


def init(key, spec: EnvSpec, config: Config, capacity: int) -> DDPGState:
    k_critic, k_actor = jax.random.split(key)
    obs, action = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.action_dim))
    return DDPGState(trained(critic.ensemble(config).init(k_critic, obs, action), optax.adam(config.critic_lr)),
                     trained(actor_network(config, spec).init(k_actor, obs), optax.adam(config.actor_lr)),
                     streams.create(1, capacity, spec.obs_dim, spec.action_dim, horizon=1), jnp.zeros((), jnp.int32),
                     config, spec)


def act(state: DDPGState, obs, key, explore: bool):
    """mu(s), plus N(0, sigma^2) while exploring; uniform before `learning_starts`."""
    action = actor_network(state.config, state.spec).apply(state.actor.params, obs)
    if not explore:
        return action
    k_noise, k_uniform = jax.random.split(key)
    noisy = jnp.clip(action + state.config.exploration_noise * jax.random.normal(k_noise, action.shape), -1, 1)
    uniform = jax.random.uniform(k_uniform, action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(state.env_steps < state.config.learning_starts, uniform, noisy)


def update_once(state: DDPGState, key, index):
    config, q = state.config, critic.ensemble(state.config)
    mu = actor_network(config, state.spec)
    batch = critic.sample_batch(state, key)
    next_q = q.apply(state.critic.target_params, batch.next_obs, mu.apply(state.actor.target_params, batch.next_obs))
    target = batch.reward + config.discount * (1.0 - batch.terminated) * next_q[:, 0]
    grads, metrics = jax.grad(lambda p: critic.td_loss(q, p, batch, target), has_aux=True)(state.critic.params)
    critic_state = apply_gradients(state.critic, grads, optax.adam(config.critic_lr))

    def actor_loss(params):
        return -jnp.mean(q.apply(critic_state.params, batch.obs, mu.apply(params, batch.obs))[:, 0])

    loss, actor_grads = jax.value_and_grad(actor_loss)(state.actor.params)
    actor_state = apply_gradients(state.actor, actor_grads, optax.adam(config.actor_lr))
    state = state.replace(critic=polyak(critic_state, config.tau), actor=polyak(actor_state, config.tau))
    return state, {**metrics, "actor/loss": loss}


def update(state: DDPGState, key, step):
    config = state.config
    return critic.scheduled_updates(update_once, state, key, step, config.learning_starts, config.updates_per_step)


AGENT = OffPolicyAgent(name="ddpg", Config=Config, init=init, act=act, store=critic.store, update=update)

# %% [markdown]
# Register it and train it as `run.py` would: 2 seeds vmapped, checkpoints and `eval.csv` in a run directory.

# %%
import csv  # noqa: E402

import agents  # noqa: E402
from experiments.train import RunArgs, train  # noqa: E402

sys.path.insert(0, str(scratch))
import ddpg  # noqa: E402

agents.register(ddpg.AGENT, replace=True)
total = 1_000 if TINY else 6_000
run_dir = train(RunArgs(agent="ddpg", env="jax:PointMass", num_seeds=2, total_steps=total, eval_every=total // 3,
                        log_every=total // 3, eval_episodes=4, run_dir=str(scratch / "run"), progress=False),
                ddpg.Config(learning_starts=total // 12, batch_size=64, critic_hidden=(64, 64), actor_hidden=(64, 64)))
for row in csv.DictReader(open(run_dir / "eval.csv")):
    print(f"step {row['step']}, seed {row['seed']}: return {float(row['return']):.1f}")
