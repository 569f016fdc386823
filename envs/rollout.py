"""A generic device-side rollout: a batch of ``JaxEnv``s driven by any policy.

The policy is passed in as a function, so envs never import agents: agents
own their networks and losses, loops own the stepping, envs own the physics.
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
    info: Any  # the StepInfo (reward, terminated, truncated, final_obs, ...) or what `record` kept of it


def rollout(
    env: JaxEnv,
    policy_fn: PolicyFn,
    env_state: JaxEnvState,
    key: jax.Array,
    num_steps: int,
    sync_axes: tuple[str, ...] = (),
    record: Callable[[StepInfo], Any] | None = None,
) -> tuple[JaxEnvState, Transition]:
    """Step the batched ``env_state`` (leading dim N) ``num_steps`` times under ``lax.scan``.

    Jittable and vmappable (e.g. over seeds). Returns the final env state and
    the stacked transitions; ``policy_fn`` is called once per step on the
    whole batch, so the policy network sees ``[N, obs_dim]``. Called under a
    named ``vmap`` (e.g. over seeds), pass its axis name in ``sync_axes`` so
    that resets stay a real branch (see ``JaxEnv.step_batch``). ``record``
    maps each step's ``StepInfo`` to what is kept (default: all of it), so
    that nothing the caller does not need is stacked over ``num_steps``.
    """

    def batched_step(state, action):
        return env.step_batch(state, action, sync_axes)

    def one_step(state, step_key):
        action, extras = policy_fn(state.obs, step_key)
        next_state, info = batched_step(state, action)
        return next_state, Transition(state.obs, action, extras, info if record is None else record(info))

    return jax.lax.scan(one_step, env_state, jax.random.split(key, num_steps))
