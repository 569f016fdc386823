"""BC: behaviour cloning, the baseline every offline agent must beat.

    pi(s) = tanh(MLP(s)),   L = mean ||pi(s) - a||^2   over dataset transitions (s, a)

A deterministic policy regressed onto the dataset's actions (the usual D4RL
BC baseline, e.g. in TD3+BC's paper, arXiv 2106.06860): 2 x 256 ReLU, Adam
3e-4, batch 256. Runs in the offline loop (experiments/loops/offline.py) like RAVL:

    python experiments/run.py --agent bc --env gym:Hopper-v5 --dataset data/hopper-medium-replay.hdf5
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import struct

import replay
from agents.contract import OfflineAgent
from agents.config import check_fields, field, hyperparameters
from envs import EnvSpec
from networks.actor_critic import DeterministicActor
from networks.training import Trained, apply_gradients, trained

RUN_DEFAULTS = {"total_steps": 100_000, "eval_every": 10_000, "log_every": 1_000}


@hyperparameters
class Config:
    batch_size: int = field(256, ">= 1")
    """Dataset transitions per gradient step."""
    learning_rate: float = field(3e-4, "> 0")
    """Adam learning rate."""
    hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the policy."""

    def validate(self) -> None:
        check_fields(self)


@struct.dataclass
class BCState:
    policy: Trained
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)
    spec: EnvSpec = struct.field(pytree_node=False)


def network(config: Config, spec: EnvSpec) -> DeterministicActor:
    return DeterministicActor(spec.action_dim, config.hidden)


def prepare(dataset, spec: EnvSpec, config: Config, world_dir: Path, key: jax.Array) -> replay.TransitionBatch:
    return replay.TransitionBatch(dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations,
                                  dataset.terminals)


def init(key: jax.Array, spec: EnvSpec, config: Config, world) -> BCState:
    params = network(config, spec).init(key, jnp.zeros((1, spec.obs_dim)))
    return BCState(trained(params, optax.adam(config.learning_rate), target=False), config, spec)


def act(state: BCState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    return network(state.config, state.spec).apply(state.policy.params, obs)


def loss(params: dict, state: BCState, batch: replay.TransitionBatch) -> jax.Array:
    return jnp.mean(jnp.sum(jnp.square(network(state.config, state.spec).apply(params, batch.obs) - batch.action),
                            axis=-1))


def update(state: BCState, world: replay.TransitionBatch, key: jax.Array, step: jax.Array) -> tuple[BCState, dict]:
    index = jax.random.randint(key, (state.config.batch_size,), 0, world.obs.shape[0])
    batch = jax.tree.map(lambda x: x[index], world)
    value, grads = jax.value_and_grad(loss)(state.policy.params, state, batch)
    policy = apply_gradients(state.policy, grads, optax.adam(state.config.learning_rate))
    return state.replace(policy=policy), {"bc/loss": value}


AGENT = OfflineAgent(name="bc", Config=Config, init=init, act=act, prepare=prepare, update=update, RUN_DEFAULTS=RUN_DEFAULTS)
