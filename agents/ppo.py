"""PPO on massively parallel JAX environments, with the co-scaling recipe.

Schulman et al., "Proximal Policy Optimization Algorithms", arXiv 1707.06347,
as tuned for the DeepMind Control tasks of MuJoCo Playground (Zakka et al.
2025; Brax's `ppo.train`), and "Preventing Learning Stagnation in PPO by
Scaling to 1 Million Parallel Environments", arXiv 2603.06009.

Defaults are Playground's DMC PPO config: 2048 envs, unroll 30, 32 minibatches
of 1024 trajectories, 16 epochs, gamma 0.995, GAE lambda 0.95, clip 0.3, Adam
lr 1e-3, entropy 1e-2, rewards x10, running observation normalization, policy
MLP 4x32 and value MLP 5x256 (swish, lecun-uniform), tanh-Gaussian policy with
softplus std + 0.001. `--preset playground` adds Playground's per-task changes
(PLAYGROUND_TASKS: gamma 0.95 on BallInCup and FingerSpin, action repeat 4 and
4 epochs on PendulumSwingup, 100M steps on Acrobot, Swimmer and WalkerRun).
Our steps are agent steps (frames / action repeat); Brax counts frames.

Differences from Brax's PPO that remain, on purpose or as flags:
* advantages: textbook GAE (below). Brax's `compute_gae` drops truncated
  steps from the loss and differs in the advantages (max |diff| 0.49 on random
  data, the value targets identical, as measured in the review behind issue 18).
* evaluation: deterministic, the policy's mode tanh(loc). Brax's evaluator
  samples by default (`deterministic_eval=False`); ours is the shared
  evaluator of every agent (experiments/train.py).

One training step (`train_step`), all on the device:

    rollout   U = batch_size * num_minibatches / num_envs unrolls of T steps
              in every env, actions u ~ N(loc, std), a = tanh(u)
    normalize update the running observation statistics with the rollout
    epochs    num_epochs x (shuffle the U * num_envs trajectories, then one
              Adam step per minibatch of batch_size trajectories) on

        L = -E[min(r A, clip(r, 1-eps, 1+eps) A)]        r = pi(u|s) / pi_old(u|s)
            + c_v * 1/2 E[(V(s) - V_target)^2]
            - c_H * E[H(pi(.|s))]

Advantages are GAE(gamma, lambda) (Schulman et al. 2016, Eq. 16) on
scaled rewards, normalized per minibatch:

    delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)
    A_t     = delta_t + gamma lambda (1 - done_t) A_{t+1}

where s'_t is the true next state: at a time-limit truncation it is the final
observation of the episode, so truncation bootstraps (Pardo et al. 2018) and
only termination zeroes the future value. Brax instead drops truncated steps
from the loss; it is the one intended difference from Brax's PPO. As in Brax,
the advantages are recomputed in every minibatch from the current value
network (`--advantages per_minibatch`); `per_rollout` computes them once from
the behaviour value function (CleanRL, PureJaxRL). The value of a truncated
episode's final observation is taken once per rollout, from the behaviour
value function, and only on steps where some env finished.

The co-scaling recipe (arXiv 2603.06009): PPO's plateaus come from the outer
loop's step being large relative to its noise; more parallel envs reduce
both if the minibatch size and learning rate stay fixed and the number of
minibatches grows with the number of envs. `--scale-envs` derives
num_minibatches = num_minibatches * num_envs / reference_num_envs, so the
unrolls per env per update, and the gradient steps per env step, stay those
of the reference config. Scaling the minibatch size instead (with sqrt lr)
degrades, per the paper; it is not offered as a recipe.

A scaling study needs a reference with ONE unroll per env per update, or an
update at 2^20 envs is 16 x 2^20 x 30 = 500M env steps (Playground's layout
has 16 unrolls). `--preset one_unroll` is Playground's config with 2
minibatches of 1024 trajectories at 2048 envs: the same minibatch size,
epochs and gradient steps per env step (32 per 61,440 steps = Playground's
512 per 983,040), updating 16x as often. With `--scale-envs` at N envs it
keeps one unroll and takes 2N/2048 minibatches; the `cpu` preset is also one
unroll per env (4 x 256 trajectories at 1024 envs). `policy/update_kl` (the
KL from the behaviour policy to the policy after all epochs) is logged every
update: the outer step's size, which the recipe should shrink with N.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

import envs
from agents.contract import OnPolicyAgent
from agents.config import check_fields, field, hyperparameters
from envs import EnvSpec, JaxEnv, JaxEnvState
from envs.core import any_over
from networks import distributions as dist_lib
from networks import plasticity
from networks.mlp import MLP
from networks.normalizer import RunningStats, init_stats, normalize, update_stats


# run.py defaults for this agent (Playground: 60M steps; evaluations every 1M steps here; a JAX env, as PPO's
# rollout runs on the device).
RUN_DEFAULTS = {"env": "mjx:CartpoleBalance", "total_steps": 60_000_000, "eval_every": 1_000_000,
                "log_every": 1_000_000}
# ... and a shorter run evaluates and logs about this many times (at least once per update) unless told otherwise.
CURVE_POINTS = 20


@hyperparameters
class Config:
    """PPO hyperparameters. This class's defaults are MuJoCo Playground's DM Control config (--preset
    playground); run.py applies a preset first (cpu on a CPU backend) and --help shows its values."""

    num_envs: int = field(2048, ">= 1")
    """Parallel environments per seed."""
    unroll_length: int = field(30, ">= 1")
    """Steps per trajectory (T); GAE bootstraps from the value at its end."""
    batch_size: int = field(1024, ">= 1")
    """Trajectories per minibatch (a minibatch holds batch_size x unroll_length steps)."""
    num_minibatches: int = field(32, ">= 1")
    """Minibatches per epoch (before --scale-envs). num_envs must divide batch_size x num_minibatches."""
    num_epochs: int = field(16, ">= 1")
    """Passes over the rollout per update (Brax: num_updates_per_batch)."""
    discount: float = field(0.995, "[0, 1]")
    """Discount gamma."""
    gae_lambda: float = field(0.95, "[0, 1]")
    """GAE lambda."""
    clip_epsilon: float = field(0.3, "> 0")
    """PPO ratio clip epsilon."""
    learning_rate: float = field(1e-3, "> 0")
    """Adam step size (policy and value share one optimizer and one summed loss, as in Brax)."""
    entropy_cost: float = field(1e-2, ">= 0")
    """Entropy bonus coefficient c_H."""
    value_loss_coef: float = field(0.5, ">= 0")
    """Value loss coefficient c_v (loss = c_v * 1/2 * mean squared error, as Brax)."""
    reward_scaling: float = field(10.0, "> 0")
    """Rewards are multiplied by this before GAE."""
    normalize_observations: bool = True
    """Normalize observations with running mean/std (updated before each update's epochs)."""
    obs_norm_decay: float = field(1.0, "(0, 1]")
    """Forget the observation statistics: before each update the seen observations' weight is multiplied by
    this (memory ~ steps_per_update / (1 - decay) observations; 1: never forget, as Brax). For switching tasks."""
    normalize_advantage: bool = True
    """Standardize advantages within each minibatch."""
    max_grad_norm: float = field(0.0, ">= 0", static=True)
    """Clip the global gradient norm to this (0: no clipping, Playground's DMC setting)."""
    kl_coef: float = field(0.0, ">= 0")
    """Add kl_coef * KL(pi_old || pi) to the policy loss (PPO's KL-penalty variant, fixed coefficient; 0: off)."""
    advantages: Literal["per_minibatch", "per_rollout"] = "per_minibatch"
    """per_minibatch: recompute GAE with the current value net each minibatch (Brax); per_rollout: once."""
    policy_hidden: tuple[int, ...] = field((32, 32, 32, 32), ">= 1")
    """Policy MLP hidden widths."""
    value_hidden: tuple[int, ...] = field((256, 256, 256, 256, 256), ">= 1")
    """Value MLP hidden widths."""
    activation: str = "swish"
    """Hidden activation of both MLPs."""
    min_std: float = field(1e-3, "> 0")
    """Added to softplus(raw std) of the Gaussian."""
    scale_envs: bool = False
    """Co-scaling recipe: num_minibatches x (num_envs / reference_num_envs); minibatch size and lr fixed."""
    reference_num_envs: int = field(2048, ">= 1")
    """The num_envs that num_minibatches was tuned for (used by --scale-envs)."""

    def validate(self) -> None:
        check_fields(self)
        layout(self)   # raises on a batch layout that does not divide

    def networks(self, spec: EnvSpec) -> "SeparateActorCritic":
        """The actor-critic these flags describe (agents built on PPO override this to change the architecture)."""
        return SeparateActorCritic(self, spec)


class Layout(NamedTuple):
    """How one update's data is laid out; derived from the config (printed, and saved in config.json)."""

    num_minibatches: int       # after --scale-envs
    unrolls_per_update: int    # U: sequential unrolls of every env per update
    trajectories: int          # U * num_envs = num_minibatches * batch_size
    steps_per_update: int      # env steps per seed per update


def layout(config: Config) -> Layout:
    """The derived batch layout; raises ValueError naming a valid nearby value where it does not divide."""
    num_minibatches = config.num_minibatches
    if config.scale_envs:
        scaled = config.num_minibatches * config.num_envs
        if scaled % config.reference_num_envs:
            step = config.reference_num_envs // _gcd(config.num_minibatches, config.reference_num_envs)
            raise ValueError(
                f"--scale-envs: num_minibatches x num_envs / reference_num_envs = {config.num_minibatches} x "
                f"{config.num_envs} / {config.reference_num_envs} is not an integer; --num-envs must be a "
                f"multiple of {step}, e.g. {_nearest_multiple(config.num_envs, step)}")
        num_minibatches = scaled // config.reference_num_envs
    trajectories = config.batch_size * num_minibatches
    if trajectories % config.num_envs:
        nearby = min(_divisors(trajectories), key=lambda n: abs(n - config.num_envs))
        raise ValueError(
            f"--num-envs ({config.num_envs}) must divide batch_size x num_minibatches = {config.batch_size} x "
            f"{num_minibatches} = {trajectories} (every env contributes whole unrolls); e.g. --num-envs {nearby}, "
            "or pass --scale-envs to derive num_minibatches from --num-envs")
    unrolls = trajectories // config.num_envs
    return Layout(num_minibatches, unrolls, trajectories, unrolls * config.unroll_length * config.num_envs)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _nearest_multiple(n: int, step: int) -> int:
    return max(step, round(n / step) * step)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


# ------------------------------------------------------------------------------------------------
# Networks and state
# ------------------------------------------------------------------------------------------------


def policy_network(config: Config, spec: EnvSpec) -> MLP:
    return MLP(config.policy_hidden, 2 * spec.action_dim, config.activation, use_layer_norm=False,
               initializer="lecun_uniform")


def value_network(config: Config) -> MLP:
    return MLP(config.value_hidden, 1, config.activation, use_layer_norm=False, initializer="lecun_uniform")


class Params(NamedTuple):
    policy: dict
    value: dict


@dataclasses.dataclass(frozen=True)
class SeparateActorCritic:
    """Playground's PPO networks: a policy MLP and a value MLP, each on the (normalized) observation.

    The interface every PPO network provides (agents/sigreg.py's shared trunk is another):
    `init(key, obs) -> params`, `policy(params, x) -> raw [..., 2 * action_dim]`, `value(params, x) -> [...]`,
    and `probe(params, x) -> {name: (hidden post-activations, representation)}` for the diagnostics.
    """

    config: Config
    spec: EnvSpec

    def init(self, key: jax.Array, obs: jax.Array) -> Params:
        policy_key, value_key = jax.random.split(key)
        return Params(policy_network(self.config, self.spec).init(policy_key, obs)["params"],
                      value_network(self.config).init(value_key, obs)["params"])

    def policy(self, params: Params, x: jax.Array) -> jax.Array:
        return policy_network(self.config, self.spec).apply({"params": params.policy}, x)

    def value(self, params: Params, x: jax.Array) -> jax.Array:
        return value_network(self.config).apply({"params": params.value}, x)[..., 0]

    def probe(self, params: Params, x: jax.Array) -> dict:
        """Per network: its hidden post-activations and its representation (the last hidden pre-activation)."""
        return {"policy": mlp_probe(policy_network(self.config, self.spec), params.policy, x),
                "value": mlp_probe(value_network(self.config), params.value, x)}


def mlp_probe(network: MLP, params: dict, x: jax.Array) -> tuple[dict, jax.Array]:
    """({hidden_k: post-activation}, last hidden pre-activation) of a networks/mlp.py MLP on x."""
    _, variables = network.apply({"params": params}, x, mutable=["intermediates"])
    sown = variables["intermediates"]
    activations = plasticity.sown_activations(sown)
    last = len(activations) - 1
    return activations, sown[f"preactivation_{last}"][-1]


def optimizer(config: Config) -> optax.GradientTransformation:
    adam = optax.adam(config.learning_rate)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam) if config.max_grad_norm else adam


