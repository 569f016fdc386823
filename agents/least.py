"""LEAST: learned early stopping of unproductive episodes, on TD3 (default) or SAC.

"The Courage to Stop: Overcoming Sunk Cost Fallacy in Deep RL" (arXiv
2506.13672). An agent that keeps acting in an episode that is going badly
(a fallen walker, a cart far off the track) spends env steps on data it
does not need; LEAST ends such episodes early and spends the budget on fresh
ones. The paper's stopping rule could not be read (no code found): this file
implements the RECONSTRUCTION in ALGORITHMS.md, whose pieces are flags.

The rule, evaluated on every training step t of an episode with (s_t, a_t):

    q_t        = min_j Q_j(s_t, a_t)                          the base agent's online critics
    H_t        = min_j Q_j(s, a) of the (s, a) visited at episode index t in the last `history`
                 episodes, under the CURRENT critics (--history-values current, default), so that
                 q_t and H_t are in the same units while Q's scale drifts during training; or the
                 Q-values as recorded when those steps were taken (--history-values recorded)
    margin_t   = margin_coef * IQR(H_t) * g_short / g_long     g: EMAs of the critic's gradient norm;
                                                               a noisy critic (large recent gradients)
                                                               widens the margin: stop less eagerly
    threshold  = quantile_p(H_t) - margin_t
    stop       <=> q_t < threshold for `patience` consecutive steps,
                   after `warmup` env steps and with >= `min_history` values in H_t

A stop ends the episode as a TRUNCATION (truncated = 1, terminated = 0: the
critic target still bootstraps), and the next episode starts from a fresh
reset; the loops (experiments/off_policy.py) call `early_stop` with the
action, inside the jitted act step on JAX envs and in the same jitted call
on host envs. Every env step actually taken counts toward --total-steps, so a
stop frees budget for new episodes. Evaluation episodes never stop early.

Metrics: least/stops (cumulative), least/episodes, least/mean_episode_length
(all episodes) and least/mean_unstopped_length (episodes that ended on their
own), least/budget_saved (an estimate of the fraction of the budget the stops
freed: S / (steps taken + S), S = for every stopped episode the mean unstopped
length minus its length, summed), and the last threshold and margin.

Base: `--base td3` (default) or `--base sac`. The flags shared by both bases
(learning rates, batch, learning_starts, ...) default to TD3's CleanRL values
whatever the base; the SAC-only flags (alpha, autotune, ...) default to SAC's.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

import replay
from agents import sac, td3
from agents.config import check_fields, field
from envs import EnvSpec

LOOP = "off_policy"
BASES = {"td3": td3, "sac": sac}


@dataclasses.dataclass(frozen=True)
class Config(td3.Config):
    """The base agent's flags (TD3's defaults) plus the stop rule."""

    base: Literal["td3", "sac"] = "td3"
    """The off-policy agent whose episodes LEAST stops."""
    quantile: float = field(0.1, "(0, 1)")
    """p: stop when Q falls below this quantile of the Q-values seen at the same episode index, in (0, 1)."""
    patience: int = field(20, ">= 1")
    """Consecutive steps below the threshold before a stop (>= 1)."""
    warmup: int = field(30_000, ">= 0")
    """Env steps before the first stop may happen (>= 0)."""
    margin_coef: float = field(0.5, ">= 0")
    """Margin = margin_coef x IQR of the history x (short / long EMA of the critic gradient norm); 0 = no margin."""
    history: int = field(50, ">= 2")
    """Steps kept per episode index (from the most recent episodes)."""
    history_values: Literal["current", "recorded"] = "current"
    """H_t from the stored (s, a) under the current critics, or the Q-values recorded at the time."""
    min_history: int = field(10, ">= 1")
    """Values needed at an index before the rule may stop there."""
    grad_decay_short: float = field(0.99, "[0, 1)")
    """EMA decay of the recent critic gradient norm."""
    grad_decay_long: float = field(0.999, "[0, 1)")
    """EMA decay of the long-run critic gradient norm."""
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
        if self.base not in BASES:
            raise ValueError(f"--base must be one of {', '.join(BASES)}, got {self.base!r}")
        base_config(self).validate()
        if self.history_values not in ("current", "recorded"):
            raise ValueError(f"--history-values must be current or recorded, got {self.history_values!r}")
        if self.min_history > self.history:
            raise ValueError(f"--min-history must be in [1, --history={self.history}], got {self.min_history}")


def base_config(config: Config):
    """The base agent's Config from the flags it has."""
    cls = BASES[config.base].Config
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dataclasses.asdict(config).items() if k in names})


# ----------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------


class QHistory(struct.PyTreeNode):
    obs: jax.Array      # [max_episode_steps, history, obs_dim] states visited at each episode index
    action: jax.Array   # [max_episode_steps, history, action_dim] and the actions taken there
    values: jax.Array   # [max_episode_steps, history] Q-values recorded then; NaN where empty
    count: jax.Array    # [max_episode_steps] int32 steps written at each index (ring position = count % history)


class LEASTState(struct.PyTreeNode):
    base: sac.SACState | td3.TD3State
    history: QHistory
    episode_step: jax.Array       # index t of the current step in its episode
    below: jax.Array              # consecutive steps below the threshold so far
    grad_short: jax.Array         # EMAs of the critic's gradient norm
    grad_long: jax.Array
    episode_length: jax.Array     # steps of the current episode so far
    counters: dict                # stops, episodes, unstopped_episodes, unstopped_steps, stopped_steps, env_steps
    last: dict                    # threshold, margin of the last decision (for logging)
    config: Config = struct.field(pytree_node=False)


COUNTERS = ("stops", "episodes", "unstopped_episodes", "unstopped_steps", "stopped_steps", "env_steps")


