"""The device loop for on-policy agents (`OnPolicyAgent` records, agents/contract.py: PPO, GTR, SIGReg).

One update -- the agent's `train_step`: rollout in `num_envs` JAX envs,
advantages, epochs x minibatches, all `lax.scan`s -- is one compiled program,
`jit(vmap(..., axis_name="seeds"))`. A chunk of k updates dispatches it k
times without waiting for the device (scanning k updates instead would compile
a new program for every chunk length, ~20 s each for a Playground env on a
CPU, for no gain when an update takes seconds). The host only evaluates, logs,
checkpoints and draws the progress bar between chunks.

Scale: the env axis of the env state is sharded over every device of a 1-D
`jax.sharding.Mesh` (sharding.py; all local devices, after
`jax.distributed.initialize()` all devices of all hosts); parameters and
optimizer states are replicated. (The off-policy and offline loops shard their
lane axis instead: they have one env per seed, or none.)
XLA (GSPMD) partitions the program from these input shardings: the rollout
runs where its envs live, gradients are all-reduced. Update `i` of seed `s`
draws the key fold_in(fold_in(PRNGKey(seed + s), i), UPDATE): resuming, or
changing the number of devices, replays the same keys.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import agents
import envs as envs_lib
from experiments import memory
from experiments.loops.base import Loop
from experiments.loops.evaluation import Evaluation, LaneEvaluator
from experiments.loops.keys import ENV_RESET, INIT, SEED_AXIS, UPDATE, step_key
from experiments.loops.lanes import Lanes
from experiments.loops.sharding import all_devices, device_mesh


class LoopError(ValueError):
    """A configuration the loop cannot run (message names the constraint and a valid value)."""


class OnPolicyLoop(Loop):
    """Chunks of `agent.train_step` on a JaxEnv, every seed in one program, envs sharded over devices."""

    def __init__(self, agent: agents.OnPolicyAgent, config: Any, env_id: str, num_seeds: int, seed: int,
                 env_kwargs: dict | None = None, devices: list | None = None, lanes: Lanes | None = None):
        agent = agents.record(agent)
        if not envs_lib.is_jax_env(env_id):
            raise LoopError(f"{agent.__name__.split('.')[-1]} trains on JAX envs (mjx:<PlaygroundName>, "
                            f"jax:PointMass, or an envs.PureJaxEnv you register), not {env_id!r}: its rollout runs "
                            "on the device")
        super().__init__(agent, config, env_id, num_seeds, seed, lanes)
        agent, config = self.agent, self.config
        self.env = envs_lib.make(env_id, num_envs=config.num_envs, **(env_kwargs or {}))
        self.spec = self.env.spec
        self.layout = agent.layout(config)
        self.granularity = self.layout.steps_per_update     # train() advances in whole updates
        self.capacity = 0                                    # no replay buffer

        devices = all_devices(devices)
        if config.num_envs % len(devices):
            nearby = max(len(devices), round(config.num_envs / len(devices)) * len(devices))
            raise LoopError(f"--num-envs ({config.num_envs}) must be a multiple of the number of devices "
                            f"({len(devices)}) to shard the envs evenly; e.g. --num-envs {nearby}")
        self.devices = devices
        self.mesh = device_mesh(devices, "env")
        self.replicated = NamedSharding(self.mesh, P())
        self.env_sharding = NamedSharding(self.mesh, P(None, "env"))    # [seeds, envs, ...]
        env = self.env

        def one_update(agent_state, env_state, seed_key, update_index):
            return agent.train_step(agent_state, env, env_state, step_key(seed_key, update_index, UPDATE),
                                    (SEED_AXIS,))

        self._update = jax.jit(
            jax.vmap(one_update, in_axes=(0, 0, 0, None), axis_name=SEED_AXIS),
            in_shardings=(self.replicated, self.env_sharding, self.replicated, self.replicated),
            out_shardings=(self.replicated, self.env_sharding, self.replicated),
            donate_argnums=(0, 1))

        self.evaluator = LaneEvaluator.of(agent, config, env_id, self.spec, seed, jax_env=env)

        def init_state(keys, configs):
            agent_state = jax.vmap(lambda k, c: agent.init(step_key(k, 0, INIT), self.spec, c))(keys, configs)
            env_keys = jax.vmap(lambda k: jax.random.split(step_key(k, 0, ENV_RESET), config.num_envs))(keys)
            env_state = jax.vmap(jax.vmap(env.reset))(env_keys)
            return agent_state, env_state

        self._init = jax.jit(init_state, out_shardings=(self.replicated, self.env_sharding))
        self._memory = None

    # -- memory --------------------------------------------------------------

    def memory_estimate(self) -> dict:
        """Device bytes the run allocates (experiments/memory.py): agent states, env states (input and output
        of an update exist at once), one update's rollout batch, and the activations of one minibatch's
        forward and backward pass (every seed at once). Traced once (a second or two), then kept.

        The activations are estimated from the parameters: each Dense kernel [in, out] of `params` produces
        `out` values per sample, kept (with its pre-activation and its gradient) for the backward pass,
        for batch_size x unroll_length samples per minibatch."""
        if self._memory is None:
            agent_state, env_state = jax.eval_shape(self._init, self.seed_keys, self.lanes.stacked)
            batch = jax.eval_shape(jax.vmap(lambda a, e, k: self.agent.collect(a, self.env, e, k)[1],
                                            in_axes=(0, 0, None)), agent_state, env_state, jax.random.PRNGKey(0))
            kernels = [x for x in jax.tree.leaves(agent_state.params) if x.ndim >= 3]     # [seeds, in, out]
            per_sample = sum(int(x.shape[-1]) for x in kernels)
            samples = self.num_seeds * self.config.batch_size * self.config.unroll_length
            self._memory = {"agent states": memory.tree_bytes(agent_state),
                            "env states": 2 * memory.tree_bytes(env_state), "rollout": memory.tree_bytes(batch),
                            "minibatch activations": 3 * 4 * per_sample * samples}
        return dict(self._memory)

    def memory_advice(self, budget: float) -> str:
        """A power-of-two --num-envs that fits `budget` bytes."""
        parts = self.memory_estimate()
        per_env = (parts["env states"] + parts["rollout"]) / (self.num_seeds * self.config.num_envs)
        fixed = parts["agent states"] + parts["minibatch activations"]
        if fixed > budget:
            return "one minibatch's activations alone do not fit: shorten --unroll-length or --batch-size"
        fits = memory.largest_fitting(budget, per_env * self.num_seeds, fixed)
        largest = 2 ** int(np.log2(fits)) if fits >= 1 else 0
        return (f"--num-envs {largest} fits ({per_env / 1024:.1f} KiB per env; fewer --num-seeds or a shorter "
                "--unroll-length also help)" if largest else
                f"not even one env fits ({per_env / 1024:.1f} KiB per env): shorten --unroll-length")

    # -- state ---------------------------------------------------------------

    def init(self, configs=None) -> dict:
        """Fresh agents and envs for every seed (`configs`: one per lane, the same static fields: other
        hyperparameters on the same compiled programs)."""
        lanes = self.lanes if configs is None else self.lanes.with_configs(configs)
        agent_state, env_state = self._init(self.seed_keys, lanes.stacked)
        tracker = {"last_episode_return": jnp.full(self.num_seeds, jnp.nan), "episodes": jnp.zeros(self.num_seeds),
                   "nan_resets": jnp.zeros(self.num_seeds)}
        return {"agent": agent_state, "env": env_state, "tracker": tracker}

    # -- training ------------------------------------------------------------

    def run(self, state: dict, start_step: int, num_steps: int) -> tuple[dict, dict]:
        """Train `num_steps` env steps per seed (a multiple of `granularity`) after `start_step`.

        One compiled program runs one update; it is dispatched once per update
        without waiting for the device (metrics stay on it until the end), so
        chunks of any length reuse the same program instead of compiling a
        scan per length.
        """
        if start_step % self.granularity or num_steps % self.granularity:
            raise LoopError(f"steps must be whole updates of {self.granularity} env steps, got "
                            f"{start_step} + {num_steps}")
        agent_state = jax.device_put(state["agent"], self.replicated)
        env_state = jax.device_put(state["env"], self.env_sharding)
        all_metrics = []
        first = start_step // self.granularity
        for update_index in range(first, first + num_steps // self.granularity):
            agent_state, env_state, metrics = self._update(agent_state, env_state, self.seed_keys,
                                                           jnp.int32(update_index))
            all_metrics.append(metrics)
            if self.on_progress is not None and len(all_metrics) > 1:
                # Wait for the update before this one: the one just dispatched keeps the device busy meanwhile.
                jax.block_until_ready(all_metrics[-2])
                self.on_progress(update_index * self.granularity)
        # leaves [num_seeds, updates]
        metrics = jax.device_get(jax.tree.map(lambda *m: jnp.stack(m, axis=1), *all_metrics))
        tracker = jax.device_get(state["tracker"])
        episodes = metrics.pop("episodes").sum(axis=1)
        return_sum = metrics.pop("episode_return_sum").sum(axis=1)
        nan_resets = metrics.pop("nan_resets").sum(axis=1)
        tracker = {"last_episode_return": np.where(episodes > 0, return_sum / np.maximum(episodes, 1),
                                                   tracker["last_episode_return"]),
                   "episodes": tracker["episodes"] + episodes,
                   "nan_resets": tracker["nan_resets"] + nan_resets}
        per_seed = {name: np.asarray(values).mean(axis=1) for name, values in metrics.items()}
        per_seed["episode_return"] = tracker["last_episode_return"]
        per_seed["episodes"] = tracker["episodes"]
        per_seed["nan_resets"] = tracker["nan_resets"]
        return {"agent": agent_state, "env": env_state, "tracker": tracker}, per_seed

    def evaluate(self, state: dict, step: int, episodes: int) -> Evaluation:
        """Deterministic returns [num_seeds, episodes] on fresh envs keyed by (seed, step)."""
        return self.evaluator(state["agent"], self.seed_keys, step, episodes)
