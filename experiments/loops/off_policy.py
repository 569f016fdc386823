"""The two loops that drive off-policy agents (`OffPolicyAgent` records, agents/contract.py).

Both train every seed with ONE compiled program: the agent's pure functions
are vmapped over a leading seed axis. Random keys are derived statelessly as
fold_in(seed_key, step), so a resumed run draws exactly the keys an
uninterrupted run would.

* `HostLoop`  (dm_control, gymnasium): env instances step on the host in numpy,
  one per seed; per environment step there is one jitted `act` and one jitted
  `store + update` call. The replay buffer stays on the device.
* `DeviceLoop` (MJX / pure-JAX envs): a chunk of environment steps -- act, env
  step, store, update -- is one `lax.scan` inside `jit(vmap(...))`; the host
  only works between chunks.

Envs per seed. The agent's config says how many envs each seed steps together
(`agent.envs_per_seed(config)`, the `--num-envs` of SAC, TD3 and MR.Q; the
FastTD3 regime). The DeviceLoop steps a seed's N envs with `step_batch` (one
reset branch when any of them finished), `act` sees [N, obs_dim] per seed and
`store` receives N transitions, which the agent writes to N replay streams
(replay/streams.py). Steps count env steps per seed summed over its N envs, as
PPO counts them: a loop step advances N (the loop's `granularity`), so
`--total-steps`, `--eval-every` and `--log-every` round up to multiples of N,
and `update(state, key, step)` receives that env-step count. Logged episode
returns are the mean over the seed's envs of each one's last finished episode.
The HostLoop steps one env per seed (N > 1 is refused there: a host env would
step N simulators one after another, and its instance seeds are per position,
so a seed's runs would depend on --num-seeds). A multitask env gives each seed
one env of every task (envs/multitask.py); its agent counts loop steps.

Scale: the seed (lane) axis is sharded over every device (sharding.py: a 1-D
`jax.sharding.Mesh` of all local devices, or of all hosts' devices after
`jax.distributed.initialize()`): the agent states with their replay buffers,
the lanes' keys and, in the device loop, the env states and trackers (a seed's
N envs and N replay streams stay on its device). XLA partitions the vmapped
programs from these shardings, so each device trains its own seeds; the agents
are unchanged. The host loop's env instances and counters stay on the host
(with several processes, every process steps every seed's env, and each device
computes its own seeds' actions and updates).

`update(state, key, step)` receives the step count unbatched, so the agent's
schedule (e.g. MR.Q's encoder burst every 250 updates) branches for real under
vmap.

An agent may define `early_stop(state, obs, action) -> bool` (agents/least.py):
evaluated with the action on every training step, inside the same jitted call,
it ends the episode after that step as a truncation (the value bootstraps) and
the env resets. Evaluation episodes never stop early.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs as envs_lib
import replay
from experiments import memory
from experiments.loops.base import Loop
from experiments.loops.evaluation import Evaluation, LaneEvaluator
from experiments.loops.keys import ACT, ENV_RESET, SEED_AXIS, UPDATE, env_keys, step_key, step_keys
from experiments.loops.lanes import Lanes
from experiments.loops.sharding import to_host
from replay import streams


def early_stop(agent: agents.OffPolicyAgent, state, obs: jax.Array, action: jax.Array) -> jax.Array:
    """The agent's decision to end the episode after this step (False for agents without `early_stop`)."""
    return jnp.zeros((), bool) if agent.early_stop is None else agent.early_stop(state, obs, action)


def _single_task_error(agent, env_id: str, spec) -> ValueError:
    from experiments.loops.on_policy import LoopError

    multitask = [name for name in agents.names()
                 if isinstance(agents.get(name), agents.OffPolicyAgent) and agents.get(name).multitask]
    return LoopError(f"--agent {agent.name} trains on one task; {env_id} is a multitask env ({spec.num_tasks} "
                     f"tasks): use --agent {' or '.join(multitask)}, or one task's id (e.g. {spec.tasks[0].env_id})")


