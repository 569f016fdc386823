"""Evaluation, shared by every loop and by experiments/evaluate.py: episodes on the device (JAX envs) or on fresh
host env instances (dm_control, gymnasium), the result a loop's `evaluate` returns, and `LaneEvaluator`, the
compiled evaluation of a program's lanes that every loop builds once (and experiments/evaluate.py builds around
an exported policy, so that it reproduces a run's eval rows with the same programs and keys)."""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import envs as envs_lib
from experiments.loops.keys import ACT, EVAL, SEED_AXIS, step_key, step_keys
from experiments.loops.sharding import to_host


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
                       sync_axes: tuple[str, ...] = (), clock=0, explore: bool = False, record: int = 0):
    """Returns of `episodes` fresh episodes of a JaxEnv (one seed; vmap over seeds), deterministic unless
    `explore` (the agent's exploring policy, with a key folded from `key` per step).

    Every episode runs to its first end (termination or the time limit);
    later steps of an env that already finished are not counted. The eval envs
    start at `clock` (the training envs' step count), so that a non-stationary
    env is evaluated on the task the agent currently faces.

    `record` > 0 (a static count) also returns, for the first `record` episodes, what drawing them needs at every
    step: `(returns, (env.render_state(physics) [T, record, ...], running [T, record]))` (experiments/video.py).
    """
    if env.spec.tasks:      # a MultitaskJaxEnv: every episode on every task, [episodes * T] (e * T + t)
        env_states = env.reset_batch(key, episodes, clock)
        episodes *= env.spec.num_tasks
    else:
        env_states = jax.vmap(lambda k: env.reset(k, clock))(jax.random.split(key, episodes))

    def body(carry, t):
        env_states, returns, running = carry
        act_key = jax.random.fold_in(key, t) if explore else key
        action = agent.act(agent_state, env_states.obs, act_key, explore)
        recorded = None
        if record:
            drawn = jax.tree.map(lambda x: x[:record], env.render_state(env_states.physics))
            recorded = (drawn, running[:record])
        env_states, info = env.step_batch(env_states, action, sync_axes)
        returns = returns + jnp.where(running, info.reward, 0.0)
        running = running & ~(info.terminated | info.truncated)
        return (env_states, returns, running), recorded

    init = (env_states, jnp.zeros(episodes), jnp.ones(episodes, bool))
    # The step index is scanned only where a stochastic policy needs it: the deterministic program stays as it was.
    steps = jnp.arange(env.spec.max_episode_steps) if explore else None
    (_, returns, _), recorded = jax.lax.scan(body, init, steps, length=env.spec.max_episode_steps)
    return (returns, recorded) if record else returns


