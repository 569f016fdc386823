"""What every loop is: the protocol the driver (experiments/loops/driver.py), train.py, sweep.py, bench.py and
memory.py rely on, with the defaults most loops share.

A loop trains the lanes of one compiled program (experiments/loops/lanes.py: a run's seeds, or a sweep's
(point, seed) pairs) of one agent record (agents/contract.py) on one env:

    state = loop.init()                                   # fresh agents (and envs) for every lane
    state, metrics = loop.run(state, step, num_steps)     # train; metrics {name: [lanes]}
    evaluation = loop.evaluate(state, step, episodes)     # Evaluation(returns [lanes, episodes], discounted)
    loop.diagnostics(state, step)                         # the agent's diagnostics {name: [lanes]}
    loop.memory_estimate(), loop.memory_advice(budget)    # experiments/memory.py, before anything runs
    loop.host_state(), loop.set_host_state(blob)          # what a checkpoint needs beyond the state pytree
    loop.close()

`granularity`: the steps a loop advances in (on-policy: one whole update); `run` is called with multiples of
it. `devices`: the devices its arrays live on (None: the local devices), whose memory `memory.check` compares
with the estimate.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import agents
from experiments.loops.evaluation import Evaluation
from experiments.loops.keys import DIAGNOSE, INIT, step_keys
from experiments.loops.lanes import Lanes, lanes_for


class Loop:
    """The protocol, with its defaults: no host state, nothing to close, steps of 1, the local devices."""

    granularity: int = 1
    devices: list | None = None

    def __init__(self, agent: agents.Agent, config: Any, env_id: str, num_seeds: int, seed: int,
                 lanes: Lanes | None = None):
        self.lanes = lanes_for(config, seed, num_seeds, lanes)
        self.agent, self.config = agents.record(agent), self.lanes.config
        self.env_id, self.num_seeds, self.seed = env_id, num_seeds, seed
        self.seed_keys = self.lanes.keys
        self._diagnostics = Diagnostics(self.agent)

    def init_agents(self, init_one, configs=None):
        """`init_one(key, config)` for every lane (with its INIT key); `configs` (one per lane, sharing the
        static fields) starts the lanes with other hyperparameters on the same compiled programs."""
        lanes = self.lanes if configs is None else self.lanes.with_configs(configs)
        return lanes.init(init_one, step_keys(self.seed_keys, 0, INIT))

    # -- the protocol ---------------------------------------------------------

    def init(self, configs=None) -> dict:
        raise NotImplementedError

    def run(self, state: dict, start_step: int, num_steps: int) -> tuple[dict, dict]:
        raise NotImplementedError

    def evaluate(self, state: dict, step: int, episodes: int) -> Evaluation:
        raise NotImplementedError

    def memory_estimate(self) -> dict:
        raise NotImplementedError

    def memory_advice(self, budget: float) -> str:
        raise NotImplementedError

    def diagnostics(self, state: dict, step: int) -> dict:
        """The agent's diagnostics per lane ({name: [lanes]}), {} if it has none."""
        return self._diagnostics(state["agent"], self.seed_keys, step)

    def host_state(self) -> bytes:
        """What lives outside the state pytree (host simulators); nothing for loops whose envs are on device."""
        return b""

    def set_host_state(self, blob: bytes) -> None:
        pass

    def close(self) -> None:
        pass


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
        values = self._fn(agent_state, step_keys(keys, step, DIAGNOSE))
        return {name: np.asarray(v, np.float64) for name, v in values.items()}
