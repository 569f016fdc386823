# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: train an agent for a minute, then plot it
#
# Every agent trains through the same function that `experiments/run.py` calls: `train(RunArgs, Config)`.
# Here PPO learns the toy `jax:PointMass` task (drive a point to the origin) with 3 seeds vmapped in one
# program; the run directory then holds `config.json`, `eval.csv`, `train.csv`, TensorBoard events and
# checkpoints, exactly as from the command line.
#
# (CI runs this notebook with `CTRLRL_NOTEBOOK_TINY=1`, which shrinks the budget to seconds.)

# %%
import os
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "agents").is_dir())
sys.path.insert(0, str(ROOT))
TINY = os.environ.get("CTRLRL_NOTEBOOK_TINY") == "1"

from agents import ppo  # noqa: E402
from experiments.train import RunArgs, train  # noqa: E402

# %% [markdown]
# PPO's `cpu` preset (the flags `run.py` uses on a CPU), with fewer envs for a one-minute run.

# %%
config = ppo.Config(**{**ppo.PRESETS["cpu"], "num_envs": 64 if TINY else 256, "batch_size": 16 if TINY else 64,
                       "num_epochs": 2 if TINY else 8, "value_hidden": (32, 32) if TINY else (128, 128)})
run_args = RunArgs(agent="ppo", env="jax:PointMass", num_seeds=3, total_steps=4_000 if TINY else 600_000,
                   eval_every=2_000 if TINY else 100_000, log_every=2_000 if TINY else 100_000, eval_episodes=4,
                   run_dir=str(ROOT / "runs" / "notebooks" / "quickstart"), overwrite=True, progress=False)
run_dir = train(run_args, config)
run_dir

# %% [markdown]
# The evaluation returns, one row per seed and evaluation, and the learning curve with a 95% bootstrap
# confidence interval over the seeds (`experiments/plot.py`, also a command-line tool).

# %%
print((run_dir / "eval.csv").read_text().splitlines()[:4])

# %%
from experiments.plot import plot_runs  # noqa: E402

ax = plot_runs(run_dir)
ax.set_title("PPO on jax:PointMass, 3 seeds")