PROBE_SIZE = 256   # observations kept from the last rollout for the diagnostics (dormant ratio, srank)


class PPOState(struct.PyTreeNode):
    params: Any                               # Params for SeparateActorCritic; the network's own pytree else
    opt_state: optax.OptState
    obs_stats: RunningStats
    updates: jax.Array                        # int32; env steps = updates x steps_per_update
    probe_obs: jax.Array                      # [PROBE_SIZE, obs_dim] observations of the last rollout
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)
    spec: EnvSpec = struct.field(pytree_node=False)

    @property
    def networks(self):
        return self.config.networks(self.spec)


def init(key: jax.Array, spec: EnvSpec, config: Config) -> PPOState:
    params = config.networks(spec).init(key, jnp.zeros((1, spec.obs_dim)))
    return PPOState(params=params, opt_state=optimizer(config).init(params), obs_stats=init_stats(spec.obs_dim),
                    updates=jnp.zeros((), jnp.int32),
                    # an update keeps min(PROBE_SIZE, its steps) observations: the state's shape never changes
                    probe_obs=jnp.zeros((min(PROBE_SIZE, layout(config).steps_per_update), spec.obs_dim)),
                    config=config, spec=spec)


def _normalized(state: PPOState, stats: RunningStats, obs: jax.Array) -> jax.Array:
    return normalize(stats, obs) if state.config.normalize_observations else obs