def episode_metrics(per_seed: dict, last_return: np.ndarray, episodes: np.ndarray, spec) -> None:
    """Episode metrics from each env's last finished return and episode count ([seeds, envs per seed]): the
    mean of the last returns of the seed's envs that finished one (NaN before any did), the episodes of all
    its envs, and for a multitask env ([seeds, T]) the last return per task."""
    for t, task in enumerate(spec.tasks):
        per_seed[f"episode_return/{task.env_id}"] = last_return[:, t]
    finished = np.isfinite(last_return)
    total = np.where(finished, last_return, 0.0).sum(axis=1)
    per_seed["episode_return"] = np.where(finished.any(axis=1), total / np.maximum(finished.sum(1), 1), np.nan)
    per_seed["episodes"] = episodes.sum(axis=1).astype(np.float32)


class _SeedLoop(Loop):
    """What both loops share: the env, the replay capacity, the seeds spread over devices, fresh agents."""

    def __init__(self, agent: agents.OffPolicyAgent, config: Any, env_id: str, num_seeds: int, seed: int,
                 replay_transitions: int, env, lanes: Lanes | None = None, devices: list | None = None):
        super().__init__(agent, config, env_id, num_seeds, seed, lanes)
        self.env = env
        self.spec = env.spec
        # N envs per seed (the config's --num-envs), each with its own replay stream of `capacity` slots.
        self.num_envs = self.agent.envs_per_seed(self.config)
        self.capacity = streams.capacity_for(replay_transitions, self.num_envs, self.spec.max_episode_steps)
        self.place_lanes(devices)

    def _init_agents(self, configs=None):
        return self.init_agents(self.spec, configs, capacity=self.capacity)

    def memory_estimate(self) -> dict:
        """Device bytes of the agents' states, replay buffers included (experiments/memory.py)."""
        return {"agent states with replay": memory.tree_bytes(jax.eval_shape(self._init_agents))}

    def memory_advice(self, budget: float) -> str:
        per_seed = sum(self.memory_estimate().values()) / self.num_seeds
        fits = memory.largest_fitting(budget, per_seed)
        return (f"{memory.gib(per_seed)} per seed with a replay of {self.num_envs} x {self.capacity} slots; "
                f"--num-seeds {fits} "
                "fits" + (" (or a smaller --buffer-size)" if fits else "; use a smaller --buffer-size"))


