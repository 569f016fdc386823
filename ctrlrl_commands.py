"""The console scripts that `pip install -e .` puts on the PATH (pyproject.toml, [project.scripts]):

    ctrlrl-run       experiments/run.py        train an agent
    ctrlrl-sweep     experiments/sweep.py      sweep hyperparameters x seeds
    ctrlrl-evaluate  experiments/evaluate.py   evaluate a run's policy export (videos with --video)
    ctrlrl-plot      experiments/plot.py       learning curves and aggregate statistics
    ctrlrl-collect   experiments/collect.py    collect an offline dataset
    ctrlrl-bench     experiments/bench.py      throughput and start-up benchmarks
    ctrlrl-compare   experiments/compare.py    PPO variants across task switches
    ctrlrl-claims    experiments/claims.py     the numbers behind a claims.md row, from a compare.py directory
    ctrlrl-arm-claims  experiments/arm_claims.py  a claims row from separate run.py directories, one per arm

Each takes the same flags as its script. This module has a name of its own (ctrlrl's packages have generic ones:
agents, envs, networks, replay, experiments), so that a command can tell, before anything else runs, that one of
those names is another project's package in this environment: one `error:` line and exit code 2
(experiments/__init__.py checks the others when it is imported).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# command name -> (module, function): the function takes no argument (the flags are sys.argv) and returns the exit
# code.
COMMANDS = {
    "run": ("experiments.run", "main"),
    "sweep": ("experiments.sweep", "main"),
    "evaluate": ("experiments.evaluate", "main"),
    "plot": ("experiments.plot", "main"),
    "collect": ("experiments.collect", "main"),
    "bench": ("experiments.bench", "command"),
    "compare": ("experiments.compare", "command"),
    "claims": ("experiments.claims", "command"),
    "arm_claims": ("experiments.arm_claims", "command"),
}


def launch(name: str) -> int:
    """Run command `name` of COMMANDS, after checking that ctrlrl's packages are the ones imported."""
    try:
        experiments = importlib.import_module("experiments")     # its import checks agents, envs, networks, replay
    except ImportError as error:
        if type(error).__name__ != "ForeignPackageError":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    if Path(getattr(experiments, "__file__", None) or "").resolve().parent != ROOT / "experiments":
        print(f"error: ctrlrl's import name 'experiments' is taken by another project's package "
              f"({getattr(experiments, '__file__', None) or repr(experiments)}; ctrlrl's is in {ROOT}): install ctrlrl "
              "into its own virtual environment (README, Set up), or uninstall the other project from this one",
              file=sys.stderr)
        return 2
    module, function = COMMANDS[name]
    return getattr(importlib.import_module(module), function)()


def run() -> int:
    return launch("run")


def sweep() -> int:
    return launch("sweep")


def evaluate() -> int:
    return launch("evaluate")


def plot() -> int:
    return launch("plot")


def collect() -> int:
    return launch("collect")


def bench() -> int:
    return launch("bench")


def compare() -> int:
    return launch("compare")


def claims() -> int:
    return launch("claims")


def arm_claims() -> int:
    return launch("arm_claims")
