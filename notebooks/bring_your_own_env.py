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
# # Bring your own environment
#
# Three ways to train the agents here on an env of yours, none of which edits the project:
#
# 1. **Any gymnasium id with Box spaces** is `gym:<id>` already: `gym:Pendulum-v1`, or your own after
#    `gymnasium.register(...)`.
# 2. **A gymnasium env object**: `envs.register("my", factory)` makes `my:<name>` ids; the factory returns the
#    env (with a `TimeLimit`). It runs on the host, one instance per seed, like dm_control: off-policy agents.
# 3. **A pure-JAX env**: subclass `envs.PureJaxEnv` and write `spec`, `reset` and `step` for one env and one
#    frame; the base class adds action repeat, the time limit, auto-reset, batching. It runs on the device,
#    inside the training program: off-policy agents (the device loop) and PPO, which trains on JAX envs only.
#
# A registered id is valid everywhere an id is: `envs.make`, `train`, `run.py --env`, sweeps, evaluation,
# checkpoints. From the command line, `--env-module your_module` imports your registering code first (see the
# end). (CI runs this notebook with `CTRLRL_NOTEBOOK_TINY=1`, which shrinks the budgets to seconds.)

# %%
import os
import sys
import tempfile
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "agents").is_dir())
sys.path.insert(0, str(ROOT))
TINY = os.environ.get("CTRLRL_NOTEBOOK_TINY") == "1"

import gymnasium  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from agents import ppo, sac  # noqa: E402
from experiments.train import RunArgs, train  # noqa: E402

scratch = Path(tempfile.mkdtemp(prefix="byo_env_"))

# %% [markdown]
# ## 1. A gymnasium id
#
# Observations are flattened; the agents act in [-1, 1], scaled to the action space's bounds (which must be
# finite). Discrete or Dict spaces are refused in one line that names the space.

# %%
pendulum = envs.make("gym:Pendulum-v1", num_envs=2, seed=0)
print(pendulum.spec)
try:
    envs.make("gym:CartPole-v1")
except envs.UnsupportedEnvError as error:
    print("refused:", error)

# %% [markdown]
# ## 2. A gymnasium env of your own
#
# Lift a mass to height 1 against gravity with a force in [0, 2]. The factory of the family `mygym` gets the
# part of the id after the colon and the id's `?key=value` options as keyword arguments (numbers arrive as
# numbers).

# %%
class Lift(gymnasium.Env):
    def __init__(self, gravity=1.0):
        self.gravity = gravity
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gymnasium.spaces.Box(0.0, 2.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.height, self.speed = self.np_random.uniform(0.0, 2.0), 0.0
        return np.array([self.height, self.speed]), {}

    def step(self, action):
        self.speed += 0.05 * (float(action[0]) - self.gravity)
        self.height += 0.05 * self.speed
        return np.array([self.height, self.speed]), -abs(self.height - 1.0), False, False, {}


def make_mygym(name, episode_length=100, gravity=1.0):
    if name != "Lift":
        raise envs.UnknownEnvError(f"mygym:{name}: the only mygym env is mygym:Lift")
    return gymnasium.wrappers.TimeLimit(Lift(gravity), max_episode_steps=episode_length)


envs.register("mygym", make_mygym, replace=True)
print(envs.make("mygym:Lift?gravity=0.5", num_envs=2).spec)

# %% [markdown]
# SAC on it, 2 seeds in one vmapped program, exactly as `run.py --agent sac --env mygym:Lift` would train it.
# Its checkpoints hold the env too (its plain-data attributes and random generator), so `--resume` continues it
# exactly; an env holding something else (a simulator handle) warns at its first checkpoint and cannot be resumed.

# %%
steps = 300 if TINY else 6_000
width = (16, 16) if TINY else (64, 64)
run_dir = train(RunArgs(agent="sac", env="mygym:Lift", num_seeds=2, total_steps=steps, eval_every=steps // 2,
                        log_every=steps // 2, eval_episodes=2, run_dir=str(scratch / "sac"), progress=False),
                sac.Config(learning_starts=100 if TINY else 1_000, batch_size=16 if TINY else 128,
                           critic_hidden=width, actor_hidden=width))
print((run_dir / "eval.csv").read_text())

# %% [markdown]
# ## 3. A pure-JAX env of your own
#
# The same task in JAX: `reset(key) -> (state, obs)` and `step(state, action) -> (state, obs, reward,
# terminated)` for one env and one frame; the state is any pytree whose shapes `step` keeps. `envs.make` checks
# the shapes against `spec` once, abstractly, so a mistake is one line rather than an error deep in a trace.
# Registering the class under one id calls it with the id's options.

# %%
class Hover(envs.PureJaxEnv):
    def __init__(self, episode_length=100):
        self.spec = envs.EnvSpec("myjax:Hover", obs_dim=2, action_dim=1, max_episode_steps=episode_length,
                                 action_repeat=1, can_terminate=False)

    def reset(self, key):
        state = (jax.random.uniform(key, (1,), minval=0.0, maxval=2.0), jnp.zeros(1))
        return state, jnp.concatenate(state)

    def step(self, state, action):
        height, speed = state
        speed = speed + 0.05 * action                 # the force minus gravity, in [-1, 1]
        height = height + 0.05 * speed
        return (height, speed), jnp.concatenate([height, speed]), -jnp.abs(height[0] - 1.0), jnp.array(False)


envs.register("myjax:Hover", Hover, replace=True)
env = envs.make("myjax:Hover?episode_length=50")
print(env.spec, "JAX env:", envs.is_jax_env("myjax:Hover"))

# %% [markdown]
# PPO on it: rollouts, GAE and updates of every env and seed in one compiled program.

# %%
config = ppo.Config(**{**ppo.PRESETS["cpu"], "num_envs": 16 if TINY else 256, "batch_size": 16 if TINY else 64,
                       "num_minibatches": 1 if TINY else 4, "unroll_length": 10, "num_epochs": 1 if TINY else 4,
                       "policy_hidden": (8, 8) if TINY else (32, 32), "value_hidden": (8, 8) if TINY else (64, 64)})
steps = 320 if TINY else 300_000
run_dir = train(RunArgs(agent="ppo", env="myjax:Hover", num_seeds=2, total_steps=steps, eval_every=steps // 2,
                        log_every=steps // 2, eval_episodes=2, run_dir=str(scratch / "ppo"), progress=False), config)
print((run_dir / "eval.csv").read_text())

# %% [markdown]
# ## From the command line
#
# Put the classes and the `envs.register` calls in a file of yours, say `my_envs.py`, and name it with
# `--env-module` (imported before the env is made, the current directory on the path; saved in `config.json`,
# so `--resume` imports it again):
#
# ```bash
# python experiments/run.py --agent sac --env mygym:Lift --env-module my_envs
# python experiments/run.py --agent ppo --env "myjax:Hover?episode_length=200" --env-module my_envs
# ```
#
# Or declare the factory as an entry point of your installed package, and no flag is needed:
#
# ```toml
# [project.entry-points."ctrlrl.envs"]
# mygym = "my_envs:make_mygym"
# ```
#
# The built-in ids take options the same way: `dmc:cartpole-balance?action_repeat=4&episode_length=250`,
# `mjx:CartpoleBalance?action_repeat=2&episode_length=500` (MR.Q's DMC protocol on MJX). `episode_length`
# counts agent steps; an unknown key is refused with the valid ones.

# %%
print(envs.make("dmc:cartpole-balance?action_repeat=4&episode_length=250").spec)
try:
    envs.make("dmc:cartpole-balance?repeat=4")
except envs.EnvOptionError as error:
    print("refused:", error)
