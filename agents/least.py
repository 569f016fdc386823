"""LEAST: learned early stopping of unproductive episodes, on TD3 (default) or SAC.

"The Courage to Stop: Overcoming Sunk Cost Fallacy in Deep RL" (Liu et al.,
ICML 2025, arXiv 2506.13672; no code released). An agent that keeps acting in
an episode that is going badly spends env steps on data it does not need and
fills its replay buffer with it; LEAST ends such episodes early and spends
the budget on fresh ones.

The paper's rule (`--rule paper`, default), on every training step i of an episode with (s_i, a_i):

    Q_i   = min_j Q_j(s_i, a_i)                  the base agent's online critics, recorded when the step is taken
    B_Q   [L x K] the Q_i recorded at each episode index i in the K most recent episodes that reached it
    eps_i = MEDIAN(B_Q[:, i])                    the quality threshold at index i (--quantile 0.5)
    L_i   = (Q_i - y_i)^2                        the step's TD loss, y_i the base's critic target
    B_G   [L x K] the L_i recorded in parallel with B_Q: the learning potential left at each index
    w_i   = G / (G + G_i)                        G_i = mean B_G[:, i], G = mean of B_G: in (0, 1); 1/2 at an
                                                 average index, -> 1 where nothing is left to learn (hold the step
                                                 to the full median), -> 0 where much is (hardly ever stop there)
    stop  <=> Q_i < w_i * eps_i                  (for eps_i < 0: Q_i < eps_i - (1 - w_i)|eps_i|, the same relaxation)
    K     = K_min + round((K_max - K_min)(1 - h))  entropy-aware size; h = exp(H/d - log 2) in (0, 1] is the policy's
                                                 per-dimension entropy H/d relative to a uniform action: a wide,
                                                 exploring policy changes fast, so compare with fewer, more recent
                                                 episodes; a settled one with more. TD3's entropy is its Gaussian
                                                 exploration noise's (so K is constant); SAC's an EMA of
                                                 -log pi over its actor batches.

What the paper's public text gives (Sec. 4, and the reviews of it): B_Q, the
per-index median, B_G of TD losses giving a weight w_i of learning potential,
and a K that adapts with entropy. What it does not give here: the exact form
of w_i and of K(h) -- the two forms above are ours (bounded, parameter-free,
monotone in the stated direction) -- and whether a stop needs several steps
below the threshold (--patience, default 1: a single step, no source for more).
Warm-up is tied to the base's `learning_starts`: B_Q and B_G record only from
then on (the random phase's Q-values come from an untrained critic), and an
index may stop once it holds `--min-history` records.

`--rule margin` keeps this file's first reconstruction (before the paper's
text was known), whose pieces stay flags: threshold = quantile_p(H_i) -
margin_coef x IQR(H_i) x g_short / g_long (EMAs of the critic's gradient
norm), H_i re-scored under the current critics (`--history-values current`);
with `--quantile 0.1 --patience 20 --history-values current --history-size
fixed --warmup 30000` it is that rule exactly (0 stops on gym:Hopper-v5 in 50k steps).

A stop ends the episode as a TRUNCATION (truncated = 1, terminated = 0: the
critic target still bootstraps), and the next episode starts from a fresh
reset; the loops (experiments/loops/off_policy.py) call `early_stop` with the
action, inside the jitted act step on JAX envs and in the same jitted call
on host envs. Every env step actually taken counts toward --total-steps, so a
stop frees budget for new episodes. Evaluation episodes never stop early.

Metrics: least/stops (cumulative), least/episodes, least/mean_episode_length
(all episodes) and least/mean_unstopped_length (episodes that ended on their
own), least/budget_saved (an estimate of the fraction of the budget the stops
freed: S / (steps taken + S), S = for every stopped episode the mean unstopped
length minus its length, summed), least/history_size (K), and the last
threshold, median and weight.

Base: `--base td3` (default) or `--base sac`. The flags shared by both bases
(learning rates, batch, learning_starts, ...) default to TD3's CleanRL values
whatever the base; the SAC-only flags (alpha, autotune, ...) default to SAC's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

import replay
from agents import sac, td3
from agents.contract import OffPolicyAgent
from agents.config import check_fields, field, hyperparameters
from envs import EnvSpec

BASES = {"td3": td3, "sac": sac}
RULES = ("paper", "margin")


@hyperparameters
class Config(td3.Config):
    """The base agent's flags (TD3's defaults) plus the stop rule."""

    base: Literal["td3", "sac"] = "td3"
    """The off-policy agent whose episodes LEAST stops."""
    rule: Literal["paper", "margin"] = "paper"
    """paper: Q below the learning-potential-weighted median of B_Q; margin: the first reconstruction (docstring)."""
    quantile: float = field(0.5, "(0, 1)")
    """p: the threshold's quantile of the Q-values at the same episode index (0.5: the paper's median)."""
    learning_potential: bool = True
    """paper rule: weight the threshold by w_i from the TD losses in B_G (off: the bare quantile)."""
    patience: int = field(1, ">= 1")
    """Consecutive steps below the threshold before a stop (>= 1)."""
    warmup: int | None = field(None, ">= 0")
    """Env steps before B_Q/B_G record and stops may happen; None: the base's --learning-starts."""
    history: int = field(50, ">= 2")
    """K_max: episodes kept per episode index (the most recent)."""
    history_floor: int = field(10, ">= 1")
    """K_min: the fewest recent episodes the entropy-aware K compares with."""
    history_size: Literal["entropy", "fixed"] = "entropy"
    """K from the policy's entropy (K_min..K_max), or fixed at --history."""
    min_history: int = field(10, ">= 1")
    """Records needed at an index before the rule may stop there."""
    history_values: Literal["recorded", "current"] = "recorded"
    """B_Q as recorded when the steps were taken (paper), or the stored (s, a) re-scored by the current critics."""
    margin_coef: float = field(0.5, ">= 0")
    """margin rule: margin = margin_coef x IQR of the history x (short / long EMA of the critic gradient norm)."""
    grad_decay_short: float = field(0.99, "[0, 1)")
    """margin rule: EMA decay of the recent critic gradient norm."""
    grad_decay_long: float = field(0.999, "[0, 1)")
    """margin rule: EMA decay of the long-run critic gradient norm."""
    entropy_decay: float = field(0.99, "[0, 1)")
    """SAC base: EMA decay of the actor's entropy estimate that sets K."""
    # SAC-only flags (used with --base sac; defaults are SAC's).
    alpha_lr: float = field(1e-3, "> 0")
    """SAC: learning rate of log alpha."""
    autotune: bool = True
    """SAC: learn alpha."""
    alpha: float = field(0.2, ">= 0")
    """SAC: the fixed alpha without autotune."""
    target_entropy_scale: float = field(1.0, "finite")
    """SAC: H_target = -scale * action_dim."""
    target_frequency: int = field(1, ">= 1")
    """SAC: Polyak-update the target critics every this many critic updates."""

    def validate(self) -> None:
        check_fields(self)
        if self.num_envs != 1:      # B_Q, B_G and the patience counter follow one episode at a time
            raise ValueError(f"--num-envs must be 1 for least (its stop rule follows one env's episode), "
                             f"got {self.num_envs}")
        if self.base not in BASES:
            raise ValueError(f"--base must be one of {', '.join(BASES)}, got {self.base!r}")
        base_config(self).validate()
        if self.rule not in RULES:
            raise ValueError(f"--rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.history_values not in ("current", "recorded"):
            raise ValueError(f"--history-values must be recorded or current, got {self.history_values!r}")
        if self.history_size not in ("entropy", "fixed"):
            raise ValueError(f"--history-size must be entropy or fixed, got {self.history_size!r}")
        if self.history_floor > self.history:
            raise ValueError(f"--history-floor must be in [1, --history={self.history}], got {self.history_floor}")
        smallest = self.history_floor if self.history_size == "entropy" else self.history
        if self.min_history > smallest:
            raise ValueError(f"--min-history must be in [1, {smallest}] (the smallest K), got {self.min_history}")


def base_config(config: Config):
    """The base agent's Config from the flags it has."""
    cls = BASES[config.base].Config
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dataclasses.asdict(config).items() if k in names})