def policy_dist(state: PPOState, params, stats: RunningStats, obs: jax.Array) -> dist_lib.TanhGaussian:
    raw = state.networks.policy(params, _normalized(state, stats, obs))
    return dist_lib.tanh_gaussian(raw, state.config.min_std)


def value(state: PPOState, params, stats: RunningStats, obs: jax.Array) -> jax.Array:
    return state.networks.value(params, _normalized(state, stats, obs))


def act(state: PPOState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    """tanh(u), u ~ N(loc, std) when exploring; tanh(loc) otherwise."""
    dist = policy_dist(state, state.params, state.obs_stats, obs)
    return jnp.tanh(dist_lib.sample_pre_tanh(dist, key)) if explore else dist_lib.mode(dist)


# ------------------------------------------------------------------------------------------------
# Advantages and loss
# ------------------------------------------------------------------------------------------------


def gae(rewards, values, next_values, terminated, done, discount: float, gae_lambda: float):
    """GAE over time-major arrays [T, ...] (Schulman et al. 2016, Eq. 16).

    `next_values[t]` is V of the true next state of step t (the episode's final
    observation where it ended), so a truncated step bootstraps and a
    terminated one does not (`terminated` zeroes it); `done` (terminated or
    truncated) stops the recursion at an episode boundary. Returns
    (advantages, value targets = advantages + values).
    """
    not_terminated = 1.0 - terminated.astype(values.dtype)
    continues = 1.0 - done.astype(values.dtype)
    deltas = rewards + discount * not_terminated * next_values - values

    def backward(next_advantage, inputs):
        delta, cont = inputs
        advantage = delta + discount * gae_lambda * cont * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, continues), reverse=True)
    return advantages, advantages + values


