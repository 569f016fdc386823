"""The loops that train agents, behind one protocol (base.py), driven in chunks by one driver (driver.py).

    off_policy.py  HostLoop (dm_control, gymnasium: envs step on the host) and DeviceLoop (JAX envs: a chunk of
                   act, env step, store, update is one scan) for OffPolicyAgent records, lanes sharded over devices
    on_policy.py   OnPolicyLoop: whole updates on a JAX env, the env axis sharded over devices (OnPolicyAgent)
    offline.py     OfflineLoop: gradient steps on a fixed world built from a dataset (OfflineAgent), lanes sharded
                   over devices, the world replicated
    lanes.py       what one program trains side by side: seeds, or a sweep's (point, seed) pairs
    sharding.py    the 1-D device mesh, the lanes' placement on it (and the rule when the devices do not divide
                   the lanes), host copies of sharded results
    keys.py        the stateless per-lane keys every loop draws
    evaluation.py  evaluation on the device or on host env instances, its result, and LaneEvaluator: the compiled
                   evaluation every loop builds (and experiments/evaluate.py around a policy export)

`make(agent, config, env_id, num_seeds, seed, ...)` builds the loop of an agent record's family.
"""

from __future__ import annotations

from experiments.loops.base import Loop
from experiments.loops.evaluation import Evaluation
from experiments.loops.lanes import Lanes

__all__ = ["Evaluation", "Lanes", "Loop", "make"]


def make(agent, config, env_id: str, num_seeds: int, seed: int, *, replay_transitions: int = 0,
         dataset: str | None = None, world_dir=None, lanes: Lanes | None = None, env_kwargs: dict | None = None):
    """The loop for `agent`'s record type on `env_id`. Off-policy: `DeviceLoop` for JAX envs, `HostLoop`
    otherwise, with a replay of `replay_transitions`; offline: the `dataset` file, the world saved under
    `world_dir`."""
    import agents
    import envs as envs_lib

    agent = agents.record(agent)
    if isinstance(agent, agents.OfflineAgent):
        from experiments.loops.offline import OfflineLoop

        return OfflineLoop(agent, config, env_id, num_seeds, seed, dataset, world_dir, lanes=lanes)
    if isinstance(agent, agents.OnPolicyAgent):
        from experiments.loops.on_policy import OnPolicyLoop

        return OnPolicyLoop(agent, config, env_id, num_seeds, seed, env_kwargs, lanes=lanes)
    from experiments.loops.off_policy import DeviceLoop, HostLoop

    loop_cls = DeviceLoop if envs_lib.is_jax_env(env_id) else HostLoop
    return loop_cls(agent, config, env_id, num_seeds, seed, replay_transitions, env_kwargs, lanes=lanes)
