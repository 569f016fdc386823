"""Train an agent: `python experiments/run.py --agent mrq --env dmc`.

Every hyperparameter of the chosen agent is a flag of the same command;
`python experiments/run.py --agent mrq --help` lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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


def _saved_flags(run_dir: str) -> dict | None:
    """The flags of the run saved in `run_dir`, so that `--resume` needs no other flag."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        return {"run": dict(saved["run"]), "agent_config": dict(saved["agent_config"])}
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path} is corrupt ({error}); cannot resume this run") from None


def parse(argv: list[str]):
    """(RunArgs, agent Config) from the command line.

    The agent is read first to pick its flags. With `--resume`, the saved run's
    flags are the defaults, so only what should change (e.g. `--total-steps`)
    needs to be given.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default=None)
    pre.add_argument("--run-dir", default=None)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--preset", default=None)
    pre.add_argument("--distributed", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.distributed:
        # Before anything touches a JAX backend; the cluster is detected from the environment
        # (SLURM, Cloud TPU, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
        import jax

        jax.distributed.initialize()
    saved = _saved_flags(known.run_dir) if known.resume and known.run_dir else None
    agent_name = known.agent or (saved["run"]["agent"] if saved else RunArgs.agent)
    agent = agents.get(agent_name)
    # Agents may set their own run defaults (PPO: 60M steps) and named presets of their flags.
    run_defaults = RunArgs(agent=agent_name, **getattr(agent, "RUN_DEFAULTS", {}))
    presets = getattr(agent, "PRESETS", {})
    preset = known.preset
    if preset is None and hasattr(agent, "default_preset") and saved is None:
        preset = agent.default_preset()
    if preset is not None and preset not in presets:
        valid = ", ".join(sorted(presets)) or "none for this agent"
        raise RunError(f"unknown --preset {preset!r} for {agent_name}; valid: {valid}")
    run_defaults = dataclasses.replace(run_defaults, preset=preset)
    config_defaults = agent.Config(**presets.get(preset, {}))
    if saved is not None and saved["run"].get("agent") == agent_name:
        fields = {f.name for f in dataclasses.fields(agent.Config)}
        run_defaults = dataclasses.replace(RunArgs(**saved["run"]), resume=False, overwrite=False)
        config_defaults = agent.Config(**{k: v for k, v in saved["agent_config"].items() if k in fields})
    cli_type = dataclasses.make_dataclass("Args", [
        ("run", Annotated[RunArgs, tyro.conf.OmitArgPrefixes], dataclasses.field(default=run_defaults)),
        ("agent_config", Annotated[agent.Config, tyro.conf.OmitArgPrefixes],
         dataclasses.field(default=config_defaults)),
    ], frozen=True)
    presets_help = f" Presets (--preset): {', '.join(sorted(presets))}." if presets else ""
    parsed = tyro.cli(cli_type, args=argv, description=f"Train {agent_name} ({agent.__name__}).{presets_help}")
    if parsed.run.preset is not None and saved is None:
        print(f"preset: {parsed.run.preset} (flags given on the command line override it)", flush=True)
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