class Batch(NamedTuple):
    """What one update learns from, as U * N trajectories: leaves [U * N, T, ...], `bootstrap_obs` [U * N, obs_dim].

    Trajectory u * N + n is unroll u of env n. Trajectory-major, so that a
    minibatch is a gather of whole contiguous rows.
    """

    obs: jax.Array
    raw_action: jax.Array          # u, the pre-tanh action
    log_prob: jax.Array            # log pi_old(u | s)
    behaviour: dist_lib.TanhGaussian
    reward: jax.Array              # scaled
    terminated: jax.Array
    done: jax.Array
    final_value: jax.Array         # V_old(final obs) where done (else 0)
    bootstrap_obs: jax.Array       # the obs after each unroll: V of it closes the trajectory


def _advantages(config: Config, batch: Batch, values: jax.Array, bootstrap_values: jax.Array):
    """GAE for trajectories batched [B, T] (values, rewards) with bootstrap values [B]."""
    next_values = jnp.concatenate([values[:, 1:], bootstrap_values[:, None]], axis=1)
    next_values = jnp.where(batch.done, batch.final_value, next_values)
    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    advantages, targets = gae(time_major(batch.reward), time_major(values), time_major(next_values),
                              time_major(batch.terminated), time_major(batch.done), config.discount,
                              config.gae_lambda)
    return time_major(advantages), time_major(targets)


