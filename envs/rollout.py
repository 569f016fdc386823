"""A generic device-side rollout: a batch of ``JaxEnv``s driven by any policy.

The policy is passed in as a function, so envs never import agents (see
DESIGN.md, "Who owns which part of training").
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from envs.core import JaxEnv, JaxEnvState, StepInfo

# policy_fn(obs [N, obs_dim], key) -> (action [N, action_dim], extras pytree)
PolicyFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]


class Transition(NamedTuple):
    """One step of a batch of envs; after ``rollout`` every leaf is ``[T, N, ...]``."""

    obs: jax.Array  # what the policy saw
    action: jax.Array
    policy_extras: Any  # e.g. log-probs and values for PPO
    info: StepInfo  # reward, terminated, truncated, final_obs, episode stats, ...


def rollout(
    env: JaxEnv,
    policy_fn: PolicyFn,
    env_state: JaxEnvState,
    key: jax.Array,
    num_steps: int,
) -> tuple[JaxEnvState, Transition]:
    """Step the batched ``env_state`` (leading dim N) ``num_steps`` times under ``lax.scan``.

    Jittable and vmappable (e.g. over seeds). Returns the final env state and
    the stacked transitions; ``policy_fn`` is called once per step on the
    whole batch, so the policy network sees ``[N, obs_dim]``.
    """
    batched_step = jax.vmap(env.step)

    def one_step(state, step_key):
        action, extras = policy_fn(state.obs, step_key)
        next_state, info = batched_step(state, action)
        return next_state, Transition(state.obs, action, extras, info)

    return jax.lax.scan(one_step, env_state, jax.random.split(key, num_steps))
