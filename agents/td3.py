"""TD3: Twin Delayed Deep Deterministic policy gradient.

Fujimoto, van Hoof and Meger 2018, "Addressing Function Approximation Error in
Actor-Critic Methods" (arXiv 1802.09477). Defaults are CleanRL's
`td3_continuous_action.py`: 256 x 256 ReLU networks, Adam 3e-4, batch 256,
25000 random steps, exploration noise 0.1, target policy smoothing noise 0.2
clipped at 0.5, actor and targets updated every second critic update.

    a'    = clip(mu'(s') + clip(eps, -c, c), -1, 1),   eps ~ N(0, sigma^2)     target policy smoothing (Eq. 14)
    y     = r + gamma (1 - terminated) min_j Q'_j(s', a')                      clipped double Q (Eq. 10)
    L_Q   = sum_j mean (Q_j(s, a) - y)^2
    L_mu  = -mean Q_1(s, mu(s))                                                 every `policy_frequency` updates
    targets <- Polyak(tau), critics and actor, on the actor's schedule

Actions live in [-1, 1] (every env of this project is scaled so); the
exploration and smoothing noises are in those units. Truncation bootstraps.
Storing, the critic ensemble, its TD loss, its diagnostics and the update
schedule are the off-policy critic pieces SAC shares (agents/critic.py).

Many envs per seed (`--num-envs N`, JAX envs) work as in SAC (agents/sac.py,
FastTD3's regime): N transitions stored per loop step, one replay stream per
env, `updates_per_step` x N updates per loop step; steps count env steps
summed over the N envs.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax
from flax import struct

import replay
from agents import critic
from agents.contract import OffPolicyAgent
from agents.config import check_fields, field, hyperparameters
from envs import EnvSpec
from networks.actor_critic import DeterministicActor
from networks.mlp import ACTIVATIONS, KERNEL_INITS
from networks.actor_critic import QEnsemble
from networks.training import Trained, apply_gradients, polyak, trained
from replay import streams

store = critic.store


@hyperparameters
class Config:
    """TD3's hyperparameters; defaults are CleanRL's."""

    buffer_size: int = field(1_000_000, ">= 1")
    """Replay capacity in transitions per seed (over all its envs: each env's stream holds an equal share)."""
    batch_size: int = field(256, ">= 1")
    """Transitions per gradient step."""
    num_envs: int = field(1, ">= 1")
    """Envs per seed stepped together (JAX envs): each loop step stores N transitions, one replay stream per
    env; --total-steps, --learning-starts and --updates-per-step count env steps summed over them."""
    discount: float = field(0.99, "[0, 1]")
    """gamma."""
    tau: float = field(0.005, "(0, 1]")
    """Polyak rate of the target networks."""
    critic_lr: float = field(3e-4, "> 0")
    """Adam learning rate of the critics."""
    actor_lr: float = field(3e-4, "> 0")
    """Adam learning rate of the actor."""
    learning_starts: int = field(25_000, ">= 0")
    """Uniform random actions and no updates for this many env steps."""
    updates_per_step: float = field(1.0, "(0, 1024]", static=True, about="the update-to-data ratio")
    """Update-to-data ratio: critic updates per env step (fractions allowed; at most 1024); a loop step of N envs
    owes N times this. Static: the update count and the delayed actor's schedule stay real branches under vmap only
    if every lane has the same ratio."""
    policy_frequency: int = field(2, ">= 1")
    """d: the actor and the targets update every d critic updates."""
    exploration_noise: float = field(0.1, ">= 0")
    """Std of the Gaussian noise added to mu(s) while acting."""
    policy_noise: float = field(0.2, ">= 0")
    """Std of the target policy smoothing noise."""
    noise_clip: float = field(0.5, ">= 0")
    """The smoothing noise is clipped to [-noise_clip, noise_clip]."""
    num_critics: int = field(2, ">= 1")
    """Critics in the ensemble; the target takes the minimum over all of them."""
    critic_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of each critic."""
    actor_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the actor."""
    activation: str = "relu"
    """Hidden activation of every network."""
    layer_norm: bool = False
    """LayerNorm after every hidden Linear."""
    initializer: Literal["pytorch_default", "xavier_uniform", "lecun_uniform"] = "pytorch_default"
    """Weight initializer of every Linear (biases start at 0)."""

    def validate(self) -> None:
        check_fields(self)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"--activation must be one of {', '.join(sorted(ACTIVATIONS))}, got {self.activation!r}")
        if self.initializer not in KERNEL_INITS:
            raise ValueError(f"--initializer must be one of {', '.join(KERNEL_INITS)}, got {self.initializer!r}")


def critic_network(config: Config) -> QEnsemble:
    return critic.ensemble(config)


def critic_loss(critic_params: dict, state: TD3State, batch: replay.TransitionBatch,
                target: jax.Array) -> tuple[jax.Array, dict]:
    """sum_j mean (Q_j(s, a) - y)^2."""
    return critic.td_loss(critic_network(state.config), critic_params, batch, target)


