"""NEUBAY: long-horizon model-based offline RL without conservatism.

"Long-Horizon Model-Based Offline RL Without Conservatism" (Ni et al., arXiv 2512.04341; code twni2016/neubay).
Offline model-based methods usually fight model error with pessimism (reward penalties, value penalties,
short rollouts). NEUBAY is Bayesian instead: it treats a large ensemble as a posterior over worlds, samples
ONE world per imagined trajectory and plans in it for a whole episode, with a history-dependent
(recurrent) agent that can infer from the history which world it is in. The only guard against model error
is to cut a trajectory where the members disagree more than they ever do on the data.

    world model   M = 128 members (networks/ensemble.py, NEUBAY_CONFIG: 4 x [Linear 200 -> LayerNorm ->
                  leaky ReLU], Gaussian heads, standardized inputs and outputs, AdamW 1e-3), trained once;
                  the K = 100 with the lowest holdout MSE are kept (the posterior samples)
    threshold     u_max = quantile_q { u(s, a) : (s, a) in the dataset },  q = 1.0 (the largest)
                  u = `--disagreement` over the kept members, default "std": sqrt(mean_d Var_m mu_m,d(s, a))
                  in standardized output units (NEUBAY's "epi_mean")
    rollout       a round of `rollout_batch` trajectories whenever the previous round's share of updates is
                  spent: ceil(utd x sum_i (t_i + h_i)) updates, utd = 0.05 (the authors' train.utd; t_i + h_i
                  the trajectory's real history and imagined steps, their data_size); `--rollout-every k`
                  instead rolls out every k updates (the previous rule, k = 1000). Each trajectory
                    1. uses ONE kept member for its whole length (a posterior sample): trajectory i the
                       member of rank i // B, B = rollout_batch / K (the authors' layout; `--member-mapping
                       sample` draws one uniformly instead),
                    2. starts at a step t drawn uniformly over the dataset's episode steps, t in [0, T] (T the
                       episode's length, its end included, where nothing is imagined: the authors'
                       HistorySampler). The real history s_0 .. s_{t-1} is the window's prefix, the last
                       P = `prefix_length` transitions of it when t > P; when t < P it is LEFT-PADDED to P
                       with zeros marked `valid` False and `reset` True (the authors' padded_start), and s_0
                       carries a reset too, so the recurrent core sees exactly the real prefix. The actor's
                       core is run over the prefix (warm-up: the agent knows the history);
                       `--rollout-starts after_prefix` starts only after P real non-terminal transitions
                       (t >= P, the previous rule),
                    3. from s_t, for k = 1..H (H = `horizon`, default the episode length):
                       a_t ~ pi(.|h_t),  (s_{t+1}, r_t) ~ p_m(.|s_t, a_t);
                       terminated = the task's known termination function (envs/true_dynamics.py);
                       the trajectory ends after a terminal step, after the first step with u(s_t, a_t) >
                       u_max (that step is kept and bootstraps: a truncation), at the env's time limit
                       (t + k = max_episode_steps), or after H steps
    reward        r_t - c u(s_t, a_t) / mean_data(u), c = `reward_penalty` = 0 (no penalty by default)
    agent         recurrent SAC on histories: x_t = [s_t, a_{t-1}, r_{t-1}] (zeros for a_{-1}, r_{-1} at an
                  episode start) -> Linear -> LayerNorm -> leaky ReLU -> recurrent core (LRU default, GRU
                  with --core gru; 2 layers x 256) -> heads (2 x 256, LayerNorm + leaky ReLU). The actor
                  and the critic have their own embedding and core; the critic has 10 heads Q_j(h_t, a).
    target        y_t = r_t - penalty_t + gamma (1 - terminated_t) V'(h_{t+1}),   a' ~ pi(.|h_{t+1})
                  V'(h) = min_{j in J} Q'_j(h, a') - alpha log pi(a'|h),  J = 2 of the 10 target heads
                  drawn per update (REDQ)
    L_Q           mix( mean_j huber(Q_j(h_t, a_t) - y_t) )
    L_pi          mix( alpha log pi(a|h_t) - mean_j Q_j(h_t, a) ),  a ~ pi reparameterized
    L_alpha       mix( alpha (H[pi(.|h_t)] - H_target) ),  H_target = -|A|, alpha starts at 0.2
    mix(l)        real_weight * mean over real steps + (1 - real_weight) * mean over imagined steps, each
                  over the valid steps of the batch only (NEUBAY's weighting; real_weight = 0.05)

Sequences ("tapes"). Each rollout is stored as one fixed-length window of W = P + H transitions in a FIFO
device buffer of `buffer_size` windows: the P prefix steps (real ones flagged `real`, the left padding
neither real nor valid) followed by the imagined steps, with a `valid` mask (False in the padding and after
the trajectory ended), `terminated` flags and `reset` flags (W + 1, one per input x_t). An update samples
`batch_size` windows and runs every network over the whole window from the zero state with those resets,
so the real prefix is also the burn-in: the state at the first imagined step is exactly the one the actor
acted from in the rollout (up to the parameters having moved since). The real prefix steps are trained on
too (they are the "real" share of the batch, as the history part of NEUBAY's tapes is). A window never
crosses an episode: its history is rows of the starting step's own episode (`rollout_positions`); with
`--rollout-starts after_prefix` they are dataset windows of P rows inside one episode whose last
transition is not terminal (`prefix_starts`), and `check` rejects a prefix_length that no episode holds.
Bootstrapping: y_t uses h_{t+1} of the same window, which exists for every stored step (the window holds
W + 1 observations); `terminated` zeroes it, a truncation (uncertainty, horizon, time limit) does not.

Acting. `act_step(state, carry, obs, reward, first, key, explore)` acts from a history: the carry holds the
core state and the previous action, `reward` is the reward of the previous step and `first` marks an
episode's first step. `act(state, obs, key, explore)`, the stateless contract the offline loop evaluates
with, is the policy at an episode's FIRST step (zero history) applied to `obs`: a memoryless
approximation. A loop that evaluates history-dependent agents should call `initial_carry` / `act_step`.

Initialization (`--init neubay`, the authors' Equinox defaults): every Linear's weights and biases
U(+-1/sqrt(fan_in)) (the embedding, the heads' hidden layers, the actor's output layer), the critic heads'
last layer U(+-sqrt(0.01 / fan_in)) with a zero bias (their `final_linear`, scale 0.01); the actor's log-std
is clipped hard to [-5, 2] (`--log-std clip`). `--init default --log-std tanh` are the previous choices (zero
biases, last layers like the hidden ones, log sigma squashed by tanh into [-5, 2]).

Departures from the paper's code, all deliberate: the history in a window is at most P steps (NEUBAY
feeds the whole history up to the drawn step) so that windows have a static shape; rollouts are generated
inside the jitted update, and with the authors' schedule the round's code is traced into every update and
masked (the flag is per seed: under vmap a lax.cond would run both branches anyway), which costs the
warm-up over rollout_batch x P prefix steps at every update; the buffer keeps the latest `buffer_size`
rollouts (NEUBAY keeps up to 40M transitions); the batch is `batch_size` windows (NEUBAY: one tape of 2048
steps); learning rates are constant (NEUBAY decays the actor's with a cosine schedule to 0 over
training); the heads' LayerNorms have no learned scale or shift (Equinox's have); the recurrent blocks'
Linear biases start at 0 (Equinox: U(+-1/sqrt(fan_in))).

World model cost: training is one vmapped program for all members (ensemble.train, one jitted epoch per
call). Measured with the default 128 members x 4 x 200 on this project's 2-core CPU while it was shared
with other jobs (load average ~9): 600 transitions (a small random InvertedPendulum set) take 4.4 s for
the first epoch (compilation included) and ~1.8 s per later epoch; 10,000 transitions take ~21 s per
epoch; measuring the disagreement on 10,000 transitions (for the threshold) takes ~12 s. Early stopping
(patience 5) usually needs tens of epochs, so for real datasets train on an accelerator, or once and pass
--model-path.

    python experiments/run.py --agent neubay --env gym:Hopper-v5 --dataset data/hopper-medium.hdf5
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from agents.contract import OfflineAgent
from agents.config import check_fields, field, hyperparameters
from envs import EnvSpec
from networks import distributions as dist_lib
from networks import ensemble as ensemble_lib
from networks.actor_critic import GaussianActor, QEnsemble, init_scheme
from networks.mlp import Linear
from networks.recurrent import CORE_KINDS, make_core
from networks.training import Trained, apply_gradients, polyak, trained
from replay import datasets as datasets_lib

RUN_DEFAULTS = {"total_steps": 2_000_000, "eval_every": 20_000, "log_every": 1_000}


@hyperparameters
class Config:
    """NEUBAY's hyperparameters; defaults are the paper's (configs/d4rl_loco/base.yaml) unless noted."""

    # -- world model ------------------------------------------------------------------------------------
    model_members: int = field(128, ">= 2")
    """Ensemble members trained (the posterior's candidates)."""
    model_keep: int = field(100, ">= 1")
    """Members kept (lowest holdout MSE): rollouts sample from these, disagreement is measured over them."""
    model_hidden: tuple[int, ...] = field((200, 200, 200, 200), ">= 1")
    """Hidden widths of each member."""
    model_max_epochs: int | None = field(None, ">= 1")
    """Cap on the ensemble's training epochs (None: until holdout early stopping)."""
    model_path: str | None = None
    """Load a trained ensemble (saved by a previous run under <run>/world/dynamics) instead of training one."""
    disagreement: Literal["std", "max_deviation", "max_aleatoric"] = "std"
    """Uncertainty u(s, a) of ensemble.disagreement over the kept members: "std" (NEUBAY's epi_mean)."""
    uncertainty_quantile: float | None = field(1.0, "[0, 1]")
    """Truncation threshold = this quantile of u on the dataset's transitions (1.0: the largest; None: never)."""
    reward_penalty: float = field(0.0, ">= 0")
    """c of the reward penalty c * u / mean_data(u) (0: none, NEUBAY's default)."""

    # -- rollouts -----------------------------------------------------------------------------------------
    prefix_length: int = field(32, ">= 1")
    """P: the real history each rollout starts from and warms the recurrent state up on (the last min(t, P)
    transitions before the starting step t, left-padded to P)."""
    rollout_starts: Literal["any", "after_prefix"] = "any"
    """Starting steps: "any" step t of a dataset episode, uniform over t in [0, T] (T its length, the end
    included), the authors'; "after_prefix": only t >= P, after P real transitions none of which is terminal
    (the previous rule)."""
    member_mapping: Literal["block", "sample"] = "block"
    """Member of trajectory i: "block", the kept member of rank i // (rollout_batch / K) (the authors' layout;
    K = --model-keep, ranked by holdout MSE); "sample": drawn uniformly from the kept, with replacement."""
    utd: float = field(0.05, "(0, 1024]")
    """Updates per stored transition (with --rollout-every None): after each round of rollout_batch
    trajectories, the next comes after ceil(utd x sum_i (t_i + h_i)) updates, t_i the real history and h_i the
    imagined steps of trajectory i (the authors' train.utd 0.05 and data_size)."""
    horizon: int | None = field(None, ">= 1")
    """Model steps per rollout (None: the env's episode length; capped at it)."""
    rollout_batch: int = field(100, ">= 1")
    """Trajectories per rollout round (NEUBAY: 100 in parallel)."""
    rollout_every: int | None = field(None, ">= 1")
    """Updates between rollout rounds, fixed (the previous default: 1000); None: the authors' schedule from --utd.
    Either way the first round runs before the first update."""
    buffer_size: int = field(2_000, ">= 1")
    """Rollouts (windows of prefix_length + horizon steps) the FIFO buffer keeps."""

    # -- agent ------------------------------------------------------------------------------------------------
    core: Literal["lru", "gru"] = "lru"
    """Recurrent core of the actor and of the critic (networks/recurrent.py)."""
    core_layers: int = field(2, ">= 1")
    """Stacked recurrent layers."""
    core_hidden: int = field(256, ">= 1")
    """Width of the embedding and of the core."""
    lru_state_dim: int = field(128, ">= 1")
    """Complex state units per LRU layer (NEUBAY's d_hidden)."""
    head_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the actor head and of each critic head."""
    num_critics: int = field(10, ">= 1")
    """Critic heads on the critic's core output and the action."""
    sampled_critics: int = field(2, ">= 1")
    """Target heads drawn per update; the target takes their minimum (REDQ)."""
    batch_size: int = field(4, ">= 1")
    """Windows per update (each prefix_length + horizon steps; NEUBAY's tape holds 2048 steps)."""
    real_weight: float = field(0.05, "[0, 1]")
    """Weight of the real (prefix) steps' mean loss; the imagined steps' mean gets 1 - real_weight."""
    discount: float = field(0.99, "[0, 1]")
    """gamma."""
    tau: float = field(0.005, "(0, 1]")
    """Polyak rate of the target critic (embedding, core and heads)."""
    encoder_lr: float = field(1e-5, "> 0")
    """Adam learning rate of the embeddings and cores."""
    head_lr: float = field(1e-4, "> 0")
    """Adam learning rate of the actor and critic heads."""
    alpha_lr: float = field(1e-4, "> 0")
    """Adam learning rate of log alpha."""
    init_alpha: float = field(0.2, "> 0")
    """Initial entropy coefficient."""
    target_entropy_scale: float = field(1.0, "finite")
    """H_target = -target_entropy_scale * action_dim."""
    max_grad_norm: float = field(1000.0, "> 0")
    """Global gradient-norm clip of the actor and the critic (NaN gradients are zeroed first)."""
    init: Literal["neubay", "default", "edac"] = "neubay"
    """Initialization of the heads and the embeddings (networks/actor_critic.py INIT_SCHEMES): "neubay" (the
    authors' Equinox defaults: biases U(+-1/sqrt(fan_in)); the critic heads' last layer U(+-0.1/sqrt(fan_in))
    with a zero bias), "default" (zero biases; the last layers like the hidden ones) or "edac"."""
    log_std: Literal["clip", "tanh"] = "clip"
    """The actor's log-std: clipped hard to [-5, 2] (the authors') or squashed into it by tanh."""

    def validate(self) -> None:
        check_fields(self)
        for name, valid in (("rollout_starts", ("any", "after_prefix")), ("member_mapping", ("block", "sample")),
                            ("init", ("neubay", "default", "edac")), ("log_std", ("clip", "tanh"))):
            if getattr(self, name) not in valid:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(valid)}, "
                                 f"got {getattr(self, name)!r}")
        if self.model_keep > self.model_members:
            raise ValueError(f"--model-keep must be in [1, --model-members={self.model_members}] (members kept "
                             f"out of those trained), got {self.model_keep}")
        if self.buffer_size < self.rollout_batch:
            raise ValueError(f"--buffer-size ({self.buffer_size}) must hold one rollout round "
                             f"(--rollout-batch {self.rollout_batch})")
        if self.sampled_critics > self.num_critics:
            raise ValueError(f"--sampled-critics ({self.sampled_critics}) must be <= --num-critics "
                             f"({self.num_critics})")
        if self.core not in CORE_KINDS:
            raise ValueError(f"--core must be one of {', '.join(CORE_KINDS)}, got {self.core!r}")
        if self.disagreement not in ensemble_lib.DISAGREEMENTS:
            raise ValueError(f"--disagreement must be one of {', '.join(ensemble_lib.DISAGREEMENTS)}, "
                             f"got {self.disagreement!r}")
        try:
            model_config(self).validate()
        except ValueError as error:
            raise ValueError(f"world model: {error}") from None


