"""MR.Q: Model-based Representations for Q-learning.

Fujimoto, Ni, Ding, Rabbat, Fujimoto ... "Towards General-Purpose Model-Free
Reinforcement Learning", ICLR 2025, arXiv 2501.16142. Reference code:
facebookresearch/MRQ (PyTorch). Defaults are the paper's (Table 4 / the
reference `Hyperparameters`).

MR.Q is TD3 on learned embeddings. An encoder maps a state to zs and a
state-action pair to zsa; it is trained so that zsa predicts, through a linear
model head, the next state's embedding, the reward (two-hot over 65 symexp
bins) and termination, over a 5-step latent rollout (Eq. 6-9). The value
function is a function of zsa only and the policy of zs only. Targets
(encoder, value, policy) are hard-copied every 250 updates; at that moment the
encoder gets a burst of 250 updates on a fixed target encoder.

One update per environment step after 10k random steps:

    every 250 updates:  targets <- online; reward scale refreshed;
                        250 x encoder update (Eq. 9)
    value update   (Eq. 10): 3-step return, TD3 target noise, Huber loss,
                              reward-scale normalized; LAP priorities
    policy update  (Eq. 11): deterministic policy gradient through zsa,
                              plus 1e-5 * pre-tanh activation^2

Multi-step returns at terminals. The reference computes
R = sum_t gamma^t * notdone_t * r_t, which drops the reward OF the terminal
transition and, since its windows may run past a terminal, keeps rewards of
the following episode when notdone is 1 there again. Here
R = sum_t gamma^t * r_t * prod_{u<t} notdone_u: every reward up to and
including the terminal one, nothing after. Without terminals (all of DMC)
both are the same.

Many envs per seed (`--num-envs N`, JAX envs): each loop step stores the N
envs' transitions, one replay stream each (replay/streams.py: no subsequence
runs from one env's episode into another's, LAP priorities span all streams),
and owes `updates_per_step` x N updates (one per env step by default; e.g.
`--updates-per-step 0.125` at N = 16 gives two per loop step). Steps
(`--random-steps`, the ratio) count env steps summed over the N envs; the
target/burst period stays `target_update_freq` updates.

Everything below is a pure function of an `MRQState` pytree; the training
loops in `experiments/` jit and vmap them over seeds.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

import replay
from agents import critic
from agents.contract import OffPolicyAgent
from agents.config import check_fields, field, hyperparameters
from envs import EnvSpec
from networks.mrq import DeterministicPolicy, MRQEncoder, TwinQ
from networks.twohot import symexp_bins, two_hot_cross_entropy
from networks.training import Trained, apply_gradients, hard_copy, trained
from replay import streams



@hyperparameters
class Config:
    """MR.Q hyperparameters; defaults are the paper's."""

    # Generic
    batch_size: int = field(256, ">= 1")
    """Transitions (or subsequences) per update."""
    buffer_size: int = field(1_000_000, ">= 1")
    """Replay capacity in transitions per seed, over all its envs (capped at what the run can fill)."""
    num_envs: int = field(1, ">= 1")
    """Envs per seed stepped together (JAX envs): each loop step stores N transitions, one replay stream per
    env; --total-steps, --random-steps and --updates-per-step count env steps summed over them."""
    updates_per_step: float = field(1.0, "(0, 1024]", static=True, about="the update-to-data ratio")
    """Value/policy updates per env step (a loop step of N envs owes N times this; fractions allowed). Static:
    the encoder burst branches on the update index, which must not differ between lanes."""
    discount: float = field(0.99, "[0, 1]")
    """Discount factor gamma."""
    target_update_freq: int = field(250, ">= 1")
    """Updates between hard target copies; also the length of each encoder burst."""
    random_steps: int = field(10_000, ">= 0")
    """Environment steps with uniform random actions before training starts."""

    # Exploration and TD3 target smoothing
    exploration_noise: float = field(0.2, ">= 0")
    """Std of the Gaussian noise added to the policy's action while collecting data."""
    target_policy_noise: float = field(0.2, ">= 0")
    """Std of the Gaussian noise on the target action (TD3)."""
    noise_clip: float = field(0.3, ">= 0")
    """Clip of the target action noise (TD3)."""

    # Encoder loss (Eq. 9)
    dyn_weight: float = field(1.0, ">= 0")
    """Weight of the next-embedding MSE."""
    reward_weight: float = field(0.1, ">= 0")
    """Weight of the two-hot reward cross-entropy."""
    done_weight: float = field(0.1, ">= 0")
    """Weight of the termination MSE (used only once a terminal is in the buffer)."""
    enc_horizon: int = field(5, ">= 1")
    """Length H_enc of the latent model rollout."""
    q_horizon: int = field(3, ">= 1")
    """n of the n-step return in the value target."""

    # Replay (LAP)
    prioritized: bool = True
    """Loss-adjusted prioritized replay (LAP); False samples uniformly."""
    alpha: float = field(0.4, ">= 0")
    """LAP exponent: priority = max(|delta|, min_priority)^alpha."""
    min_priority: float = field(1.0, ">= 0")
    """LAP floor on |delta|."""

    # Encoder
    zs_dim: int = field(512, ">= 1")
    """State embedding width."""
    za_dim: int = field(256, ">= 1")
    """Action embedding width."""
    zsa_dim: int = field(512, ">= 1")
    """State-action embedding width."""
    enc_hidden_dim: int = field(512, ">= 1")
    """Hidden width of the encoder MLPs."""
    enc_activation: str = "elu"
    """Encoder activation."""
    enc_lr: float = field(1e-4, "> 0")
    """Encoder AdamW learning rate."""
    enc_weight_decay: float = field(1e-4, ">= 0")
    """Encoder AdamW weight decay."""

    # Value
    value_hidden_dim: int = field(512, ">= 1")
    """Hidden width of each critic."""
    value_activation: str = "elu"
    """Critic activation."""
    value_lr: float = field(3e-4, "> 0")
    """Critic AdamW learning rate."""
    value_weight_decay: float = field(1e-4, ">= 0")
    """Critic AdamW weight decay."""
    value_grad_clip: float = field(20.0, "> 0")
    """Global-norm gradient clip of the critic update."""

    # Policy
    policy_hidden_dim: int = field(512, ">= 1")
    """Hidden width of the policy MLP."""
    policy_activation: str = "relu"
    """Policy activation."""
    policy_lr: float = field(3e-4, "> 0")
    """Policy AdamW learning rate."""
    policy_weight_decay: float = field(1e-4, ">= 0")
    """Policy AdamW weight decay."""
    pre_activ_weight: float = field(1e-5, ">= 0")
    """Weight of the penalty on the policy's pre-tanh activations."""

    # Reward model
    num_bins: int = field(65, ">= 1")
    """Two-hot reward bins."""
    bin_lower: float = field(-10.0, "finite")
    """Lowest bin before symexp."""
    bin_upper: float = field(10.0, "finite")
    """Highest bin before symexp."""

    def validate(self) -> None:
        """Raise ValueError naming the first out-of-range field."""
        check_fields(self)
        if self.q_horizon > self.enc_horizon:
            raise ValueError(f"--q-horizon ({self.q_horizon}) must be <= --enc-horizon ({self.enc_horizon})")
        if not self.bin_lower < self.bin_upper:
            raise ValueError(f"--bin-lower ({self.bin_lower}) must be < --bin-upper ({self.bin_upper})")