class PolicyTerms(NamedTuple):
    """What a policy objective sees on one minibatch (leaves [B, T, ...])."""

    dist: dist_lib.TanhGaussian    # the current policy pi(.|s)
    log_ratio: jax.Array           # log pi(u|s) - log pi_old(u|s)
    advantages: jax.Array          # normalized if config.normalize_advantage
    minibatch: Batch


# policy_objective(terms) -> (loss to minimize, metrics). PPO's is the clipped surrogate; GTR swaps in its own.
PolicyObjective = Callable[[PolicyTerms], tuple[jax.Array, dict]]
# auxiliary_loss(params, normalized obs [B, T, obs_dim], key) -> (loss added to L, metrics), e.g. SIGReg.
AuxiliaryLoss = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, dict]]


def clipped_surrogate(terms: PolicyTerms, clip_epsilon: float) -> tuple[jax.Array, dict]:
    """-E[min(r A, clip(r, 1 - eps, 1 + eps) A)] (Schulman et al. 2017, Eq. 7)."""
    ratio = jnp.exp(terms.log_ratio)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon)
    return -jnp.mean(jnp.minimum(ratio * terms.advantages, clipped_ratio * terms.advantages)), {}


def loss(params: Params, state: PPOState, stats: RunningStats, batch: Batch, key: jax.Array,
         precomputed: tuple[jax.Array, jax.Array] | None = None,
         policy_objective: PolicyObjective | None = None,
         auxiliary_loss: AuxiliaryLoss | None = None):
    """The PPO loss on one minibatch of trajectories (leaves [B, T, ...]); returns (loss, metrics).

    `precomputed` = (advantages, value targets) from the behaviour value net
    (per_rollout mode); otherwise GAE is computed here from the current one.
    `policy_objective` replaces the clipped surrogate (default); the value
    loss and entropy bonus stay. `auxiliary_loss` adds a term (e.g. a
    representation regularizer) computed on the minibatch's normalized observations.
    """
    config = state.config
    dist = policy_dist(state, params, stats, batch.obs)
    values = value(state, params, stats, batch.obs)
    if precomputed is None:
        bootstrap_values = value(state, params, stats, batch.bootstrap_obs)
        advantages, targets = _advantages(config, batch, values, bootstrap_values)
        advantages, targets = jax.lax.stop_gradient((advantages, targets))
    else:
        advantages, targets = precomputed
    if config.normalize_advantage:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    log_ratio = dist_lib.log_prob(dist, batch.raw_action) - batch.log_prob
    ratio = jnp.exp(log_ratio)
    if policy_objective is None:
        policy_objective = functools.partial(clipped_surrogate, clip_epsilon=config.clip_epsilon)
    policy_loss, objective_metrics = policy_objective(PolicyTerms(dist, log_ratio, advantages, batch))
    kl = jnp.mean(dist_lib.kl_divergence(batch.behaviour, dist))   # KL(pi_old || pi)
    policy_loss = policy_loss + config.kl_coef * kl
    value_loss = config.value_loss_coef * 0.5 * jnp.mean(jnp.square(targets - values))
    entropy = jnp.mean(dist_lib.entropy(dist, key))
    total = policy_loss + value_loss - config.entropy_cost * entropy
    auxiliary_metrics = {}
    if auxiliary_loss is not None:
        auxiliary, auxiliary_metrics = auxiliary_loss(params, _normalized(state, stats, batch.obs),
                                                      jax.random.fold_in(key, 1))
        total = total + auxiliary

    explained_variance = 1.0 - jnp.var(targets - values) / (jnp.var(targets) + 1e-8)
    metrics = {
        "loss/total": total, "loss/policy": policy_loss, "loss/value": value_loss,
        "policy/entropy": entropy,
        "policy/kl": kl,
        "policy/clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > config.clip_epsilon).astype(jnp.float32)),
        "policy/std": jnp.mean(dist.scale),
        "value/explained_variance": explained_variance,
        **objective_metrics,
        **auxiliary_metrics,
    }
    return total, metrics


