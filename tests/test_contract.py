"""The agent contract (agents/contract.py): every registered agent is a record of its loop's type; a record missing
a required function is refused when it is built, naming it; `register` adds an agent from outside agents/."""

import dataclasses
from pathlib import Path

import pytest

import agents
from agents import ppo, sac
from agents.contract import ContractError, OfflineAgent, OffPolicyAgent, OnPolicyAgent


def test_every_registered_agent_is_a_record_of_its_loop():
    kinds = {"off_policy": OffPolicyAgent, "on_policy": OnPolicyAgent, "offline": OfflineAgent}
    for name in agents.names():
        agent = agents.get(name)
        assert isinstance(agent, kinds[agent.LOOP]) and agent.name == name


@pytest.mark.parametrize("kind, given, missing", [
    (OffPolicyAgent, dict(init=sac.init, act=sac.act, update=sac.update), "store"),
    (OnPolicyAgent, dict(init=ppo.init, act=ppo.act, train_step=ppo.train_step, layout=ppo.layout), "collect"),
    (OfflineAgent, dict(init=sac.init, act=sac.act, update=sac.update), "prepare"),
])
def test_a_record_missing_a_required_function_is_refused(kind, given, missing):
    with pytest.raises(ContractError, match=f"missing required function\\(s\\) {missing}"):
        kind(name="mine", Config=sac.Config, **given)


def test_a_config_that_is_not_hyperparameters_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Plain:
        lr: float = 1e-3

    with pytest.raises(ContractError, match="@hyperparameters"):
        dataclasses.replace(sac.AGENT, Config=Plain)


def test_register_adds_an_agent_and_refuses_a_taken_name():
    mine = dataclasses.replace(sac.AGENT, name="sac_copy_for_test")
    assert agents.register(mine, replace=True) is mine and agents.get("sac_copy_for_test") is mine
    assert "sac_copy_for_test" in agents.names()
    with pytest.raises(ContractError, match="already registered"):
        agents.register(dataclasses.replace(sac.AGENT))


def test_no_probes_and_no_hparams_module():
    root = Path(__file__).resolve().parent.parent
    assert not (root / "experiments" / "hparams.py").exists()
    paths = [*(root / "experiments" / "loops").glob("*.py"), root / "experiments" / "train.py",
             root / "experiments" / "run.py", root / "experiments" / "sweep.py", root / "experiments" / "bench.py"]
    for name in paths:
        text = name.read_text()
        assert not any(probe in text for probe in ("hasattr(agent", "getattr(agent", "hasattr(loop", "getattr(loop")), name
