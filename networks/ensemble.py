"""Probabilistic dynamics ensembles for offline model-based RL (RAVL, NEUBAY).

An ensemble of M independent networks, each a Gaussian over the change of state
and the reward given the current state and action:

    x = ((s, a) - mu_x) / sigma_x                          inputs standardized with the training data
    y = ((s' - s, r) - mu_y) / sigma_y                     targets; mu_y = 0, sigma_y = 1 unless
                                                           `normalize_outputs` (NEUBAY)
    p_m(y | x) = N(mean_m(x), diag exp(logvar_m(x)))       m = 1..M, D = obs_dim + 1 outputs

Back in the environment's units (what `predict` returns), member m predicts

    next_obs ~ N(s + sigma_y[:S] * mean_m[:S] + mu_y[:S], sigma_y[:S]^2 * exp(logvar_m[:S]))
    reward   ~ N(sigma_y[S] * mean_m[S] + mu_y[S],        sigma_y[S]^2 * exp(logvar_m[S]))

Each member is an MLP, Linear -> [LayerNorm] -> activation per hidden width, then
one Linear with 2D outputs split into the mean and the raw log-variance. The raw
log-variance is soft-clamped between learned bounds (PETS, Chua et al. 2018,
arXiv 1805.12114, appendix A.1; kept by MBPO, Janner et al. 2019, arXiv 1906.08253):

    l = l_max - softplus(l_max - l_raw)                    smooth min(l, l_max)
    l = l_min + softplus(l - l_min)                        smooth max(l, l_min)

The training loss (PETS / MBPO), summed over members, averaged over the batch b
and the D output dimensions:

    L = sum_m mean_{b,d} [ (y_bd - mean_m,bd)^2 exp(-l_m,bd) + l_m,bd ]      (= 2 NLL - log 2 pi)
      + c_bound * sum_m sum_d (l_max_m,d - l_min_m,d)                          c_bound = 0.01
      + sum_m sum_k lambda_k ||W_m,k||^2 / 2               "adam_l2" only: per-layer L2 on the
                                                           kernels (MBPO lambda_k = 2.5e-5, 5e-5,
                                                           7.5e-5, 7.5e-5, 1e-4), optimized by Adam

The bound term keeps l_max from drifting up and l_min from drifting down, which
would let the clamp stop constraining. NEUBAY (Ni et al. 2025, arXiv 2512.04341)
instead fixes the bounds (log sigma in [-5, 0.25], i.e. l in [-10, 0.5]),
standardizes the targets and uses AdamW (decoupled weight decay, lr * wd * theta per
step) on LayerNorm + leaky-ReLU members: `learn_logvar_bounds=False`,
`normalize_outputs=True`, `optimizer="adamw"`, `NEUBAY_CONFIG`.

Training (`train`), MBPO's procedure:

- a random holdout of min(holdout_fraction * N, max_holdout) transitions (20% in all
  three; the cap is 1000 in NEUBAY's code, `max_logging` = 5000 in MBPO's, none in RAVL's);
- the input (and, with normalize_outputs, target) statistics from the rest (MBPO;
  NEUBAY uses all the data);
- each member its own order of the training rows: a bootstrap resample (N draws
  with replacement, once per `train` call; MBPO) or the rows themselves (NEUBAY),
  shuffled independently per member at every epoch; an epoch is ceil(N / batch)
  minibatches, all members updated in the same jitted step (one `lax.scan`);
- after each epoch the holdout MSE of each member (in the network's output units);
  member m "improves" when mse_m < (1 - 0.01) best_m, and then its parameters are
  snapshotted as its best. A PLATEAU is `patience` (5) consecutive epochs in which no
  member improved. Training stops at the first plateau (MBPO's rule; MBPO's code counts
  one more epoch) -- unless `min_epochs` is set: then a plateau stops training only once
  more than `min_epochs` epochs are done, and with `plateau_lr_factor` the FIRST plateau
  before that multiplies the learning rate by the factor, once, and starts the patience
  count afresh (RAVL's train_dynamics_model.py: min_epochs 350, a StepLR x0.3 applied once,
  the improvement window reset; its stop test is `i >= min_epochs` on the 0-based epoch i,
  so the earliest stop is after min_epochs + 1 epochs, and so it is here). Later plateaus
  before the minimum change nothing; training goes on, and stops at the first epoch past
  the minimum that ends a plateau. `max_epochs` caps it all (RAVL 2000; it wins over
  min_epochs). Each member ends at its best snapshot;
- elites: the `num_elites` members with the lowest holdout MSE (MBPO: 5 of 7; NEUBAY
  keeps the best 100 of 128).

Where the sources differ, the choices here (each a config field):

- log-variance bounds: per member ([M, D]) here, so members are fully independent
  (a member can be restored from its own snapshot, or kept / dropped); MBPO shares one
  pair across members.
- `normalize_outputs`: targets (delta s, r) standardized by their own mean and std.
  NEUBAY scales delta s by the std of s instead; both are affine, so `predict` is
  the same kind of model in the environment's units.
- LayerNorm is `networks.mlp.layer_norm` (no learned scale or shift); NEUBAY's
  equinox LayerNorm learns them.
- `kernel_init`: "truncated_normal" is MBPO's N(0, 1 / (4 fan_in)) truncated at
  two standard deviations; "pytorch_default" (U(+-1/sqrt(fan_in))) is NEUBAY's
  (equinox's) Linear init. Biases start at 0 in both.
- `input_clip`: the standardized inputs are clipped to [-c, c] (RAVL's MeanStdevFilter,
  c = 10, in training and in rollouts); None (MBPO here, NEUBAY) does not clip. RAVL's
  filter takes its statistics from all the data (its observations from
  `observations[0]` and all `next_observations`); here they come from the training split.

Everything except `train`, `save` and `load` is a pure function of arrays that jits
and vmaps; the config travels with the state as static data, so `predict(state, obs,
action)` needs no other argument.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct

from networks.mlp import KERNEL_INITS, activation, kernel_init, layer_norm

OPTIMIZERS = ("adam_l2", "adamw")
ENSEMBLE_KERNEL_INITS = ("truncated_normal",) + KERNEL_INITS
DISAGREEMENTS = ("max_deviation", "std", "max_aleatoric")
STD_MIN = 1e-12  # a statistic's std below this (a constant feature) is replaced by 1, as in MBPO's scaler
MODEL_FORMAT = "networks.ensemble/1"
_HOLDOUT_CHUNK = 4096  # holdout rows evaluated at once (bounds the memory of a large holdout)


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleConfig:
    """Every hyperparameter of the ensemble and its fit. Defaults are MBPO's as used by RAVL.

    Architecture (a saved model must match these to load):
      num_members:        M, ensemble members trained (RAVL/MBPO 7; NEUBAY 128).
      hidden:             widths of each member's hidden layers (MBPO: 4 x 200; NEUBAY the same).
      activation:         a name in networks.mlp.ACTIVATIONS ("swish" MBPO, "leaky_relu" NEUBAY).
      layer_norm:         LayerNorm after each hidden Linear, before the activation (NEUBAY).
      normalize_outputs:  standardize the targets (delta s, r) with their training mean/std (NEUBAY);
                          otherwise the network predicts them in the environment's units (MBPO).
      learn_logvar_bounds: l_max, l_min learned with the bound penalty (PETS/MBPO) or fixed at their
                          initial values (NEUBAY).
      optimizer:          "adam_l2" (Adam on a loss with per-layer L2, MBPO) or "adamw" (NEUBAY).

    Selection:
      num_elites:         members used by default for sampling and disagreement: the lowest holdout MSE
                          (MBPO 5; NEUBAY's "best 100 kept").

    Optimization:
      lr:                 learning rate (1e-3 in both).
      weight_decays:      "adam_l2": L2 coefficient per Linear layer, one per hidden layer + the output
                          layer, on the kernels only (MBPO: 2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4).
      adamw_weight_decay: "adamw": decoupled decay of kernels and biases (NEUBAY's configs: 5e-5).
      batch_size:         minibatch per member (256).
      kernel_init:        "truncated_normal" (MBPO), or a name of networks.mlp.kernel_init
                          ("pytorch_default" = NEUBAY's equinox init).
      init_max_logvar, init_min_logvar: initial (or fixed) soft bounds of the log-variance (0.5, -10).
      input_clip:         clip the standardized inputs to [-input_clip, input_clip] (None: no clip; RAVL 10).
      logvar_bound_coef:  c_bound of the term c_bound * sum(l_max - l_min) (0.01; unused when fixed).

    Fit:
      holdout_fraction:   fraction of transitions held out for early stopping and elites (0.2).
      max_holdout:        cap on the holdout size (1000, MBPO's MOPO-style / NEUBAY's; None: no cap).
      bootstrap:          each member trains on its own bootstrap resample (MBPO) or on all the
                          training rows in its own order (NEUBAY).
      max_epochs:         hard limit on epochs (None: until early stopping, as MBPO and NEUBAY; RAVL 2000).
      min_epochs:         a plateau stops training only after more than this many epochs (0: at once, MBPO
                          and NEUBAY; RAVL 350).
      plateau_lr_factor:  the first plateau before min_epochs multiplies the learning rate by this, once
                          (None: never; RAVL 0.3).
      patience:           a plateau is this many consecutive epochs with no member improving (5).
      improvement_threshold: a member improves when its holdout MSE falls below
                          (1 - threshold) x its best so far (0.01).
    """

    num_members: int = 7
    num_elites: int = 5
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    activation: str = "swish"
    layer_norm: bool = False
    normalize_outputs: bool = False
    learn_logvar_bounds: bool = True
    optimizer: str = "adam_l2"
    lr: float = 1e-3
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    adamw_weight_decay: float = 5e-5
    batch_size: int = 256
    kernel_init: str = "truncated_normal"
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_bound_coef: float = 0.01
    holdout_fraction: float = 0.2
    max_holdout: int | None = 1000
    bootstrap: bool = True
    max_epochs: int | None = None
    min_epochs: int = 0
    plateau_lr_factor: float | None = None
    patience: int = 5
    improvement_threshold: float = 0.01
    input_clip: float | None = None

    def __post_init__(self):
        # Lists (from JSON or a CLI) become tuples, so the config stays hashable (it is static under jit).
        for name in ("hidden", "weight_decays"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def validate(self) -> EnsembleConfig:
        """Raise ValueError naming the first invalid field; return the config when all are valid."""
        def fail(message: str):
            raise ValueError(f"EnsembleConfig: {message}")

        if self.num_members < 2:
            fail(f"num_members must be >= 2 (an ensemble), got {self.num_members}")
        if not 1 <= self.num_elites <= self.num_members:
            fail(f"num_elites must be in [1, num_members={self.num_members}], got {self.num_elites}")
        if len(self.hidden) == 0 or any(int(w) < 1 for w in self.hidden):
            fail(f"hidden must be one or more positive widths, got {self.hidden}")
        try:
            activation(self.activation)
        except ValueError as error:
            fail(str(error))
        if self.optimizer not in OPTIMIZERS:
            fail(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.optimizer == "adam_l2" and len(self.weight_decays) != len(self.hidden) + 1:
            fail(f"weight_decays needs one value per Linear layer (len(hidden) + 1 = {len(self.hidden) + 1}), "
                 f"got {len(self.weight_decays)}: {self.weight_decays}")
        if any(d < 0 for d in self.weight_decays) or self.adamw_weight_decay < 0:
            fail("weight decays must be >= 0")
        if not self.lr > 0:
            fail(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            fail(f"batch_size must be >= 1, got {self.batch_size}")
        if self.kernel_init not in ENSEMBLE_KERNEL_INITS:
            fail(f"unknown kernel_init {self.kernel_init!r}; valid: {', '.join(ENSEMBLE_KERNEL_INITS)}")
        if not self.init_min_logvar < self.init_max_logvar:
            fail(f"init_min_logvar ({self.init_min_logvar}) must be < init_max_logvar ({self.init_max_logvar})")
        if self.logvar_bound_coef < 0:
            fail(f"logvar_bound_coef must be >= 0, got {self.logvar_bound_coef}")
        if not 0 < self.holdout_fraction < 1:
            fail(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.max_holdout is not None and self.max_holdout < 1:
            fail(f"max_holdout must be >= 1 or None, got {self.max_holdout}")
        if self.max_epochs is not None and self.max_epochs < 1:
            fail(f"max_epochs must be >= 1 or None, got {self.max_epochs}")
        if self.min_epochs < 0:
            fail(f"min_epochs must be >= 0, got {self.min_epochs}")
        if self.plateau_lr_factor is not None and not self.plateau_lr_factor > 0:
            fail(f"plateau_lr_factor must be > 0 or None, got {self.plateau_lr_factor}")
        if self.input_clip is not None and not self.input_clip > 0:
            fail(f"input_clip must be > 0 or None, got {self.input_clip}")
        if self.patience < 1:
            fail(f"patience must be >= 1, got {self.patience}")
        if self.improvement_threshold < 0:
            fail(f"improvement_threshold must be >= 0, got {self.improvement_threshold}")
        return self


# RAVL's dynamics model (MBPO's): the defaults, with the authors' uncapped 20% holdout, their schedule (early
# stopping only after 350 epochs, the lr x0.3 once at the first plateau before that, at most 2000 epochs) and
# their inputs clipped at +-10 after standardization (anyasims/edge-of-reach, train_dynamics_model.py, ensemble.py).
RAVL_CONFIG = EnsembleConfig(max_holdout=None, min_epochs=350, plateau_lr_factor=0.3, max_epochs=2000,
                             input_clip=10.0)
# NEUBAY's world-model posterior: 128 members trained, the best 100 kept; LayerNorm + leaky ReLU,
# standardized targets, fixed log-variance bounds, AdamW; no bootstrap (per-member shuffles).
NEUBAY_CONFIG = EnsembleConfig(
    num_members=128, num_elites=100, activation="leaky_relu", layer_norm=True, normalize_outputs=True,
    learn_logvar_bounds=False, logvar_bound_coef=0.0, optimizer="adamw", adamw_weight_decay=5e-5,
    kernel_init="pytorch_default", bootstrap=False)   # weight decay 5e-5: every config of the authors' code


# ----------------------------------------------------------------------------------------------
# Network and state
# ----------------------------------------------------------------------------------------------


def _truncated_normal_init(key, shape, dtype=jnp.float32):
    """MBPO's kernel init: N(0, s^2) truncated to [-2s, 2s], s = 1 / (2 sqrt(fan_in))."""
    std = 1.0 / (2.0 * math.sqrt(shape[0]))
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def _kernel_init(name: str):
    return _truncated_normal_init if name == "truncated_normal" else kernel_init(name)


class Member(nn.Module):
    """One member: (Linear -> [LayerNorm] -> act) per hidden width, then Linear to 2D outputs.

    Returns (mean, raw log-variance), each [..., D]; the soft clamp is applied by `apply_members`.
    """

    hidden: tuple[int, ...]
    out_dim: int
    act: str = "swish"
    use_layer_norm: bool = False
    initializer: str = "truncated_normal"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation(self.act)
        init = _kernel_init(self.initializer)
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, kernel_init=init, bias_init=nn.initializers.zeros, name=f"hidden_{i}")(x)
            if self.use_layer_norm:
                x = layer_norm(x)
            x = act(x)
        out = nn.Dense(2 * self.out_dim, kernel_init=init, bias_init=nn.initializers.zeros, name="out")(x)
        return out[..., : self.out_dim], out[..., self.out_dim:]


def _member_module(config: EnsembleConfig, out_dim: int) -> Member:
    return Member(hidden=tuple(config.hidden), out_dim=out_dim, act=config.activation,
                  use_layer_norm=config.layer_norm, initializer=config.kernel_init)


def _layer_names(config: EnsembleConfig) -> list[str]:
    return [f"hidden_{i}" for i in range(len(config.hidden))] + ["out"]


class EnsembleState(struct.PyTreeNode):
    """A trained (or fresh) ensemble: a pytree of arrays, with its config as static data.

    params:       {"net": Member params with a leading [M] axis on every leaf,
                   "max_logvar": [M, D], "min_logvar": [M, D]} (the soft bounds, network units)
    opt_state:    the optimizer's state (`make_optimizer(config)`)
    input_mean, input_std:   [S + A], statistics of the training inputs (s, a)
    target_mean, target_std: [D], of the training targets (delta s, r) with normalize_outputs,
                  else 0 and 1 (the network predicts in the environment's units)
    elites:       int32 [num_elites], member indices, lowest holdout MSE first
    holdout_mse:  float32 [M], each member's holdout MSE in network units (inf before training)
    """

    params: dict
    opt_state: Any
    input_mean: jax.Array
    input_std: jax.Array
    target_mean: jax.Array
    target_std: jax.Array
    elites: jax.Array
    holdout_mse: jax.Array
    config: EnsembleConfig = struct.field(pytree_node=False)

    @property
    def obs_dim(self) -> int:
        return self.target_mean.shape[-1] - 1

    @property
    def action_dim(self) -> int:
        return self.input_mean.shape[-1] - self.obs_dim

    @property
    def num_members(self) -> int:
        return self.holdout_mse.shape[-1]


def make_optimizer(config: EnsembleConfig) -> optax.GradientTransformation:
    """Adam (the L2 terms are in `loss`) or AdamW decaying the network's weights, never the bounds."""
    if config.optimizer == "adam_l2":
        return optax.adam(config.lr)
    def decayed(params):  # the network's kernels and biases, not the log-variance bounds
        return {name: jax.tree.map(lambda _, is_net=(name == "net"): is_net, value) for name, value in params.items()}

    return optax.adamw(config.lr, weight_decay=config.adamw_weight_decay, mask=decayed)


@functools.partial(jax.jit, static_argnames=("obs_dim", "action_dim", "config"))
def init(key: jax.Array, obs_dim: int, action_dim: int, config: EnsembleConfig) -> EnsembleState:
    """A fresh ensemble of `config.num_members` independently initialized members; identity normalizers."""
    config.validate()
    if obs_dim < 1 or action_dim < 0:
        raise ValueError(f"obs_dim must be >= 1 and action_dim >= 0, got {obs_dim}, {action_dim}")
    m, d = config.num_members, obs_dim + 1
    module = _member_module(config, d)
    dummy = jnp.zeros((1, obs_dim + action_dim), jnp.float32)
    net = jax.vmap(lambda k: module.init(k, dummy)["params"])(jax.random.split(key, m))
    params = {"net": net,
              "max_logvar": jnp.full((m, d), config.init_max_logvar, jnp.float32),
              "min_logvar": jnp.full((m, d), config.init_min_logvar, jnp.float32)}
    return EnsembleState(
        params=params, opt_state=make_optimizer(config).init(params),
        input_mean=jnp.zeros(obs_dim + action_dim, jnp.float32), input_std=jnp.ones(obs_dim + action_dim, jnp.float32),
        target_mean=jnp.zeros(d, jnp.float32), target_std=jnp.ones(d, jnp.float32),
        elites=jnp.arange(config.num_elites, dtype=jnp.int32),
        holdout_mse=jnp.full((m,), jnp.inf, jnp.float32), config=config)


def soft_clamp(logvar: jax.Array, min_logvar: jax.Array, max_logvar: jax.Array) -> jax.Array:
    """PETS's smooth clamp: l_max - softplus(l_max - l), then l_min + softplus(l - l_min)."""
    logvar = max_logvar - jax.nn.softplus(max_logvar - logvar)
    return min_logvar + jax.nn.softplus(logvar - min_logvar)


def apply_members(params: dict, config: EnsembleConfig, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every member's (mean, clamped log-variance), [M, B, D], in network units.

    `x` is standardized: [B, S + A] is shown to every member, [M, B, S + A] gives member m its own rows.
    """
    d = params["max_logvar"].shape[-1]
    module = _member_module(config, d)
    x_axis = 0 if x.ndim == 3 else None
    mean, raw = jax.vmap(lambda p, xi: module.apply({"params": p}, xi), in_axes=(0, x_axis))(params["net"], x)
    max_logvar, min_logvar = params["max_logvar"][:, None, :], params["min_logvar"][:, None, :]
    if not config.learn_logvar_bounds:
        max_logvar, min_logvar = jax.lax.stop_gradient(max_logvar), jax.lax.stop_gradient(min_logvar)
    return mean, soft_clamp(raw, min_logvar, max_logvar)


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("config",))
def loss(params: dict, config: EnsembleConfig, inputs: jax.Array, targets: jax.Array
         ) -> tuple[jax.Array, dict]:
    """The PETS/MBPO training loss (see the module docstring) and its parts.

    inputs:  [M, B, S + A] standardized, member m's minibatch in row m (or [B, S + A], shared).
    targets: [M, B, D] (or [B, D]) in network units (`normalize_targets`).

        L = sum_m mean_{b,d} [(y - mean_m)^2 exp(-l_m) + l_m]
          + c_bound sum (l_max - l_min)                     (learn_logvar_bounds)
          + sum_m sum_k lambda_k ||W_m,k||^2 / 2            (optimizer "adam_l2")

    Returns (L, {"nll": [M], "mse": [M], "bound": scalar, "decay": scalar}); "nll" is the first line per
    member (twice the Gaussian negative log-likelihood per dimension, minus log 2 pi).
    """
    mean, logvar = apply_members(params, config, inputs)
    sq = jnp.square(mean - targets)
    nll = jnp.mean(sq * jnp.exp(-logvar) + logvar, axis=(1, 2))
    total = jnp.sum(nll)
    bound = jnp.zeros((), jnp.float32)
    if config.learn_logvar_bounds and config.logvar_bound_coef > 0:
        bound = config.logvar_bound_coef * (jnp.sum(params["max_logvar"]) - jnp.sum(params["min_logvar"]))
    decay = jnp.zeros((), jnp.float32)
    if config.optimizer == "adam_l2":
        for name, coef in zip(_layer_names(config), config.weight_decays):
            decay = decay + coef * 0.5 * jnp.sum(jnp.square(params["net"][name]["kernel"]))
    return total + bound + decay, {"nll": nll, "mse": jnp.mean(sq, axis=(1, 2)), "bound": bound, "decay": decay}


# ----------------------------------------------------------------------------------------------
# Normalization and prediction
# ----------------------------------------------------------------------------------------------


def normalize_inputs(state: EnsembleState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """x = ((s, a) - mu_x) / sigma_x, [..., S + A], clipped to +-input_clip when set (RAVL)."""
    x = jnp.concatenate([obs, action], axis=-1)
    x = (x - state.input_mean) / state.input_std
    clip = state.config.input_clip
    return x if clip is None else jnp.clip(x, -clip, clip)


def normalize_targets(state: EnsembleState, obs: jax.Array, next_obs: jax.Array, reward: jax.Array) -> jax.Array:
    """y = ((s' - s, r) - mu_y) / sigma_y, [..., D]: what the network predicts."""
    y = jnp.concatenate([next_obs - obs, reward[..., None]], axis=-1)
    return (y - state.target_mean) / state.target_std


def denormalize(state: EnsembleState, obs: jax.Array, mean: jax.Array, logvar: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """Network units -> the environment's: mean of (s', r) with s' = s + delta s, and its log-variance."""
    mean = mean * state.target_std + state.target_mean
    mean = mean.at[..., : obs.shape[-1]].add(obs)
    return mean, logvar + 2.0 * jnp.log(state.target_std)


@jax.jit
def predict(state: EnsembleState, obs: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every member's Gaussian over (s', r): mean and log-variance [M, B, S + 1], environment units.

    obs [B, S], action [B, A]; mean[..., :S] is the next observation (s + delta s), mean[..., S] the reward.
    """
    mean, logvar = apply_members(state.params, state.config, normalize_inputs(state, obs, action))
    return denormalize(state, obs[None], mean, logvar)


@jax.jit
def predict_per_member(state: EnsembleState, obs: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Member m on its own rows only: obs [M, b, S], action [M, b, A] -> mean, logvar [M, b, S + 1].

    M times cheaper than `predict` + a gather when each row has one member (NEUBAY's rollouts, one
    member per trajectory: lay the trajectories out member-major).
    """
    mean, logvar = apply_members(state.params, state.config, normalize_inputs(state, obs, action))
    return denormalize(state, obs, mean, logvar)


def _disagreement(mean: jax.Array, logvar: jax.Array, kind: str) -> jax.Array:
    """[B] from means / log-variances [K, B, D] of the members to compare (network units)."""
    if kind == "max_deviation":
        deviation = mean - jnp.mean(mean, axis=0, keepdims=True)
        return jnp.max(jnp.linalg.norm(deviation, axis=-1), axis=0)
    if kind == "std":
        return jnp.sqrt(jnp.mean(jnp.var(mean, axis=0), axis=-1))
    if kind == "max_aleatoric":
        return jnp.max(jnp.linalg.norm(jnp.exp(0.5 * logvar), axis=-1), axis=0)
    raise ValueError(f"unknown disagreement {kind!r}; valid: {', '.join(DISAGREEMENTS)}")


@functools.partial(jax.jit, static_argnames=("kind", "elites_only"))
def disagreement(state: EnsembleState, obs: jax.Array, action: jax.Array, kind: str = "max_deviation",
                 elites_only: bool = True) -> jax.Array:
    """How much the members disagree at each (s, a): [B], in network units, over the elites (or all).

    kind (static):
      "max_deviation": max_m || mean_m - mean_bar ||_2, mean_bar the members' average; the members'
                       spread of the predicted (delta s, r), epistemic only (the default).
      "std":           sqrt(mean_d Var_m mean_m,d), NEUBAY's "epi_mean" (RMS of the per-dim std).
      "max_aleatoric": max_m || sigma_m ||_2, MOPO's penalty u(s, a) (arXiv 2005.13239).
    Network units are standardized units with normalize_outputs (as NEUBAY's threshold, the largest
    value seen on the data, expects) and the environment's units otherwise.
    """
    mean, logvar = apply_members(state.params, state.config, normalize_inputs(state, obs, action))
    if elites_only:
        mean, logvar = mean[state.elites], logvar[state.elites]
    return _disagreement(mean, logvar, kind)


def sample_step(state: EnsembleState, obs: jax.Array, action: jax.Array, key: jax.Array,
                member: jax.Array | int | None = None, deterministic: bool = False
                ) -> tuple[jax.Array, jax.Array, dict]:
    """One imagined step per row: (next_obs [B, S], reward [B], info).

    member: None draws a random elite for each row (MBPO / RAVL); an int array [B] (or an int) uses that
    member for each row (NEUBAY: one member per trajectory). Indices must be in [0, M); under jit they
    cannot be checked (out-of-range indices clamp). deterministic=True returns the member's mean.

        (s', r) = mean_m(s, a) + sigma_m(s, a) * eps,   eps ~ N(0, I)

    All M members are evaluated on every row (as MBPO does); see `predict_per_member` for the cheaper
    member-major layout. info: "member" [B], "mean" and "logvar" [B, S + 1] of the chosen members
    (environment units), "disagreement" [B] ("max_deviation" over the elites).
    """
    if member is not None and not isinstance(member, jax.core.Tracer):
        values = np.asarray(member)
        if values.size and (values.min() < 0 or values.max() >= state.num_members):
            raise ValueError(f"member indices must be in [0, {state.num_members}), got {values.min()}.."
                             f"{values.max()}")
    if member is not None:
        member = jnp.broadcast_to(jnp.asarray(member, jnp.int32), (obs.shape[0],))
    return _sample_step(state, obs, action, key, member, deterministic)


@functools.partial(jax.jit, static_argnames=("deterministic",))
def _sample_step(state, obs, action, key, member, deterministic):
    k_member, k_noise = jax.random.split(key)
    batch = obs.shape[0]
    mean, logvar = apply_members(state.params, state.config, normalize_inputs(state, obs, action))
    if member is None:
        member = state.elites[jax.random.randint(k_member, (batch,), 0, state.elites.shape[0])]
    rows = jnp.arange(batch)
    chosen_mean, chosen_logvar = mean[member, rows], logvar[member, rows]
    y = chosen_mean
    if not deterministic:
        y = y + jnp.exp(0.5 * chosen_logvar) * jax.random.normal(k_noise, y.shape, y.dtype)
    sample, _ = denormalize(state, obs, y, chosen_logvar)
    env_mean, env_logvar = denormalize(state, obs, chosen_mean, chosen_logvar)
    info = {"member": member, "mean": env_mean, "logvar": env_logvar,
            "disagreement": _disagreement(mean[state.elites], logvar[state.elites], "max_deviation")}
    return sample[:, :-1], sample[:, -1], info


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------


def _stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    std = jnp.std(x, axis=0)
    return jnp.mean(x, axis=0), jnp.where(std < STD_MIN, 1.0, std)


@jax.jit
def fit_normalizers(state: EnsembleState, obs, action, next_obs, reward) -> EnsembleState:
    """Set the input statistics (and, with normalize_outputs, the target statistics) from these arrays."""
    obs, action, next_obs, reward = (jnp.asarray(a, jnp.float32) for a in (obs, action, next_obs, reward))
    input_mean, input_std = _stats(jnp.concatenate([obs, action], axis=-1))
    state = state.replace(input_mean=input_mean, input_std=input_std)
    if state.config.normalize_outputs:
        target_mean, target_std = _stats(jnp.concatenate([next_obs - obs, reward[:, None]], axis=-1))
        state = state.replace(target_mean=target_mean, target_std=target_std)
    return state


@functools.partial(jax.jit, static_argnames=("config",))
def _member_mse(params: dict, config: EnsembleConfig, x: jax.Array, y: jax.Array) -> jax.Array:
    """Each member's MSE on (x, y) [n rows], mean over rows and dims: [M]. Chunked for large n."""
    n = x.shape[0]
    if n <= _HOLDOUT_CHUNK:
        mean, _ = apply_members(params, config, x)
        return jnp.mean(jnp.square(mean - y), axis=(1, 2))
    chunks = -(-n // _HOLDOUT_CHUNK)
    pad = chunks * _HOLDOUT_CHUNK - n
    valid = jnp.arange(chunks * _HOLDOUT_CHUNK) < n
    xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(chunks, _HOLDOUT_CHUNK, -1)
    ys = jnp.pad(y, ((0, pad), (0, 0))).reshape(chunks, _HOLDOUT_CHUNK, -1)

    def chunk_sum(args):
        xc, yc, vc = args
        mean, _ = apply_members(params, config, xc)
        return jnp.sum(jnp.mean(jnp.square(mean - yc), axis=-1) * vc, axis=1)

    return jnp.sum(jax.lax.map(chunk_sum, (xs, ys, valid.reshape(chunks, _HOLDOUT_CHUNK))), axis=0) / n


def _where_members(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per member (leading axis), `new` where mask else `old`."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


@functools.partial(jax.jit, static_argnames=("config",))
def _epoch(params, opt_state, best_params, best_mse, x_train, y_train, x_holdout, y_holdout, rows, key,
           lr_scale, config: EnsembleConfig):
    """One epoch for all members (one lax.scan over minibatches), then the holdout check.

    rows [M, n]: member m's training rows (its bootstrap resample, or 0..n-1); each member shuffles
    its own at every epoch. ceil(n / batch) minibatches; the last wraps around to the epoch's start.
    lr_scale (traced): the optimizer's updates are multiplied by it, i.e. the learning rate is
    lr_scale x config.lr (Adam's and AdamW's steps, decay included, are linear in the lr; the moments
    are kept, as torch's StepLR keeps them).
    """
    m, n = rows.shape
    batch = config.batch_size
    num_batches = -(-n // batch)
    order = jax.vmap(jax.random.permutation)(jax.random.split(key, m), rows)
    order = jnp.take(order, jnp.arange(num_batches * batch) % n, axis=1)
    order = order.reshape(m, num_batches, batch).transpose(1, 0, 2)  # [num_batches, M, batch]
    optimizer = make_optimizer(config)

    def step(carry, idx):
        params, opt_state = carry
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, config, x_train[idx], y_train[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: lr_scale * u, updates)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
    mse = _member_mse(params, config, x_holdout, y_holdout)
    improved = mse < (1.0 - config.improvement_threshold) * best_mse  # (best - mse) / best > threshold
    best_params = _where_members(improved, params, best_params)
    best_mse = jnp.where(improved, mse, best_mse)
    metrics = {"train_loss": jnp.mean(losses) / m, "holdout_mse": mse, "num_improved": jnp.sum(improved)}
    return params, opt_state, best_params, best_mse, metrics


def holdout_size(num_transitions: int, config: EnsembleConfig) -> int:
    """min(holdout_fraction * N, max_holdout), at least 1."""
    size = int(num_transitions * config.holdout_fraction)
    if config.max_holdout is not None:
        size = min(size, config.max_holdout)
    return max(size, 1)


def _dataset_arrays(data: Mapping[str, Any], obs_dim: int, action_dim: int) -> tuple[np.ndarray, ...]:
    """observations, actions, rewards, next_observations (D4RL names) as float32, checked."""
    names = ("observations", "actions", "next_observations", "rewards")
    missing = [k for k in names if k not in data]
    if missing:
        raise ValueError(f"dataset lacks {', '.join(missing)} (needs {', '.join(names)})")
    obs, action, next_obs, reward = (np.asarray(data[k], np.float32) for k in names)
    if reward.ndim == 2 and reward.shape[1] == 1:
        reward = reward[:, 0]
    n = obs.shape[0]
    expected = {"observations": (n, obs_dim), "actions": (n, action_dim), "next_observations": (n, obs_dim),
                "rewards": (n,)}
    for name, array in zip(names, (obs, action, next_obs, reward)):
        if array.shape != expected[name]:
            raise ValueError(f"dataset {name} has shape {array.shape}, expected {expected[name]} "
                             f"(obs_dim {obs_dim}, action_dim {action_dim}, {n} transitions)")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"dataset {name} holds non-finite values")
    if n < 2:
        raise ValueError(f"need at least 2 transitions (training + holdout), got {n}")
    return obs, action, next_obs, reward


def evaluate(state: EnsembleState, data: Mapping[str, Any]) -> jax.Array:
    """Each member's MSE [M] on a dataset (same keys as `train`), in network units."""
    obs, action, next_obs, reward = _dataset_arrays(data, state.obs_dim, state.action_dim)
    x = normalize_inputs(state, jnp.asarray(obs), jnp.asarray(action))
    y = normalize_targets(state, jnp.asarray(obs), jnp.asarray(next_obs), jnp.asarray(reward))
    return _member_mse(state.params, state.config, x, y)


def select_elites(state: EnsembleState, holdout_mse: jax.Array) -> EnsembleState:
    """Record the members' holdout MSE; elites = the num_elites lowest, lowest first (ties: lower index)."""
    holdout_mse = jnp.asarray(holdout_mse, jnp.float32)
    elites = jnp.argsort(holdout_mse, stable=True)[: state.config.num_elites].astype(jnp.int32)
    return state.replace(holdout_mse=holdout_mse, elites=elites)


def train(state: EnsembleState, data: Mapping[str, Any], key: jax.Array, *, max_epochs: int | None = None,
          log_fn: Callable[[dict], None] | None = None) -> tuple[EnsembleState, list[dict]]:
    """Fit the ensemble to a dataset of transitions; returns (state, one metrics dict per epoch).

    data: "observations" [N, S], "actions" [N, A], "next_observations" [N, S], "rewards" [N] (D4RL names;
    terminals are not modelled: RAVL and NEUBAY use known termination functions). Host loop over epochs,
    each epoch one jitted program for all members (see `_epoch` and the module docstring for the
    procedure, and for the schedule: min_epochs, plateau_lr_factor). `max_epochs` overrides
    config.max_epochs; `log_fn(record)` is called after each epoch.
    Training continues from the state's parameters and optimizer state (MBPO retrains the same model);
    the normalizers are refitted on the new training split. The returned parameters are each member's
    best snapshot; the optimizer state is the last epoch's.

    Each record: epoch, train_loss (the loss per member, averaged over the epoch's minibatches),
    holdout_mse (members' mean) and holdout_mse_per_member, best_holdout_mse (members' mean of their
    best), num_improved, epochs_since_improvement, lr (the learning rate of this epoch), lr_lowered (True
    on the epoch whose plateau lowered the rate for the next ones), num_train, num_holdout, time_s (since
    the start).
    """
    config = state.config
    obs, action, next_obs, reward = _dataset_arrays(data, state.obs_dim, state.action_dim)
    n = obs.shape[0]
    num_holdout = holdout_size(n, config)
    k_split, k_boot, k_epochs = jax.random.split(key, 3)
    permutation = np.asarray(jax.random.permutation(k_split, n))
    holdout, training = permutation[:num_holdout], permutation[num_holdout:]
    state = fit_normalizers(state, obs[training], action[training], next_obs[training], reward[training])
    x = normalize_inputs(state, jnp.asarray(obs), jnp.asarray(action))
    y = normalize_targets(state, jnp.asarray(obs), jnp.asarray(next_obs), jnp.asarray(reward))
    x_train, y_train, x_holdout, y_holdout = x[training], y[training], x[holdout], y[holdout]

    m, n_train = config.num_members, training.shape[0]
    if config.bootstrap:
        rows = jax.random.randint(k_boot, (m, n_train), 0, n_train, jnp.int32)
    else:
        rows = jnp.broadcast_to(jnp.arange(n_train, dtype=jnp.int32), (m, n_train))

    params, opt_state = state.params, state.opt_state
    best_params, best_mse = params, _member_mse(params, config, x_holdout, y_holdout)
    limit = config.max_epochs if max_epochs is None else max_epochs
    history: list[dict] = []
    epoch, since_improvement, start = 0, 0, time.perf_counter()
    lr_scale, lowered = 1.0, False
    while limit is None or epoch < limit:
        params, opt_state, best_params, best_mse, metrics = _epoch(
            params, opt_state, best_params, best_mse, x_train, y_train, x_holdout, y_holdout, rows,
            jax.random.fold_in(k_epochs, epoch), jnp.float32(lr_scale), config)
        epoch += 1
        num_improved = int(metrics["num_improved"])
        since_improvement = 0 if num_improved else since_improvement + 1
        mse = np.asarray(metrics["holdout_mse"])
        record = {"epoch": epoch, "train_loss": float(metrics["train_loss"]), "holdout_mse": float(mse.mean()),
                  "holdout_mse_per_member": mse, "best_holdout_mse": float(jnp.mean(best_mse)),
                  "num_improved": num_improved, "epochs_since_improvement": since_improvement,
                  "lr": config.lr * lr_scale, "lr_lowered": False,
                  "num_train": n_train, "num_holdout": num_holdout, "time_s": time.perf_counter() - start}
        plateau = since_improvement >= config.patience
        stop = plateau and epoch > config.min_epochs      # the authors' `i >= min_epochs`, i = epoch - 1
        if plateau and not stop and config.plateau_lr_factor is not None and not lowered:
            lr_scale, lowered, since_improvement = lr_scale * config.plateau_lr_factor, True, 0
            record["lr_lowered"] = True
        history.append(record)
        if log_fn is not None:
            log_fn(record)
        if stop:
            break
    state = state.replace(params=best_params, opt_state=opt_state)
    return select_elites(state, best_mse), history


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------


def _architecture(config: EnsembleConfig, obs_dim: int, action_dim: int) -> dict:
    """What decides the shapes and the function of the saved arrays; a load must match all of it."""
    return {"obs_dim": int(obs_dim), "action_dim": int(action_dim), "num_members": config.num_members,
            "hidden": [int(w) for w in config.hidden], "activation": config.activation,
            "layer_norm": config.layer_norm, "normalize_outputs": config.normalize_outputs,
            "learn_logvar_bounds": config.learn_logvar_bounds, "optimizer": config.optimizer}


def _describe(arch: dict) -> str:
    ln = " + LayerNorm" if arch.get("layer_norm") else ""
    return (f"{arch.get('num_members')} members x hidden {tuple(arch.get('hidden', ()))} "
            f"({arch.get('activation')}{ln}), obs_dim {arch.get('obs_dim')}, action_dim {arch.get('action_dim')}")


def _arrays(state: EnsembleState) -> dict:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "config"}


def save(path: str | os.PathLike, state: EnsembleState, config: EnsembleConfig | None = None) -> Path:
    """Write the ensemble to the directory `path` (orbax arrays + model.json); returns the path.

    `config` defaults to the state's own (written to model.json; it must describe the same
    architecture). The model is written to a temporary sibling directory and renamed into place, so
    a crash leaves either the old model or the new one, never half of one. An existing `path` is
    replaced only if it is a saved model (or empty).
    """
    config = state.config if config is None else config
    arch = _architecture(config, state.obs_dim, state.action_dim)
    if arch != _architecture(state.config, state.obs_dim, state.action_dim):
        raise ValueError(f"config describes {_describe(arch)} but the state holds "
                         f"{_describe(_architecture(state.config, state.obs_dim, state.action_dim))}")
    path = Path(path).absolute()
    if path.exists() and not (path.is_dir() and ((path / "model.json").exists() or not any(path.iterdir()))):
        raise ValueError(f"refusing to overwrite {path}: it exists and is not a saved dynamics model")
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp, old = path.parent / f".{path.name}.tmp-{tag}", path.parent / f".{path.name}.old-{tag}"
    meta = {"format": MODEL_FORMAT, "architecture": arch, "num_elites": int(state.elites.shape[0]),
            "config": dataclasses.asdict(config)}
    try:
        tmp.mkdir()
        checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
        checkpointer.save(tmp / "arrays", args=ocp.args.StandardSave(_arrays(state)))
        checkpointer.close()
        (tmp / "model.json").write_text(json.dumps(meta, indent=2))  # written last: marks a complete model
        if path.exists():
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old.exists():
                os.rename(old, path)  # put the previous model back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return path


def load(path: str | os.PathLike, config: EnsembleConfig, obs_dim: int, action_dim: int) -> EnsembleState:
    """Read a model written by `save`, checked against `config` and the dimensions.

    Raises FileNotFoundError when `path` is not a directory, and ValueError naming the file when it is
    not a complete model, is corrupt, or holds another architecture (members, widths, activation,
    LayerNorm, dimensions, output normalization, bounds, optimizer). Training-only fields (lr, batch
    size, patience, ...) may differ; the returned state carries `config`. If `config.num_elites`
    differs from the saved one, the elites are re-chosen from the saved holdout MSE.
    """
    config.validate()
    path = Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"no dynamics model at {path}: not a directory")
    try:
        meta = json.loads((path / "model.json").read_text())
        saved, saved_elites = meta["architecture"], int(meta["num_elites"])
        if not isinstance(saved, dict):
            raise TypeError("'architecture' is not a mapping")
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {MODEL_FORMAT!r}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"dynamics model at {path} is incomplete or corrupt (model.json: {error})") from None
    expected = _architecture(config, obs_dim, action_dim)
    differences = [f"{k} {saved.get(k)!r} != {v!r}" for k, v in expected.items() if saved.get(k) != v]
    if differences:
        raise ValueError(f"dynamics model at {path} has {_describe(saved)}, expected {_describe(expected)} "
                         f"(saved != expected: {'; '.join(differences)})")

    abstract = _arrays(jax.eval_shape(functools.partial(init, obs_dim=obs_dim, action_dim=action_dim,
                                                        config=config), jax.random.PRNGKey(0)))
    abstract["elites"] = jax.ShapeDtypeStruct((saved_elites,), jnp.int32)
    # This process's first device: after jax.distributed.initialize(), devices()[0] can belong to another host.
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)
    try:
        checkpointer = ocp.Checkpointer(ocp.StandardCheckpointHandler())
        restored = checkpointer.restore(path / "arrays", args=ocp.args.StandardRestore(abstract))
        checkpointer.close()
    except Exception as error:  # noqa: BLE001  (orbax raises many types for damaged files)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"dynamics model at {path} is incomplete or corrupt: {first_line}") from None
    finite = {k: restored[k] for k in ("params", "input_mean", "input_std", "target_mean", "target_std")}
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(finite):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(f"dynamics model at {path} holds non-finite values in {jax.tree_util.keystr(key_path)}")
    state = EnsembleState(**restored, config=config)
    if saved_elites != config.num_elites:
        state = select_elites(state, state.holdout_mse)
    return state


def load_or_fit(dataset, obs_dim: int, action_dim: int, config: EnsembleConfig, world_dir: Path, key: jax.Array,
                model_path: str | Path | None = None, name: str = "dynamics", log=print) -> EnsembleState:
    """The world model of an offline agent (RAVL, NEUBAY): loaded from `model_path` when given, else from the
    run's `world_dir/dynamics` when an earlier start of the run saved it there (--resume), else fitted on the
    dataset's transitions and saved there, so that a resumed run reuses it. `log(text)` reports the fit: every
    10th epoch, each lowering of the learning rate, and the total."""
    saved = Path(world_dir) / "dynamics"
    path = model_path or (saved if saved.exists() else None)
    if path is not None:
        return load(path, config, obs_dim, action_dim)
    model = init(key, obs_dim, action_dim, config)

    def log_epoch(record: dict) -> None:
        if record["epoch"] % 10 == 0 or record["lr_lowered"]:
            log(f"  {name} epoch {record['epoch']}: holdout mse {record['holdout_mse']:.4g} lr {record['lr']:.3g} "
                f"({record['time_s']:.0f} s)")

    start = time.perf_counter()
    model, history = train(model, {"observations": dataset.observations, "actions": dataset.actions,
                                   "next_observations": dataset.next_observations, "rewards": dataset.rewards},
                           key, log_fn=log_epoch)
    log(f"  {name}: {config.num_members} members, {len(history)} epochs in {time.perf_counter() - start:.1f} s")
    saved.parent.mkdir(parents=True, exist_ok=True)
    save(saved, model)
    return model
