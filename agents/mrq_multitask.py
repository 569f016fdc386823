"""Multitask MR.Q at scale: one agent on many tasks, with capacity that grows by --size S | B | L | XL.

The multitask follow-up of MR.Q (arXiv 2606.05555; reference code johanobandoc/ScaleMRL, `tdmpc2/mrq.py`,
run with `agent=mrq horizon=5`). MR.Q's idea is unchanged -- an encoder trained to predict, through a linear
model, the next state embedding and the reward over a latent rollout; a value function of zsa; a
deterministic policy of zs (agents/mrq.py, whose `n_step_return` this file reuses) -- but the recipe is the
follow-up's:

    every update, in order (fractional: `utd` updates per env step, after a few random episodes per env):
        encoder step   (Eq. 9 without the done term): H-step latent rollout, MSE to the EMA target
                        encoder's zs, soft cross-entropy on the reward (101 symlog bins); grad clip 20
        value step      H-step return with the task's own discount, TD3 target noise, the target is the
                        MIN of a RANDOM PAIR of the EMA target critics; every critic of the ensemble is
                        trained by soft cross-entropy (distributional, 101 bins); grad clip 20
        policy step     -Q / running scale + 1e-5 * pre_tanh^2, Q the MEAN of a RANDOM PAIR of critics
                        (critic 0 alone for an ensemble of two, as TD3)
        EMA             every target (encoder, critics, policy) <- tau-interpolated toward its network

Task conditioning is the env's fixed task one-hot (envs/multitask.py), which the encoder sees as part of the
observation and the policy next to zs (the reference uses frozen CLIP embeddings of a task description there;
a one-hot needs no download). Padded action dims are zeroed by the task's action mask wherever an action is
made (acting, the target action, the policy step), so they never reach the env, the buffer or a loss.

Reward and value scale: the reference's default (`mrq_reward_norm=newt`) divides Q in the policy loss by a
running 5-95 percentile range of Q (TD-MPC2's RunningScale); `reward_scale=per_task` instead normalises the
value targets by each task's own mean |r| in the buffer, as MR.Q does for one task (a single global mean |r|
mixes tasks whose rewards differ by orders of magnitude).

Replay: one stream per env (replay/streams.py), uniform over within-episode windows (the reference's slice
sampler), no prioritisation; `sampling=stratified` draws every task equally. Memory: (obs_dim + action_dim +
6) * 4 bytes per slot per task per seed (the sum tree included), e.g. 84 B on dmc:mt4: 8 MB per task per seed
at 1e5 transitions.

Left out of the reference: pretraining on demonstrations (`use_demos`), with the learning-rate warm-up the
reference switches on only for it (config.py: `if cfg.use_demos and cfg.checkpoint is None`), and the frozen
text embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.config import check_fields, field, hyperparameters
from agents.contract import OffPolicyAgent
from agents.critic import scheduled_updates
from agents.mrq import n_step_return
from envs import EnvSpec
from envs.multitask import action_masks, task_ids
from networks.mrq import CriticEnsemble, NormedPolicy, ScaledEncoder
from networks.training import Trained, apply_gradients, polyak, trained
from networks.twohot import symexp, symlog, two_hot_cross_entropy, two_hot_decode
import replay
from replay import streams

SIZES = {
    #      enc_dim mlp_dim latent_dim enc_layers num_q     (the reference's MODEL_SIZE; num_q 5 by default)
    "S": (128, 256, 384, 2, 3),
    "B": (256, 512, 512, 2, 5),
    "L": (1024, 1024, 512, 3, 5),
    "XL": (2048, 2048, 704, 4, 7),
}
REWARD_SCALES = ("running_q", "per_task")


@hyperparameters
class Config:
    """Multitask MR.Q hyperparameters; defaults are the follow-up's (ScaleMRL config.py, `horizon=5`)."""

    size: str = "S"
    """Model size: S, B, L or XL (widths, encoder depth and ensemble size; SIZES)."""
    enc_dim: int = field(0, ">= 0")
    """Encoder hidden width; 0: the size's."""
    mlp_dim: int = field(0, ">= 0")
    """Hidden width of zsa, the critics and the policy; 0: the size's."""
    latent_dim: int = field(0, ">= 0")
    """Width of zs and zsa; 0: the size's."""
    enc_layers: int = field(0, ">= 0")
    """Encoder layers (hidden layers + 1); 0: the size's."""
    num_q: int = field(0, ">= 0")
    """Critics in the ensemble (>= 2); 0: the size's."""
    batch_size: int = field(1024, ">= 1")
    """Windows per update, over all tasks."""
    buffer_size: int = field(1_000_000, ">= 1")
    """Replay capacity per env (per task) in transitions (capped at what the run can fill)."""
    utd: float = field(0.075, "> 0", static=True)
    """Updates per env step (summed over a seed's envs: T tasks step T env steps per loop step)."""
    seeding_episodes: int = field(5, ">= 0")
    """Random-action episodes per env before training starts."""
    horizon: int = field(5, ">= 1")
    """Latent rollout of the encoder loss and n of the value target's n-step return."""
    tau: float = field(0.01, "(0, 1]")
    """EMA rate of every target network, applied after every update."""
    discount_denominator: float = field(5.0, "> 1")
    """Per-task discount from its episode length L: clip((L/d - 1) / (L/d), min, max) with this d."""
    discount_min: float = field(0.95, "[0, 1]")
    """Lower clip of the per-task discount."""
    discount_max: float = field(0.995, "[0, 1]")
    """Upper clip of the per-task discount."""
    lr: float = field(3e-4, "> 0")
    """AdamW learning rate of the value and the policy."""
    enc_lr_scale: float = field(0.3, "> 0")
    """The encoder's learning rate as a multiple of `lr`."""
    weight_decay: float = field(1e-4, ">= 0")
    """AdamW weight decay of every network."""
    grad_clip: float = field(20.0, "> 0")
    """Global-norm gradient clip of the encoder and value steps."""
    exploration_noise: float = field(0.2, ">= 0")
    """Std of the Gaussian noise on the policy's action while collecting data."""
    target_policy_noise: float = field(0.2, ">= 0")
    """Std of the noise on the target action (TD3)."""
    noise_clip: float = field(0.3, ">= 0")
    """Clip of the target action noise."""
    dyn_weight: float = field(1.0, ">= 0")
    """Weight of the next-embedding MSE in the encoder loss."""
    reward_weight: float = field(0.1, ">= 0")
    """Weight of the reward cross-entropy in the encoder loss."""
    pre_activ_weight: float = field(1e-5, ">= 0")
    """Weight of the penalty on the policy's pre-tanh activations."""
    za_dim: int = field(256, ">= 1")
    """Action embedding width."""
    simnorm_dim: int = field(8, ">= 1")
    """Features per simplex of zs's SimNorm (latent_dim must be a multiple)."""
    num_bins: int = field(101, ">= 2")
    """Bins of the distributional critic and the reward model, evenly spaced in symlog space."""
    symlog_min: float = field(-10.0, "finite")
    """Lowest bin, in symlog space."""
    symlog_max: float = field(10.0, "finite")
    """Highest bin, in symlog space."""
    reward_scale: str = "running_q"
    """running_q: Q in the policy loss divided by a running 5-95 percentile range (the reference's default);
    per_task: value targets normalised by each task's mean |r| in the buffer (MR.Q's scale, per task)."""
    sampling: str = "uniform"
    """Replay sampling: uniform over all windows, or stratified (every task equally)."""

    def validate(self) -> None:
        check_fields(self)
        if self.size not in SIZES:
            raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.reward_scale not in REWARD_SCALES:
            raise ValueError(f"--reward-scale must be one of {', '.join(REWARD_SCALES)}, got {self.reward_scale!r}")
        if self.sampling not in ("uniform", "stratified"):
            raise ValueError(f"--sampling must be uniform or stratified, got {self.sampling!r}")
        if dims(self)["latent_dim"] % self.simnorm_dim:
            raise ValueError(f"--simnorm-dim ({self.simnorm_dim}) must divide the latent width "
                             f"({dims(self)['latent_dim']} at --size {self.size})")
        if dims(self)["num_q"] < 2:
            raise ValueError(f"--num-q must be >= 2 (a random pair is drawn from it), got {self.num_q}")
        if not self.discount_min <= self.discount_max:
            raise ValueError(f"--discount-min ({self.discount_min}) must be <= --discount-max ({self.discount_max})")
        if not self.symlog_min < self.symlog_max:
            raise ValueError(f"--symlog-min ({self.symlog_min}) must be < --symlog-max ({self.symlog_max})")