# ------------------------------------------------------------------------------------------------
# One training step: rollout -> statistics -> epochs x minibatches
# ------------------------------------------------------------------------------------------------


def collect(state: PPOState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array,
            sync_axes: tuple[str, ...] = ()) -> tuple[JaxEnvState, Batch, dict]:
    """U unrolls of T steps in every env with the current policy; returns the batch and episode stats."""
    config = state.config
    num_unrolls = layout(config).unrolls_per_update

    def policy_fn(obs, key):
        dist = policy_dist(state, state.params, state.obs_stats, obs)
        u = dist_lib.sample_pre_tanh(dist, key)
        return jnp.tanh(u), (u, dist_lib.log_prob(dist, u), dist)

    def record(info: envs.StepInfo):
        done = info.terminated | info.truncated
        # V_old(final obs) is needed only where an episode ended: compute it only on such steps.
        final_value = jax.lax.cond(
            any_over(done, sync_axes),
            lambda: jnp.where(done, value(state, state.params, state.obs_stats, info.final_obs), 0.0),
            lambda: jnp.zeros_like(info.reward))
        return {"reward": info.reward, "terminated": info.terminated, "done": done, "final_value": final_value,
                "finished_return": jnp.where(done, info.episode_return, 0.0), "nan_reset": info.nan_reset}

    def unroll(env_state, key):
        env_state, transitions = envs.rollout(env, policy_fn, env_state, key, config.unroll_length,
                                              sync_axes, record)
        env_major = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), transitions)     # [T, N, ...] -> [N, T, ...]
        return env_state, (env_major, env_state.obs)

    env_state, (tr, bootstrap_obs) = jax.lax.scan(unroll, env_state, jax.random.split(key, num_unrolls))
    # [U, N, ...] -> [U * N, ...]: one row per trajectory.
    tr, bootstrap_obs = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), (tr, bootstrap_obs))
    u, log_prob, behaviour = tr.policy_extras
    batch = Batch(obs=tr.obs, raw_action=u, log_prob=log_prob, behaviour=behaviour,
                  reward=tr.info["reward"] * config.reward_scaling, terminated=tr.info["terminated"],
                  done=tr.info["done"], final_value=tr.info["final_value"], bootstrap_obs=bootstrap_obs)
    episodes = jnp.sum(tr.info["done"])
    stats = {"episodes": episodes, "episode_return_sum": jnp.sum(tr.info["finished_return"]),
             "nan_resets": jnp.sum(tr.info["nan_reset"])}
    return env_state, batch, stats