def warmup_steps(config: Config) -> int:
    """Env steps before the rule records and stops: --warmup, or the base's learning_starts."""
    return config.learning_starts if config.warmup is None else config.warmup


# ----------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------


class QHistory(struct.PyTreeNode):
    """B_Q and B_G: per episode index, a ring of the most recent episodes' records there."""

    obs: jax.Array      # [max_episode_steps, history, obs_dim] states visited at each index (--history-values current)
    action: jax.Array   # [max_episode_steps, history, action_dim] and the actions taken there
    values: jax.Array   # [max_episode_steps, history] B_Q: Q-values recorded then; NaN where empty
    losses: jax.Array   # [max_episode_steps, history] B_G: the steps' TD losses; NaN where empty
    count: jax.Array    # [max_episode_steps] int32 records written at each index (ring position = count % history)


class LEASTState(struct.PyTreeNode):
    base: sac.SACState | td3.TD3State
    history: QHistory
    episode_step: jax.Array       # index i of the current step in its episode
    below: jax.Array              # consecutive steps below the threshold so far
    grad_short: jax.Array         # margin rule: EMAs of the critic's gradient norm
    grad_long: jax.Array
    entropy: jax.Array            # per-dimension policy entropy H/d that sets K (SAC: an EMA; TD3: its noise's)
    episode_length: jax.Array     # steps of the current episode so far
    counters: dict                # stops, episodes, unstopped_episodes, unstopped_steps, stopped_steps, env_steps
    last: dict                    # threshold, median, weight, history_size of the last decision (for logging)
    config: Config                            # hyperparameters: floats are traced leaves (agents/config.py)


