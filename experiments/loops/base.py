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
with the estimate. `on_progress`: None, or a function of the step reached that a loop calls inside `run` where
it can tell without slowing down (the on-policy loop after each update, the host loop after each env step), so
that a progress bar moves within long chunks (experiments/progress.py).

Lane-sharded loops (off-policy, offline) call `place_lanes(devices)` in their constructor (sharding.py): the
lanes' keys, the states `init_agents` makes, and everything their programs return then have their lane axis
spread over `devices`; `diagnostics` runs on each device's own lanes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import agents
from experiments.loops.evaluation import Evaluation
from experiments.loops.keys import DIAGNOSE, INIT, step_keys
from experiments.loops.lanes import Lanes, lanes_for, unaliased
from experiments.loops.sharding import LANE_AXIS, LanePlacement, to_host


class Loop:
    """The protocol, with its defaults: no host state, nothing to close, steps of 1, the local devices."""

    granularity: int = 1
    devices: list | None = None
    on_progress: Callable[[int], None] | None = None
    placement: LanePlacement | None = None     # where the lanes live, for loops that shard them
    env = None              # the env the loop steps (a JaxEnv or HostVecEnv), where it has one to show

    def __init__(self, agent: agents.Agent, config: Any, env_id: str, num_seeds: int, seed: int,
                 lanes: Lanes | None = None):
        self.lanes = lanes_for(config, seed, num_seeds, lanes)
        self.agent, self.config = agents.record(agent), self.lanes.config
        self.env_id, self.num_seeds, self.seed = env_id, num_seeds, seed
        self.seed_keys = self.lanes.keys
        self._diagnostics = Diagnostics(self.agent)

    def place_lanes(self, devices=None) -> None:
        """Spread the lanes over `devices` (default: all, sharding.py): their keys now, their states from
        `init_agents` on, and the diagnostics on each device's own lanes."""
        self.placement = LanePlacement(len(self.lanes), devices)
        self.devices = self.placement.devices
        self.seed_keys = self.placement.put(self.seed_keys)
        self._diagnostics = Diagnostics(self.agent, self.placement)

    def init_agents(self, spec, configs=None, capacity: int | None = None, world: Any = None):
        """Fresh agents for every lane, `agent.init(key, spec, config, capacity)` (off-policy) or `agent.init(key,
        spec, config, world)` (offline) with the lane's INIT key and config, on the lanes' devices (`place_lanes`
        first). `configs` (one per lane, sharing the static fields) starts the lanes with other hyperparameters
        on the same compiled programs."""
        lanes = self.lanes if configs is None else self.lanes.with_configs(configs)
        program = _init_program(self.agent.init, spec, capacity, self.placement.lanes, self.placement.replicated)
        keys = step_keys(self.seed_keys, 0, INIT)
        return unaliased(program(keys, self.placement.put(lanes.stacked), world))

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


@functools.lru_cache(maxsize=64)
def _init_program(agent_init, spec, capacity: int | None, lanes: NamedSharding, replicated: NamedSharding):
    """The vmapped `agent_init` as ONE jitted program whose output is born sharded over the lanes' devices (a
    replay buffer never sits whole on one device first). The world is an argument, replicated to every device,
    not a constant compiled into the program. Kept per (agent, env, capacity, devices): sweeps and tests build
    many loops, and an init compiles for seconds where eager ops were cached across loops."""
    def init_lane(key, config, world):
        return agent_init(key, spec, config, capacity if world is None else world)

    return jax.jit(jax.vmap(init_lane, in_axes=(0, 0, None)), in_shardings=(lanes, lanes, replicated),
                   out_shardings=lanes)


class Diagnostics:
    """The agent's optional `diagnostics(state, key) -> {name: scalar}` (e.g. dormant ratio, srank), jitted and
    run for every seed; the loops call it at every evaluation. Agents without one give {}.

    The seeds go one after another (`lax.map`), not vmapped: the SVDs and eigendecompositions of the
    diagnostics would otherwise become batched LAPACK calls, which on XLA:CPU split their batch over the
    intra-op thread pool and block a pool thread each -- two at once deadlock a 2-thread pool (the hang of
    envs/mjx_cholesky.py, seen here at a sweep's second evaluation). Diagnostics run once per evaluation,
    so the sequential seeds cost little.

    With the lanes sharded (`placement`), each device maps over its own lanes (`shard_map`): a sequential map
    over a sharded axis would otherwise gather every lane's state, replay buffers included, onto every
    device."""

    def __init__(self, agent, placement: LanePlacement | None = None):
        fn = agent.diagnostics
        one_by_one = lambda states, keys: jax.lax.map(lambda pair: fn(*pair), (states, keys))
        if fn is not None and placement is not None:
            lanes = P(LANE_AXIS)
            one_by_one = jax.shard_map(one_by_one, mesh=placement.mesh, in_specs=(lanes, lanes), out_specs=lanes)
        self._fn = None if fn is None else jax.jit(one_by_one)

    def __call__(self, agent_state, keys: jax.Array, step: int) -> dict:
        if self._fn is None:
            return {}
        values = to_host(self._fn(agent_state, step_keys(keys, step, DIAGNOSE)))
        return {name: np.asarray(v, np.float64) for name, v in values.items()}
