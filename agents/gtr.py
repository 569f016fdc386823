"""GTR: Gaussian Trust Region Policy Optimization, on top of `agents/ppo.py`.

arXiv 2606.03382. The paper's equations and code were not reachable (only its
abstract and introduction): this file is a RECONSTRUCTION -- ALGORITHMS.md's,
revised where the review of issue 18 found it contradicts the abstract (a
kernel in distance, anchors that persist) -- and exposes the alternatives as
flags. Whether it shows the paper's effect: experiments/results/claims.md.

Idea: PPO's trust region (ratio clipping, or a KL penalty) pulls back every
move away from the old policy, the harder the farther. GTR's penalty is a
bounded, non-monotonic Gaussian kernel of the distance to an anchor policy: a
strong restoring force near the anchor, and one that vanishes for large,
sustained moves -- which a non-stationary task (dynamics or reward switching)
needs to make.

    D_k(s)   = KL(pi_k(.|s) || pi(.|s))          (--divergence kl)
             | (log pi(u|s) - log pi_k(u|s))^2   (--divergence sq_log_ratio, at the sampled u)
    rho_k^2  = 2 D_k (kl) | D_k (sq_log_ratio)   a squared distance: KL ~ 1/2 d^T F d for a small change d
    kernel   = sum_k w_k exp(-rho_k^2 / (2 sigma^2))   w_k ~ anchor_decay^k, k = 0 the newest
    penalty  = beta sigma^2 (1 - kernel)                in [0, beta sigma^2]   (--penalty-scale sigma_sq)
             | beta (1 - kernel)                        in [0, beta]           (--penalty-scale unit)
    L_pi     = -E[r A]  (--surrogate unclipped)  |  PPO's clipped surrogate (--surrogate clipped)
               + E[penalty]

With one anchor the penalty is beta KL near it (a KL penalty: the force beta
rho is linear in the distance), its force peaks at rho = sigma and vanishes
beyond a few sigma; as sigma -> infinity it is the KL penalty beta KL
everywhere. `--kernel-form squared` is the earlier reconstruction,
exp(-D^2 / (2 sigma^2)): since D is already a squared distance it is quartic
in the policy change and its force near the anchor is cubic -- no local
stability -- kept as a flag for comparison.

The two penalty scales differ in their limits, and the paper's text we could
read (abstract and introduction) cannot say which it meant. With `--penalty-scale
unit` an infinitely wide kernel means no penalty: L_pi is the bare surrogate
(and as sigma -> 0 the penalty is the constant beta, whose gradient is 0).

Anchors (the Mixture Gaussian Anchor, "adapts to recent policy trajectories,
reducing variance induced by stale references"): snapshots of the behaviour
policy taken every `anchor_period` updates, the last K of them kept, each with
the observation statistics it acted with. An anchor persists for
`anchor_period` updates, so the distance from it accumulates over sustained
updates -- which "progressively relaxing under sustained high-advantage
updates" needs; with K = 1 and period 1 the anchor is PPO's old policy,
refreshed every update, and the distance restarts at 0 each update. Two
readings of "mixture": a mixture of kernels, one per anchor
(`--anchor-reference kernel_mixture`, the default: each anchor keeps its own
basin), or ONE reference distribution, the Gaussian moment-matched to the
anchors' weighted mixture (`moment_matched`). Defaults K = 4, period 8: a
reference that spans the last ~32 updates, refreshed often enough not to be
stale. Everything else -- rollout, GAE, value loss, entropy, minibatches --
is PPO's, imported.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

from agents import ppo
from agents.contract import OnPolicyAgent
from agents.config import field, hyperparameters
from envs import EnvSpec, JaxEnv, JaxEnvState
from networks import distributions as dist_lib
from networks.normalizer import RunningStats, normalize



@hyperparameters
class Config(ppo.Config):
    """PPO's hyperparameters (Playground's DMC defaults) plus GTR's trust region.

    sigma 0.3 and beta 2 were chosen on the STATIONARY jax:PointMass (phase 0 of the comparisons; cpu preset,
    256 envs, 300k steps, 2 seeds, grid sigma {0.1, 0.3, 1} x beta {2, 20}): the one point that matches PPO
    there (final return -20 vs PPO's ~-25; beta 20 stalls near -74 at every sigma).
    experiments/results/gtr_tuning_pointmass_phase0/summary.csv.
    """

    sigma: float = field(0.3, "> 0")
    """Kernel width, in units of the distance rho (rho^2 = 2 KL, or (log r)^2): the restoring force peaks at
    rho = sigma (--kernel-form distance); for --kernel-form squared, in units of D."""
    beta: float = field(2.0, ">= 0")
    """Penalty scale: near the anchor the penalty is beta * KL (beta * rho^2 / 2); it is at most beta * sigma^2."""
    divergence: Literal["kl", "sq_log_ratio"] = "kl"
    """D: per-state KL(anchor || policy), or the squared log-ratio at the sampled action."""
    kernel_form: Literal["distance", "squared"] = "distance"
    """distance: exp(-rho^2 / (2 sigma^2)), a Gaussian in the distance rho (exp(-D / sigma^2) for KL), with a
    force linear in the policy change near the anchor; squared: exp(-D^2 / (2 sigma^2)), a Gaussian in D itself
    (quartic in the policy change; the earlier reconstruction)."""
    surrogate: Literal["unclipped", "clipped"] = "unclipped"
    """Policy-gradient term: -E[r A], or PPO's clipped surrogate."""
    num_anchors: int = field(4, ">= 1", about="K")
    """K, the anchors of the Mixture Gaussian Anchor: the last K snapshots of the policy (1: a single anchor)."""
    anchor_period: int = field(8, ">= 1")
    """Updates between anchor snapshots: an anchor persists for this many updates, so the divergence from it
    accumulates across updates (1 with K = 1: the anchor is the behaviour policy, refreshed every update)."""
    anchor_decay: float = field(0.5, "(0, 1]")
    """Recency weights w_k proportional to anchor_decay^k (k = 0 the newest); 1 = uniform."""
    anchor_reference: Literal["kernel_mixture", "moment_matched"] = "kernel_mixture"
    """kernel_mixture: sum_k w_k kernel(D_k), one kernel per anchor; moment_matched: ONE reference policy, the
    Gaussian matching the mean and variance of the anchors' w-weighted mixture, and kernel(D to it)."""
    penalty_scale: Literal["sigma_sq", "unit"] = "sigma_sq"
    """Penalty = beta sigma^2 (1 - kernel) (sigma -> inf: beta KL, a KL penalty), or beta (1 - kernel)
    (sigma -> inf: no penalty, the bare surrogate)."""

    def validate(self) -> None:
        super().validate()
        if self.divergence not in ("kl", "sq_log_ratio"):
            raise ValueError(f"--divergence must be kl or sq_log_ratio, got {self.divergence!r}")
        if self.surrogate not in ("unclipped", "clipped"):
            raise ValueError(f"--surrogate must be unclipped or clipped, got {self.surrogate!r}")
        if self.kernel_form not in ("distance", "squared"):
            raise ValueError(f"--kernel-form must be distance or squared, got {self.kernel_form!r}")
        if self.anchor_reference not in ("kernel_mixture", "moment_matched"):
            raise ValueError(f"--anchor-reference must be kernel_mixture or moment_matched, got "
                             f"{self.anchor_reference!r}")
        if self.penalty_scale not in ("sigma_sq", "unit"):
            raise ValueError(f"--penalty-scale must be sigma_sq or unit, got {self.penalty_scale!r}")


# ------------------------------------------------------------------------------------------------
# The Gaussian trust region
# ------------------------------------------------------------------------------------------------


def exponent(divergence: jax.Array, sigma, form: str = "distance", divergence_kind: str = "kl") -> jax.Array:
    """x with kernel = exp(-x): rho^2 / (2 sigma^2) in the distance form, D^2 / (2 sigma^2) in the squared one.

    rho^2 is the squared distance D already is, up to a constant: 2 KL (KL ~ 1/2 d^T F d for a small change d)
    or (log r)^2 for the squared log-ratio.
    """
    if form == "squared":
        return jnp.square(divergence) / (2.0 * sigma**2)
    rho_sq = 2.0 * divergence if divergence_kind == "kl" else divergence
    return rho_sq / (2.0 * sigma**2)


def kernel(divergence: jax.Array, sigma, form: str = "distance", divergence_kind: str = "kl") -> jax.Array:
    """exp(-rho^2 / (2 sigma^2)) (form "distance"), or exp(-D^2 / (2 sigma^2)) (form "squared")."""
    return jnp.exp(-exponent(divergence, sigma, form, divergence_kind))


def mixture_kernel(divergences: jax.Array, weights: jax.Array, sigma, form: str = "distance",
                   divergence_kind: str = "kl") -> jax.Array:
    """sum_k w_k kernel(D_k); `divergences` [K, ...], `weights` [K] summing to 1."""
    weights = weights.reshape(weights.shape + (1,) * (divergences.ndim - 1))
    return jnp.sum(weights * kernel(divergences, sigma, form, divergence_kind), axis=0)


def penalty(divergences: jax.Array, weights: jax.Array, sigma, beta, scale: str = "sigma_sq",
            form: str = "distance", divergence_kind: str = "kl") -> jax.Array:
    """beta sigma^2 (1 - sum_k w_k kernel_k): 0 at the anchors, at most beta sigma^2 (scale "unit": beta (1 - ...)).

    In the distance form with one anchor it is beta sigma^2 (1 - exp(-rho^2 / 2 sigma^2)): beta rho^2 / 2
    (= beta KL) near the anchor, so the restoring force beta rho is linear in the distance, peaks at rho =
    sigma and vanishes beyond a few sigma. Written as sum_k w_k (-expm1(-x_k)) (the weights sum to 1):
    1 - exp(-x) in float32 is 0 for x below ~6e-8, which would make the large-sigma limit vanish.
    """
    gap = -jnp.expm1(-exponent(divergences, sigma, form, divergence_kind))
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


def moment_matched(anchors_dist: dist_lib.TanhGaussian, weights: jax.Array) -> dist_lib.TanhGaussian:
    """The one Gaussian (pre-tanh) with the mean and variance of the mixture sum_k w_k N(mu_k, s_k^2): leaves [1, ...]."""
    w = weights.reshape(weights.shape + (1,) * (anchors_dist.loc.ndim - 1))
    mean = jnp.sum(w * anchors_dist.loc, axis=0)
    second_moment = jnp.sum(w * (jnp.square(anchors_dist.scale) + jnp.square(anchors_dist.loc)), axis=0)
    scale = jnp.sqrt(jnp.maximum(second_moment - jnp.square(mean), 0.0))
    # The mixture's variance is at least the smallest anchor's; the floor only guards float cancellation.
    return dist_lib.TanhGaussian(mean[None], jnp.maximum(scale, jnp.min(anchors_dist.scale, axis=0))[None])


def objective(terms: ppo.PolicyTerms, state: ppo.PPOState, anchors: Anchors) -> tuple[jax.Array, dict]:
    """GTR's policy loss on one minibatch: the surrogate plus the Gaussian-kernel penalty."""
    config = state.config
    if config.surrogate == "clipped":
        surrogate, _ = ppo.clipped_surrogate(terms, config.clip_epsilon)
    else:
        surrogate = -jnp.mean(jnp.exp(terms.log_ratio) * terms.advantages)
    anchors_dist = jax.lax.stop_gradient(anchor_dists(state, anchors, terms.minibatch.obs))
    weights = recency_weights(config.num_anchors, config.anchor_decay, anchors.filled)
    if config.anchor_reference == "moment_matched":
        anchors_dist, weights = moment_matched(anchors_dist, weights), jnp.ones(1)
    d = divergences(config, anchors_dist, terms)                                     # [K or 1, B, T]
    shape = dict(form=config.kernel_form, divergence_kind=config.divergence)
    kernel_value = mixture_kernel(d, weights, config.sigma, **shape)
    penalty_value = penalty(d, weights, config.sigma, config.beta, config.penalty_scale, **shape)
    metrics = {"gtr/divergence": jnp.mean(d[0]), "gtr/kernel": jnp.mean(kernel_value),
               "gtr/penalty": jnp.mean(penalty_value),
               "gtr/beyond_sigma": jnp.mean((exponent(d[0], config.sigma, **shape) > 0.5).astype(jnp.float32)),
               "gtr/surrogate": surrogate}
    return surrogate + jnp.mean(penalty_value), metrics


def refresh_anchors(state: GTRState) -> Anchors:
    """Every anchor_period updates (from the first), the behaviour policy becomes the newest anchor; otherwise
    the anchors stay, and the divergence from them accumulates over the updates in between."""
    due = state.ppo.updates % state.ppo.config.anchor_period == 0
    pushed = push_anchor(state.anchors, state.ppo.params.policy, state.ppo.obs_stats)
    return jax.tree.map(lambda new, old: jnp.where(due, new, old), pushed, state.anchors)


def train_step(state: GTRState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array,
               sync_axes: tuple[str, ...] = ()) -> tuple[GTRState, JaxEnvState, dict]:
    """PPO's rollout and update with GTR's policy objective against the (periodically refreshed) anchors."""
    collect_key, update_key = jax.random.split(key)
    anchors = refresh_anchors(state)
    env_state, batch, episode_stats = ppo.collect(state.ppo, env, env_state, collect_key, sync_axes)
    policy_objective = functools.partial(objective, state=state.ppo, anchors=anchors)
    new_ppo, metrics = ppo.update(state.ppo, batch, update_key, policy_objective)
    return GTRState(new_ppo, anchors), env_state, {**metrics, **episode_stats}


def collect(state: GTRState, env: JaxEnv, env_state: JaxEnvState, key: jax.Array, sync_axes=()):
    """PPO's collection with the current policy (used by bench.py)."""
    return ppo.collect(state.ppo, env, env_state, key, sync_axes)


def diagnostics(state: GTRState, key: jax.Array) -> dict:
    """PPO's plasticity and isotropy diagnostics of the policy and value networks."""
    return ppo.diagnostics(state.ppo, key)


AGENT = OnPolicyAgent(name="gtr", Config=Config, init=init, act=act, train_step=train_step, collect=collect, layout=ppo.layout,
                      diagnostics=diagnostics, PRESETS=ppo.PRESETS, RUN_DEFAULTS=ppo.RUN_DEFAULTS,
                      curve_points=ppo.CURVE_POINTS,
                      default_preset=ppo.default_preset, task_preset=ppo.task_preset)