class HostLoop(_SeedLoop):
    """Off-policy training on `HostVecEnv`s with one env instance per seed."""

    def __init__(self, agent: agents.OffPolicyAgent, config: Any, env_id: str, num_seeds: int, seed: int,
                 replay_transitions: int, env_kwargs: dict | None = None, lanes: Lanes | None = None,
                 devices: list | None = None):
        num_envs = agents.record(agent).envs_per_seed(config)
        if num_envs > 1:
            from experiments.loops.on_policy import LoopError

            raise LoopError(f"--num-envs {num_envs}: several envs per seed step inside the device loop, on a JAX "
                            f"env (mjx:<PlaygroundName>, jax:PointMass); {env_id} steps on the host, one env per "
                            "seed: leave --num-envs at 1")
        self.env_kwargs = env_kwargs or {}
        # One instance tells the spec; the num_seeds instances are built by init(), after the memory check.
        probe = envs_lib.make(env_id, num_envs=1, seed=seed, **self.env_kwargs)
        probe.close()
        super().__init__(agent, config, env_id, num_seeds, seed, replay_transitions, probe, lanes, devices)
        self.env = None
        # A multitask env gives each seed one env of every task (envs/multitask.py): the agent then acts on,
        # and stores, [envs_per_seed, ...] per seed; with one env per seed, on unbatched rows.
        self.envs_per_seed = self.spec.num_tasks
        if self.spec.tasks and not agent.multitask:
            raise _single_task_error(agent, env_id, self.spec)
        agent = self.agent

        def act_in_training(state, obs, seed_key, step):
            action = agent.act(state, obs, step_key(seed_key, step, ACT), True)
            return action, early_stop(agent, state, obs, action)

        def store_and_update(state, transition, seed_key, step):
            return agent.update(agent.store(state, transition), step_key(seed_key, step, UPDATE), step)

        # `step` is unbatched (in_axes None): the agent's schedule branches on it for real. Everything else
        # has a lane axis, sharded over the devices; the host's observations are put there before each call.
        lane, replicated = self.placement.lanes, self.placement.replicated
        self._act_in_training = jax.jit(jax.vmap(act_in_training, in_axes=(0, 0, 0, None)),
                                        in_shardings=(lane, lane, lane, replicated), out_shardings=lane)
        self._train = jax.jit(jax.vmap(store_and_update, in_axes=(0, 0, 0, None)), donate_argnums=0,
                              in_shardings=(lane, lane, lane, replicated), out_shardings=lane)
        self.evaluator = LaneEvaluator.of(agent, self.config, env_id, self.spec, seed, env_kwargs=self.env_kwargs,
                                          placement=self.placement)

    # -- state ---------------------------------------------------------------

    def init(self, configs=None) -> dict:
        """Fresh agents for every seed and the first observations. `configs` (one per lane, the same static
        fields) starts the lanes with other hyperparameters on the same compiled programs."""
        agent_state = self._init_agents(configs)
        if self.env is None:
            self.env = envs_lib.make(self.env_id, num_envs=self.num_seeds, seed=self.seed, **self.env_kwargs)
        obs = self._per_seed(self.env.reset())
        envs = self._per_seed(np.zeros(self.num_seeds * self.envs_per_seed, np.float32))
        return {"agent": agent_state, "obs": obs, "episode_return": envs.copy(),
                "last_episode_return": np.full_like(envs, np.nan), "episodes": envs.astype(np.int64)}

    def _per_seed(self, rows: np.ndarray) -> np.ndarray:
        """The env's rows [seeds * envs_per_seed, ...] as [seeds, envs_per_seed, ...] (as they are for one env
        per seed)."""
        if self.envs_per_seed == 1:
            return rows
        return rows.reshape(self.num_seeds, self.envs_per_seed, *rows.shape[1:])

    def _rows(self, per_seed: np.ndarray) -> np.ndarray:
        """Inverse of `_per_seed`."""
        return per_seed if self.envs_per_seed == 1 else per_seed.reshape(-1, *per_seed.shape[2:])

    def host_state(self) -> bytes:
        """What lives outside the pytree: the simulator states of the env instances."""
        return self.env.get_state()

    def set_host_state(self, blob: bytes) -> None:
        self.env.set_state(blob)

    # -- training --------------------------------------------------------------

    def run(self, state: dict, start_step: int, num_steps: int) -> tuple[dict, dict]:
        """Take `num_steps` environment steps per seed after `start_step`; returns the new state and metrics."""
        agent_state, obs = self.placement.put(state["agent"]), state["obs"]
        episode_return, last_return = state["episode_return"], state["last_episode_return"]
        episodes = state["episodes"]
        metrics = None
        from_host = self.placement.from_host      # the host's rows, for their lanes' devices
        for step in range(start_step + 1, start_step + num_steps + 1):
            action, stop = self._act_in_training(agent_state, from_host(obs), self.seed_keys, step)
            # An agent's stop is per seed or per env; a per-seed one applies to all the seed's envs.
            action, stop = to_host((action, stop))
            shape = np.shape(action)[:-1]
            stop = np.broadcast_to(stop.reshape(stop.shape + (1,) * (len(shape) - stop.ndim)), shape)
            result = self.env.step(self._rows(action), self._rows(stop))
            reward, terminated, truncated, final_obs = (self._per_seed(x) for x in (
                result.reward, result.terminated, result.truncated, result.final_obs))
            transition = replay.Transition(obs, action, reward, final_obs, terminated, truncated)
            agent_state, metrics = self._train(agent_state, from_host(transition), self.seed_keys, step)
            done = terminated | truncated
            episode_return = episode_return + reward
            last_return = np.where(done, episode_return, last_return)
            episode_return = np.where(done, 0.0, episode_return).astype(np.float32)
            episodes = episodes + done
            obs = self._per_seed(result.obs)
            if self.on_progress is not None:
                self.on_progress(step)
        new_state = {"agent": agent_state, "obs": obs, "episode_return": episode_return,
                     "last_episode_return": last_return, "episodes": episodes}
        per_seed = to_host(metrics or {})
        if self.envs_per_seed == 1:
            per_seed["episode_return"] = last_return
            per_seed["episodes"] = episodes.astype(np.float32)
        else:
            episode_metrics(per_seed, last_return, episodes, self.spec)
        return new_state, per_seed

    def evaluate(self, state: dict, step: int, episodes: int) -> Evaluation:
        """Deterministic returns [num_seeds, episodes] on fresh env instances seeded from (seed, step)."""
        return self.evaluator(state["agent"], self.seed_keys, step, episodes)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


