"""The loop that drives offline agents (`OfflineAgent` records, agents/contract.py): RAVL, NEUBAY, BC.

The dataset (replay/datasets.py, made by experiments/collect.py) is loaded and
validated when the loop is built, before anything is written. `init()` then
calls the agent's `prepare(dataset, spec, config, world_dir, key)`, which
returns the WORLD the agent learns from: a pytree shared by every seed (the
dataset on the device, a trained dynamics model, ...). A world that costs
time to build (a dynamics ensemble) is saved under the run directory's
`world/` and reloaded by `--resume`.

Training is `update(state, world, key, step)`, vmapped over seeds with the
world broadcast (in_axes None) and scanned over a chunk of gradient steps in
one compiled call; `--total-steps` counts gradient steps. Evaluation runs
the deterministic policy in the real environment; on host envs it also
returns the discounted returns (each lane with its agent's discount), which
offline agents compare with their value estimates (`diagnostics`; the
driver logs them as eval/discounted_return).

Scale: the seed (lane) axis of the agent states (model-rollout buffers
included) and keys is sharded over every device (sharding.py: a 1-D
`jax.sharding.Mesh` of all local devices, or of all hosts' devices after
`jax.distributed.initialize()`); the world is replicated, one copy per device
(the memory check counts each copy). XLA partitions the update from these
shardings: each device trains its own seeds on its own copy of the world.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs as envs_lib
from experiments import memory
from experiments.loops.base import Loop
from experiments.loops.evaluation import Evaluation, LaneEvaluator
from experiments.loops.keys import UPDATE, step_key
from experiments.loops.lanes import Lanes
from experiments.loops.sharding import to_host


class OfflineLoop(Loop):
    """Scanned chunks of `agent.update` on the world every lane shares, evaluated in the real env."""

    def __init__(self, agent: agents.OfflineAgent, config: Any, env_id: str, num_seeds: int, seed: int,
                 dataset_path: str, world_dir: Path, lanes: Lanes | None = None, devices: list | None = None):
        from replay import datasets

        super().__init__(agent, config, env_id, num_seeds, seed, lanes)
        self.place_lanes(devices)
        agent, config = self.agent, self.config
        self.is_jax = envs_lib.is_jax_env(env_id)
        probe = envs_lib.make(env_id) if self.is_jax else envs_lib.make(env_id, num_envs=1, seed=seed)
        self.spec = probe.spec
        self.env = probe if self.is_jax else None
        if not self.is_jax:
            probe.close()
        # DatasetError names the file and the problem (missing, corrupt, another env, other sizes, NaN, ...).
        self.dataset = datasets.load(dataset_path, env_id=env_id, spec=self.spec)
        self.capacity = self.dataset.num_transitions
        self.world_dir = Path(world_dir)
        if agent.check is not None:
            agent.check(self.dataset, self.spec, config)     # e.g. a saved dynamics model of other shapes
        self.world = None

        def chunk(agent_state, world, seed_key, steps):
            def body(state, step):
                return agent.update(state, world, step_key(seed_key, step, UPDATE), step)

            agent_state, metrics = jax.lax.scan(body, agent_state, steps)
            return agent_state, jax.tree.map(lambda m: m[-1], metrics)

        # The lane axis of states, keys, observations, carries and outputs is sharded; the world and the
        # unbatched steps are replicated.
        lane, replicated = self.placement.lanes, self.placement.replicated
        self._chunk = jax.jit(jax.vmap(chunk, in_axes=(0, None, 0, None)), donate_argnums=0,
                              in_shardings=(lane, replicated, lane, replicated), out_shardings=lane)
        # Evaluation in the real env (experiments/loops/evaluation.py): on host envs with the discounted returns too,
        # and through a carry for agents that act from a history (NEUBAY: initial_carry + act_step).
        self.evaluator = LaneEvaluator.of(agent, config, env_id, self.spec, seed,
                                          jax_env=self.env if self.is_jax else None, placement=self.placement)

    def _init_agents(self, configs=None):
        return self.init_agents(self.spec, configs, world=self.world)

    def init(self, configs=None) -> dict:
        """Build (or reload) the world, check that the agents fit beside it, then fresh agents for every seed
        (`configs`: one per lane, the same static fields: other hyperparameters on the same programs)."""
        if self.world is None:
            world = self.agent.prepare(self.dataset, self.spec, self.config, self.world_dir,
                                       jax.random.PRNGKey(self.seed))
            self.world = world
            memory.check(self)
            self.world = self.placement.replicate(world)     # only once it is known to fit on every device
        return {"agent": self._init_agents(configs)}

    def memory_estimate(self) -> dict:
        """Device bytes (experiments/memory.py) over all the lanes' devices: the dataset before the world is built;
        then the world (dataset arrays, dynamics model), one copy per device, and the agents' states
        (model-rollout buffers included), spread over the devices."""
        if self.world is None:
            return {"dataset": memory.tree_bytes(self.dataset)}
        return {"world": memory.tree_bytes(self.world) * len(self.devices),
                "agent states": memory.tree_bytes(jax.eval_shape(self._init_agents))}

    def memory_advice(self, budget: float) -> str:
        parts = self.memory_estimate()
        if "agent states" not in parts:
            return "the dataset alone does not fit"
        per_seed = parts["agent states"] / self.num_seeds
        fits = memory.largest_fitting(budget, per_seed, parts["world"])
        return (f"{memory.gib(per_seed)} per seed; --num-seeds {fits} fits" if fits else
                f"{memory.gib(per_seed)} per seed; not one seed fits beside the world: shrink the agent's buffers")

    def run(self, state: dict, start_step: int, num_steps: int) -> tuple[dict, dict]:
        steps = jnp.arange(start_step + 1, start_step + num_steps + 1)
        agent_state, metrics = self._chunk(self.placement.put(state["agent"]), self.world, self.seed_keys, steps)
        return {"agent": agent_state}, to_host(metrics)

    def evaluate(self, state: dict, step: int, episodes: int) -> Evaluation:
        """Deterministic returns [num_seeds, episodes] in the real environment (and, on host envs, the
        discounted returns)."""
        # Each lane's own discount (a sweep may trace it), read from its state's config.
        discount = np.asarray(to_host(getattr(state["agent"].config, "discount", np.ones(self.num_seeds))),
                              np.float64)
        return self.evaluator(state["agent"], self.seed_keys, step, episodes, discount=discount)