def dims(config: Config) -> dict:
    """The widths of `config.size`, each replaced by its field where that is not 0."""
    names = ("enc_dim", "mlp_dim", "latent_dim", "enc_layers", "num_q")
    return {name: getattr(config, name) or preset for name, preset in zip(names, SIZES[config.size])}


def task_discounts(config: Config, spec: EnvSpec) -> jax.Array:
    """[T] per-task discount from each task's episode length (TD-MPC2's heuristic; 500 steps -> 0.99)."""
    lengths = jnp.asarray([t.max_episode_steps for t in spec.tasks] or [spec.max_episode_steps], jnp.float32)
    frac = lengths / config.discount_denominator
    return jnp.clip((frac - 1.0) / frac, config.discount_min, config.discount_max)


def seeding_steps(config: Config, spec: EnvSpec) -> int:
    """Loop steps of random actions: `seeding_episodes` episodes of every env (they step in lockstep)."""
    return config.seeding_episodes * spec.max_episode_steps


# ----------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------


@struct.dataclass
class MultitaskState:
    encoder: Trained
    value: Trained
    policy: Trained
    replay: object                  # replay/streams.py: one stream per env of the seed
    q_scale: jax.Array              # running 5-95 percentile range of Q (reward_scale=running_q)
    reward_scale: jax.Array         # [T] per-task mean |r| (reward_scale=per_task)
    target_reward_scale: jax.Array  # [T] its value one update earlier
    env_steps: jax.Array            # loop steps stored (each stores one transition per env)
    updates: jax.Array
    config: Config
    spec: EnvSpec = struct.field(pytree_node=False)