# ----------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------


@struct.dataclass
class MRQState:
    encoder: Trained
    value: Trained
    policy: Trained
    replay: replay.ReplayBuffer     # replay/streams.py: one stream per env of the seed
    reward_scale: jax.Array         # s: mean |r| in the buffer at the last target update
    target_reward_scale: jax.Array  # s_target: the previous value of s
    env_steps: jax.Array            # transitions stored (env steps, summed over the seed's envs)
    updates: jax.Array              # value/policy updates done
    encoder_metrics: dict           # mean losses of the last encoder burst (for logging)
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)
    spec: EnvSpec = struct.field(pytree_node=False)


def _networks(config: Config, spec: EnvSpec):
    encoder = MRQEncoder(config.zs_dim, config.za_dim, config.zsa_dim, config.enc_hidden_dim,
                         config.num_bins, config.enc_activation)
    value = TwinQ(config.value_hidden_dim, config.value_activation)
    policy = DeterministicPolicy(spec.action_dim, config.policy_hidden_dim, config.policy_activation)
    return encoder, value, policy


def _optimizers(config: Config):
    encoder = optax.adamw(config.enc_lr, weight_decay=config.enc_weight_decay)
    value = optax.chain(optax.clip_by_global_norm(config.value_grad_clip),
                        optax.adamw(config.value_lr, weight_decay=config.value_weight_decay))
    policy = optax.adamw(config.policy_lr, weight_decay=config.policy_weight_decay)
    return encoder, value, policy


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> MRQState:
    """Fresh networks, optimizers and an empty replay of `num_envs` streams of `capacity` slots each (default:
    `buffer_size` shared out over the streams)."""
    encoder_net, value_net, policy_net = _networks(config, spec)
    encoder_opt, value_opt, policy_opt = _optimizers(config)
    k_enc, k_val, k_pol = jax.random.split(key, 3)
    obs = jnp.zeros((1, spec.obs_dim))
    action = jnp.zeros((1, spec.action_dim))
    encoder_params = encoder_net.init(k_enc, obs, action)
    value_params = value_net.init(k_val, jnp.zeros((1, config.zsa_dim)))
    policy_params = policy_net.init(k_pol, jnp.zeros((1, config.zs_dim)))

    if capacity is None:
        capacity = streams.capacity_for(config.buffer_size, config.num_envs, spec.max_episode_steps)
    buffer = streams.create(config.num_envs, capacity, spec.obs_dim, spec.action_dim,
                            horizon=max(config.enc_horizon, config.q_horizon), initial_priority=config.min_priority,
                            prioritized=config.prioritized)
    return MRQState(
        encoder=trained(encoder_params, encoder_opt),
        value=trained(value_params, value_opt),
        policy=trained(policy_params, policy_opt),
        replay=buffer,
        reward_scale=jnp.ones(()),
        target_reward_scale=jnp.zeros(()),
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        encoder_metrics={name: jnp.zeros(()) for name in ENCODER_METRICS},
        config=config,
        spec=spec,
    )


