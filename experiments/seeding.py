"""Stateless per-seed random keys and on-device evaluation, shared by every loop.

Keys are fold_in(fold_in(seed_key, step), tag): a resumed run draws exactly
the keys an uninterrupted one would, and each purpose (tag) has its own stream.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

INIT, ACT, UPDATE, ENV_RESET, EVAL, DIAGNOSE = range(6)   # fold_in tags: one independent key stream per purpose

SEED_AXIS = "seeds"   # the name of the vmapped seed axis (lets envs reduce "any env done" over seeds)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """One root key per seed: PRNGKey(seed + i)."""
    return jax.vmap(jax.random.PRNGKey)(seed + jnp.arange(num_seeds))


def step_key(seed_key: jax.Array, step, tag: int) -> jax.Array:
    """The key of one seed for step `step` (env step or update) and purpose `tag`."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, step), tag)


def step_keys(keys: jax.Array, step, tag: int) -> jax.Array:
    """`step_key` for every seed: [num_seeds] keys."""
    return jax.vmap(step_key, in_axes=(0, None, None))(keys, step, tag)


def evaluate_on_device(agent, env, agent_state, key: jax.Array, episodes: int,
                       sync_axes: tuple[str, ...] = (), clock=0) -> jax.Array:
    """Deterministic returns of `episodes` fresh episodes of a JaxEnv (one seed; vmap over seeds).

    Every episode runs to its first end (termination or the time limit);
    later steps of an env that already finished are not counted. The eval envs
    start at `clock` (the training envs' step count), so that a non-stationary
    env is evaluated on the task the agent currently faces.
    """
    env_states = jax.vmap(lambda k: env.reset(k, clock))(jax.random.split(key, episodes))

    def body(carry, _):
        env_states, returns, running = carry
        action = agent.act(agent_state, env_states.obs, key, False)
        env_states, info = env.step_batch(env_states, action, sync_axes)
        returns = returns + jnp.where(running, info.reward, 0.0)
        running = running & ~(info.terminated | info.truncated)
        return (env_states, returns, running), None

    init = (env_states, jnp.zeros(episodes), jnp.ones(episodes, bool))
    (_, returns, _), _ = jax.lax.scan(body, init, None, length=env.spec.max_episode_steps)
    return returns


class Diagnostics:
    """The agent's optional `diagnostics(state, key) -> {name: scalar}` (e.g. dormant ratio, srank), jitted and
    run for every seed; the loops call it at every evaluation. Agents without one give {}.

    The seeds go one after another (`lax.map`), not vmapped: the SVDs and eigendecompositions of the
    diagnostics would otherwise become batched LAPACK calls, which on XLA:CPU split their batch over the
    intra-op thread pool and block a pool thread each -- two at once deadlock a 2-thread pool (the hang of
    envs/mjx_cholesky.py, seen here at a sweep's second evaluation). Diagnostics run once per evaluation,
    so the sequential seeds cost little."""

    def __init__(self, agent):
        fn = agent.diagnostics
        one_by_one = lambda states, keys: jax.lax.map(lambda pair: fn(*pair), (states, keys))
        self._fn = None if fn is None else jax.jit(one_by_one)

    def __call__(self, agent_state, keys: jax.Array, step: int) -> dict:
        if self._fn is None:
            return {}
        import numpy as np

        values = self._fn(agent_state, step_keys(keys, step, DIAGNOSE))
        return {name: np.asarray(v, np.float64) for name, v in values.items()}
