"""GTR: Gaussian Trust Region Policy Optimization, on top of `agents/ppo.py`.

arXiv 2606.03382. The paper's equations and code were not reachable: this file
implements the RECONSTRUCTION in ALGORITHMS.md, and exposes the alternatives
as flags.

Idea: PPO's trust region (ratio clipping, or a KL penalty) pulls back every
move away from the old policy, the harder the farther. GTR's penalty is a
bounded, non-monotonic Gaussian kernel of the divergence D to an anchor
policy: a strong restoring force near the anchor, and one that vanishes for
large, sustained moves -- which a non-stationary task (dynamics or reward
switching) needs to make.

    D_k(s)   = KL(pi_k(.|s) || pi(.|s))          (--divergence kl)
             | (log pi(u|s) - log pi_k(u|s))^2   (--divergence sq_log_ratio, at the sampled u)
    kernel   = sum_k w_k exp(-D_k^2 / (2 sigma^2))     w_k ~ anchor_decay^k, k = 0 the newest
    penalty  = beta sigma^2 (1 - kernel)                in [0, beta sigma^2]   (--penalty-scale sigma_sq)
             | beta (1 - kernel)                        in [0, beta]           (--penalty-scale unit)
    L_pi     = -E[r A]  (--surrogate unclipped)  |  PPO's clipped surrogate (--surrogate clipped)
               + E[penalty]

With one anchor the penalty's gradient in D is beta D exp(-D^2 / 2 sigma^2)
(divided by sigma^2 for the unit scale): largest at D = sigma, vanishing
beyond a few sigma.

The two scales differ in their limits, and the reconstruction cannot say which
the paper meant. ALGORITHMS.md's formula (sigma_sq, the default) is bounded by
beta sigma^2 and tends to beta D^2 / 2 as sigma -> infinity: a quadratic trust
region, so it is the bare surrogate only as sigma -> 0. With `--penalty-scale
unit` the kernel's flattening as sigma -> infinity means what a trust region
of infinite width should: no penalty, L_pi is the bare surrogate (the
acceptance test of the GTR issue), and as sigma -> 0 the penalty is the
constant beta, whose gradient is 0 -- again the bare surrogate.

Anchors (the Mixture Gaussian Anchor): the last K behaviour policies, i.e.
the policy at the start of each of the last K updates, each with the
observation statistics it acted with. With K = 1 the anchor is PPO's old
policy. Everything else -- rollout, GAE, value loss, entropy, minibatches --
is PPO's, imported.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

from agents import ppo
from agents.config import field
from agents.ppo import layout, PRESETS, RUN_DEFAULTS, default_preset  # noqa: F401 (the loop's agent interface)
from envs import EnvSpec, JaxEnv, JaxEnvState
from networks import distributions as dist_lib
from networks.normalizer import RunningStats, normalize

LOOP = "on_policy"


@dataclasses.dataclass(frozen=True)
class Config(ppo.Config):
    """PPO's hyperparameters (Playground's DMC defaults) plus GTR's trust region. Reconstruction defaults."""

    sigma: float = field(0.05, "> 0")
    """Kernel width, in units of D: the divergence at which the restoring force peaks."""
    beta: float = field(20.0, ">= 0")
    """Penalty scale; the penalty is at most beta * sigma^2."""
    divergence: Literal["kl", "sq_log_ratio"] = "kl"
    """D: per-state KL(anchor || policy), or the squared log-ratio at the sampled action."""
    surrogate: Literal["unclipped", "clipped"] = "unclipped"
    """Policy-gradient term: -E[r A], or PPO's clipped surrogate."""
    num_anchors: int = field(1, ">= 1", about="K")
    """K, the anchors of the Mixture Gaussian Anchor (1: a single anchor, the old policy)."""
    anchor_decay: float = field(0.5, "(0, 1]")
    """Recency weights w_k proportional to anchor_decay^k (k = 0 the newest); 1 = uniform."""
    penalty_scale: Literal["sigma_sq", "unit"] = "sigma_sq"
    """Penalty = beta sigma^2 (1 - kernel) (ALGORITHMS.md; sigma -> inf: beta D^2/2), or beta (1 - kernel)
    (sigma -> inf: no penalty, the bare surrogate)."""

    def validate(self) -> None:
        super().validate()
        if self.divergence not in ("kl", "sq_log_ratio"):
            raise ValueError(f"--divergence must be kl or sq_log_ratio, got {self.divergence!r}")
        if self.surrogate not in ("unclipped", "clipped"):
            raise ValueError(f"--surrogate must be unclipped or clipped, got {self.surrogate!r}")
        if self.penalty_scale not in ("sigma_sq", "unit"):
            raise ValueError(f"--penalty-scale must be sigma_sq or unit, got {self.penalty_scale!r}")