# ----------------------------------------------------------------------------
# Acting and storing
# ----------------------------------------------------------------------------


def act(state: MRQState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    """Action in [-1, 1] for `obs` [..., obs_dim]: pi(zs), plus N(0, 0.2) noise when exploring.

    While exploring and fewer than `random_steps` transitions are stored, the
    action is uniform in [-1, 1] instead.
    """
    config = state.config
    encoder_net, _, policy_net = _networks(config, state.spec)
    zs = encoder_net.apply(state.encoder.params, obs, method=MRQEncoder.zs)
    action, _ = policy_net.apply(state.policy.params, zs)
    if not explore:
        return action
    k_noise, k_random = jax.random.split(key)
    noisy = jnp.clip(action + config.exploration_noise * jax.random.normal(k_noise, action.shape), -1.0, 1.0)
    uniform = jax.random.uniform(k_random, action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(state.env_steps < config.random_steps, uniform, noisy)


store = critic.store       # one transition per env stream, counted in env_steps


def sample_starts(state: MRQState, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(stream, start) of `batch_size` windows: by LAP priority over every stream, or uniformly."""
    sampling = "prioritized" if state.config.prioritized else "uniform"
    return streams.sample(state.replay, key, state.config.batch_size, sampling)


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


ENCODER_METRICS = ("encoder/loss", "encoder/dynamics_loss", "encoder/reward_loss", "encoder/done_loss")


EncoderPenalty = Callable[[MRQState, jax.Array, jax.Array], jax.Array]
"""penalty(state, zs, key) -> a term added to the encoder loss, of the batch's first state embeddings zs [B, zs_dim]
(an add-on's hook: SIGReg on MR.Q, agents/sigreg.py)."""


def encoder_loss(encoder_params, target_encoder_params, batch: replay.Subsequence, state: MRQState,
                 key: jax.Array | None = None, penalty: EncoderPenalty | None = None):
    """Eq. 9: sum over the H_enc rollout steps of masked dynamics, reward and done losses.

    The rollout starts from zs(s_0) and feeds the model's own predicted
    embedding forward; targets are the target encoder's zs(s_{t+1}). Steps after
    a terminal are masked; each term is a mean over the batch (and embedding).
    """
    config = state.config
    encoder_net, _, _ = _networks(config, state.spec)
    bins = symexp_bins(config.bin_lower, config.bin_upper, config.num_bins)
    target_zs = jax.lax.stop_gradient(
        encoder_net.apply(target_encoder_params, batch.obs[:, 1:], method=MRQEncoder.zs))
    zs = first_zs = encoder_net.apply(encoder_params, batch.obs[:, 0], method=MRQEncoder.zs)
    use_done = jnp.any(state.replay.any_terminated).astype(jnp.float32)
    dyn_total = reward_total = done_total = 0.0
    for t in range(config.enc_horizon):
        zsa = encoder_net.apply(encoder_params, zs, batch.action[:, t], method=MRQEncoder.zsa)
        done_logit, zs, reward_logits = encoder_net.apply(encoder_params, zsa, method=MRQEncoder.model)
        mask = batch.mask[:, t]
        dyn_total += jnp.mean(jnp.mean(jnp.square(zs - target_zs[:, t]), axis=-1) * mask)
        reward_total += jnp.mean(two_hot_cross_entropy(reward_logits, batch.reward[:, t], bins) * mask)
        done_total += jnp.mean(jnp.square(done_logit - batch.terminated[:, t]) * mask) * use_done
    loss = config.dyn_weight * dyn_total + config.reward_weight * reward_total + config.done_weight * done_total
    if penalty is not None:
        loss = loss + penalty(state, first_zs, key)
    return loss, dict(zip(ENCODER_METRICS, (loss, dyn_total, reward_total, done_total)))


def n_step_return(reward: jax.Array, terminated: jax.Array, discount: float):
    """R = sum_t gamma^t r_t prod_{u<t}(1 - term_u) and the bootstrap mask prod_t (1 - term_t)."""
    alive = jnp.cumprod(1.0 - terminated, axis=-1)
    alive_before = jnp.concatenate([jnp.ones_like(alive[..., :1]), alive[..., :-1]], axis=-1)
    discounts = discount ** jnp.arange(reward.shape[-1])
    return jnp.sum(discounts * reward * alive_before, axis=-1), alive[..., -1]


def value_target(state: MRQState, batch: replay.Subsequence, key: jax.Array) -> jax.Array:
    """Eq. 10: y = (R + gamma^n notdone min_i Qbar_i(zsa', a~) s_target) / s, a~ = pibar(zs') + clipped noise."""
    config = state.config
    encoder_net, value_net, policy_net = _networks(config, state.spec)
    n = config.q_horizon
    ret, not_done = n_step_return(batch.reward, batch.terminated, config.discount)
    next_zs = encoder_net.apply(state.encoder.target_params, batch.obs[:, n], method=MRQEncoder.zs)
    next_action, _ = policy_net.apply(state.policy.target_params, next_zs)
    noise = jnp.clip(config.target_policy_noise * jax.random.normal(key, next_action.shape),
                     -config.noise_clip, config.noise_clip)
    next_action = jnp.clip(next_action + noise, -1.0, 1.0)
    next_zsa = encoder_net.apply(state.encoder.target_params, next_zs, next_action, method=MRQEncoder.zsa)
    next_q = jnp.min(value_net.apply(state.value.target_params, next_zsa), axis=-1)
    return (ret + not_done * config.discount**n * next_q * state.target_reward_scale) / state.reward_scale


def value_loss(value_params, zsa: jax.Array, target: jax.Array, state: MRQState):
    """Huber (delta 1) between both critics and the shared target."""
    _, value_net, _ = _networks(state.config, state.spec)
    q = value_net.apply(value_params, zsa)
    loss = jnp.mean(optax.huber_loss(q, target[:, None], delta=1.0))
    return loss, q


def policy_loss(policy_params, value_params, encoder_params, zs: jax.Array, state: MRQState):
    """Eq. 11: -mean_i Q_i(zsa(zs, pi(zs))) + lambda * mean(pre_tanh^2); zs is detached."""
    config = state.config
    encoder_net, value_net, policy_net = _networks(config, state.spec)
    action, pre_tanh = policy_net.apply(policy_params, zs)
    zsa = encoder_net.apply(encoder_params, zs, action, method=MRQEncoder.zsa)
    q = value_net.apply(value_params, zsa)
    loss = -jnp.mean(q) + config.pre_activ_weight * jnp.mean(jnp.square(pre_tanh))
    return loss, {"policy/loss": loss, "policy/q": jnp.mean(q), "policy/pre_tanh_sq": jnp.mean(jnp.square(pre_tanh))}


# ----------------------------------------------------------------------------
# Updates
# ----------------------------------------------------------------------------


def refresh_targets(state: MRQState) -> MRQState:
    """Hard-copy every target network and refresh the reward scales s_target <- s, s <- mean |r|."""
    return state.replace(
        encoder=hard_copy(state.encoder), value=hard_copy(state.value), policy=hard_copy(state.policy),
        target_reward_scale=state.reward_scale,
        reward_scale=replay.mean_abs_reward(state.replay),
    )


def update_encoder(state: MRQState, key: jax.Array, penalty: EncoderPenalty | None = None,
                   starts: tuple[jax.Array, jax.Array] | None = None) -> tuple[MRQState, dict]:
    """One encoder step on a batch of H_enc-subsequences (at `starts` = (stream, start), or drawn with `key`)."""
    config = state.config
    optimizer, _, _ = _optimizers(config)
    stream, start = sample_starts(state, key) if starts is None else starts
    batch = streams.window(state.replay, stream, start, config.enc_horizon)
    grads, metrics = jax.grad(encoder_loss, has_aux=True)(
        state.encoder.params, state.encoder.target_params, batch, state, jax.random.fold_in(key, 1), penalty)
    return state.replace(encoder=apply_gradients(state.encoder, grads, optimizer)), metrics


def encoder_burst(state: MRQState, key: jax.Array, penalty: EncoderPenalty | None = None) -> MRQState:
    """Targets refreshed, then `target_update_freq` encoder steps (one `lax.scan`).

    The buffer and its priorities do not change during a burst, so all of its batches are drawn in one pass
    before it (the same starts as drawing each step's batch with its key). The mean of the burst's losses is
    kept in `state.encoder_metrics` for logging.
    """
    config = state.config
    state = refresh_targets(state)
    keys = jax.random.split(key, config.target_update_freq)
    starts = jax.vmap(lambda k: sample_starts(state, k))(keys)
    state, metrics = jax.lax.scan(lambda s, ks: update_encoder(s, ks[0], penalty, ks[1]), state, (keys, starts))
    return state.replace(encoder_metrics=jax.tree.map(jnp.mean, metrics))


def update_value_and_policy(state: MRQState, key: jax.Array) -> tuple[MRQState, dict]:
    """One value step (with LAP priority update) then one policy step, on the same sampled states."""
    config = state.config
    encoder_net, _, _ = _networks(config, state.spec)
    _, value_opt, policy_opt = _optimizers(config)
    k_sample, k_target = jax.random.split(key)
    stream, start = sample_starts(state, k_sample)
    batch = streams.window(state.replay, stream, start, config.q_horizon)

    target = jax.lax.stop_gradient(value_target(state, batch, k_target))
    zs = encoder_net.apply(state.encoder.params, batch.obs[:, 0], method=MRQEncoder.zs)
    zsa = encoder_net.apply(state.encoder.params, zs, batch.action[:, 0], method=MRQEncoder.zsa)
    zs, zsa = jax.lax.stop_gradient(zs), jax.lax.stop_gradient(zsa)
    (loss_v, q), grads_v = jax.value_and_grad(value_loss, has_aux=True)(state.value.params, zsa, target, state)
    value = apply_gradients(state.value, grads_v, value_opt)

    # LAP: priority = max(max_i |Q_i - y|, min_priority)^alpha, from the critics before the step.
    td = jnp.max(jnp.abs(q - target[:, None]), axis=-1)
    priority = jnp.maximum(td, config.min_priority) ** config.alpha
    buffer = streams.update_priority(state.replay, stream, start, priority) if config.prioritized else state.replay

    grads_p, policy_metrics = jax.grad(policy_loss, has_aux=True)(
        state.policy.params, value.params, state.encoder.params, zs, state)
    policy = apply_gradients(state.policy, grads_p, policy_opt)
    metrics = {"value/loss": loss_v, "value/q": jnp.mean(q), "value/target": jnp.mean(target),
               "value/td_abs": jnp.mean(td), "reward_scale": state.reward_scale, **policy_metrics, **state.encoder_metrics}
    return state.replace(value=value, policy=policy, replay=buffer, updates=state.updates + 1), metrics


def update_once(state: MRQState, key: jax.Array, index: jax.Array,
                encoder_penalty: EncoderPenalty | None = None) -> tuple[MRQState, dict]:
    """Update number `index` (from 0): every `target_update_freq`-th starts with the encoder burst (targets
    refreshed, then the burst), then one value and one policy step."""
    config = state.config
    k_burst, k_update = jax.random.split(key)
    state = jax.lax.cond(index % config.target_update_freq == 0,
                         lambda s: encoder_burst(s, k_burst, encoder_penalty), lambda s: s, state)
    return update_value_and_policy(state, k_update)


def update(state: MRQState, key: jax.Array, step: jax.Array,
           encoder_penalty: EncoderPenalty | None = None) -> tuple[MRQState, dict]:
    """MR.Q's training after the loop step that ended at env step `step` (`step` counts env steps from 1,
    summed over the seed's envs): `updates_per_step` updates per env step once `random_steps` are stored
    (agents/critic.py's schedule); `encoder_penalty` is an add-on's hook into the encoder loss.

    `step` is the same for every seed and is passed unbatched (and the ratio is
    static), so under `vmap` the update count and the burst's `lax.cond` stay
    real branches: the 250-step encoder burst runs only every 250th update
    instead of being computed and discarded each step. Before `random_steps`
    transitions are stored nothing is trained and the metrics are zeros.
    """
    config = state.config
    once = lambda s, k, i: update_once(s, k, i, encoder_penalty)
    return critic.scheduled_updates(once, state, key, step, config.random_steps, config.updates_per_step,
                                    config.num_envs, key_of=update_key)


def update_key(key: jax.Array, i: jax.Array) -> jax.Array:
    """The key of a loop step's i-th update: the step's own key for the first (MR.Q's single update per env
    step drew with it before the schedule counted several, so one env at ratio 1 keeps its numbers), then
    fold_in(key, i)."""
    return jax.lax.cond(i == 0, lambda: key, lambda: jax.random.fold_in(key, i))


AGENT = OffPolicyAgent(name="mrq", Config=Config, init=init, act=act, store=store, update=update,
                       warmup=lambda config, spec: config.random_steps, warmup_flag="random_steps")