def model_config(config: Config) -> ensemble_lib.EnsembleConfig:
    """NEUBAY_CONFIG with this run's sizes."""
    return dataclasses.replace(ensemble_lib.NEUBAY_CONFIG, num_members=config.model_members,
                               num_elites=config.model_keep, hidden=tuple(config.model_hidden),
                               max_epochs=config.model_max_epochs)


def rollout_horizon(config: Config, spec: EnvSpec) -> int:
    """H: `horizon`, or the episode length when None; never beyond the episode length."""
    return min(config.horizon or spec.max_episode_steps, spec.max_episode_steps)


def window_length(config: Config, spec: EnvSpec) -> int:
    """W = P + H transitions per stored window."""
    return config.prefix_length + rollout_horizon(config, spec)


# ----------------------------------------------------------------------------
# Networks: x_t = [s_t, a_{t-1}, r_{t-1}] -> embedding -> recurrent core -> heads
# ----------------------------------------------------------------------------


class HistoryEncoder(nn.Module):
    """Linear -> LayerNorm -> leaky ReLU (NEUBAY's input block), then the recurrent core."""

    kind: str = "lru"
    num_layers: int = 2
    hidden: int = 256
    lru_state_dim: int = 128
    scheme: str = "default"

    def setup(self):
        self.embed_linear = Linear(self.hidden, "pytorch_default", init_scheme(self.scheme)["hidden_bias"])
        self.embed_norm = nn.LayerNorm(epsilon=1e-5)
        options = {"state_dim": self.lru_state_dim} if self.kind == "lru" else {}
        self.core = make_core(self.kind, self.num_layers, self.hidden, **options).module

    def embed(self, xs: jax.Array) -> jax.Array:
        return nn.leaky_relu(self.embed_norm(self.embed_linear(xs)))

    def __call__(self, xs, state, resets=None):
        """xs [*batch, T, d] -> (features [*batch, T, hidden], final core state)."""
        return self.core(self.embed(xs), state, resets)

    def step(self, x, state, reset=None):
        """x [*batch, d] -> (features [*batch, hidden], next core state)."""
        return self.core.step(self.embed(x), state, reset)