def evaluate_host(act, env_id: str, num_seeds: int, seed: int, step: int, episodes: int,
                  env_kwargs: dict | None = None, discount=1.0, lanes: Sequence[int] | None = None,
                  on_step: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns and discounted returns [num_seeds, episodes] of `act(obs, prev_reward, first) -> actions` (obs
    [num_seeds, episodes, d]; the previous step's reward and whether this is an episode's first step, both
    [num_seeds, episodes], for agents with memory) on fresh host env instances seeded from (seed, step);
    every episode runs to its first end. `discount`: one number, or one per seed ([num_seeds]).

    A multitask env runs every episode on every task: then [num_seeds, episodes * T] (column e * T + t is
    episode e of task t; `Evaluation.of` splits them).

    `lanes`: which seeds of the run (its lane indices, default 0 .. num_seeds - 1) the rows are; each gets the
    env instances it has in an evaluation of all the run's seeds, so a subset of seeds replays their episodes.
    `on_step(env, running)` is called before every step with the env (a HostVecEnv) and which of its instances
    still run their first episode (experiments/video.py draws them)."""
    eval_seed = 1_000_000 + 10_007 * seed + step
    kwargs = env_kwargs or {}
    if lanes is None or list(lanes) == list(range(num_seeds)):
        env = envs_lib.make(env_id, num_envs=num_seeds * episodes, seed=eval_seed, **kwargs)
    else:
        # Lane j's instances are env slots j * episodes ... (j + 1) * episodes - 1 of the whole evaluation.
        parts = [envs_lib.make(env_id, num_envs=episodes, seed=eval_seed + lane * episodes, **kwargs)
                 for lane in lanes]
        env = envs_lib.HostVecEnv(parts[0].spec, [instance for part in parts for instance in part.instances])
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
            if on_step is not None:
                on_step(env, running)
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


def envs_per_lane(agent, config) -> int:
    """The envs each lane's loop steps: an off-policy run's N envs per seed, an on-policy run's num_envs, an
    offline run's 1. A lane's env steps count over them, so a non-stationary schedule and the eval clock divide
    by this."""
    if agent.LOOP == "off_policy":
        return agent.envs_per_seed(config)
    return config.num_envs if agent.LOOP == "on_policy" else 1


class LaneEvaluator:
    """The evaluation of a program's lanes, compiled once: episodes of `agent` (a record of agents/contract.py)
    on `env_id`, on the device where `jax_env` is given (`evaluate_on_device`, keyed by the lanes' EVAL keys of
    the step, the eval envs starting at `clock(step)`), else on fresh host env instances (`evaluate_host`, acting
    with the lanes' ACT keys of the step; agents with a history act through `initial_carry` / `act_step`).

    Every loop evaluates through one (`per_task`: split a multitask env's returns per task; `discounted`: also
    the discounted returns, on host envs; `placement`: the lanes' devices, sharding.py), and
    experiments/evaluate.py builds the same one around an exported policy: a run's eval rows come back from the
    same programs and keys."""

    def __init__(self, agent, env_id: str, spec, seed: int, *, jax_env=None, clock: Callable[[int], int] | None = None,
                 env_kwargs: dict | None = None, per_task: bool = True, discounted: bool = False, placement=None):
        self.agent, self.env_id, self.spec, self.seed = agent, env_id, spec, seed
        self.env, self.env_kwargs = jax_env, env_kwargs or {}
        self.clock = clock or (lambda step: 0)
        self.per_task, self.discounted = per_task, discounted
        self.recurrent = agent.recurrent
        # With a placement, lane arrays in and out are sharded over its devices and the rest replicated;
        # without one (the on-policy loop's replicated agents, an exported policy), jit places them.
        lane = replicated = None
        if placement is not None:
            lane, replicated = placement.lanes, placement.replicated
        shard = lambda **kw: kw if placement is not None else {}
        if jax_env is not None:
            env = jax_env

            def evaluate(agent_state, key, episodes, clock, explore, record):
                return evaluate_on_device(agent, env, agent_state, key, episodes, (SEED_AXIS,), clock, explore, record)

            self._evaluate = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None, None, None, None), axis_name=SEED_AXIS),
                                     static_argnums=(2, 4, 5),
                                     **shard(in_shardings=(lane, lane, replicated), out_shardings=lane))
            return

        def act(state, obs, seed_key, step, t, explore):
            key = step_key(seed_key, step, ACT)
            return agent.act(state, obs, jax.random.fold_in(key, t) if explore else key, explore)

        self._act = jax.jit(jax.vmap(act, in_axes=(0, 0, 0, None, None, None)), static_argnums=5,
                            **shard(in_shardings=(lane, lane, lane, replicated, replicated), out_shardings=lane))
        if self.recurrent:
            def act_step(state, carry, obs, reward, first, seed_key, step, t, explore):
                key = step_key(seed_key, step, ACT)
                return agent.act_step(state, carry, obs, reward, first,
                                      jax.random.fold_in(key, t) if explore else key, explore)

            self._initial_carry = jax.jit(jax.vmap(agent.initial_carry, in_axes=(0, None)), static_argnums=1,
                                          **shard(in_shardings=lane, out_shardings=lane))
            self._act_step = jax.jit(jax.vmap(act_step, in_axes=(0, 0, 0, 0, 0, 0, None, None, None)),
                                     static_argnums=8,
                                     **shard(in_shardings=(lane,) * 6 + (replicated, replicated),
                                             out_shardings=lane))
        self._from_host = placement.from_host if placement is not None else (lambda tree: tree)

    @classmethod
    def of(cls, agent, config, env_id: str, spec, seed: int, *, jax_env=None, env_kwargs: dict | None = None,
           placement=None) -> "LaneEvaluator":
        """The evaluator of `agent`'s loop (its record's LOOP) with `config`. Where the JAX eval envs start: the
        off-policy device loop's N envs per seed (`agent.envs_per_seed`) and the on-policy loop's `num_envs` have
        taken step // N steps each (steps count env steps per seed, summed over its envs); the offline loop's envs
        never stepped (0). The off-policy loops split a multitask env's returns per task; the offline loop also
        gives the discounted returns."""
        loop = agent.LOOP
        num_envs = envs_per_lane(agent, config)
        clock = (lambda step: step // num_envs) if loop in ("off_policy", "on_policy") else None
        return cls(agent, env_id, spec, seed, jax_env=jax_env, clock=clock, env_kwargs=env_kwargs,
                   per_task=loop == "off_policy", discounted=loop == "offline", placement=placement)

    def __call__(self, agent_state, seed_keys: jax.Array, step: int, episodes: int, *,
                 lanes: Sequence[int] | None = None, discount=1.0, explore: bool = False, recorder=None) -> Evaluation:
        """Returns [lanes, episodes] of the lanes whose stacked states and root keys are given (`lanes`: their
        indices in the run, for the host envs' seeds; default all). `discount`: per lane, for the discounted
        returns. `explore`: the agents' exploring policy instead of the deterministic one. `recorder`
        (experiments/video.py) draws the first `recorder.episodes` episodes of every lane."""
        if self.env is not None:
            keys = step_keys(seed_keys, step, EVAL)
            clock = jnp.int32(self.clock(step))
            record = recorder.episodes if recorder is not None else 0
            out = to_host(self._evaluate(agent_state, keys, episodes, clock, explore, record))
            if record:
                out, (drawn, running) = out
                recorder.device_episodes(self.env, drawn, running)
            return Evaluation.of(out, self.spec) if self.per_task else Evaluation(out)

        num_lanes = len(seed_keys)
        from_host, t = self._from_host, [0]
        if self.recurrent:
            carry = self._initial_carry(agent_state, (episodes,))

            def act(obs, prev_reward, first):         # the carry goes from step to step
                nonlocal carry
                action, carry = self._act_step(agent_state, carry, *from_host((obs, prev_reward, first)), seed_keys,
                                               step, t[0], explore)
                t[0] += 1
                return to_host(action)
        else:
            def act(obs, prev_reward, first):
                action = self._act(agent_state, from_host(obs), seed_keys, step, t[0], explore)
                t[0] += 1
                return to_host(action)

        on_step = recorder.host_step if recorder is not None else None
        returns, discounted = evaluate_host(act, self.env_id, num_lanes, self.seed, step, episodes, self.env_kwargs,
                                            discount, lanes, on_step)
        discounted = discounted if self.discounted else None
        return Evaluation.of(returns, self.spec, discounted) if self.per_task else Evaluation(returns, discounted)
