"""SAC: Soft Actor-Critic with automatic entropy tuning.

Haarnoja et al. 2018, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep RL
with a Stochastic Actor" (arXiv 1801.01290) and "Soft Actor-Critic Algorithms
and Applications" (arXiv 1812.05905). Defaults are CleanRL's
`sac_continuous_action.py`: twin 256 x 256 ReLU critics, q lr 1e-3, policy lr
3e-4, batch 256, 5000 random steps, the actor (and alpha) trained twice every
second critic update, Polyak tau 0.005 every update.

    y        = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')   (Eq. 3, 5)
    L_Q      = sum_j mean (Q_j(s, a) - y)^2
    L_pi     = mean alpha log pi(a|s) - min_j Q_j(s, a),  a ~ pi(.|s) reparameterized                (Eq. 7)
    L_alpha  = mean -alpha (log pi(a|s) + H_target),      H_target = -|A|                            (Eq. 18)

Truncated transitions keep their bootstrap (only `terminated` zeroes it).
`--updates-per-step` is the update-to-data ratio (UTD): 2 gives two critic
updates per env step; the actor's delay counts critic updates.

Many envs per seed (`--num-envs N`, JAX envs), in the style of FastTD3
(arXiv 2505.22642): the device loop steps the seed's N envs together, every
loop step stores all N transitions, each env into its own replay stream
(replay/streams.py, so no sampled transition mixes two envs' episodes), and
owes `updates_per_step` x N updates; `--total-steps`, `--learning-starts` and
the ratio count env steps summed over the N envs. FastTD3's regime is a few
large-batch updates per loop step: e.g. `--num-envs 128 --updates-per-step
0.015625 --batch-size 4096` (2 updates per loop step).

The pieces -- `critic_loss`, `actor_loss`, `update_critic`, `update_actor`,
`update_once` -- are exposed so agents built on SAC (ReGraMa, LEAST, RAVL)
reuse them; the critic code SAC shares with TD3 is agents/critic.py. An add-on
from another paper attaches through the `critic_penalty` hook of `update`
(SIGReg on SAC: agents/sigreg.py), not through a field here.
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
from networks import distributions as dist_lib
from replay import streams
from networks.actor_critic import INIT_SCHEMES, LOG_STD_MODES, GaussianActor, QEnsemble
from networks.mlp import ACTIVATIONS, KERNEL_INITS
from networks.training import Trained, apply_gradients, polyak, trained


@hyperparameters
class Config:
    """SAC's hyperparameters; defaults are CleanRL's."""

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
    """Polyak rate of the target critics."""
    critic_lr: float = field(1e-3, "> 0")
    """Adam learning rate of the critics."""
    actor_lr: float = field(3e-4, "> 0")
    """Adam learning rate of the actor."""
    alpha_lr: float = field(1e-3, "> 0")
    """Adam learning rate of log alpha (CleanRL uses the critics' rate)."""
    learning_starts: int = field(5_000, ">= 0")
    """Uniform random actions and no updates for this many env steps."""
    updates_per_step: float = field(1.0, "(0, 1024]", static=True, about="the update-to-data ratio")
    """Update-to-data ratio: critic updates per env step (fractions allowed, e.g. 0.5; at most 1024); a loop step
    of N envs owes N times this. Static: the update count and the delayed actor's schedule stay real branches under
    vmap only if every lane has the same ratio."""
    policy_frequency: int = field(2, ">= 1")
    """The actor and alpha train every this many critic updates, this many times (CleanRL's delayed update)."""
    target_frequency: int = field(1, ">= 1")
    """Polyak-update the target critics every this many critic updates."""
    autotune: bool = True
    """Learn alpha to keep the policy's entropy at the target; otherwise alpha stays `alpha`."""
    alpha: float = field(0.2, ">= 0")
    """The fixed entropy coefficient when --no-autotune (with autotune alpha starts at 1, log alpha = 0)."""
    target_entropy_scale: float = field(1.0, "finite")
    """H_target = -target_entropy_scale * action_dim."""
    num_critics: int = field(2, ">= 1")
    """Critics in the ensemble; the target takes the minimum over all of them."""
    critic_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of each critic."""
    actor_hidden: tuple[int, ...] = field((256, 256), ">= 1")
    """Hidden widths of the actor."""
    activation: str = "relu"
    """Hidden activation of every network."""
    layer_norm: bool = False
    """LayerNorm after every hidden Linear (critics and actor)."""
    initializer: Literal["pytorch_default", "xavier_uniform", "lecun_uniform"] = "pytorch_default"
    """Weight initializer of every Linear (biases start at 0)."""
    log_std_min: float = field(-5.0, "finite")
    """Lower end of the actor's log-std range."""
    log_std_max: float = field(2.0, "finite")
    """Upper end of the actor's log-std range."""
    log_std: Literal["tanh", "clip"] = "tanh"
    """How the actor's raw log-std head maps into [log_std_min, log_std_max]: a tanh squash (CleanRL) or a hard
    clip (EDAC; networks/actor_critic.py)."""
    init: Literal["default", "edac", "neubay"] = "default"
    """Bias and last-layer initialization of the critics and the actor (networks/actor_critic.py INIT_SCHEMES):
    "default" (zero biases), "edac" (hidden biases 0.1, last layers U(+-3e-3) / U(+-1e-3)) or "neubay"."""

    def validate(self) -> None:
        check_fields(self)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"--activation must be one of {', '.join(sorted(ACTIVATIONS))}, got {self.activation!r}")
        if self.initializer not in KERNEL_INITS:
            raise ValueError(f"--initializer must be one of {', '.join(KERNEL_INITS)}, got {self.initializer!r}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"--init must be one of {', '.join(INIT_SCHEMES)}, got {self.init!r}")
        if self.log_std not in LOG_STD_MODES:
            raise ValueError(f"--log-std must be one of {', '.join(LOG_STD_MODES)}, got {self.log_std!r}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError(f"--log-std-min must be < --log-std-max, got {self.log_std_min}, {self.log_std_max}")


# ----------------------------------------------------------------------------
# Networks and state
# ----------------------------------------------------------------------------


def critic_network(config: Config) -> QEnsemble:
    return critic.ensemble(config, config.init)


def actor_network(config: Config, spec: EnvSpec) -> GaussianActor:
    return GaussianActor(spec.action_dim, config.actor_hidden, config.activation, config.log_std_min,
                         config.log_std_max, config.layer_norm, config.initializer, config.init, config.log_std)


def optimizers(config: Config) -> tuple[optax.GradientTransformation, ...]:
    """(critic, actor, log alpha) optimizers: Adam, as in CleanRL."""
    return optax.adam(config.critic_lr), optax.adam(config.actor_lr), optax.adam(config.alpha_lr)


@struct.dataclass
class SACState:
    critic: Trained                 # with target critics
    actor: Trained                  # no target
    log_alpha: jax.Array
    alpha_opt_state: optax.OptState
    replay: replay.ReplayBuffer     # replay/streams.py: one stream per env of the seed
    env_steps: jax.Array            # transitions stored (env steps, summed over the seed's envs)
    updates: jax.Array              # critic updates done
    actor_metrics: dict             # of the last actor update (logged between the delayed updates)
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)
    spec: EnvSpec = struct.field(pytree_node=False)

    @property
    def alpha(self) -> jax.Array:
        return jnp.exp(self.log_alpha) if self.config.autotune else jnp.asarray(self.config.alpha)


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> SACState:
    """Fresh networks and optimizers, and an empty replay of `num_envs` streams of `capacity` slots each
    (default: `buffer_size` shared out over the streams)."""
    critic_opt, actor_opt, alpha_opt = optimizers(config)
    k_critic, k_actor = jax.random.split(key)
    obs, action = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.action_dim))
    critic_params = critic_network(config).init(k_critic, obs, action)
    actor_params = actor_network(config, spec).init(k_actor, obs)
    if capacity is None:
        capacity = streams.capacity_for(config.buffer_size, config.num_envs, spec.max_episode_steps)
    log_alpha = jnp.zeros(())
    return SACState(
        critic=trained(critic_params, critic_opt),
        actor=trained(actor_params, actor_opt, target=False),
        log_alpha=log_alpha,
        alpha_opt_state=alpha_opt.init(log_alpha),
        replay=streams.create(config.num_envs, capacity, spec.obs_dim, spec.action_dim, horizon=1),
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        actor_metrics={name: jnp.zeros(()) for name in ACTOR_METRICS},
        config=config,
        spec=spec,
    )