def _encoder(config: Config) -> HistoryEncoder:
    return HistoryEncoder(config.core, config.core_layers, config.core_hidden, config.lru_state_dim, config.init)


class RecurrentActor(nn.Module):
    """pi(.|h_t): the history encoder, then SAC's tanh-Gaussian head (2 x 256, LayerNorm + leaky ReLU)."""

    action_dim: int
    encoder: HistoryEncoder
    head_hidden: tuple[int, ...] = (256, 256)
    log_std_mode: str = "clip"

    def setup(self):
        self.head = GaussianActor(self.action_dim, self.head_hidden, "leaky_relu", -5.0, 2.0, True,
                                  "pytorch_default", self.encoder.scheme, self.log_std_mode)

    def __call__(self, xs, state, resets=None):
        ys, state = self.encoder(xs, state, resets)
        return self.head(ys), state

    def step(self, x, state, reset=None):
        y, state = self.encoder.step(x, state, reset)
        return self.head(y), state

    def embed(self, xs):
        return self.encoder.embed(xs)


class RecurrentCritic(nn.Module):
    """Q_1..Q_N(h_t, a): one history encoder, N heads on [features, action] (QEnsemble, LayerNorm + leaky ReLU)."""

    num_critics: int
    encoder: HistoryEncoder
    head_hidden: tuple[int, ...] = (256, 256)

    def setup(self):
        self.heads = QEnsemble(self.num_critics, self.head_hidden, "leaky_relu", True, "pytorch_default",
                               self.encoder.scheme)

    def features(self, xs, state, resets=None):
        return self.encoder(xs, state, resets)

    def step_features(self, x, state, reset=None):
        return self.encoder.step(x, state, reset)

    def q(self, features, action):
        """[..., hidden], [..., A] -> [..., N]."""
        return self.heads(features, action)

    def __call__(self, xs, state, action, resets=None):
        """Q at the first action.shape[-2] steps of the sequence xs: [*batch, T_a, N]."""
        ys, _ = self.encoder(xs, state, resets)
        return self.heads(ys[..., : action.shape[-2], :], action)


def actor_network(config: Config, spec: EnvSpec) -> RecurrentActor:
    return RecurrentActor(spec.action_dim, _encoder(config), tuple(config.head_hidden), config.log_std)


def critic_network(config: Config) -> RecurrentCritic:
    return RecurrentCritic(config.num_critics, _encoder(config), tuple(config.head_hidden))


def input_dim(spec: EnvSpec) -> int:
    return spec.obs_dim + spec.action_dim + 1


def initial_core_state(config: Config, batch_shape: tuple[int, ...] = ()) -> tuple[jax.Array, ...]:
    """The zero core state (before an episode's first step); the actor's and the critic's have the same shapes."""
    options = {"state_dim": config.lru_state_dim} if config.core == "lru" else {}
    return make_core(config.core, config.core_layers, config.core_hidden, **options).initial_state(batch_shape)