COUNTERS = ("stops", "episodes", "unstopped_episodes", "unstopped_steps", "stopped_steps", "env_steps")
UNIFORM_ENTROPY = math.log(2.0)   # per-dimension entropy of a uniform action on [-1, 1]


def gaussian_entropy(std) -> jax.Array:
    """Per-dimension entropy of N(0, std^2): 0.5 log(2 pi e std^2) (TD3's exploration noise)."""
    return 0.5 * jnp.log(2.0 * math.pi * math.e * jnp.maximum(std, 1e-12) ** 2)


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> LEASTState:
    module = BASES[config.base]
    horizon, k = spec.max_episode_steps, config.history
    # TD3 explores with fixed Gaussian noise; SAC starts near-uniform (its EMA follows the actor's estimates).
    entropy = gaussian_entropy(config.exploration_noise) if config.base == "td3" else UNIFORM_ENTROPY
    return LEASTState(
        base=module.init(key, spec, base_config(config), capacity),
        history=QHistory(jnp.zeros((horizon, k, spec.obs_dim)), jnp.zeros((horizon, k, spec.action_dim)),
                         jnp.full((horizon, k), jnp.nan), jnp.full((horizon, k), jnp.nan),
                         jnp.zeros((horizon,), jnp.int32)),
        episode_step=jnp.zeros((), jnp.int32), below=jnp.zeros((), jnp.int32),
        grad_short=jnp.zeros(()), grad_long=jnp.zeros(()), entropy=jnp.float32(entropy),
        episode_length=jnp.zeros((), jnp.int32),
        counters={name: jnp.zeros((), jnp.int32) for name in COUNTERS},
        last={name: jnp.zeros(()) for name in ("threshold", "median", "weight", "history_size")},
        config=config,
    )


# ----------------------------------------------------------------------------
# The stop rule
# ----------------------------------------------------------------------------


