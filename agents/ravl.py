"""RAVL: Reach-Aware Value Learning for offline model-based RL.

"The Edge-of-Reach Problem in Offline Model-Based RL" (Sims, Lu, Foerster,
Teh; arXiv 2402.12527; code anyasims/edge-of-reach). Model rollouts of k
steps from dataset states reach states at step k whose values are bootstrapped
FROM but never trained AT ("edge-of-reach" states). Their Q-values are never
corrected, and the max in the Bellman target propagates their errors: values
explode even with the TRUE dynamics (`--dynamics true`). RAVL fixes this with
value pessimism that does not depend on dynamics uncertainty: EDAC's
ensemble of critics with gradient diversity (An et al. 2021, arXiv 2110.01548).

    world model   7 probabilistic members (networks/ensemble.py), 5 elites, trained once on the dataset
    rollouts      every `rollout_every` updates: `rollout_batch` dataset states, horizon 5, a ~ pi,
                  a random elite per step, the task's known termination function; kept in a FIFO of
                  `retain_epochs` rollout batches
    batch         5% dataset transitions + 95% model transitions, 256 in all
    critics       N = 10, target  y = r + gamma (1 - d) (min_j Q'_j(s', a') - alpha log pi(a'|s'))
    L_Q           sum_j mean (Q_j(s, a) - y)^2  +  eta * ES                          (EDAC, Eq. 5)
    ES            1/(N-1) sum_{i != j} <g_i, g_j>,  g_j = grad_a Q_j(s, a) / ||grad_a Q_j(s, a)||,
                  averaged over the batch: the ensemble's action-gradients are pushed apart, so
                  its spread (and the min over it) grows off the data
                  (With ONE action dimension the normalized gradients are +-1, so ES is piecewise
                  constant and its gradient vanishes: on InvertedPendulum eta = 1 learns like eta = 0.)
    actor, alpha  SAC's (agents/sac.py), every update; in the authors' order (`--update-order edac`): first
                  alpha, L_alpha = mean -log alpha (log pi(a|s) + H_target) at a fresh sample of the current
                  actor, then the actor (with the new alpha, the critics before their step), then the
                  critics (their target from the updated actor and alpha), then the Polyak step
    networks      EDAC's initialization (`--init edac`): hidden biases 0.1, the critics' last layer U(+-3e-3),
                  the actor's mean and log-std heads U(+-1e-3); log sigma clipped hard to [-5, 2]
                  (`--log-std clip`; networks/actor_critic.py)

The world model is trained as the authors train it (train_dynamics_model.py; networks/ensemble.py
RAVL_CONFIG): a random 20% of the data held out, no cap; early stopping (5 epochs in which no member's
holdout MSE falls by 1%) counts only after `--model-min-epochs` 350 epochs; the first such plateau
before that cuts the learning rate x`--model-plateau-lr-factor` 0.3, once; at most `--model-max-epochs`
2000 epochs; standardized inputs clipped at +-`--model-input-clip` 10.

Where this file follows the authors' code (anyasims/edge-of-reach, agent_training/agent.py and
train_ravl_agent.py) and where it deliberately does not:

- real samples per batch: int(real_ratio x batch) = int(12.8) = 12 of 256, as the authors (the previous
  round() gave 13);
- update order and alpha loss: the authors' by default; `--update-order sac` (critic, Polyak, actor, alpha
  on a fresh sample from the updated actor: agents/sac.py's order) and `--alpha-loss alpha` (CleanRL's
  mean -alpha (...), whose gradient carries an extra factor alpha) are the previous choices;
- initialization and log-std: the authors' (EDAC's) by default; `--init default --log-std tanh` are SAC's
  (zero biases, log sigma squashed by tanh into [-5, 2]: sigma ~ 0.22 at a raw 0 instead of 1);
- the tanh log-Jacobian: exact here (2 (log 2 - u - softplus(-2u))); the authors' log(1 - tanh(u)^2 + 1e-6);
- the dynamics' input statistics: from the training split here; the authors' filter sees all the data
  (observations[0] and every next_observation). Each member's bootstrap resample is drawn once (the
  authors: once, too, then the members' rows are permuted among them every epoch).

Everything after the world model -- rollouts, batches, updates -- is one jitted
step, vmapped over seeds; the seeds share the world model (trained once, saved
under the run's `world/`, or loaded from `--model-path`). `--eta 0` is SAC-N
(the paper's baseline without the diversity term). Evaluation is in the real
environment; `diagnostics` reports the critics' Q at dataset start states next
to the evaluation's discounted return (the over-estimation the paper is about).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import replay
from agents import sac
from agents.contract import OfflineAgent
from agents.config import field, hyperparameters
from envs import EnvSpec
from networks import ensemble as ensemble_lib
from networks.training import apply_gradients, polyak
from replay import ring as ring_lib

RUN_DEFAULTS = {"total_steps": 1_000_000, "eval_every": 10_000, "log_every": 1_000}


@hyperparameters
class Config(sac.Config):
    """SAC-N + EDAC's diversity term on model rollouts; defaults are the paper's (D4RL MuJoCo)."""

    critic_lr: float = field(3e-4, "> 0")
    """Adam learning rate of the critics."""
    alpha_lr: float = field(3e-4, "> 0")
    """Adam learning rate of log alpha."""
    learning_starts: int = field(0, ">= 0")
    """Offline: updates start at once."""
    policy_frequency: int = field(1, ">= 1")
    """The actor and alpha train after every critic update."""
    num_critics: int = field(10, ">= 1")
    """N critics; the target takes the minimum over all of them."""
    critic_hidden: tuple[int, ...] = field((256, 256, 256), ">= 1")
    """Hidden widths of each critic."""
    actor_hidden: tuple[int, ...] = field((256, 256, 256), ">= 1")
    """Hidden widths of the actor."""
    init: Literal["edac", "default", "neubay"] = "edac"
    """Initialization of the critics and the actor: "edac" (the authors': hidden biases 0.1, the critics' last
    layer U(+-3e-3), the actor's heads U(+-1e-3)) or SAC's "default" (zero biases)."""
    log_std: Literal["clip", "tanh"] = "clip"
    """The actor's log-std: clipped hard to [log_std_min, log_std_max] (the authors') or squashed by tanh (SAC's)."""
    update_order: Literal["edac", "sac"] = "edac"
    """"edac": alpha, actor, critics, Polyak (the authors'); "sac": critics, Polyak, actor, alpha (agents/sac.py)."""
    alpha_loss: Literal["log_alpha", "alpha"] = "log_alpha"
    """L_alpha = mean -log alpha (log pi + H_target) (the authors') or mean -alpha (log pi + H_target) (CleanRL's)."""
    eta: float = field(1.0, ">= 0", static=True)   # eta = 0 skips the diversity term
    """Weight of EDAC's gradient-diversity term (0: SAC-N)."""
    real_ratio: float = field(0.05, "[0, 1]", static=True)
    """Fraction of each batch drawn from the dataset (the rest from model rollouts)."""
    rollout_batch: int = field(50_000, ">= 1")
    """Dataset states each rollout round starts from."""
    rollout_horizon: int = field(5, ">= 1")
    """Model steps per rollout."""
    rollout_every: int = field(1000, ">= 1")
    """Updates between rollout rounds."""
    retain_rounds: int = field(5, ">= 1")
    """Rollout rounds the model buffer keeps (capacity = rollout_batch x horizon x retain_rounds)."""
    dynamics: Literal["learned", "true"] = "learned"
    """Roll out with the learned ensemble, or step the real simulator from dataset states
    (the paper's central experiment; needs infos/qpos, infos/qvel in the dataset)."""
    model_path: str | None = None
    """Load a trained dynamics ensemble (saved by a previous run under <run>/world/dynamics) instead of training."""
    model_members: int = field(7, ">= 2")
    """Ensemble members trained."""
    model_elites: int = field(5, ">= 1")
    """Members rollouts sample from (lowest holdout MSE)."""
    model_hidden: tuple[int, ...] = field((200, 200, 200, 200), ">= 1")
    """Hidden widths of each member."""
    model_max_epochs: int | None = field(2000, ">= 1")
    """Cap on the model's training epochs (the authors' 2000; None: until early stopping). Wins over the minimum."""
    model_min_epochs: int = field(350, ">= 0")
    """Early stopping stops the model's training only after more than this many epochs (the authors' 350; 0: at
    the first plateau, MBPO's rule)."""
    model_plateau_lr_factor: float | None = field(0.3, "> 0")
    """The first plateau before --model-min-epochs multiplies the model's learning rate by this, once (the
    authors' 0.3; None: never)."""
    model_input_clip: float | None = field(10.0, "> 0")
    """The model's standardized inputs are clipped to +-this (the authors' 10; None: no clip)."""

    def validate(self) -> None:
        super().validate()
        if self.dynamics not in ("learned", "true"):
            raise ValueError(f"--dynamics must be learned or true, got {self.dynamics!r}")
        if self.update_order not in ("edac", "sac"):
            raise ValueError(f"--update-order must be edac or sac, got {self.update_order!r}")
        if self.alpha_loss not in ("log_alpha", "alpha"):
            raise ValueError(f"--alpha-loss must be log_alpha or alpha, got {self.alpha_loss!r}")
        if self.num_critics < 2 and self.eta > 0:
            raise ValueError("--eta > 0 needs --num-critics >= 2 (the diversity of one critic is undefined)")
        model_config(self).validate()


def model_config(config: Config) -> ensemble_lib.EnsembleConfig:
    """RAVL_CONFIG (MBPO's ensemble, the authors' schedule) at the flags' sizes and schedule; other depths than 4
    get per-layer weight decays spread evenly over MBPO's range 2.5e-5 .. 1e-4."""
    depth = len(config.model_hidden)
    decays = ensemble_lib.RAVL_CONFIG.weight_decays
    if depth + 1 != len(decays):
        decays = tuple(float(d) for d in np.linspace(decays[0], decays[-1], depth + 1))
    return dataclasses.replace(ensemble_lib.RAVL_CONFIG, num_members=config.model_members,
                               num_elites=config.model_elites, hidden=tuple(config.model_hidden),
                               weight_decays=decays, max_epochs=config.model_max_epochs,
                               min_epochs=config.model_min_epochs, plateau_lr_factor=config.model_plateau_lr_factor,
                               input_clip=config.model_input_clip)


# ----------------------------------------------------------------------------
# The world: dataset + dynamics (shared by every seed)
# ----------------------------------------------------------------------------


def check(dataset, spec: EnvSpec, config: Config) -> None:
    """Before anything is written: a saved model must fit this env, true dynamics needs simulator states."""
    if config.model_path is not None and config.dynamics == "learned":
        ensemble_lib.load(config.model_path, model_config(config), spec.obs_dim, spec.action_dim)
    if config.dynamics == "true":
        from envs import true_dynamics

        true_dynamics.make_true_dynamics(spec.env_id)       # raises for unsupported envs, listing the supported
        if not {"qpos", "qvel"} <= set(dataset.infos):
            raise ValueError(f"--dynamics true needs infos/qpos and infos/qvel in the dataset "
                             f"{dataset.metadata.source} (collect.py records them on gym: envs for the random, "
                             f"medium, expert and medium-expert policies; medium-replay is a replay buffer "
                             f"without them)")


def prepare(dataset, spec: EnvSpec, config: Config, world_dir: Path, key: jax.Array) -> dict:
    """Train (or load) the dynamics ensemble; the world every seed learns from."""
    from envs import true_dynamics

    world = {"data": replay.TransitionBatch(dataset.observations, dataset.actions, dataset.rewards,
                                            dataset.next_observations, dataset.terminals),
             "starts": jnp.asarray(replay.datasets.episode_starts(dataset), jnp.int32)}
    if config.dynamics == "true":
        world["qpos"], world["qvel"] = jnp.asarray(dataset.infos["qpos"]), jnp.asarray(dataset.infos["qvel"])
        return world
    log = lambda text: print(text, file=sys.stderr, flush=True)
    model = ensemble_lib.load_or_fit(dataset, spec.obs_dim, spec.action_dim, model_config(config), world_dir, key,
                                     config.model_path, "dynamics", log)
    true_dynamics.termination_fn(spec.env_id)      # raises early for a task without a known termination rule
    world["model"] = model
    return world


# ----------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------


@struct.dataclass
class RAVLState:
    sac: sac.SACState                 # critics (N), actor, alpha; its replay is unused (None)
    model_buffer: ring_lib.TransitionRing
    probe_obs: jax.Array              # dataset episode-start observations, for the value diagnostics

    @property
    def config(self) -> Config:
        """The hyperparameters, held by the SAC state."""
        return self.sac.config


def init(key: jax.Array, spec: EnvSpec, config: Config, world: dict) -> RAVLState:
    base = sac.init(key, spec, config, capacity=4).replace(replay=None)
    capacity = config.rollout_batch * config.rollout_horizon * config.retain_rounds
    # Without a world (an exported policy being loaded: agents/contract.py), the probe is a stand-in of zeros.
    probe = world["data"].obs[world["starts"][:256]] if world is not None else jnp.zeros((1, spec.obs_dim))
    return RAVLState(base, ring_lib.create(capacity, spec.obs_dim, spec.action_dim), probe)


def act(state: RAVLState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    return sac.act(state.sac, obs, key, explore)


# ----------------------------------------------------------------------------
# Model rollouts
# ----------------------------------------------------------------------------


def model_rollouts(state: RAVLState, world: dict, key: jax.Array) -> tuple[RAVLState, jax.Array]:
    """`rollout_batch` branches of `rollout_horizon` steps from dataset states into the model buffer.

    Steps after a branch terminates are not stored. Returns the new state and the number stored."""
    from envs import true_dynamics

    config, spec = state.sac.config, state.sac.spec
    k_start, k_steps = jax.random.split(key)
    index = jax.random.randint(k_start, (config.rollout_batch,), 0, world["data"].obs.shape[0])
    obs = world["data"].obs[index]
    terminated_fn = true_dynamics.termination_fn(spec.env_id)
    if config.dynamics == "true":
        simulator = true_dynamics.make_true_dynamics(spec.env_id)
        sim = jax.vmap(simulator.state_from)(world["qpos"][index], world["qvel"][index])
    else:
        sim = None

    def step(carry, key):
        obs, sim, alive, buffer = carry
        k_action, k_model = jax.random.split(key)
        action, _ = sac.policy(state.sac, state.sac.actor.params, obs, k_action)
        if config.dynamics == "true":
            sim, next_obs, reward, terminated = jax.vmap(simulator.step)(sim, action)
        else:
            next_obs, reward, _ = ensemble_lib.sample_step(world["model"], obs, action, k_model)
            terminated = terminated_fn(obs, action, next_obs)
        batch = replay.TransitionBatch(obs, action, reward, next_obs, terminated.astype(jnp.float32))
        buffer = ring_lib.add(buffer, batch, alive)
        return (next_obs, sim, alive & ~terminated, buffer), jnp.sum(alive)

    init_carry = (obs, sim, jnp.ones(config.rollout_batch, bool), state.model_buffer)
    (_, _, _, buffer), stored = jax.lax.scan(step, init_carry, jax.random.split(k_steps, config.rollout_horizon))
    return state.replace(model_buffer=buffer), jnp.sum(stored)


# ----------------------------------------------------------------------------
# Losses and the update
# ----------------------------------------------------------------------------


def diversity(critic_params: dict, state: sac.SACState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """EDAC's ES: 1/(N-1) sum_{i != j} <g_i, g_j> of the normalized action-gradients, averaged over the batch."""
    network = sac.critic_network(state.config)
    q = lambda a: network.apply(critic_params, obs, a)                                         # [B, N]
    # Forward mode, one pass per action dimension k: sample b's Q depends on its own action only, so the
    # tangent e_k on every sample gives dQ_j(s_b, a_b)/da_{b,k} for all b and j at once. Control tasks have
    # far fewer action dimensions than critics x batch, and reverse mode would need one pass per critic
    # through the whole ensemble (N^2 critic passes), then a second-order pass through each.
    basis = jnp.eye(action.shape[-1], dtype=action.dtype)
    tangents = jax.vmap(lambda e: jax.jvp(q, (action,), (jnp.broadcast_to(e, action.shape),))[1])(basis)
    grads = jnp.transpose(tangents, (2, 1, 0))                                                 # [N, B, A]
    # optax.safe_norm floors ||g|| at 1e-10 with a finite gradient: the plain norm's gradient g / ||g|| is NaN
    # at g = 0, which a ReLU critic with every unit dead at a sample produces (torch's norm has subgradient 0
    # there; EDAC's code relies on it). Above the floor this is EDAC's g / (||g|| + 1e-10) exactly.
    grads = grads / (optax.safe_norm(grads, 1e-10, axis=-1, keepdims=True) + 1e-10)
    gram = jnp.einsum("iba,jba->bij", grads, grads)                                              # [B, N, N]
    num = gram.shape[-1]
    off_diagonal = jnp.sum(gram, axis=(1, 2)) - jnp.trace(gram, axis1=1, axis2=2)
    return jnp.mean(off_diagonal) / (num - 1)


def critic_loss(critic_params: dict, state: sac.SACState, batch: replay.TransitionBatch, target: jax.Array,
                eta: float) -> tuple[jax.Array, dict]:
    """SAC-N's TD loss + eta * ES."""
    td, metrics = sac.critic_loss(critic_params, state, batch, target)
    if eta == 0:
        return td, metrics
    es = diversity(critic_params, state, batch.obs, batch.action)
    return td + eta * es, {**metrics, "critic/diversity": es}


def mixed_batch(state: RAVLState, world: dict, key: jax.Array) -> replay.TransitionBatch:
    config = state.sac.config
    real = int(config.batch_size * config.real_ratio)      # the authors' int(): 12 of 256 at 5%
    k_real, k_model = jax.random.split(key)
    parts = []
    if real > 0:
        index = jax.random.randint(k_real, (real,), 0, world["data"].obs.shape[0])
        parts.append(jax.tree.map(lambda x: x[index], world["data"]))
    if config.batch_size - real > 0:
        parts.append(ring_lib.sample(state.model_buffer, k_model, config.batch_size - real))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs).astype(jnp.float32), *parts)


def update(state: RAVLState, world: dict, key: jax.Array, step: jax.Array) -> tuple[RAVLState, dict]:
    """Update `step` (from 1): a rollout round when due, then one alpha, one actor and one critic step (in
    `update_order`) on the same mixed batch."""
    config = state.sac.config
    k_roll, k_batch, k_target, k_actor = jax.random.split(key, 4)
    # `step` is unbatched (shared by the seeds), so this is a real branch under vmap.
    state, _ = jax.lax.cond((step - 1) % config.rollout_every == 0,
                            lambda s: model_rollouts(s, world, k_roll),
                            lambda s: (s, jnp.zeros((), jnp.int32)), state)
    batch = mixed_batch(state, world, k_batch)
    alpha_loss_fn = sac.log_alpha_loss if config.alpha_loss == "log_alpha" else sac.alpha_loss
    critic_opt, _, _ = sac.optimizers(config)

    def critic_step(base):
        target = jax.lax.stop_gradient(sac.critic_target(base, batch, k_target))
        grads, metrics = jax.grad(critic_loss, has_aux=True)(base.critic.params, base, batch, target, config.eta)
        critic = apply_gradients(base.critic, grads, critic_opt)
        return base.replace(critic=polyak(critic, config.tau), updates=base.updates + 1), metrics

    base = state.sac
    if config.update_order == "edac":
        # The authors' Agent.update: alpha (a fresh no-grad sample of the current actor), actor, critic, target.
        base = sac.alpha_step(base, batch.obs, jax.random.fold_in(k_actor, 1), alpha_loss_fn)
        base, actor_loss, log_prob = sac.actor_step(base, batch.obs, k_actor)
        base, metrics = critic_step(base)
    else:
        base, metrics = critic_step(base)
        base, actor_loss, log_prob = sac.actor_step(base, batch.obs, k_actor)
        base = sac.alpha_step(base, batch.obs, jax.random.fold_in(k_actor, 1), alpha_loss_fn)
    actor_metrics = {"actor/loss": actor_loss, "actor/entropy": -jnp.mean(log_prob), "alpha": base.alpha}
    return state.replace(sac=base), {**metrics, **actor_metrics,
                                     "model_buffer/size": state.model_buffer.size.astype(jnp.float32)}


def diagnostics(state: RAVLState, key: jax.Array) -> dict:
    """Q of the policy's action at dataset start states (min and mean over critics): what the critics
    expect to earn, to compare with the evaluation's discounted return (eval/discounted_return)."""
    base = state.sac
    action, _ = sac.policy(base, base.actor.params, state.probe_obs, key)
    q = sac.critic_network(base.config).apply(base.critic.params, state.probe_obs, action)
    return {"value/q_start_min": jnp.mean(jnp.min(q, axis=-1)), "value/q_start_mean": jnp.mean(q),
            "value/q_start_std": jnp.mean(jnp.std(q, axis=-1))}


AGENT = OfflineAgent(name="ravl", Config=Config, init=init, act=act, prepare=prepare, update=update, check=check,
                     diagnostics=diagnostics, RUN_DEFAULTS=RUN_DEFAULTS)
