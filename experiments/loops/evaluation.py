"""Evaluation, shared by every loop: deterministic episodes on the device (JAX envs) or on fresh host env
instances (dm_control, gymnasium), and the result a loop's `evaluate` returns."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import envs as envs_lib


class Evaluation(NamedTuple):
    """One evaluation of every lane: `returns` [lanes, episodes]; `discounted` [lanes, episodes] (each reward
    weighted by the lane's discount to the power of its step) where the loop computes it, else None.

    A multitask env (envs/multitask.py) also gives `per_task` [lanes, episodes, T], the raw returns of each
    task; `returns` is then their mean over the tasks and `tasks` names them."""

    returns: np.ndarray
    discounted: np.ndarray | None = None
    per_task: np.ndarray | None = None
    tasks: tuple[str, ...] = ()

    @classmethod
    def of(cls, returns: np.ndarray, spec, discounted: np.ndarray | None = None) -> "Evaluation":
        """The evaluation of `returns` [lanes, episodes * T] from `evaluate_host` on an env with `spec`
        (column e * T + t: episode e of task t)."""
        if spec.num_tasks == 1:
            return cls(returns, discounted)
        lanes = returns.shape[0]
        per_task = returns.reshape(lanes, -1, spec.num_tasks)
        mean = lambda x: None if x is None else x.reshape(lanes, -1, spec.num_tasks).mean(axis=2)
        return cls(per_task.mean(axis=2), mean(discounted), per_task, tuple(t.env_id for t in spec.tasks))


def evaluate_on_device(agent, env, agent_state, key: jax.Array, episodes: int,
                       sync_axes: tuple[str, ...] = (), clock=0) -> jax.Array:
    """Deterministic returns of `episodes` fresh episodes of a JaxEnv (one seed; vmap over seeds).

    Every episode runs to its first end (termination or the time limit);
    later steps of an env that already finished are not counted. The eval envs
    start at `clock` (the training envs' step count), so that a non-stationary
    env is evaluated on the task the agent currently faces.
    """
    if env.spec.tasks:      # a MultitaskJaxEnv: every episode on every task, [episodes * T] (e * T + t)
        env_states = env.reset_batch(key, episodes, clock)
        episodes *= env.spec.num_tasks
    else:
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


def evaluate_host(act, env_id: str, num_seeds: int, seed: int, step: int, episodes: int,
                  env_kwargs: dict | None = None, discount=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Returns and discounted returns [num_seeds, episodes] of `act(obs, prev_reward, first) -> actions` (obs
    [num_seeds, episodes, d]; the previous step's reward and whether this is an episode's first step, both
    [num_seeds, episodes], for agents with memory) on fresh host env instances seeded from (seed, step);
    every episode runs to its first end. `discount`: one number, or one per seed ([num_seeds]).

    A multitask env runs every episode on every task: then [num_seeds, episodes * T] (column e * T + t is
    episode e of task t; `Evaluation.of` splits them)."""
    eval_seed = 1_000_000 + 10_007 * seed + step
    env = envs_lib.make(env_id, num_envs=num_seeds * episodes, seed=eval_seed, **(env_kwargs or {}))
    rows = env.num_envs // num_seeds       # episodes, times the tasks of a multitask env
    try:
        obs = env.reset()
        reward = np.zeros((num_seeds, rows), np.float32)
        first = np.ones((num_seeds, rows), bool)
        returns = np.zeros(num_seeds * rows)
        discounted = np.zeros(num_seeds * rows)
        weight = np.ones(num_seeds * rows)
        discount = np.repeat(np.broadcast_to(np.asarray(discount, np.float64), (num_seeds,)), rows)
        running = np.ones(num_seeds * rows, bool)
        while running.any():
            action = act(obs.reshape(num_seeds, rows, -1), reward, first)
            result = env.step(np.asarray(action).reshape(num_seeds * rows, -1))
            returns += np.where(running, result.reward, 0.0)
            discounted += np.where(running, weight * result.reward, 0.0)
            weight *= discount
            running &= ~(result.terminated | result.truncated)
            reward = result.reward.reshape(num_seeds, rows).astype(np.float32)
            first = (result.terminated | result.truncated).reshape(num_seeds, rows)
            obs = result.obs
    finally:
        env.close()
    return returns.reshape(num_seeds, rows), discounted.reshape(num_seeds, rows)
