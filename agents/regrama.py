"""ReGraMa: SAC whose critics re-initialize their gradient-inactive neurons.

"Measure gradients not activations! Enhancing neuronal activity in deep RL"
(arXiv 2505.24061). GraMa scores a neuron by the magnitude of the loss
gradient flowing into it, not by its activation: a ReLU unit can fire and
still have stopped learning (its gradient vanishes), and a LayerNorm/leaky
unit can be silent in activation yet alive. ReGraMa resets what GraMa calls
inactive.

    g_i = mean_j |dL_Q/dW_ji|             incoming weights of neuron i (LayerNorm: |dL_Q/dgamma_i|)
    s_i = g_i / (mean_k g_k + 1e-9)       normalized by its layer's mean
    inactive_i  <=>  s_i <= tau           (--mask threshold; --mask percentage: the bottom --percentage %;
                                           hybrid: s_i <= tau capped at the bottom p%, as the authors' GradientReDo;
                                           union: either)

Every `reset_every` critic updates (default 1000) the TD loss's gradients on a
fresh replay batch score the critics' hidden neurons; inactive ones get new
incoming weights He-uniform, U(+-sqrt(6 / fan_in)), and biases U(+-1/sqrt(fan_in)),
as the authors re-initialize (`--reinit layer` draws from the layer's own
initializer with zero bias instead). Outgoing weights
are kept; the output layer never resets; the target critics keep following by
Polyak averaging. `--score redo` swaps in ReDo (Sokar et al. 2023, arXiv
2302.12902): scores from mean |activation|, and the reset also zeroes the
outgoing weights and the Adam moments of every changed weight.

The threshold's default 0.1 is ReDo's value; the GraMa paper's own threshold was not
read. Everything else -- acting, storing, the critic/actor/alpha updates, many
envs per seed (`--num-envs`) -- is SAC's (agents/sac.py), imported. Diagnostics (dormant ratio at tau in {0,
0.025, 0.1}, GraMa-inactive ratio, srank and feature norm) are logged at every
evaluation; the fraction of neurons reset at the last reset is a training metric.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

import replay
from agents import critic, sac
from agents.contract import OffPolicyAgent
from agents.config import field, hyperparameters
from envs import EnvSpec
from networks import plasticity
from networks.mlp import kernel_init



@hyperparameters
class Config(sac.Config):
    """SAC's hyperparameters (CleanRL's defaults) plus the reset rule."""

    reset_every: int = field(1000, ">= 1")
    """Critic updates between two resets."""
    score: Literal["grama", "redo"] = "grama"
    """Neuron score: gradient magnitude (GraMa) or activation magnitude (ReDo, with ReDo's reset)."""
    mask: Literal["threshold", "percentage", "hybrid", "union"] = "threshold"
    """Reset neurons with score <= threshold, the bottom `percentage` % of each layer, both (hybrid: the
    threshold capped at percentage %, the authors'), or either (union)."""
    threshold: float = field(0.1, "[0, 1]", about="the score threshold tau")
    """tau, the score threshold, in [0, 1] (not SAC's --tau, the Polyak rate)."""
    percentage: float = field(10.0, "(0, 100]")
    """Bottom percentage of each layer for --mask percentage/hybrid/union, in (0, 100]."""
    reinit: Literal["he_uniform", "layer"] = "he_uniform"
    """Reset neurons' incoming weights: He-uniform with U(+-1/sqrt(fan_in)) biases (the authors'), or the layer's
    own initializer with zero biases."""

    def validate(self) -> None:
        super().validate()
        if self.score not in ("grama", "redo"):
            raise ValueError(f"--score must be grama or redo, got {self.score!r}")
        if self.mask not in plasticity.MASK_MODES:
            raise ValueError(f"--mask must be one of {', '.join(plasticity.MASK_MODES)}, got {self.mask!r}")
        if self.reinit not in ("he_uniform", "layer"):
            raise ValueError(f"--reinit must be he_uniform or layer, got {self.reinit!r}")


@struct.dataclass
class ReGraMaState:
    sac: sac.SACState
    resets: jax.Array             # resets done
    reset_fraction: jax.Array     # fraction of the critics' hidden neurons re-initialized at the last reset

    @property
    def config(self) -> Config:
        """The hyperparameters, held by the SAC state."""
        return self.sac.config


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> ReGraMaState:
    return ReGraMaState(sac.init(key, spec, config, capacity), jnp.zeros((), jnp.int32), jnp.zeros(()))


def act(state: ReGraMaState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    return sac.act(state.sac, obs, key, explore)


def store(state: ReGraMaState, transition: replay.Transition) -> ReGraMaState:
    return state.replace(sac=sac.store(state.sac, transition))


def neuron_scores(state: sac.SACState, batch: replay.TransitionBatch, key: jax.Array) -> dict:
    """Scores {hidden_k: [num_critics, width]} of the critics' hidden neurons on `batch`."""
    if state.config.score == "redo":
        return plasticity.redo_scores(sac.critic_activations(state, state.critic.params, batch.obs, batch.action))
    target = jax.lax.stop_gradient(sac.critic_target(state, batch, key))
    grads, _ = jax.grad(sac.critic_loss, has_aux=True)(state.critic.params, state, batch, target)
    return plasticity.grama_scores(critic.mlp(grads["params"]))


def reset_critics(state: ReGraMaState, key: jax.Array) -> ReGraMaState:
    """Score the critics' hidden neurons on a fresh batch and re-initialize the inactive ones."""
    base, config = state.sac, state.sac.config
    k_sample, k_target, k_init = jax.random.split(key, 3)
    batch = critic.sample_batch(base, k_sample)
    masks = plasticity.neuron_masks(neuron_scores(base, batch, k_target), config.mask, config.threshold,
                                    config.percentage)
    redo = config.score == "redo"
    params = base.critic.params
    if config.reinit == "he_uniform":
        inits = dict(kernel_init=nn.initializers.he_uniform(), bias_init=plasticity.fan_in_uniform_bias,
                     bias_init_takes_fan_in=True)
    else:
        inits = dict(kernel_init=kernel_init(config.initializer))
    mlp, changed = plasticity.reset_neurons(k_init, critic.mlp(params["params"]), masks, zero_outgoing=redo,
                                            **inits)
    params = {"params": {"critics": {"MLP_0": mlp}}}
    opt_state = base.critic.opt_state
    if redo:
        opt_state = plasticity.reset_optimizer_moments(opt_state, changed, ("params", "critics", "MLP_0"))
    critics = base.critic.replace(params=params, opt_state=opt_state)
    fraction = sum(jnp.sum(m) for m in masks.values()) / sum(m.size for m in masks.values())
    return state.replace(sac=base.replace(critic=critics), resets=state.resets + 1, reset_fraction=fraction)


def update_once(state: ReGraMaState, key: jax.Array, index: jax.Array) -> tuple[ReGraMaState, dict]:
    """SAC's update number `index`; after every `reset_every`-th, a reset (a real branch: `index` is unbatched)."""
    k_update, k_reset = jax.random.split(key)
    base, metrics = sac.update_once(state.sac, k_update, index)
    state = state.replace(sac=base)
    state = jax.lax.cond((index + 1) % base.config.reset_every == 0,
                         lambda s: reset_critics(s, k_reset), lambda s: s, state)
    return state, {**metrics, "regrama/resets": state.resets.astype(jnp.float32),
                   "regrama/reset_fraction": state.reset_fraction}


def update(state: ReGraMaState, key: jax.Array, step: jax.Array) -> tuple[ReGraMaState, dict]:
    config = state.sac.config
    return critic.scheduled_updates(update_once, state, key, step, config.learning_starts, config.updates_per_step,
                                    config.num_envs)


def diagnostics(state: ReGraMaState, key: jax.Array) -> dict:
    return sac.diagnostics(state.sac, key)


AGENT = OffPolicyAgent(name="regrama", Config=Config, init=init, act=act, store=store, update=update,
                       diagnostics=diagnostics, warmup=lambda config, spec: config.learning_starts,
                       warmup_flag="learning_starts")