def _networks(config: Config, spec: EnvSpec):
    d = dims(config)
    encoder = ScaledEncoder(d["latent_dim"], config.za_dim, d["enc_dim"], d["mlp_dim"], d["enc_layers"],
                            config.num_bins, config.simnorm_dim)
    return encoder, CriticEnsemble(d["num_q"], d["mlp_dim"], config.num_bins), NormedPolicy(spec.action_dim,
                                                                                             d["mlp_dim"])


def _optimizers(config: Config):
    adamw = lambda lr: optax.adamw(lr, weight_decay=config.weight_decay)
    clipped = lambda lr: optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw(lr))
    return clipped(config.enc_lr_scale * config.lr), clipped(config.lr), adamw(config.lr)


def _bins(config: Config) -> jax.Array:
    return jnp.linspace(config.symlog_min, config.symlog_max, config.num_bins)


def decode(logits: jax.Array, config: Config) -> jax.Array:
    """The scalar a distributional head predicts: symexp of its expected symlog value."""
    return symexp(two_hot_decode(logits, _bins(config)))


def soft_cross_entropy(logits: jax.Array, target: jax.Array, config: Config) -> jax.Array:
    """Cross-entropy against the two-hot encoding of symlog(target) (TD-MPC2's soft_ce)."""
    return two_hot_cross_entropy(logits, symlog(target), _bins(config))


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> MultitaskState:
    """Fresh networks, optimizers and one empty replay stream of `capacity` slots per env of the seed."""
    encoder_net, value_net, policy_net = _networks(config, spec)
    encoder_opt, value_opt, policy_opt = _optimizers(config)
    k_enc, k_val, k_pol = jax.random.split(key, 3)
    latent = dims(config)["latent_dim"]
    encoder_params = encoder_net.init(k_enc, jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.action_dim)))
    value_params = value_net.init(k_val, jnp.zeros((1, latent)))
    policy_params = policy_net.init(k_pol, jnp.zeros((1, latent + task_width(spec))))
    if capacity is None:
        capacity = replay.capacity_for(config.buffer_size, config.buffer_size, spec.max_episode_steps)
    tasks = spec.num_tasks
    return MultitaskState(
        encoder=trained(encoder_params, encoder_opt),
        value=trained(value_params, value_opt),
        policy=trained(policy_params, policy_opt),
        replay=streams.create(tasks, capacity, spec.obs_dim, spec.action_dim, config.horizon),
        q_scale=jnp.ones(()),
        reward_scale=jnp.ones(tasks),
        target_reward_scale=jnp.ones(tasks),
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        config=config,
        spec=spec,
    )