# ------------------------------------------------------------------------------------------------
# The Gaussian trust region
# ------------------------------------------------------------------------------------------------


def kernel(divergence: jax.Array, sigma: float) -> jax.Array:
    """exp(-D^2 / (2 sigma^2))."""
    return jnp.exp(-jnp.square(divergence) / (2.0 * sigma**2))


def mixture_kernel(divergences: jax.Array, weights: jax.Array, sigma: float) -> jax.Array:
    """sum_k w_k exp(-D_k^2 / (2 sigma^2)); `divergences` [K, ...], `weights` [K] summing to 1."""
    weights = weights.reshape(weights.shape + (1,) * (divergences.ndim - 1))
    return jnp.sum(weights * kernel(divergences, sigma), axis=0)


def penalty(divergences: jax.Array, weights: jax.Array, sigma: float, beta: float,
            scale: str = "sigma_sq") -> jax.Array:
    """beta sigma^2 (1 - sum_k w_k kernel_k): 0 at the anchors, at most beta sigma^2 (scale "unit": beta (1 - ...)).

    Written as beta sigma^2 sum_k w_k (-expm1(-D_k^2 / 2 sigma^2)) (the weights sum
    to 1): 1 - exp(-x) in float32 is 0 for x below ~6e-8, which would make the
    large-sigma limit (beta D^2 / 2) vanish.
    """
    gap = -jnp.expm1(-jnp.square(divergences) / (2.0 * sigma**2))
    weights = weights.reshape(weights.shape + (1,) * (divergences.ndim - 1))
    height = beta * sigma**2 if scale == "sigma_sq" else beta
    return height * jnp.sum(weights * gap, axis=0)


def recency_weights(num_anchors: int, decay: float, filled: jax.Array) -> jax.Array:
    """w_k ~ decay^k over the `filled` anchors that exist yet (k = 0 the newest), normalized."""
    k = jnp.arange(num_anchors)
    raw = jnp.where(k < jnp.maximum(filled, 1), decay**k, 0.0)
    return raw / jnp.sum(raw)


# ------------------------------------------------------------------------------------------------
# State: PPO's, plus the anchors
# ------------------------------------------------------------------------------------------------


class Anchors(struct.PyTreeNode):
    policy: dict               # policy parameters, leaves [K, ...]; slot 0 the newest
    obs_stats: RunningStats    # the observation statistics each anchor acted with, leaves [K, ...]
    filled: jax.Array          # how many slots hold a real snapshot (int32)


class GTRState(struct.PyTreeNode):
    ppo: ppo.PPOState
    anchors: Anchors

    @property
    def params(self):
        """The networks being trained (the on-policy loop sizes its activation estimate from them)."""
        return self.ppo.params


def init(key: jax.Array, spec: EnvSpec, config: Config) -> GTRState:
    base = ppo.init(key, spec, config)
    stack = lambda x: jnp.stack([x] * config.num_anchors)
    anchors = Anchors(jax.tree.map(stack, base.params.policy), jax.tree.map(stack, base.obs_stats),
                      jnp.zeros((), jnp.int32))
    return GTRState(base, anchors)


def act(state: GTRState, obs: jax.Array, key: jax.Array, explore: bool) -> jax.Array:
    return ppo.act(state.ppo, obs, key, explore)