class DeviceLoop(_SeedLoop):
    """Off-policy training on a `JaxEnv`: env, replay and networks all inside one compiled chunk; each seed steps
    its N envs (or a multitask env's T tasks) together."""

    def __init__(self, agent: agents.OffPolicyAgent, config: Any, env_id: str, num_seeds: int, seed: int,
                 replay_transitions: int, env_kwargs: dict | None = None, lanes: Lanes | None = None,
                 devices: list | None = None):
        num_envs = agents.record(agent).envs_per_seed(config)
        # num_envs: a non-stationary schedule counts env steps per seed, summed over its envs.
        env = envs_lib.make(env_id, num_envs=num_envs, **(env_kwargs or {}))
        super().__init__(agent, config, env_id, num_seeds, seed, replay_transitions, env, lanes, devices)
        # A loop step is N env steps per seed; a multitask JaxEnv (envs/multitask.py) gives each seed one env of
        # every task, [T, ...] per seed, and its agent counts loop steps.
        self.granularity = self.num_envs
        self.envs_per_seed = self.num_envs * self.spec.num_tasks
        multitask = bool(self.spec.tasks)
        if multitask and not self.agent.multitask:
            raise _single_task_error(self.agent, env_id, self.spec)
        agent, rows = self.agent, self.envs_per_seed
        # With one env per seed the agent acts on and stores unbatched rows (as in the host loop).
        batched = rows > 1

        def chunk(agent_state, env_state, tracker, seed_key, steps):
            def body(carry, step):
                agent_state, env_state, tracker = carry
                obs = env_state.obs if batched else env_state.obs[0]
                action = agent.act(agent_state, obs, step_key(seed_key, step, ACT), True)
                # An agent's early stop is per seed or per env; a per-seed one applies to all the seed's envs.
                stops = jnp.broadcast_to(early_stop(agent, agent_state, obs, action), (rows,))
                # step_batch resets only on steps where some env of some seed finished (a real branch), where
                # vmap(step) would pay for a reset on every step.
                env_state, info = env.step_batch(env_state, action if batched else action[None], (SEED_AXIS,),
                                                 stops)
                each = info if batched else jax.tree.map(lambda x: x[0], info)
                transition = replay.Transition(obs, action, each.reward, each.final_obs, each.terminated,
                                               each.truncated)
                agent_state, metrics = agent.update(agent.store(agent_state, transition),
                                                    step_key(seed_key, step, UPDATE), step)
                done = info.terminated | info.truncated                                   # [rows]
                tracker = {
                    "last_episode_return": jnp.where(done, info.episode_return, tracker["last_episode_return"]),
                    "episodes": tracker["episodes"] + done,
                    "nan_resets": tracker["nan_resets"] + jnp.sum(info.nan_reset),
                }
                return (agent_state, env_state, tracker), metrics

            (agent_state, env_state, tracker), metrics = jax.lax.scan(body, (agent_state, env_state, tracker), steps)
            return agent_state, env_state, tracker, jax.tree.map(lambda m: m[-1], metrics)

        # Donate the agent state (it holds the replay buffer, the big allocation). Not the env state:
        # Playground states alias arrays (obs appears twice), which donation rejects. Every input and output
        # but the unbatched steps has a lane axis, sharded over the devices.
        lane, replicated = self.placement.lanes, self.placement.replicated
        self._chunk = jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, 0, None), axis_name=SEED_AXIS), donate_argnums=0,
                              in_shardings=(lane, lane, lane, lane, replicated), out_shardings=lane)

        self.evaluator = LaneEvaluator.of(agent, self.config, env_id, self.spec, seed, jax_env=env,
                                          placement=self.placement)

        def reset(keys):
            # Each seed's N envs ([seeds, N, ...]; a multitask env: one env slot of every task), reset from its
            # ENV_RESET key (env 0 with the key itself: keys.py `env_keys`).
            if multitask:
                return jax.vmap(lambda key: env.reset_batch(key, 1))(keys)
            return jax.vmap(lambda key: jax.vmap(env.reset)(env_keys(key, self.num_envs)))(keys)

        self._reset = jax.jit(reset, in_shardings=lane, out_shardings=lane)

    def memory_estimate(self) -> dict:
        env_state = jax.eval_shape(self._reset, step_keys(self.seed_keys, 0, ENV_RESET))
        return {**super().memory_estimate(), "env states": memory.tree_bytes(env_state)}

    def init(self, configs=None) -> dict:
        """Fresh agents and envs for every seed (`configs`: as HostLoop.init)."""
        agent_state = self._init_agents(configs)
        env_state = self._reset(step_keys(self.seed_keys, 0, ENV_RESET))
        envs = (self.num_seeds, self.envs_per_seed)
        # float32 given, not inferred: a weak-typed NaN would make the second chunk compile again (minutes on MJX).
        tracker = {"last_episode_return": np.full(envs, np.nan, np.float32),
                   "episodes": np.zeros(envs, np.int32),
                   "nan_resets": np.zeros(self.num_seeds, np.int32)}
        return {"agent": agent_state, "env": env_state, "tracker": self.placement.put(tracker)}

    def run(self, state: dict, start_step: int, num_steps: int) -> tuple[dict, dict]:
        """Train `num_steps` env steps per seed (a multiple of `granularity`, N) after `start_step`: loop steps
        that end at env steps start_step + N, start_step + 2N, ..."""
        if start_step % self.granularity or num_steps % self.granularity:
            from experiments.loops.on_policy import LoopError

            raise LoopError(f"steps must be whole loop steps of {self.granularity} env steps (one per env), got "
                            f"{start_step} + {num_steps}")
        steps = jnp.arange(start_step + self.granularity, start_step + num_steps + 1, self.granularity)
        agent_state, env_state, tracker = self.placement.put((state["agent"], state["env"], state["tracker"]))
        agent_state, env_state, tracker, metrics = self._chunk(agent_state, env_state, tracker, self.seed_keys,
                                                               steps)
        per_seed, seen = to_host((metrics, tracker))
        episode_metrics(per_seed, seen["last_episode_return"], seen["episodes"], self.spec)
        per_seed["nan_resets"] = seen["nan_resets"].astype(np.float32)
        return {"agent": agent_state, "env": env_state, "tracker": tracker}, per_seed

    def evaluate(self, state: dict, step: int, episodes: int) -> Evaluation:
        # The eval envs start at the training envs' own step count (env steps per seed / N: LaneEvaluator.of).
        return self.evaluator(state["agent"], self.seed_keys, step, episodes)