# ----------------------------------------------------------------------------
# Tasks, acting and storing
# ----------------------------------------------------------------------------


def task_width(spec: EnvSpec) -> int:
    """Width of the task one-hot at the end of every observation (0 for a single-task env)."""
    return len(spec.tasks)


def task_of(spec: EnvSpec, obs: jax.Array) -> jax.Array:
    """The task id of each observation (0 for a single-task env)."""
    return task_ids(spec, obs) if spec.tasks else jnp.zeros(obs.shape[:-1], jnp.int32)


def mask_of(spec: EnvSpec, task: jax.Array) -> jax.Array:
    """[..., action_dim]: 1 on the task's own action dims, 0 on its padding."""
    return action_masks(spec)[task]


def policy_action(policy_params, state: MultitaskState, zs: jax.Array, obs: jax.Array):
    """pi([zs, task one-hot]) and its pre-tanh activation, both with the task's padded dims zeroed (so a padded
    output reaches neither the critic nor the pre-activation penalty, and gets no gradient)."""
    _, _, policy_net = _networks(state.config, state.spec)
    spec = state.spec
    task_features = obs[..., spec.obs_dim - task_width(spec):]
    action, pre_tanh = policy_net.apply(policy_params, jnp.concatenate([zs, task_features], axis=-1))
    mask = mask_of(spec, task_of(spec, obs))
    return action * mask, pre_tanh * mask