def push_anchor(anchors: Anchors, policy: dict, obs_stats: RunningStats) -> Anchors:
    """Shift the snapshots one slot older (dropping the oldest) and put `policy` in slot 0."""
    push = lambda stacked, new: jnp.concatenate([new[None], stacked[:-1]], axis=0)
    num_anchors = jax.tree.leaves(anchors.policy)[0].shape[0]
    return Anchors(jax.tree.map(push, anchors.policy, policy), jax.tree.map(push, anchors.obs_stats, obs_stats),
                   jnp.minimum(anchors.filled + 1, num_anchors))


def anchor_dists(state: ppo.PPOState, anchors: Anchors, obs: jax.Array) -> dist_lib.TanhGaussian:
    """Every anchor's distribution on `obs`, each with its own observation statistics: leaves [K, ...]."""
    network = ppo.policy_network(state.config, state.spec)

    def one(policy, stats):
        x = normalize(stats, obs) if state.config.normalize_observations else obs
        return dist_lib.tanh_gaussian(network.apply({"params": policy}, x), state.config.min_std)

    return jax.vmap(one)(anchors.policy, anchors.obs_stats)


def divergences(config: Config, anchors_dist: dist_lib.TanhGaussian, terms: ppo.PolicyTerms) -> jax.Array:
    """D_k(s) for every anchor k and state: [K, B, T]."""
    if config.divergence == "kl":
        return jax.vmap(lambda anchor: dist_lib.kl_divergence(anchor, terms.dist))(anchors_dist)
    log_prob = dist_lib.log_prob(terms.dist, terms.minibatch.raw_action)
    anchor_log_prob = jax.vmap(lambda anchor: dist_lib.log_prob(anchor, terms.minibatch.raw_action))(anchors_dist)
    return jnp.square(log_prob[None] - anchor_log_prob)


def objective(terms: ppo.PolicyTerms, state: ppo.PPOState, anchors: Anchors) -> tuple[jax.Array, dict]:
    """GTR's policy loss on one minibatch: the surrogate plus the Gaussian-kernel penalty."""
    config = state.config
    if config.surrogate == "clipped":
        surrogate, _ = ppo.clipped_surrogate(terms, config.clip_epsilon)
    else:
        surrogate = -jnp.mean(jnp.exp(terms.log_ratio) * terms.advantages)
    anchors_dist = jax.lax.stop_gradient(anchor_dists(state, anchors, terms.minibatch.obs))
    d = divergences(config, anchors_dist, terms)                                     # [K, B, T]
    weights = recency_weights(config.num_anchors, config.anchor_decay, anchors.filled)
    kernel_value = mixture_kernel(d, weights, config.sigma)
    penalty_value = penalty(d, weights, config.sigma, config.beta, config.penalty_scale)
    metrics = {"gtr/divergence": jnp.mean(d[0]), "gtr/kernel": jnp.mean(kernel_value),
               "gtr/penalty": jnp.mean(penalty_value),
               "gtr/beyond_sigma": jnp.mean((d[0] > config.sigma).astype(jnp.float32)),
               "gtr/surrogate": surrogate}
    return surrogate + jnp.mean(penalty_value), metrics


def train_step(state: GTRState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array,
               sync_axes: tuple[str, ...] = ()) -> tuple[GTRState, JaxEnvState, dict]:
    """PPO's rollout and update with GTR's policy objective; the behaviour policy becomes the newest anchor."""
    collect_key, update_key = jax.random.split(key)
    anchors = push_anchor(state.anchors, state.ppo.params.policy, state.ppo.obs_stats)
    env_state, batch, episode_stats = ppo.collect(state.ppo, env, env_state, collect_key, sync_axes)
    policy_objective = functools.partial(objective, state=state.ppo, anchors=anchors)
    new_ppo, metrics = ppo.update(state.ppo, batch, update_key, policy_objective)
    return GTRState(new_ppo, anchors), env_state, {**metrics, **episode_stats}


def collect(state: GTRState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array, sync_axes=()):
    """PPO's collection with the current policy (used by bench.py)."""
    return ppo.collect(state.ppo, env, env_state, key, sync_axes)