def init(key: jax.Array, spec: EnvSpec, config: Config, capacity: int | None = None) -> LEASTState:
    module = BASES[config.base]
    horizon = spec.max_episode_steps
    return LEASTState(
        base=module.init(key, spec, base_config(config), capacity),
        history=QHistory(jnp.zeros((horizon, config.history, spec.obs_dim)),
                         jnp.zeros((horizon, config.history, spec.action_dim)),
                         jnp.full((horizon, config.history), jnp.nan), jnp.zeros((horizon,), jnp.int32)),
        episode_step=jnp.zeros((), jnp.int32), below=jnp.zeros((), jnp.int32),
        grad_short=jnp.zeros(()), grad_long=jnp.zeros(()), episode_length=jnp.zeros((), jnp.int32),
        counters={name: jnp.zeros((), jnp.int32) for name in COUNTERS},
        last={"threshold": jnp.zeros(()), "margin": jnp.zeros(())},
        config=config,
    )


# ----------------------------------------------------------------------------
# The stop rule
# ----------------------------------------------------------------------------


def q_value(state: LEASTState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """min_j Q_j(s, a) of the base agent's online critics."""
    module = BASES[state.config.base]
    return jnp.min(module.critic_network(state.base.config).apply(state.base.critic.params, obs, action), axis=-1)


def rule(state: LEASTState, q: jax.Array) -> dict:
    """The threshold at the current episode index and whether q is below it (and may stop there at all)."""
    config = state.config
    t = jnp.minimum(state.episode_step, state.history.values.shape[0] - 1)
    row = state.history.values[t]
    if config.history_values == "current":
        row = jnp.where(jnp.isnan(row), jnp.nan, q_value(state, state.history.obs[t], state.history.action[t]))
    low, q25, q75 = jnp.nanquantile(row, jnp.array([config.quantile, 0.25, 0.75]))
    ratio = jnp.where(state.grad_long > 0, state.grad_short / jnp.maximum(state.grad_long, 1e-12), 1.0)
    margin = config.margin_coef * (q75 - q25) * ratio
    threshold = low - margin
    enough = jnp.minimum(state.history.count[t], config.history) >= config.min_history
    armed = (state.base.env_steps >= config.warmup) & enough
    below = armed & (q < threshold)
    return {"below": below, "stop": below & (state.below + 1 >= config.patience),
            "threshold": jnp.where(enough, threshold, 0.0), "margin": jnp.where(enough, margin, 0.0)}


def early_stop(state: LEASTState, obs: jax.Array, action: jax.Array) -> jax.Array:
    """Whether to end the episode after the step (obs, action) (called by the loops while training)."""
    return rule(state, q_value(state, obs, action))["stop"]


# ----------------------------------------------------------------------------
# Acting, storing, updating
# ----------------------------------------------------------------------------


def act(state: LEASTState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    return BASES[state.config.base].act(state.base, obs, key, explore)


def store(state: LEASTState, transition: replay.Transition) -> LEASTState:
    """Record Q(s_t, a_t) at index t, advance the stop rule's counters, and store the transition in the base.

    The decision is recomputed here from the same state and (s, a) as `early_stop` saw, so it is the same."""
    config = state.config
    q = q_value(state, transition.obs, transition.action)
    decision = rule(state, q)
    t = jnp.minimum(state.episode_step, state.history.values.shape[0] - 1)
    slot = state.history.count[t] % config.history
    h = state.history
    history = QHistory(h.obs.at[t, slot].set(transition.obs), h.action.at[t, slot].set(transition.action),
                       h.values.at[t, slot].set(q), h.count.at[t].add(1))

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
        last={"threshold": decision["threshold"], "margin": decision["margin"]},
    )


def statistics(state: LEASTState) -> dict:
    """Episode lengths with and without stops, and the estimated fraction of the budget saved."""
    c = {k: v.astype(jnp.float32) for k, v in state.counters.items()}
    unstopped_length = c["unstopped_steps"] / jnp.maximum(c["unstopped_episodes"], 1.0)
    saved = jnp.maximum(c["stops"] * unstopped_length - c["stopped_steps"], 0.0)
    return {"least/stops": c["stops"], "least/episodes": c["episodes"],
            "least/mean_episode_length": (c["unstopped_steps"] + c["stopped_steps"]) / jnp.maximum(c["episodes"], 1.0),
            "least/mean_unstopped_length": unstopped_length,
            "least/budget_saved": saved / jnp.maximum(c["env_steps"] + saved, 1.0),
            "least/threshold": state.last["threshold"], "least/margin": state.last["margin"]}


def update(state: LEASTState, key: jax.Array, step: jax.Array) -> tuple[LEASTState, dict]:
    """The base agent's scheduled updates; their critic gradient norm feeds the margin's EMAs."""
    config = state.config
    base, metrics = BASES[config.base].update(state.base, key, step)
    g = metrics["critic/grad_norm"]
    updated = base.updates > state.base.updates
    first = state.grad_long == 0
    ema = lambda old, decay: jnp.where(first, g, decay * old + (1 - decay) * g)
    state = state.replace(base=base,
                          grad_short=jnp.where(updated, ema(state.grad_short, config.grad_decay_short),
                                               state.grad_short),
                          grad_long=jnp.where(updated, ema(state.grad_long, config.grad_decay_long), state.grad_long))
    return state, {**metrics, **statistics(state)}


def diagnostics(state: LEASTState, key: jax.Array) -> dict:
    """The base's critic diagnostics and the episode statistics, at every evaluation."""
    module = BASES[state.config.base]
    return {**module.diagnostics(state.base, key), **statistics(state)}