# ----------------------------------------------------------------------------
# Acting and storing
# ----------------------------------------------------------------------------


def policy(state: SACState, actor_params: dict, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterized sample a = tanh(u) ~ pi(.|obs) and its log-probability (with the tanh correction)."""
    dist = actor_network(state.config, state.spec).apply(actor_params, obs)
    u = dist_lib.sample_pre_tanh(dist, key)
    return jnp.tanh(u), dist_lib.log_prob(dist, u)


def act(state: SACState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    """A sample from pi when exploring (uniform in [-1, 1] before `learning_starts`), else tanh(mean)."""
    if not explore:
        return dist_lib.mode(actor_network(state.config, state.spec).apply(state.actor.params, obs))
    k_policy, k_uniform = jax.random.split(key)
    action, _ = policy(state, state.actor.params, obs, k_policy)
    uniform = jax.random.uniform(k_uniform, action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(state.env_steps < state.config.learning_starts, uniform, action)


store = critic.store


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


def critic_target(state: SACState, batch: replay.TransitionBatch, key: jax.Array) -> jax.Array:
    """y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s'))."""
    next_action, next_log_prob = policy(state, state.actor.params, batch.next_obs, key)
    next_q = critic_network(state.config).apply(state.critic.target_params, batch.next_obs, next_action)
    soft_value = jnp.min(next_q, axis=-1) - state.alpha * next_log_prob
    return batch.reward + state.config.discount * (1.0 - batch.terminated) * soft_value


def critic_loss(critic_params: dict, state: SACState, batch: replay.TransitionBatch,
                target: jax.Array, key: jax.Array | None = None,
                penalty: critic.CriticPenalty | None = None) -> tuple[jax.Array, dict]:
    """sum_j mean (Q_j(s, a) - y)^2 (CleanRL sums the twin critics' MSEs), + an add-on's `penalty` of the critics'
    last hidden pre-activations (drawing with `key`)."""
    return critic.td_loss(critic_network(state.config), critic_params, batch, target, penalty, state, key)


def actor_loss(actor_params: dict, state: SACState, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mean alpha log pi(a|s) - min_j Q_j(s, a), a ~ pi reparameterized; also returns log pi for alpha."""
    action, log_prob = policy(state, actor_params, obs, key)
    q = critic_network(state.config).apply(state.critic.params, obs, action)
    return jnp.mean(state.alpha * log_prob - jnp.min(q, axis=-1)), log_prob


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """mean -alpha (log pi + H_target): raises alpha while the entropy is below the target (CleanRL's form)."""
    return jnp.mean(-jnp.exp(log_alpha) * (jax.lax.stop_gradient(log_prob) + target_entropy))


def log_alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """mean -log alpha (log pi + H_target): the same direction, the gradient without the factor alpha (EDAC's and
    RAVL's form, also SpinningUp's)."""
    return jnp.mean(-log_alpha * (jax.lax.stop_gradient(log_prob) + target_entropy))


# ----------------------------------------------------------------------------
# Updates
# ----------------------------------------------------------------------------


def update_critic(state: SACState, batch: replay.TransitionBatch, key: jax.Array,
                  penalty: critic.CriticPenalty | None = None) -> tuple[SACState, dict]:
    critic_opt, _, _ = optimizers(state.config)
    target = jax.lax.stop_gradient(critic_target(state, batch, key))
    grads, metrics = jax.grad(critic_loss, has_aux=True)(state.critic.params, state, batch, target,
                                                         jax.random.fold_in(key, 1), penalty)
    metrics["critic/grad_norm"] = optax.tree.norm(grads)
    return state.replace(critic=apply_gradients(state.critic, grads, critic_opt), updates=state.updates + 1), metrics


ACTOR_METRICS = ("actor/loss", "actor/entropy", "alpha")


def actor_step(state: SACState, obs: jax.Array, key: jax.Array) -> tuple[SACState, jax.Array, jax.Array]:
    """One actor step on `actor_loss`; returns (state, loss, log pi of the sample it used)."""
    _, actor_opt, _ = optimizers(state.config)
    (loss, log_prob), grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor.params, state, obs, key)
    return state.replace(actor=apply_gradients(state.actor, grads, actor_opt)), loss, log_prob


def alpha_step(state: SACState, obs: jax.Array, key: jax.Array, loss_fn=None) -> SACState:
    """With autotune, one step of log alpha on `loss_fn` (alpha_loss, the default, or log_alpha_loss) at the
    log-probabilities of a FRESH sample (drawn with `key`) from the current actor; without, nothing."""
    loss_fn = alpha_loss if loss_fn is None else loss_fn      # looked up at call time (tests spy on it)
    config = state.config
    if not config.autotune:
        return state
    _, _, alpha_opt = optimizers(config)
    target_entropy = -config.target_entropy_scale * state.spec.action_dim
    _, fresh_log_prob = policy(state, state.actor.params, obs, key)
    grad_alpha = jax.grad(loss_fn)(state.log_alpha, fresh_log_prob, target_entropy)
    step, alpha_opt_state = alpha_opt.update(grad_alpha, state.alpha_opt_state)
    return state.replace(log_alpha=optax.apply_updates(state.log_alpha, step), alpha_opt_state=alpha_opt_state)


def update_actor(state: SACState, obs: jax.Array, key: jax.Array) -> tuple[SACState, dict]:
    """One actor step, then (with autotune) one alpha step on log-probabilities of a FRESH sample from the
    updated actor (CleanRL draws one after the actor step)."""
    state, loss, log_prob = actor_step(state, obs, key)
    state = alpha_step(state, obs, jax.random.fold_in(key, 1))
    return state, {"actor/loss": loss, "actor/entropy": -jnp.mean(log_prob), "alpha": state.alpha}


def update_once(state: SACState, key: jax.Array, index: jax.Array,
                critic_penalty: critic.CriticPenalty | None = None) -> tuple[SACState, dict]:
    """Critic update number `index` (from 0), then the delayed actor/alpha updates and the target update."""
    config = state.config
    k_sample, k_target, k_actor = jax.random.split(key, 3)
    batch = critic.sample_batch(state, k_sample)
    state, metrics = update_critic(state, batch, k_target, critic_penalty)

    def train_actor(state):
        # CleanRL: every `policy_frequency` critic updates, `policy_frequency` actor steps (same batch states).
        def one(state, k):
            return update_actor(state, batch.obs, k)
        state, actor_metrics = jax.lax.scan(one, state, jax.random.split(k_actor, config.policy_frequency))
        return state.replace(actor_metrics=jax.tree.map(lambda m: m[-1], actor_metrics))

    # `index` is unbatched (from the shared env step), so these are real branches under vmap.
    state = jax.lax.cond(index % config.policy_frequency == 0, train_actor, lambda s: s, state)
    state = jax.lax.cond(index % config.target_frequency == 0,
                         lambda s: s.replace(critic=polyak(s.critic, config.tau)), lambda s: s, state)
    return state, {**metrics, **state.actor_metrics}


def update(state: SACState, key: jax.Array, step: jax.Array,
           critic_penalty: critic.CriticPenalty | None = None) -> tuple[SACState, dict]:
    """The updates due after the loop step that ended at env step `step` (`updates_per_step` per env step on
    average, none before `learning_starts`); `critic_penalty` is an add-on's hook into the critic loss
    (agents/critic.py)."""
    config = state.config
    once = lambda s, k, i: update_once(s, k, i, critic_penalty)
    return critic.scheduled_updates(once, state, key, step, config.learning_starts, config.updates_per_step,
                                    config.num_envs)


# ----------------------------------------------------------------------------
# Plasticity diagnostics (logged at every evaluation)
# ----------------------------------------------------------------------------


def critic_activations(state, critic_params: dict, obs: jax.Array, action: jax.Array) -> dict:
    """Post-activations of every hidden layer of the critics: {hidden_k: [num_critics, B, width]}."""
    return critic.activations(critic_network(state.config), critic_params, obs, action)


def diagnostics(state: SACState, key: jax.Array) -> dict:
    """Critic plasticity on a replay batch (agents/critic.py): ReDo dormant ratios, GraMa-inactive ratios (from
    the TD loss's gradients), and the effective rank (srank) and norm of the last hidden layer's features."""
    return critic.diagnostics(state, key, critic_network(state.config), critic_target, critic_loss)


AGENT = OffPolicyAgent(name="sac", Config=Config, init=init, act=act, store=store, update=update,
                       diagnostics=diagnostics, warmup=lambda config, spec: config.learning_starts,
                       warmup_flag="learning_starts")
