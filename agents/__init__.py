"""The agent registry: one module per agent, looked up by name.

Every agent module follows the contract of DESIGN.md: a frozen `Config`
(with `validate()`), `init(key, spec, config, ...)`, `act(state, obs, key,
explore)` and `update(...)`, all pure and vmappable over seeds. `LOOP` names
the training loop in `experiments/` that drives it:

* "off_policy": `store(state, transition)` then `update(state, key, step)`
  after every environment step (host envs) or inside a scanned device chunk
  (JAX envs).
* "offline": `prepare(dataset, spec, config, world_dir, key)` builds the world
  (dataset, dynamics model) once; `update(state, world, key, step)` is scanned
  in chunks of gradient steps (experiments/offline.py); `--dataset` is required.
* "on_policy": `train_step(state, env, env_state, key, sync_axes)` -- a whole
  rollout and update on a JAX env -- scanned in chunks on the device; the agent
  also exposes `layout(config)` with `steps_per_update`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

AGENTS = {
    "bc": "agents.bc",
    "least": "agents.least",
    "mrq": "agents.mrq",
    "neubay": "agents.neubay",
    "ppo": "agents.ppo",
    "ravl": "agents.ravl",
    "gtr": "agents.gtr",
    "regrama": "agents.regrama",
    "sac": "agents.sac",
    "sigreg": "agents.sigreg",
    "td3": "agents.td3",
}


class UnknownAgentError(ValueError):
    """An agent name that is not registered; the message lists the valid ones."""


def get(name: str) -> ModuleType:
    """The agent module registered as `name`."""
    if name not in AGENTS:
        raise UnknownAgentError(f"unknown agent {name!r}; valid agents: {', '.join(sorted(AGENTS))}")
    return importlib.import_module(AGENTS[name])