def history_inputs(obs: jax.Array, prev_action: jax.Array, prev_reward: jax.Array) -> jax.Array:
    """x_t = [s_t, a_{t-1}, r_{t-1}], [..., S + A + 1]."""
    return jnp.concatenate([obs, prev_action, prev_reward[..., None]], axis=-1)


def network_optimizer(config: Config) -> optax.GradientTransformation:
    """NEUBAY's: NaN gradients zeroed, global-norm clip, Adam at encoder_lr (embedding + core) / head_lr (heads)."""
    def labels(params):
        return {"params": {name: jax.tree.map(lambda _, n=name: "encoder" if n == "encoder" else "head", sub)
                           for name, sub in params["params"].items()}}

    return optax.chain(optax.zero_nans(), optax.clip_by_global_norm(config.max_grad_norm),
                       optax.multi_transform({"encoder": optax.adam(config.encoder_lr),
                                              "head": optax.adam(config.head_lr)}, labels))


# ----------------------------------------------------------------------------
# Windows of history ("tapes") and their buffer
# ----------------------------------------------------------------------------


@struct.dataclass
class Tape:
    """Windows of W transitions and W + 1 observations (any leading batch dims)."""

    obs: jax.Array           # [..., W + 1, S]  s_0 .. s_W
    action: jax.Array        # [..., W, A]      a_t
    reward: jax.Array        # [..., W]         r_t (real, or the model's; the input of step t + 1)
    penalty: jax.Array       # [..., W]         c u_t / mean_data(u), subtracted in the target only
    terminated: jax.Array    # [..., W] bool    s_{t+1} is terminal (no bootstrap)
    valid: jax.Array         # [..., W] bool    the transition exists (False after the trajectory ended)
    real: jax.Array          # [..., W] bool    from the dataset (the prefix; not its left padding)
    reset: jax.Array         # [..., W + 1] bool the core's state is zeroed before input x_t (the left padding
                             #                  and the episode's first step s_0 when it is in the window)
    prev_action: jax.Array   # [..., A]         a_{-1}: the dataset's, zeros at an episode start
    prev_reward: jax.Array   # [...]            r_{-1}


def tape_inputs(tape: Tape) -> jax.Array:
    """x_0 .. x_W of every window: [..., W + 1, S + A + 1]."""
    prev_actions = jnp.concatenate([tape.prev_action[..., None, :], tape.action], axis=-2)
    prev_rewards = jnp.concatenate([tape.prev_reward[..., None], tape.reward], axis=-1)
    return history_inputs(tape.obs, prev_actions, prev_rewards)


@struct.dataclass
class TapeBuffer:
    tapes: Tape            # leaves [capacity, ...]
    size: jax.Array        # int32: windows stored
    insert: jax.Array      # int32: the next slot to write (the oldest is overwritten first)


def empty_buffer(capacity: int, length: int, obs_dim: int, action_dim: int) -> TapeBuffer:
    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((capacity, *shape), dtype)
    tapes = Tape(zeros(length + 1, obs_dim), zeros(length, action_dim), zeros(length), zeros(length),
                 zeros(length, dtype=bool), zeros(length, dtype=bool), zeros(length, dtype=bool),
                 zeros(length + 1, dtype=bool), zeros(action_dim), zeros())
    return TapeBuffer(tapes, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def store(buffer: TapeBuffer, tape: Tape, write: jax.Array | bool = True) -> TapeBuffer:
    """Write a batch of windows [B, ...] at the insert position (FIFO); nothing changes where `write` is False
    (a traced flag: the authors' schedule decides per seed, so under vmap this is a select over the B slots)."""
    capacity, batch = buffer.tapes.reward.shape[0], tape.reward.shape[0]
    slots = (buffer.insert + jnp.arange(batch)) % capacity
    write = jnp.asarray(write, bool)
    tapes = jax.tree.map(lambda old, new: old.at[slots].set(jnp.where(write, new, old[slots])), buffer.tapes, tape)
    added = jnp.where(write, batch, 0)
    return TapeBuffer(tapes, jnp.minimum(buffer.size + added, capacity), (buffer.insert + added) % capacity)


def sample_tapes(buffer: TapeBuffer, key: jax.Array, batch_size: int) -> Tape:
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda x: x[index], buffer.tapes)


# ----------------------------------------------------------------------------
# The world: dataset, posterior ensemble, truncation threshold (shared by every seed)
# ----------------------------------------------------------------------------


def prefix_starts(dataset, length: int) -> np.ndarray:
    """Dataset rows i whose window [i, i + length) lies in one episode and whose last transition is not
    terminal (a model can continue from its next observation)."""
    starts = np.asarray(datasets_lib.sequence_starts(dataset, length, allow_terminal=False), np.int64)
    terminal = np.asarray(dataset.terminals) > 0
    return starts[~terminal[starts + length - 1]]


