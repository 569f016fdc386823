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
# # Extend an agent: a new auxiliary loss, trained side by side with the original
#
# An agent is a module of pure functions. To try an idea you import them, change one piece, and hand the
# result to the same training loop. Here: PPO plus SIGReg (isotropic Gaussian regularization,
# `networks/regularizers.py`) on the value network's last hidden layer -- a variant that exists in no
# agent file. `ppo.update` takes an `auxiliary_loss`; the variant's coefficient is a new config field.
#
# Side by side, vmapped: the coefficient is a traced hyperparameter (a float field of a `@hyperparameters`
# config is a pytree leaf, `agents/config.py`; `experiments/loops/lanes.py` stacks one config per lane), so the
# original (coefficient 0) and the variant (0.5), 2 seeds each, are four lanes of ONE compiled program.

# %%
import dataclasses
import os
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "agents").is_dir())
sys.path.insert(0, str(ROOT))
TINY = os.environ.get("CTRLRL_NOTEBOOK_TINY") == "1"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import ppo  # noqa: E402
from agents.config import hyperparameters  # noqa: E402
from experiments.loops.lanes import Lanes  # noqa: E402
from experiments.loops.on_policy import OnPolicyLoop  # noqa: E402
from networks.regularizers import sigreg  # noqa: E402

# %% [markdown]
# The variant: a config with one more field, and a `train_step` that passes the extra loss to PPO's update.

# %%
@hyperparameters
class VariantConfig(ppo.Config):
    aux_coef: float = 0.0
    """Weight of SIGReg on the value network's last hidden pre-activation."""


def value_features(state, params, obs):
    """The value MLP's last hidden pre-activation (the MLP sows it; see networks/mlp.py)."""
    network = ppo.value_network(state.config)
    _, features = ppo.mlp_probe(network, params.value, obs.reshape(-1, obs.shape[-1]))
    return features


def train_step(state, env, env_state, key, sync_axes=()):
    collect_key, update_key = jax.random.split(key)
    env_state, batch, stats = ppo.collect(state, env, env_state, collect_key, sync_axes)

    def auxiliary(params, obs, k):
        statistic = sigreg(value_features(state, params, obs), k)
        return state.config.aux_coef * statistic, {"aux/sigreg": statistic}

    state, metrics = ppo.update(state, batch, update_key, auxiliary_loss=auxiliary)
    return state, env_state, {**metrics, **stats}


# The agent record (agents/contract.py): PPO's, with the new config and train step. `agents.register(variant)`
# would also make it `--agent ppo_sigreg_value` for run.py and sweep.py.
variant = dataclasses.replace(ppo.AGENT, name="ppo_sigreg_value", Config=VariantConfig, train_step=train_step)

# %% [markdown]
# Four lanes: (coefficient, seed) in {0, 0.5} x {0, 1}. Lane (c, s) uses seed s's keys, so the coefficient-0
# lanes are exactly PPO's runs with those seeds.

# %%
config = VariantConfig(**{**ppo.PRESETS["cpu"], "num_envs": 64 if TINY else 256, "batch_size": 16 if TINY else 64,
                          "num_epochs": 2 if TINY else 8, "value_hidden": (32, 32) if TINY else (128, 128)})
coefs, seeds = [0.0, 0.5], [0, 1]
lanes = [(c, s) for c in coefs for s in seeds]
loop = OnPolicyLoop(variant, config, "jax:PointMass", len(lanes), 0,
                    lanes=Lanes.of_sweep([dataclasses.replace(config, aux_coef=c) for c in coefs], seeds))
state, step, curve = loop.init(), 0, []
for _ in range(2 if TINY else 6):
    state, metrics = loop.run(state, step, (1 if TINY else 10) * loop.granularity)
    step += (1 if TINY else 10) * loop.granularity
    curve.append((step, loop.evaluate(state, step, 4).returns.mean(axis=1), metrics["aux/sigreg"]))
for step, returns, statistic in curve:
    print(step, "returns", np.round(returns, 1), "SIGReg statistic", np.round(statistic, 4))

# %% [markdown]
# The representation's effective rank per lane (PPO's diagnostics, logged by `run.py` at every evaluation).

# %%
diagnostics = loop.diagnostics(state, step)
for (c, s), rank in zip(lanes, diagnostics["value/srank"]):
    print(f"coef {c}, seed {s}: value srank {rank:.0f}")