def update(state: PPOState, batch: Batch, key: jax.Array, policy_objective: PolicyObjective | None = None,
           auxiliary_loss: AuxiliaryLoss | None = None) -> tuple[PPOState, dict]:
    """num_epochs x num_minibatches Adam steps on the PPO loss; metrics are means over all of them."""
    config = state.config
    shape = layout(config)
    stats = (update_stats(state.obs_stats, batch.obs, config.obs_norm_decay) if config.normalize_observations
             else state.obs_stats)
    tx = optimizer(config)

    precomputed = None
    if config.advantages == "per_rollout":
        values = value(state, state.params, stats, batch.obs)                        # [U * N, T]
        bootstrap_values = value(state, state.params, stats, batch.bootstrap_obs)   # [U * N]
        precomputed = _advantages(config, batch, values, bootstrap_values)

    def minibatch_step(carry, rows):
        params, opt_state, key = carry
        key, loss_key = jax.random.split(key)
        minibatch = jax.tree.map(lambda x: x[rows], batch)
        pre = None if precomputed is None else jax.tree.map(lambda x: x[rows], precomputed)
        grads, metrics = jax.grad(loss, has_aux=True)(params, state, stats, minibatch, loss_key, pre,
                                                      policy_objective, auxiliary_loss)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics["optim/grad_norm"] = optax.tree.norm(grads)
        return (optax.apply_updates(params, updates), opt_state, key), metrics

    def epoch(carry, key):
        permutation_key, minibatch_key = jax.random.split(key)
        order = jax.random.permutation(permutation_key, shape.trajectories)
        params, opt_state = carry
        (params, opt_state, _), metrics = jax.lax.scan(
            minibatch_step, (params, opt_state, minibatch_key),
            order.reshape(shape.num_minibatches, config.batch_size))
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(epoch, (state.params, state.opt_state),
                                                jax.random.split(key, config.num_epochs))
    probe_obs = batch.obs.reshape(-1, batch.obs.shape[-1])[:PROBE_SIZE]     # first steps of the first envs
    new_state = state.replace(params=params, opt_state=opt_state, obs_stats=stats, updates=state.updates + 1,
                              probe_obs=probe_obs)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["policy/update_kl"] = update_kl(new_state, batch)
    return new_state, metrics


def update_kl(new_state: PPOState, batch: Batch) -> jax.Array:
    """The outer step's size: mean KL(pi_old || pi_new) over the update's first PROBE_SIZE steps, where pi_old is
    the behaviour policy and pi_new the policy after all epochs (arXiv 2603.06009 reads plateaus off this).
    `policy/kl` is instead the mean over minibatches of the KL from pi_old to the policy being trained."""
    flat = lambda x: x.reshape((-1,) + x.shape[2:])[:PROBE_SIZE]
    behaviour = jax.tree.map(flat, batch.behaviour)
    new = policy_dist(new_state, new_state.params, new_state.obs_stats, flat(batch.obs))
    return jnp.mean(dist_lib.kl_divergence(behaviour, new))


def train_step(state: PPOState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array,
               sync_axes: tuple[str, ...] = ()) -> tuple[PPOState, JaxEnvState, dict]:
    """Collect one update's rollout in `env` and learn from it. Pure; jit and vmap it (over seeds)."""
    collect_key, update_key = jax.random.split(key)
    env_state, batch, episode_stats = collect(state, env, env_state, collect_key, sync_axes)
    state, metrics = update(state, batch, update_key)
    return state, env_state, {**metrics, **episode_stats}


