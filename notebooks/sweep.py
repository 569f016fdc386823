# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A small sweep: learning rate x seeds in one program, then its analysis
#
# `experiments/sweep.py` is a command-line tool; its pieces are functions too. A learning rate is traced
# (the grid's points x seeds are lanes of one vmapped program); a width or a batch size would be static
# (one program per value). The result is an ordinary directory: `eval.csv` with the swept values as
# columns and `summary.csv` with bootstrap confidence intervals over seeds.

# %%
import csv
import os
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "agents").is_dir())
sys.path.insert(0, str(ROOT))
TINY = os.environ.get("CTRLRL_NOTEBOOK_TINY") == "1"

from agents import ppo  # noqa: E402
from experiments import sweep  # noqa: E402
from experiments.plot import load_run, plot_curves, run_curves  # noqa: E402
from experiments.train import RunArgs  # noqa: E402

# %%
config = ppo.Config(**{**ppo.PRESETS["cpu"], "num_envs": 64 if TINY else 256, "batch_size": 16 if TINY else 64,
                       "num_epochs": 2 if TINY else 8, "value_hidden": (32, 32) if TINY else (128, 128)})
run_args = RunArgs(agent="ppo", env="jax:PointMass", num_seeds=2 if TINY else 4,
                   total_steps=2_000 if TINY else 400_000, eval_every=1_000 if TINY else 50_000, eval_episodes=4,
                   overwrite=True)   # running the notebook again replaces its earlier sweep
grid = {"learning_rate": [1e-4, 1e-3, 3e-3]}
traced, static = sweep.split_fields(grid, config)
print("traced:", traced, "static:", static)
run_dir = ROOT / "runs" / "notebooks" / "sweep"
table = sweep.sweep(ppo, config, run_args, grid, traced, static, run_dir)

# %% [markdown]
# Final return and area under the curve per learning rate: mean and 95% bootstrap CI over seeds.

# %%
with open(run_dir / "summary.csv") as f:
    for row in csv.DictReader(f):
        print(f"lr {float(row['learning_rate']):g}: final {float(row['final_mean']):.1f} "
              f"[{float(row['final_ci_low']):.1f}, {float(row['final_ci_high']):.1f}], "
              f"AUC {float(row['auc_mean']):.1f}")

# %%
curves = run_curves(load_run(run_dir), group_by=["learning_rate"])
ax = plot_curves(curves)
ax.set_title("PPO on jax:PointMass: learning-rate sweep")
