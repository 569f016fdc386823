"""The agent registry: one record of pure functions per agent, looked up by name.

The contract an agent fulfils is agents/contract.py, in full: an agent file
ends with `AGENT = OffPolicyAgent(...)`, `OnPolicyAgent(...)` or
`OfflineAgent(...)`, whose type names the loop that drives it
(experiments/loops/: off_policy.py, on_policy.py, offline.py). The built-in agents
are imported when first asked for; `register(AGENT)` adds one from anywhere
(a notebook, a user's file) with no edit here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from agents.contract import Agent, ContractError, OfflineAgent, OffPolicyAgent, OnPolicyAgent  # noqa: F401

AGENTS = {
    "bc": "agents.bc",
    "least": "agents.least",
    "mrq": "agents.mrq",
    "mrq_multitask": "agents.mrq_multitask",
    "neubay": "agents.neubay",
    "ppo": "agents.ppo",
    "ravl": "agents.ravl",
    "gtr": "agents.gtr",
    "regrama": "agents.regrama",
    "sac": "agents.sac",
    "sac_sigreg": "agents.sigreg_off_policy:SAC",
    "mrq_sigreg": "agents.sigreg_off_policy:MRQ",
    "sigreg": "agents.sigreg",
    "td3": "agents.td3",
}
_REGISTERED: dict[str, Agent] = {}


class UnknownAgentError(ValueError):
    """An agent name that is not registered; the message lists the valid ones."""


def names() -> list[str]:
    return sorted({*AGENTS, *_REGISTERED})


def register(agent: Agent, replace: bool = False) -> Agent:
    """Add `agent` (an agents/contract.py record) to the registry under `agent.name`; returns it."""
    if not isinstance(agent, Agent):
        raise ContractError(f"register() takes an OffPolicyAgent, OnPolicyAgent or OfflineAgent record "
                            f"(agents/contract.py), got {type(agent).__name__}")
    if not replace and (agent.name in AGENTS or agent.name in _REGISTERED):
        raise ContractError(f"agent {agent.name!r} is already registered (pass replace=True to replace it)")
    _REGISTERED[agent.name] = agent
    return agent


def get(name: str) -> Agent:
    """The agent record registered as `name`."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in AGENTS:
        raise UnknownAgentError(f"unknown agent {name!r}; valid agents: {', '.join(names())}")
    module, _, attribute = AGENTS[name].partition(":")     # "module" (its AGENT) or "module:RECORD"
    found = importlib.import_module(module)
    return record(getattr(found, attribute) if attribute else found)


def record(agent: Agent | ModuleType) -> Agent:
    """`agent` itself, or the AGENT record of an agent module (so the loops accept either)."""
    if isinstance(agent, Agent):
        return agent
    found = getattr(agent, "AGENT", None)
    if not isinstance(found, Agent):
        raise ContractError(f"module {getattr(agent, '__name__', agent)!r} declares no AGENT record "
                            "(agents/contract.py)")
    return found
