"""Train an agent: `python experiments/run.py --agent mrq --env dmc`.

Every hyperparameter of the chosen agent is a flag of the same command;
`python experiments/run.py --agent mrq --help` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Annotated

if __package__ in (None, ""):          # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

import agents
from envs import UnknownEnvError
from experiments.checkpoint import CheckpointError
from experiments.train import DivergenceError, RunArgs, RunError, train


def parse(argv: list[str]):
    """(RunArgs, agent Config) from the command line; the agent is read first to pick its flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default=RunArgs.agent)
    known, _ = pre.parse_known_args(argv)
    agent = agents.get(known.agent)
    cli_type = dataclasses.make_dataclass("Args", [
        ("run", Annotated[RunArgs, tyro.conf.OmitArgPrefixes], dataclasses.field(default_factory=RunArgs)),
        ("agent_config", Annotated[agent.Config, tyro.conf.OmitArgPrefixes],
         dataclasses.field(default_factory=agent.Config)),
    ], frozen=True)
    parsed = tyro.cli(cli_type, args=argv, description=f"Train {known.agent} ({agent.__name__}).")
    return parsed.run, parsed.agent_config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_args, config = parse(argv)
        run_dir = train(run_args, config)
    except (RunError, UnknownEnvError, agents.UnknownAgentError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DivergenceError as error:
        print(f"error: training diverged: {error}; the last good checkpoint is kept", file=sys.stderr)
        return 1
    print(f"run finished: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