def episode_steps(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(first [N] bool: the row starts an episode, step [N] int: its index in its episode)."""
    first = np.zeros(dataset.num_transitions, bool)
    episode_starts = datasets_lib.episode_starts(dataset)
    first[episode_starts] = True
    return first, np.arange(dataset.num_transitions) - episode_starts[np.cumsum(first) - 1]


def rollout_positions(dataset, config: Config) -> dict:
    """Where rollouts may start, one entry per position (numpy arrays of one length):

    row        one past the last dataset row of the history: the history is rows [row - t, row) of one episode
    time       t, the episode step the model starts at (= the real history's length)
    from_next  s_t is next_observations[row - 1] (True) or observations[row] (False)
    alive      the episode goes on at s_t (False at an episode's end: terminal or timeout, no model step)

    "any" (the authors' HistorySampler, start_from_s0=False): every step t = 0 .. T - 1 of every episode at
    its row (s_t = observations[row]) and the end t = T (s_T = the last next_observation, not alive), so t is
    uniform in [0, T] within an episode and positions are uniform over the dataset's T + 1 per episode.
    "after_prefix": the prefix_starts windows of P rows (t >= P; s_t = the window's last next_observation).
    """
    _, step = episode_steps(dataset)
    p = config.prefix_length
    if config.rollout_starts == "after_prefix":
        starts = prefix_starts(dataset, p)
        rows = starts + p
        return {"row": rows, "time": step[rows - 1] + 1, "from_next": np.ones(rows.size, bool),
                "alive": np.ones(rows.size, bool)}
    ends = datasets_lib.episode_ends(dataset)
    n = dataset.num_transitions
    return {"row": np.concatenate([np.arange(n), ends + 1]), "time": np.concatenate([step, step[ends] + 1]),
            "from_next": np.concatenate([np.zeros(n, bool), np.ones(ends.size, bool)]),
            "alive": np.concatenate([np.ones(n, bool), np.zeros(ends.size, bool)])}


def check(dataset, spec: EnvSpec, config: Config) -> None:
    """Before anything is written: a known termination rule, a saved model of these shapes, prefixes that fit
    (with --rollout-starts after_prefix; "any" left-pads short histories)."""
    from envs import true_dynamics

    true_dynamics.termination_fn(spec.env_id)       # raises for a task without a known termination rule
    if config.model_path is not None:
        ensemble_lib.load(config.model_path, model_config(config), spec.obs_dim, spec.action_dim)
    if config.rollout_starts == "after_prefix" and prefix_starts(dataset, config.prefix_length).size == 0:
        lengths = datasets_lib.episode_lengths(dataset)
        terminal_end = np.asarray(dataset.terminals)[datasets_lib.episode_ends(dataset)] > 0
        longest = int(np.max(lengths - terminal_end))     # a prefix may not end at a terminal transition
        raise ValueError(f"--prefix-length {config.prefix_length} is longer than the episodes of the dataset "
                         f"{dataset.metadata.source or ''}: a prefix is that many transitions of one episode, "
                         f"not ending at a terminal; the longest fits {longest} "
                         f"(longest episode: {int(lengths.max())} transitions); use --prefix-length <= "
                         f"{max(longest, 1)}" + ("" if longest >= 1 else " with a dataset of longer episodes"))


def model_step(model: ensemble_lib.EnsembleState, obs: jax.Array, action: jax.Array, member: jax.Array,
               key: jax.Array, kind: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One imagined step per row with its own member: (next_obs [B, S], reward [B], u(s, a) [B] over the kept).

    Both calls evaluate every member on every row (the disagreement needs them all); under jit XLA
    shares the common work."""
    next_obs, reward, _ = ensemble_lib.sample_step(model, obs, action, key, member=member)
    return next_obs, reward, ensemble_lib.disagreement(model, obs, action, kind=kind)


def data_disagreement(model: ensemble_lib.EnsembleState, dataset, kind: str, chunk: int = 4096) -> np.ndarray:
    """u(s, a) [N] at every dataset transition, over the kept members."""
    obs, action = jnp.asarray(dataset.observations), jnp.asarray(dataset.actions)
    parts = [ensemble_lib.disagreement(model, obs[i:i + chunk], action[i:i + chunk], kind=kind)
             for i in range(0, obs.shape[0], chunk)]
    return np.asarray(jnp.concatenate(parts), np.float64)


def build_world(dataset, spec: EnvSpec, config: Config, model: ensemble_lib.EnsembleState) -> dict:
    """Everything the jitted rollouts read: the dataset's arrays, prefix starts, the model, the threshold."""
    u = data_disagreement(model, dataset, config.disagreement)
    threshold = np.inf if config.uncertainty_quantile is None else float(np.quantile(u, config.uncertainty_quantile))
    positions = rollout_positions(dataset, config)
    if positions["row"].size == 0:
        raise ValueError(f"--prefix-length {config.prefix_length}: no prefix fits in the dataset")
    first, episode_step = episode_steps(dataset)
    episode_starts = datasets_lib.episode_starts(dataset)
    obs = jnp.asarray(dataset.observations, jnp.float32)
    return {"obs": obs, "action": jnp.asarray(dataset.actions, jnp.float32),
            "reward": jnp.asarray(dataset.rewards, jnp.float32),
            "next_obs": jnp.asarray(dataset.next_observations, jnp.float32),
            "terminal": jnp.asarray(np.asarray(dataset.terminals) > 0),
            "first": jnp.asarray(first), "episode_step": jnp.asarray(episode_step, jnp.int32),
            "start_row": jnp.asarray(positions["row"], jnp.int32),
            "start_time": jnp.asarray(positions["time"], jnp.int32),
            "start_from_next": jnp.asarray(positions["from_next"]), "start_alive": jnp.asarray(positions["alive"]),
            "probe_obs": obs[jnp.asarray(episode_starts[:256])],
            "model": model, "threshold": jnp.asarray(threshold, jnp.float32),
            "mean_disagreement": jnp.asarray(max(float(np.mean(u)), 1e-8), jnp.float32)}


def prepare(dataset, spec: EnvSpec, config: Config, world_dir: Path, key: jax.Array) -> dict:
    """Train (or load) the posterior ensemble once, measure its disagreement on the data; the shared world."""
    from envs import true_dynamics

    true_dynamics.termination_fn(spec.env_id)       # raises early for a task without a known termination rule
    log = lambda text: print(text, file=sys.stderr, flush=True)
    model = ensemble_lib.load_or_fit(dataset, spec.obs_dim, spec.action_dim, model_config(config), world_dir, key,
                                     config.model_path, "world model", log)
    return build_world(dataset, spec, config, model)


# ----------------------------------------------------------------------------
# State, acting
# ----------------------------------------------------------------------------


ROLLOUT_METRICS = ("rollout/length", "rollout/length_max", "rollout/return", "rollout/terminated",
                   "rollout/uncertainty_truncated", "rollout/uncertainty", "rollout/start_step", "rollout/data_size")


@struct.dataclass
class NEUBAYState:
    actor: Trained               # no target
    critic: Trained              # embedding + core + heads, with a target copy
    log_alpha: jax.Array
    alpha_opt_state: optax.OptState
    buffer: TapeBuffer
    rollout_metrics: dict        # of the last rollout round
    probe_obs: jax.Array         # dataset episode-start observations, for the value diagnostics
    updates: jax.Array
    rollout_countdown: jax.Array  # int32: updates left before the next rollout round (the authors' schedule)
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)
    spec: EnvSpec = struct.field(pytree_node=False)

    @property
    def alpha(self) -> jax.Array:
        return jnp.exp(self.log_alpha)


def init(key: jax.Array, spec: EnvSpec, config: Config, world: dict) -> NEUBAYState:
    k_actor, k_critic = jax.random.split(key)
    xs, core = jnp.zeros((1, 1, input_dim(spec))), initial_core_state(config, (1,))
    actor_params = actor_network(config, spec).init(k_actor, xs, core)
    critic_params = critic_network(config).init(k_critic, xs, core, jnp.zeros((1, 1, spec.action_dim)))
    optimizer = network_optimizer(config)
    log_alpha = jnp.log(jnp.asarray(config.init_alpha, jnp.float32))
    return NEUBAYState(
        actor=trained(actor_params, optimizer, target=False), critic=trained(critic_params, optimizer),
        log_alpha=log_alpha, alpha_opt_state=optax.adam(config.alpha_lr).init(log_alpha),
        buffer=empty_buffer(config.buffer_size, window_length(config, spec), spec.obs_dim, spec.action_dim),
        rollout_metrics={name: jnp.zeros(()) for name in ROLLOUT_METRICS},
        # Without a world (an exported policy being loaded: agents/contract.py), the probe is a stand-in of zeros.
        probe_obs=world["probe_obs"] if world is not None else jnp.zeros((1, spec.obs_dim)),
        updates=jnp.zeros((), jnp.int32), rollout_countdown=jnp.zeros((), jnp.int32), config=config, spec=spec)


@struct.dataclass
class ActCarry:
    """What acting remembers between steps of an episode."""

    core: tuple                  # the actor's core state
    prev_action: jax.Array       # [..., A]


def initial_carry(state: NEUBAYState, batch_shape: tuple[int, ...] = ()) -> ActCarry:
    return ActCarry(initial_core_state(state.config, tuple(batch_shape)),
                    jnp.zeros((*batch_shape, state.spec.action_dim)))


def act_step(state: NEUBAYState, carry: ActCarry, obs: jax.Array, reward: jax.Array, first: jax.Array,
             key: jax.Array, explore: bool) -> tuple[jax.Array, ActCarry]:
    """The action at s_t = `obs` [..., S] given the history in `carry`: `reward` [...] is r_{t-1}, the reward of
    the previous step; `first` [...] marks an episode's first step (the history restarts: the core state,
    a_{-1} and r_{-1} are zeroed). A sample of pi when exploring, else tanh(mean)."""
    first = jnp.broadcast_to(jnp.asarray(first, bool), obs.shape[:-1])
    prev_action = jnp.where(first[..., None], 0.0, carry.prev_action)
    prev_reward = jnp.where(first, 0.0, jnp.asarray(reward, jnp.float32))
    dist, core = actor_network(state.config, state.spec).apply(
        state.actor.params, history_inputs(obs, prev_action, prev_reward), carry.core, first, method="step")
    action = dist_lib.mode(dist) if not explore else jnp.tanh(dist_lib.sample_pre_tanh(dist, key))
    return action, ActCarry(core, action)


def act(state: NEUBAYState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    """Stateless acting: the policy at an episode's first step (empty history) applied to `obs` [..., S].
    A memoryless approximation for loops without a carry; `act_step` is the history-dependent policy."""
    carry = initial_carry(state, obs.shape[:-1])
    action, _ = act_step(state, carry, obs, jnp.zeros(obs.shape[:-1]), True, key, explore)
    return action


# ----------------------------------------------------------------------------
# Long-horizon rollouts in one sampled world
# ----------------------------------------------------------------------------


@struct.dataclass
class Prefix:
    obs: jax.Array           # [B, P, S]  s_{t-P} .. s_{t-1}, zeros in the left padding
    action: jax.Array        # [B, P, A]
    reward: jax.Array        # [B, P]
    valid: jax.Array         # [B, P]     a real transition (False in the left padding)
    terminated: jax.Array    # [B, P]     the dataset's terminal flags (an episode's last transition, at t = T)
    reset: jax.Array         # [B, P + 1] zero the core's state before window inputs x_0 .. x_P (the padding and s_0)
    prev_action: jax.Array   # [B, A]  a_{-1} of the window (the dataset's before a full window, else zeros)
    prev_reward: jax.Array   # [B]     r_{-1}
    next_obs: jax.Array      # [B, S]  s_t, where the model takes over
    time: jax.Array          # [B]     t: episode steps taken at s_t (the real history's full length)
    alive: jax.Array         # [B]     the episode goes on at s_t


def real_prefix(world: dict, index: jax.Array, length: int) -> Prefix:
    """The real history of rollout positions `index` (into world["start_*"]; `rollout_positions`): the last
    k = min(t, P) transitions before s_t, placed at window steps P - k .. P - 1 and LEFT-PADDED with zeros
    (valid False, reset True, as the authors' padded_start), so that a core run over the window from the zero
    state sees exactly the real history; the reset at the episode's s_0 (window step P - t when t <= P) starts
    it afresh there, and a_{-1}, r_{-1} at s_0 are zeros."""
    n = world["obs"].shape[0]
    row, t = world["start_row"][index], world["start_time"][index]
    j = jnp.arange(length)
    rows = jnp.clip(row[:, None] - length + j, 0, n - 1)                            # [B, P]
    valid = j[None, :] >= (length - jnp.minimum(t, length))[:, None]
    pad = lambda x: jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x, 0.0)
    before = jnp.clip(row - length - 1, 0, n - 1)
    full = t > length                                                                # history longer than the window
    current = jnp.where(world["start_from_next"][index][:, None], world["next_obs"][jnp.clip(row - 1, 0, n - 1)],
                        world["obs"][jnp.clip(row, 0, n - 1)])
    return Prefix(obs=pad(world["obs"][rows]), action=pad(world["action"][rows]), reward=pad(world["reward"][rows]),
                  valid=valid, terminated=valid & world["terminal"][rows],
                  reset=jnp.arange(length + 1)[None, :] <= (length - t)[:, None],
                  prev_action=jnp.where(full[:, None], world["action"][before], 0.0),
                  prev_reward=jnp.where(full, world["reward"][before], 0.0),
                  next_obs=current, time=t, alive=world["start_alive"][index])


def warm_up(state: NEUBAYState, actor_params: dict, prefix: Prefix) -> tuple:
    """The actor's core state after the prefix: the core run over x_0 .. x_{P-1} from the zero state, with the
    prefix's resets (so the left padding leaves no trace)."""
    prev_actions = jnp.concatenate([prefix.prev_action[:, None], prefix.action[:, :-1]], axis=1)
    prev_rewards = jnp.concatenate([prefix.prev_reward[:, None], prefix.reward[:, :-1]], axis=1)
    xs = history_inputs(prefix.obs, prev_actions, prev_rewards)
    _, core = actor_network(state.config, state.spec).apply(
        actor_params, xs, initial_core_state(state.config, xs.shape[:1]), prefix.reset[:, :-1],
        method=lambda m, x, s, r: m.encoder(x, s, r))
    return core


def assign_members(config: Config, model: ensemble_lib.EnsembleState, key: jax.Array, batch: int) -> jax.Array:
    """The member [batch] of each trajectory: "block", trajectory i -> the kept member of rank (i K) // batch,
    i.e. i // B for B = batch / K trajectories per member (the authors' reshape to [K, B]; K divides batch
    there, here uneven blocks differ by one); "sample", uniform over the kept, with replacement."""
    kept = model.elites
    if config.member_mapping == "block":
        return kept[jnp.asarray(np.arange(batch) * kept.shape[0] // batch, jnp.int32)]
    return kept[jax.random.randint(key, (batch,), 0, kept.shape[0])]


def imagine(state: NEUBAYState, world: dict, key: jax.Array, active: jax.Array | bool = True) -> tuple[Tape, dict]:
    """`rollout_batch` windows: a real (left-padded) history, then up to H steps in ONE kept member per
    trajectory. Trajectories start only where `active` (a traced flag; False: every trajectory is dead from
    the start and the loop below does not run for it).

    Returns the windows [B, ...] and {"member": [B], "data_size": sum_i (t_i + h_i), metrics...}. The loop
    stops early once every trajectory has ended (under vmap: once every seed's have)."""
    from envs import true_dynamics

    config, spec = state.config, state.spec
    horizon, batch = rollout_horizon(config, spec), config.rollout_batch
    model, actor = world["model"], actor_network(config, spec)
    terminated_fn = true_dynamics.termination_fn(spec.env_id)
    k_member, k_start, k_steps = jax.random.split(key, 3)
    member = assign_members(config, model, k_member, batch)
    index = jax.random.randint(k_start, (batch,), 0, world["start_row"].shape[0])
    prefix = real_prefix(world, index, config.prefix_length)
    core = warm_up(state, state.actor.params, prefix)

    def step(carry):
        t, obs, prev_action, prev_reward, core, alive, out, key = carry
        key, k_action, k_model = jax.random.split(key, 3)
        reset = (t == 0) & prefix.reset[:, -1]             # the model starts at an episode's s_0
        dist, core = actor.apply(state.actor.params, history_inputs(obs, prev_action, prev_reward), core, reset,
                                 method="step")
        action = jnp.tanh(dist_lib.sample_pre_tanh(dist, k_action))
        next_obs, reward, u = model_step(model, obs, action, member, k_model, config.disagreement)
        valid = alive & jnp.all(jnp.isfinite(next_obs), axis=-1) & jnp.isfinite(reward)
        terminated = valid & terminated_fn(obs, action, next_obs)
        exceeded = valid & ~(u <= world["threshold"])          # NaN disagreement counts as exceeded
        time_up = prefix.time + t + 1 >= spec.max_episode_steps
        penalty = jnp.where(valid & jnp.isfinite(u), config.reward_penalty * u / world["mean_disagreement"], 0.0)
        next_obs = jnp.where(valid[:, None], next_obs, obs)
        action, reward = jnp.where(valid[:, None], action, 0.0), jnp.where(valid, reward, 0.0)
        new = {"next_obs": next_obs, "action": action, "reward": reward, "penalty": penalty,
               "terminated": terminated, "valid": valid, "exceeded": exceeded,
               "u": jnp.where(valid & jnp.isfinite(u), u, 0.0)}
        out = {name: out[name].at[:, t].set(value) for name, value in new.items()}
        alive = valid & ~terminated & ~exceeded & ~time_up
        return t + 1, next_obs, action, reward, core, alive, out, key

    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((batch, horizon, *shape), dtype)
    out = {"next_obs": zeros(spec.obs_dim), "action": zeros(spec.action_dim), "reward": zeros(), "penalty": zeros(),
           "terminated": zeros(dtype=bool), "valid": zeros(dtype=bool), "exceeded": zeros(dtype=bool), "u": zeros()}
    alive = prefix.alive & (prefix.time < spec.max_episode_steps) & jnp.asarray(active, bool)
    carry = (jnp.zeros((), jnp.int32), prefix.next_obs, prefix.action[:, -1], prefix.reward[:, -1], core, alive, out,
             k_steps)
    carry = jax.lax.while_loop(lambda c: (c[0] < horizon) & jnp.any(c[5]), step, carry)
    out = carry[6]

    p = config.prefix_length
    tape = Tape(obs=jnp.concatenate([prefix.obs, prefix.next_obs[:, None], out["next_obs"]], axis=1),
                action=jnp.concatenate([prefix.action, out["action"]], axis=1),
                reward=jnp.concatenate([prefix.reward, out["reward"]], axis=1),
                penalty=jnp.concatenate([jnp.zeros((batch, p)), out["penalty"]], axis=1),
                terminated=jnp.concatenate([prefix.terminated, out["terminated"]], axis=1),
                valid=jnp.concatenate([prefix.valid, out["valid"]], axis=1),
                real=jnp.concatenate([prefix.valid, jnp.zeros((batch, horizon), bool)], axis=1),
                reset=jnp.concatenate([prefix.reset, jnp.zeros((batch, horizon), bool)], axis=1),
                prev_action=prefix.prev_action, prev_reward=prefix.prev_reward)
    lengths = jnp.sum(out["valid"], axis=1)
    steps = jnp.maximum(jnp.sum(lengths), 1)
    data_size = jnp.sum(prefix.time + lengths)            # the authors' data_size: history + imagined transitions
    metrics = {"rollout/length": jnp.mean(lengths).astype(jnp.float32),
               "rollout/length_max": jnp.max(lengths).astype(jnp.float32),
               "rollout/return": jnp.mean(jnp.sum(out["reward"], axis=1)),
               "rollout/terminated": jnp.mean(jnp.any(out["terminated"], axis=1)),
               "rollout/uncertainty_truncated": jnp.mean(jnp.any(out["exceeded"] & ~out["terminated"], axis=1)),
               "rollout/uncertainty": jnp.sum(out["u"]) / steps,
               "rollout/start_step": jnp.mean(prefix.time.astype(jnp.float32)),
               "rollout/data_size": data_size}
    return tape, {"member": member, "data_size": data_size, **{k: v.astype(jnp.float32) for k, v in metrics.items()}}


def add_rollouts(state: NEUBAYState, world: dict, key: jax.Array, active: jax.Array | bool = True
                 ) -> tuple[NEUBAYState, jax.Array]:
    """One rollout round into the buffer (only where `active`); returns (state, the round's data_size)."""
    tape, info = imagine(state, world, key, active)
    active = jnp.asarray(active, bool)
    metrics = {k: jnp.where(active, info[k], state.rollout_metrics[k]) for k in ROLLOUT_METRICS}
    return state.replace(buffer=store(state.buffer, tape, active), rollout_metrics=metrics), info["data_size"]


# ----------------------------------------------------------------------------
# Losses and the update
# ----------------------------------------------------------------------------


def mixed_mean(values: jax.Array, tape: Tape, real_weight: float) -> jax.Array:
    """real_weight * mean over valid real steps + (1 - real_weight) * mean over valid imagined steps."""
    real, imagined = tape.valid & tape.real, tape.valid & ~tape.real
    mean = lambda mask: jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
    return real_weight * mean(real) + (1.0 - real_weight) * mean(imagined)


def critic_target(state: NEUBAYState, tape: Tape, xs: jax.Array, key: jax.Array) -> jax.Array:
    """y_t = r_t - penalty_t + gamma (1 - terminated_t) (min_{j in J} Q'_j(h_{t+1}, a') - alpha log pi(a'|h_{t+1})),
    J = `sampled_critics` of the target heads, a' ~ pi(.|h_{t+1}); for every step of the windows [B, W]."""
    config = state.config
    k_action, k_heads = jax.random.split(key)
    zero = initial_core_state(config, xs.shape[:1])
    dist, _ = actor_network(config, state.spec).apply(state.actor.params, xs, zero, tape.reset)
    u = dist_lib.sample_pre_tanh(dist, k_action)
    next_action, next_log_prob = jnp.tanh(u)[:, 1:], dist_lib.log_prob(dist, u)[:, 1:]
    critic = critic_network(config)
    features, _ = critic.apply(state.critic.target_params, xs, zero, tape.reset, method="features")
    q = critic.apply(state.critic.target_params, features[:, 1:], next_action, method="q")        # [B, W, N]
    heads = jax.random.choice(k_heads, config.num_critics, (config.sampled_critics,), replace=False)
    soft_value = jnp.min(q[..., heads], axis=-1) - state.alpha * next_log_prob
    return tape.reward - tape.penalty + config.discount * (1.0 - tape.terminated) * soft_value


def critic_loss(critic_params: dict, state: NEUBAYState, tape: Tape, xs: jax.Array,
                target: jax.Array) -> tuple[jax.Array, dict]:
    """mix(mean_j huber(Q_j(h_t, a_t) - y_t))."""
    zero = initial_core_state(state.config, xs.shape[:1])
    q = critic_network(state.config).apply(critic_params, xs, zero, tape.action, tape.reset)      # [B, W, N]
    per_step = jnp.mean(optax.huber_loss(q, target[..., None]), axis=-1)
    loss = mixed_mean(per_step, tape, state.config.real_weight)
    imagined = tape.valid & ~tape.real
    q_imagined = jnp.sum(jnp.where(imagined, jnp.mean(q, axis=-1), 0.0)) / jnp.maximum(jnp.sum(imagined), 1)
    return loss, {"critic/loss": loss, "critic/q_imagined": q_imagined,
                  "critic/q_real": mixed_mean(jnp.mean(q, axis=-1), tape, 1.0)}


def actor_loss(actor_params: dict, state: NEUBAYState, tape: Tape, xs: jax.Array, features: jax.Array,
               key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mix(alpha log pi(a|h_t) - mean_j Q_j(h_t, a)), a ~ pi reparameterized; also returns log pi."""
    zero = initial_core_state(state.config, xs.shape[:1])
    dist, _ = actor_network(state.config, state.spec).apply(actor_params, xs[:, :-1], zero, tape.reset[:, :-1])
    u = dist_lib.sample_pre_tanh(dist, key)
    log_prob = dist_lib.log_prob(dist, u)
    q = critic_network(state.config).apply(state.critic.params, features[:, :-1], jnp.tanh(u), method="q")
    loss = mixed_mean(state.alpha * log_prob - jnp.mean(q, axis=-1), tape, state.config.real_weight)
    return loss, log_prob


def rollout_schedule(state: NEUBAYState, world: dict, key: jax.Array, step: jax.Array) -> NEUBAYState:
    """A rollout round when one is due. Fixed (--rollout-every k): before updates 1, k + 1, 2k + 1, ...; `step`
    is unbatched (shared by the seeds), so this is a real branch under vmap. The authors' (--rollout-every
    None): when this seed's countdown has run out, then ceil(utd x data_size) updates until the next round; the
    flag is per seed, so under vmap the round's code runs at every update, masked (the imagined steps' loop only
    while some seed is rolling out; the warm-up over the prefixes and the masked write always)."""
    config = state.config
    if config.rollout_every is not None:
        return jax.lax.cond((step - 1) % config.rollout_every == 0, lambda s: add_rollouts(s, world, key)[0],
                            lambda s: s, state)
    due = state.rollout_countdown <= 0
    state, data_size = add_rollouts(state, world, key, due)
    updates = jnp.maximum(jnp.ceil(config.utd * data_size.astype(jnp.float32)), 1.0).astype(jnp.int32)
    return state.replace(rollout_countdown=jnp.where(due, updates, state.rollout_countdown) - 1)


def update(state: NEUBAYState, world: dict, key: jax.Array, step: jax.Array) -> tuple[NEUBAYState, dict]:
    """Update `step` (from 1): a rollout round when due (`rollout_schedule`), then one critic, one actor and one
    alpha step."""
    config = state.config
    k_roll, k_sample, k_target, k_actor = jax.random.split(key, 4)
    state = rollout_schedule(state, world, k_roll, step)
    tape = sample_tapes(state.buffer, k_sample, config.batch_size)
    xs = tape_inputs(tape)
    optimizer = network_optimizer(config)

    target = jax.lax.stop_gradient(critic_target(state, tape, xs, k_target))
    grads, metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, state, tape, xs, target)
    metrics["critic/grad_norm"] = optax.tree.norm(grads)
    state = state.replace(critic=polyak(apply_gradients(state.critic, grads, optimizer), config.tau))

    features, _ = critic_network(config).apply(state.critic.params, xs, initial_core_state(config, xs.shape[:1]),
                                               tape.reset, method="features")
    features = jax.lax.stop_gradient(features)
    (loss, log_prob), grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor.params, state, tape, xs,
                                                                          features, k_actor)
    state = state.replace(actor=apply_gradients(state.actor, grads, optimizer))

    target_entropy = -config.target_entropy_scale * state.spec.action_dim
    entropy = jax.lax.stop_gradient(-log_prob)
    alpha_grad = jax.grad(lambda la: mixed_mean(jnp.exp(la) * (entropy - target_entropy), tape,
                                                config.real_weight))(state.log_alpha)
    step_alpha, alpha_opt_state = optax.adam(config.alpha_lr).update(alpha_grad, state.alpha_opt_state)
    state = state.replace(log_alpha=optax.apply_updates(state.log_alpha, step_alpha), alpha_opt_state=alpha_opt_state,
                          updates=state.updates + 1)
    return state, {**metrics, "actor/loss": loss, "actor/entropy": mixed_mean(entropy, tape, config.real_weight),
                   "alpha": state.alpha, "buffer/size": state.buffer.size.astype(jnp.float32),
                   **state.rollout_metrics}


def diagnostics(state: NEUBAYState, key: jax.Array) -> dict:
    """Q of a sampled action at dataset episode starts (empty history), min and mean over the heads: what the
    critic expects to earn, to compare with the evaluation's discounted return (eval/discounted_return)."""
    config, obs = state.config, state.probe_obs
    zero, batch = initial_core_state(config, obs.shape[:1]), obs.shape[:1]
    x = history_inputs(obs, jnp.zeros((*batch, state.spec.action_dim)), jnp.zeros(batch))
    dist, _ = actor_network(config, state.spec).apply(state.actor.params, x, zero, method="step")
    action = jnp.tanh(dist_lib.sample_pre_tanh(dist, key))
    critic = critic_network(config)
    features, _ = critic.apply(state.critic.params, x, zero, method="step_features")
    q = critic.apply(state.critic.params, features, action, method="q")
    return {"value/q_start_min": jnp.mean(jnp.min(q, axis=-1)), "value/q_start_mean": jnp.mean(q)}


AGENT = OfflineAgent(name="neubay", Config=Config, init=init, act=act, prepare=prepare, update=update, check=check,
                     diagnostics=diagnostics, initial_carry=initial_carry, act_step=act_step,
                     RUN_DEFAULTS=RUN_DEFAULTS)