def act(state: MultitaskState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    """Actions for `obs` [..., obs_dim] (a seed's envs): the policy, plus N(0, 0.2) noise when exploring, or
    uniform random actions while seeding the buffer; padded dims are always 0."""
    config, spec = state.config, state.spec
    encoder_net, _, _ = _networks(config, spec)
    zs = encoder_net.apply(state.encoder.params, obs, method=ScaledEncoder.zs)
    action, _ = policy_action(state.policy.params, state, zs, obs)
    if not explore:
        return action
    mask = mask_of(spec, task_of(spec, obs))
    k_noise, k_random = jax.random.split(key)
    noisy = jnp.clip(action + config.exploration_noise * jax.random.normal(k_noise, action.shape), -1.0, 1.0)
    uniform = jax.random.uniform(k_random, action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(state.env_steps < seeding_steps(config, spec), uniform, noisy) * mask


def store(state: MultitaskState, transition) -> MultitaskState:
    """One transition per env of the seed, each into its own stream (a single-task env: one stream)."""
    buffer = streams.add_transition(state.replay, transition)
    return state.replace(replay=buffer, env_steps=state.env_steps + 1)


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


def random_pair(key: jax.Array, num_q: int) -> jax.Array:
    """Two distinct critics drawn uniformly (the reference's randperm(num_q)[:2])."""
    return jax.random.permutation(key, num_q)[:2]


def pair_min(q: jax.Array, pair: jax.Array) -> jax.Array:
    """min over the critics `pair` of q [..., num_q]."""
    return jnp.minimum(q[..., pair[0]], q[..., pair[1]])


def pair_mean(q: jax.Array, pair: jax.Array) -> jax.Array:
    """Mean over the critics `pair` of q [..., num_q]; critic 0 alone for an ensemble of two (TD3)."""
    return q[..., 0] if q.shape[-1] == 2 else 0.5 * (q[..., pair[0]] + q[..., pair[1]])


ENCODER_METRICS = ("encoder/loss", "encoder/dynamics_loss", "encoder/reward_loss")


def encoder_loss(encoder_params, state: MultitaskState, batch):
    """Sum over the H rollout steps of the masked next-embedding MSE and reward cross-entropy (Eq. 9, no done
    head); the rollout feeds the model's own predicted zs forward, targets are the EMA encoder's zs."""
    config = state.config
    encoder_net, _, _ = _networks(config, state.spec)
    target_zs = jax.lax.stop_gradient(
        encoder_net.apply(state.encoder.target_params, batch.obs[:, 1:], method=ScaledEncoder.zs))
    zs = encoder_net.apply(encoder_params, batch.obs[:, 0], method=ScaledEncoder.zs)
    dynamics = reward = 0.0
    for t in range(config.horizon):
        zsa = encoder_net.apply(encoder_params, zs, batch.action[:, t], method=ScaledEncoder.zsa)
        zs, reward_logits = encoder_net.apply(encoder_params, zsa, method=ScaledEncoder.model)
        mask = batch.mask[:, t]
        dynamics += jnp.mean(jnp.mean(jnp.square(zs - target_zs[:, t]), axis=-1) * mask)
        reward += jnp.mean(soft_cross_entropy(reward_logits, batch.reward[:, t], config) * mask)
    loss = config.dyn_weight * dynamics + config.reward_weight * reward
    return loss, dict(zip(ENCODER_METRICS, (loss, dynamics, reward)))


def value_target(state: MultitaskState, batch, task: jax.Array, key: jax.Array) -> jax.Array:
    """y = R + gamma_task^H notdone min_pair Qbar(zsa', a~) (normalised by the task's |r| scale when
    reward_scale=per_task), R the H-step return with the task's own discount, a~ the EMA policy's action
    plus clipped noise, masked to the task's dims."""
    config, spec = state.config, state.spec
    encoder_net, value_net, _ = _networks(config, spec)
    k_noise, k_pair = jax.random.split(key)
    h = config.horizon
    gamma = task_discounts(config, spec)[task]                                     # [B]
    ret, not_done = n_step_return(batch.reward, batch.terminated, gamma[:, None])
    next_obs = batch.obs[:, h]
    next_zs = encoder_net.apply(state.encoder.target_params, next_obs, method=ScaledEncoder.zs)
    next_action, _ = policy_action(state.policy.target_params, state, next_zs, next_obs)
    noise = jnp.clip(config.target_policy_noise * jax.random.normal(k_noise, next_action.shape),
                     -config.noise_clip, config.noise_clip)
    next_action = jnp.clip(next_action + noise, -1.0, 1.0) * mask_of(spec, task)
    next_zsa = encoder_net.apply(state.encoder.target_params, next_zs, next_action, method=ScaledEncoder.zsa)
    next_q = pair_min(decode(value_net.apply(state.value.target_params, next_zsa), config),
                      random_pair(k_pair, dims(config)["num_q"]))
    if config.reward_scale == "per_task":
        return (ret + not_done * gamma**h * next_q * state.target_reward_scale[task]) / state.reward_scale[task]
    return ret + not_done * gamma**h * next_q


def value_loss(value_params, zsa: jax.Array, target: jax.Array, state: MultitaskState):
    """Mean over the ensemble of the soft cross-entropy of each critic's logits against the target."""
    _, value_net, _ = _networks(state.config, state.spec)
    logits = value_net.apply(value_params, zsa)                                   # [B, num_q, bins]
    loss = jnp.mean(soft_cross_entropy(logits, target[:, None], state.config))
    return loss, decode(logits, state.config)


def running_scale(scale: jax.Array, q: jax.Array, tau: float) -> jax.Array:
    """TD-MPC2's RunningScale: scale <- lerp(scale, max(P95(q) - P5(q), 1), tau)."""
    spread = jnp.maximum(jnp.percentile(q, 95) - jnp.percentile(q, 5), 1.0)
    return scale + tau * (spread - scale)


def policy_loss(policy_params, state: MultitaskState, zs: jax.Array, obs: jax.Array, pair: jax.Array):
    """-mean(Q / scale) + lambda * mean(pre_tanh^2), Q the random pair's mean (zs detached; the new scale is
    returned as an aux output)."""
    config = state.config
    encoder_net, value_net, _ = _networks(config, state.spec)
    action, pre_tanh = policy_action(policy_params, state, zs, obs)
    zsa = encoder_net.apply(state.encoder.params, zs, action, method=ScaledEncoder.zsa)
    q = pair_mean(decode(value_net.apply(state.value.params, zsa), config), pair)
    scale = state.q_scale
    if config.reward_scale == "running_q":
        scale = running_scale(scale, jax.lax.stop_gradient(q), config.tau)
    loss = -jnp.mean(q / scale) + config.pre_activ_weight * jnp.mean(jnp.square(pre_tanh))
    return loss, (scale, {"policy/loss": loss, "policy/q": jnp.mean(q), "policy/q_scale": scale})


# ----------------------------------------------------------------------------
# Updates
# ----------------------------------------------------------------------------


def update_once(state: MultitaskState, key: jax.Array, index=None) -> tuple[MultitaskState, dict]:
    """One encoder, one value and one policy step on one batch of windows, then every EMA target."""
    config, spec = state.config, state.spec
    encoder_net, _, _ = _networks(config, spec)
    encoder_opt, value_opt, policy_opt = _optimizers(config)
    k_sample, k_target, k_pair = jax.random.split(key, 3)
    stream, start = streams.sample(state.replay, k_sample, config.batch_size, config.sampling)
    batch = streams.window(state.replay, stream, start, config.horizon)
    task = streams.task_of(stream, spec.num_tasks)

    if config.reward_scale == "per_task":
        scale = streams.mean_abs_reward_per_task(state.replay, spec.num_tasks)
        state = state.replace(target_reward_scale=state.reward_scale,
                              reward_scale=state.reward_scale + config.tau * (scale - state.reward_scale))

    grads, encoder_metrics = jax.grad(encoder_loss, has_aux=True)(state.encoder.params, state, batch)
    state = state.replace(encoder=apply_gradients(state.encoder, grads, encoder_opt))

    target = jax.lax.stop_gradient(value_target(state, batch, task, k_target))
    zs = encoder_net.apply(state.encoder.params, batch.obs[:, 0], method=ScaledEncoder.zs)
    zsa = encoder_net.apply(state.encoder.params, zs, batch.action[:, 0], method=ScaledEncoder.zsa)
    zs, zsa = jax.lax.stop_gradient(zs), jax.lax.stop_gradient(zsa)
    (loss_v, q), grads_v = jax.value_and_grad(value_loss, has_aux=True)(state.value.params, zsa, target, state)
    state = state.replace(value=apply_gradients(state.value, grads_v, value_opt))

    pair = random_pair(k_pair, dims(config)["num_q"])
    grads_p, (q_scale, policy_metrics) = jax.grad(policy_loss, has_aux=True)(
        state.policy.params, state, zs, batch.obs[:, 0], pair)
    policy = apply_gradients(state.policy, grads_p, policy_opt)
    state = state.replace(
        encoder=polyak(state.encoder, config.tau), value=polyak(state.value, config.tau),
        policy=polyak(policy, config.tau), q_scale=q_scale, updates=state.updates + 1)
    metrics = {"value/loss": loss_v, "value/q": jnp.mean(q), "value/target": jnp.mean(target),
               **encoder_metrics, **policy_metrics}
    return state, metrics


def update(state: MultitaskState, key: jax.Array, step: jax.Array) -> tuple[MultitaskState, dict]:
    """The updates due after the `step`-th loop step: `utd` per env step (T per loop step for T tasks) once
    the seeding episodes are stored (agents/critic.py's fractional schedule)."""
    config, spec = state.config, state.spec
    return scheduled_updates(update_once, state, key, step, seeding_steps(config, spec),
                             config.utd * spec.num_tasks)


AGENT = OffPolicyAgent(name="mrq_multitask", Config=Config, init=init, act=act, store=store, update=update,
                       multitask=True, warmup=seeding_steps, warmup_flag="seeding_episodes")