def actor_network(config: Config, spec: EnvSpec) -> DeterministicActor:
    return DeterministicActor(spec.action_dim, config.actor_hidden, config.activation, config.layer_norm,
                              config.initializer)


def optimizers(config: Config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    return optax.adam(config.critic_lr), optax.adam(config.actor_lr)


@struct.dataclass
class TD3State:
    critic: Trained                 # with target critics
    actor: Trained                  # with target actor
    replay: replay.ReplayBuffer     # replay/streams.py: one stream per env of the seed
    env_steps: jax.Array            # transitions stored (env steps, summed over the seed's envs)
    updates: jax.Array
    actor_metrics: dict             # of the last (delayed) actor update
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)
    spec: EnvSpec = struct.field(pytree_node=False)


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> TD3State:
    critic_opt, actor_opt = optimizers(config)
    k_critic, k_actor = jax.random.split(key)
    obs, action = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.action_dim))
    if capacity is None:
        capacity = streams.capacity_for(config.buffer_size, config.num_envs, spec.max_episode_steps)
    return TD3State(
        critic=trained(critic_network(config).init(k_critic, obs, action), critic_opt),
        actor=trained(actor_network(config, spec).init(k_actor, obs), actor_opt),
        replay=streams.create(config.num_envs, capacity, spec.obs_dim, spec.action_dim, horizon=1),
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        actor_metrics={"actor/loss": jnp.zeros(())},
        config=config,
        spec=spec,
    )


def act(state: TD3State, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    """mu(s) (+ N(0, exploration_noise^2), clipped, when exploring; uniform before `learning_starts`)."""
    config = state.config
    action = actor_network(config, state.spec).apply(state.actor.params, obs)
    if not explore:
        return action
    k_noise, k_uniform = jax.random.split(key)
    noisy = jnp.clip(action + config.exploration_noise * jax.random.normal(k_noise, action.shape), -1.0, 1.0)
    uniform = jax.random.uniform(k_uniform, action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(state.env_steps < config.learning_starts, uniform, noisy)


def critic_target(state: TD3State, batch: replay.TransitionBatch, key: jax.Array) -> jax.Array:
    """y = r + gamma (1 - terminated) min_j Q'_j(s', a'), a' the smoothed target action."""
    config = state.config
    next_action = actor_network(config, state.spec).apply(state.actor.target_params, batch.next_obs)
    noise = jnp.clip(config.policy_noise * jax.random.normal(key, next_action.shape),
                     -config.noise_clip, config.noise_clip)
    next_action = jnp.clip(next_action + noise, -1.0, 1.0)
    next_q = critic_network(config).apply(state.critic.target_params, batch.next_obs, next_action)
    return batch.reward + config.discount * (1.0 - batch.terminated) * jnp.min(next_q, axis=-1)


def actor_loss(actor_params: dict, state: TD3State, obs: jax.Array) -> jax.Array:
    """-mean Q_1(s, mu(s)): the deterministic policy gradient through the first critic."""
    action = actor_network(state.config, state.spec).apply(actor_params, obs)
    return -jnp.mean(critic_network(state.config).apply(state.critic.params, obs, action)[..., 0])


def update_once(state: TD3State, key: jax.Array, index: jax.Array) -> tuple[TD3State, dict]:
    """Critic update number `index`; every `policy_frequency`-th also the actor and both targets."""
    config = state.config
    critic_opt, actor_opt = optimizers(config)
    k_sample, k_noise = jax.random.split(key)
    batch = critic.sample_batch(state, k_sample)
    target = jax.lax.stop_gradient(critic_target(state, batch, k_noise))
    grads, metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, state, batch, target)
    metrics["critic/grad_norm"] = optax.tree.norm(grads)
    state = state.replace(critic=apply_gradients(state.critic, grads, critic_opt), updates=state.updates + 1)

    def train_actor(state):
        loss, grads = jax.value_and_grad(actor_loss)(state.actor.params, state, batch.obs)
        actor = polyak(apply_gradients(state.actor, grads, actor_opt), config.tau)
        return state.replace(actor=actor, critic=polyak(state.critic, config.tau), actor_metrics={"actor/loss": loss})

    state = jax.lax.cond(index % config.policy_frequency == 0, train_actor, lambda s: s, state)
    return state, {**metrics, **state.actor_metrics}


def update(state: TD3State, key: jax.Array, step: jax.Array) -> tuple[TD3State, dict]:
    """The updates due after the loop step that ended at env step `step` (agents/critic.py's schedule)."""
    config = state.config
    return critic.scheduled_updates(update_once, state, key, step, config.learning_starts, config.updates_per_step,
                                    config.num_envs)


def diagnostics(state: TD3State, key: jax.Array) -> dict:
    """The critics' plasticity diagnostics (agents/critic.py) with TD3's target and loss."""
    return critic.diagnostics(state, key, critic_network(state.config), critic_target, critic_loss)


AGENT = OffPolicyAgent(name="td3", Config=Config, init=init, act=act, store=store, update=update,
                       diagnostics=diagnostics, warmup=lambda config, spec: config.learning_starts,
                       warmup_flag="learning_starts")