def q_value(state: LEASTState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """min_j Q_j(s, a) of the base agent's online critics."""
    module = BASES[state.config.base]
    return jnp.min(module.critic_network(state.base.config).apply(state.base.critic.params, obs, action), axis=-1)


def td_loss(state: LEASTState, transition: replay.Transition, q: jax.Array) -> jax.Array:
    """L_i = (Q_i - y_i)^2 with y_i the base's own critic target for this step (a key from the step count)."""
    module = BASES[state.config.base]
    batch = replay.TransitionBatch(transition.obs[None], transition.action[None], jnp.asarray(transition.reward)[None],
                                   transition.next_obs[None],
                                   jnp.asarray(transition.terminated, jnp.float32)[None])
    key = jax.random.fold_in(jax.random.PRNGKey(0x1EA57), state.counters["env_steps"])
    target = module.critic_target(state.base, batch, key)[0]
    return jnp.square(q - jax.lax.stop_gradient(target))


def history_size(state: LEASTState) -> jax.Array:
    """K: fixed at --history, or K_min + round((K_max - K_min)(1 - h)), h = exp(H/d - log 2) clipped to [0, 1]."""
    config = state.config
    if config.history_size == "fixed":
        return jnp.int32(config.history)
    relative_width = jnp.clip(jnp.exp(state.entropy - UNIFORM_ENTROPY), 0.0, 1.0)
    span = config.history - config.history_floor
    return (config.history_floor + jnp.round(span * (1.0 - relative_width))).astype(jnp.int32)


def recent(history: QHistory, k: jax.Array) -> jax.Array:
    """[L, history] mask of the slots that hold one of the k most recent records at their index."""
    slots = jnp.arange(history.values.shape[1])[None, :]
    newest = (history.count[:, None] - 1) % history.values.shape[1]
    age = (newest - slots) % history.values.shape[1]
    return (slots < history.count[:, None]) & (age < k)


def learning_potential(history: QHistory, mask: jax.Array, t: jax.Array) -> jax.Array:
    """w_t = G / (G + G_t): G_t the mean TD loss recorded at index t, G the mean over every index (1 if none)."""
    losses = jnp.where(mask, history.losses, jnp.nan)
    g_t, g = jnp.nanmean(losses[t]), jnp.nanmean(losses)
    weight = g / jnp.maximum(g + g_t, 1e-12)
    return jnp.where(jnp.isfinite(weight) & (g + g_t > 0), weight, 1.0)


def rule(state: LEASTState, q: jax.Array) -> dict:
    """The threshold at the current episode index and whether q is below it (and may stop there at all)."""
    config = state.config
    t = jnp.minimum(state.episode_step, state.history.values.shape[0] - 1)
    k = history_size(state)
    mask = recent(state.history, k)
    row = state.history.values[t]
    if config.history_values == "current":
        row = q_value(state, state.history.obs[t], state.history.action[t])
    row = jnp.where(mask[t], row, jnp.nan)
    median, q25, q75 = jnp.nanquantile(row, jnp.array([config.quantile, 0.25, 0.75]))
    if config.rule == "paper":
        weight = learning_potential(state.history, mask, t) if config.learning_potential else jnp.float32(1.0)
        threshold = median - (1.0 - weight) * jnp.abs(median)      # = w * eps for eps >= 0
    else:
        ratio = jnp.where(state.grad_long > 0, state.grad_short / jnp.maximum(state.grad_long, 1e-12), 1.0)
        weight = jnp.float32(1.0)
        threshold = median - config.margin_coef * (q75 - q25) * ratio
    enough = jnp.sum(mask[t]) >= config.min_history
    armed = (state.base.env_steps >= warmup_steps(config)) & enough
    below = armed & (q < threshold)
    zero = lambda x: jnp.where(enough, x, 0.0)
    return {"below": below, "stop": below & (state.below + 1 >= config.patience),
            "threshold": zero(threshold), "median": zero(median), "weight": zero(weight),
            "history_size": k.astype(jnp.float32)}


def early_stop(state: LEASTState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Whether to end the episode after the step (obs, action) (called by the loops while training)."""
    return rule(state, q_value(state, obs, action))["stop"]


# ----------------------------------------------------------------------------
# Acting, storing, updating
# ----------------------------------------------------------------------------


def act(state: LEASTState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    return BASES[state.config.base].act(state.base, obs, key, explore)


def store(state: LEASTState, transition: replay.Transition) -> LEASTState:
    """Record Q_i and L_i at index i (from the warm-up on), advance the counters, and store in the base.

    The decision is recomputed here from the same state and (s, a) as `early_stop` saw, so it is the same."""
    config = state.config
    q = q_value(state, transition.obs, transition.action)
    decision = rule(state, q)
    t = jnp.minimum(state.episode_step, state.history.values.shape[0] - 1)
    slot = state.history.count[t] % config.history
    h = state.history
    recording = state.base.env_steps >= warmup_steps(config)
    # one slot written (or rewritten with itself before the warm-up ends): O(1) per step, not a buffer copy
    write = lambda buffer, value: buffer.at[t, slot].set(jnp.where(recording, value, buffer[t, slot]))
    history = QHistory(write(h.obs, transition.obs), write(h.action, transition.action), write(h.values, q),
                       write(h.losses, td_loss(state, transition, q)), h.count.at[t].add(recording.astype(jnp.int32)))

    terminated = jnp.asarray(transition.terminated, bool)
    done = terminated | jnp.asarray(transition.truncated, bool)
    stopped = decision["stop"] & ~terminated
    length = state.episode_length + 1
    c = state.counters
    counters = {
        "stops": c["stops"] + stopped,
        "episodes": c["episodes"] + done,
        "unstopped_episodes": c["unstopped_episodes"] + (done & ~stopped),
        "unstopped_steps": c["unstopped_steps"] + jnp.where(done & ~stopped, length, 0),
        "stopped_steps": c["stopped_steps"] + jnp.where(stopped, length, 0),
        "env_steps": c["env_steps"] + 1,
    }
    module = BASES[config.base]
    return state.replace(
        base=module.store(state.base, transition),
        history=history,
        episode_step=jnp.where(done, 0, state.episode_step + 1),
        below=jnp.where(done | ~decision["below"], 0, state.below + 1),
        episode_length=jnp.where(done, 0, length),
        counters=counters,
        last={name: decision[name] for name in ("threshold", "median", "weight", "history_size")},
    )


def statistics(state: LEASTState) -> dict:
    """Episode lengths with and without stops, and the estimated fraction of the budget saved."""
    c = {k: v.astype(jnp.float32) for k, v in state.counters.items()}
    unstopped_length = c["unstopped_steps"] / jnp.maximum(c["unstopped_episodes"], 1.0)
    saved = jnp.maximum(c["stops"] * unstopped_length - c["stopped_steps"], 0.0)
    return {"least/stops": c["stops"], "least/episodes": c["episodes"],
            "least/mean_episode_length": (c["unstopped_steps"] + c["stopped_steps"]) / jnp.maximum(c["episodes"], 1.0),
            "least/mean_unstopped_length": unstopped_length,
            "least/mean_stopped_length": c["stopped_steps"] / jnp.maximum(c["stops"], 1.0),
            "least/budget_saved": saved / jnp.maximum(c["env_steps"] + saved, 1.0),
            **{f"least/{name}": value for name, value in state.last.items()}}


def update(state: LEASTState, key: jax.Array, step: jax.Array) -> tuple[LEASTState, dict]:
    """The base agent's scheduled updates; their critic gradient norm feeds the margin rule's EMAs and
    SAC's actor entropy the entropy-aware K."""
    config = state.config
    base, metrics = BASES[config.base].update(state.base, key, step)
    g = metrics["critic/grad_norm"]
    updated = base.updates > state.base.updates
    first = state.grad_long == 0
    ema = lambda old, decay: jnp.where(first, g, decay * old + (1 - decay) * g)
    entropy = state.entropy
    if config.base == "sac":
        per_dim = metrics["actor/entropy"] / state.base.spec.action_dim
        entropy = jnp.where(updated, config.entropy_decay * entropy + (1 - config.entropy_decay) * per_dim, entropy)
    state = state.replace(base=base, entropy=entropy,
                          grad_short=jnp.where(updated, ema(state.grad_short, config.grad_decay_short),
                                               state.grad_short),
                          grad_long=jnp.where(updated, ema(state.grad_long, config.grad_decay_long), state.grad_long))
    return state, {**metrics, **statistics(state)}


def diagnostics(state: LEASTState, key: jax.Array) -> dict:
    """The base's critic diagnostics and the episode statistics, at every evaluation."""
    module = BASES[state.config.base]
    return {**module.diagnostics(state.base, key), **statistics(state)}


AGENT = OffPolicyAgent(name="least", Config=Config, init=init, act=act, store=store, update=update, diagnostics=diagnostics,
                       early_stop=early_stop, warmup=lambda config, spec: config.learning_starts,
                       warmup_flag="learning_starts")