# Named presets of the flags above (`run.py --agent ppo --preset cpu`).
PRESETS = {
    "playground": {},   # the Config defaults: Playground's DMC config (for GPUs/TPUs)
    # For a 2-core CPU budget of ~5M steps on mjx:CartpoleBalance, measured there (1 seed, eval of 8
    # episodes, see experiments/results/README.md). Playground's config updates once per 983k steps
    # at 1024 envs: Brax reaches 560 at 5.9M steps. Updating every unroll (batch 256 x 4 minibatches =
    # one unroll per env at 1024 envs) at gamma 0.995, lr 1e-3, 4-8 epochs: ours and Brax's both stay
    # near the initial ~250 for 2M steps. What it takes: gamma 0.99 (0.97 learns sooner but plateaus
    # near 800: too short-sighted for the cart-centering term), lr 3e-4 with 16 epochs (lr 1e-3
    # oscillates) and gradient clipping at 1.0; this reaches 997 at 3.4M and ~1000 after. The value
    # MLP is 3x128 (5x256 costs ~20x the FLOPs per sample and dominates a CPU's time).
    "one_unroll": {"num_minibatches": 2},   # Playground's config with one unroll per env per update (above)
    "cpu": {"num_envs": 1024, "batch_size": 256, "num_minibatches": 4, "num_epochs": 16, "learning_rate": 3e-4,
            "max_grad_norm": 1.0, "value_hidden": (128, 128, 128), "discount": 0.99, "reference_num_envs": 1024},
}


# Playground's per-task changes to its DMC PPO config (mujoco_playground.config.dm_control_suite_params),
# which `--preset playground` applies for these tasks: Config fields, run.py's total_steps, and the env's
# action_repeat (added to the env id). Names are matched exactly, or by prefix where they end in "*".
# Playground's own config tests the name "PendulumSwingUp", which never equals the registered
# "PendulumSwingup", so Playground's runs of that task train without these two; we apply what it states.
PLAYGROUND_TASKS = {
    "AcrobotSwingup*": {"total_steps": 100_000_000},
    "Swimmer*": {"total_steps": 100_000_000},
    "WalkerRun": {"total_steps": 100_000_000},
    "BallInCup": {"discount": 0.95},
    "FingerSpin": {"discount": 0.95},
    "PendulumSwingup": {"action_repeat": 4, "num_epochs": 4},
}


def task_preset(preset: str | None, env_id: str) -> dict:
    """What `preset` changes for the task `env_id` beyond its own flags ({} for most tasks and presets)."""
    family, _, name = env_id.partition("?")[0].partition(":")
    if preset != "playground" or family != "mjx":
        return {}
    for pattern, changes in PLAYGROUND_TASKS.items():
        if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
            return dict(changes)
    return {}


def default_preset() -> str:
    """run.py's preset when none is given: Playground's config on accelerators, `cpu` on a CPU backend."""
    return "cpu" if jax.default_backend() == "cpu" else "playground"


def diagnostics(state: PPOState, key: jax.Array) -> dict:
    """Plasticity and isotropy of each network on observations of the last rollout: dormant ratio (ReDo, tau in
    {0, 0.025, 0.1}), effective rank (srank) and norm of its representation (last hidden pre-activation), and the
    eigenvalue spread of that representation's covariance (networks/regularizers.isotropy)."""
    from networks.regularizers import isotropy

    x = _normalized(state, state.obs_stats, state.probe_obs)
    out = {}
    for name, (activations, representation) in state.networks.probe(state.params, x).items():
        values = plasticity.plasticity_diagnostics(activations, features=representation)
        values.update(isotropy(representation))
        out.update({f"{name}/{k}": jnp.asarray(v, jnp.float32) for k, v in values.items()})
    return out


AGENT = OnPolicyAgent(name="ppo", Config=Config, init=init, act=act, train_step=train_step, collect=collect, layout=layout,
                      diagnostics=diagnostics, PRESETS=PRESETS, RUN_DEFAULTS=RUN_DEFAULTS, curve_points=CURVE_POINTS,
                      default_preset=default_preset, task_preset=task_preset)
