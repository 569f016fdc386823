"""Many tasks as one env: ``dmc:<task>,<task>,...`` and the named suites in ``SUITES``.

A multitask env holds, for each of its ``num_envs`` env slots, one instance of every task, in task order:
instance ``i * T + t`` is env ``i`` of task ``t`` (seeded ``seed + i``), so a loop that gives each seed one
env slot reshapes ``[num_envs * T, ...]`` to ``[num_envs, T, ...]`` and row ``t`` of a seed is task ``t``.

Tasks differ in observation and action widths, so every task is padded to the widest:

* observation = ``[the task's obs, zeros up to the widest obs, one-hot(task id, T)]``: the fixed one-hot is
  the task conditioning (the follow-up of MR.Q uses frozen text embeddings of a task description; a one-hot
  needs nothing downloaded, and an agent may learn an embedding of it). ``task_ids(spec, obs)`` reads it back,
  so every stored observation carries its task.
* action: the agent emits ``spec.action_dim`` (the widest) dims; each instance passes only its own first
  ``action_dim`` dims to its simulator, so a padded dimension never reaches an env. ``action_masks(spec)``
  [T, action_dim] tells an agent which dims are real (to zero the rest before they reach a loss).

Tasks that are all JAX envs (``mjx:CartpoleBalance,FingerSpin``, ``jax:PointMass,PointMass1D``) make one
``MultitaskJaxEnv``: each task keeps its own state batch and ``step_batch`` steps each task's physics over its
own envs inside one jitted program (different MJX models cannot be stacked, and a ``lax.switch`` would run
every env through every task). The off-policy device loop runs it with one env slot of every task per seed
(``--agent mrq_multitask --env mjx:mt4``).

``EnvSpec.tasks`` lists each task's own ``TaskSpec``: its widths, episode length and action repeat; an agent
derives per-task discounts and reward scales from it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from envs.core import EnvSpec, HostVecEnv, TaskSpec, unknown_env_error

SUITES: dict[str, tuple[str, ...]] = {
    # Four DMC tasks of different widths and reward structure: dense (cartpole, finger), sparse (reacher,
    # ball_in_cup); obs 5/6/8/9 wide, actions 1/2/2/2 wide.
    "dmc:mt4": ("dmc:cartpole-balance", "dmc:reacher-easy", "dmc:ball_in_cup-catch", "dmc:finger-spin"),
    # The DMC tasks of MR.Q's own benchmark that have state observations of a moderate width.
    "dmc:mt8": ("dmc:cartpole-balance", "dmc:cartpole-swingup", "dmc:reacher-easy", "dmc:ball_in_cup-catch",
                "dmc:finger-spin", "dmc:walker-walk", "dmc:cheetah-run", "dmc:hopper-stand"),
    # The same four on the device: MuJoCo Playground's ports of the DMC tasks (one jitted program).
    "mjx:mt4": ("mjx:CartpoleBalance", "mjx:ReacherEasy", "mjx:BallInCup", "mjx:FingerSpin"),
}
"""Named task mixes: ``dmc:mt4`` is the 4-task mix of the multitask MR.Q tests and results, ``mjx:mt4`` its
device counterpart."""

# Returns are normalised per family to [0, 1] so that tasks can be averaged: every DMC suite task earns at
# most 1 per frame over 1000 frames (rewards in [0, 1]), whatever the action repeat.
MAX_RETURN = {"dmc": 1000.0}
# Playground's DMC ports keep the suite's rewards in [0, 1] per frame over 1000 frames.
MAX_RETURN_OF_TASK = {task: 1000.0 for task in SUITES["mjx:mt4"]}


class MultitaskError(ValueError):
    """A multitask id that cannot be built (a repeated task, host and JAX tasks mixed, a bad option)."""


def is_multitask(env_id: str) -> bool:
    """Whether ``env_id`` names several tasks (a comma-separated list or a suite)."""
    return env_id in SUITES or "," in env_id


def task_list(env_id: str) -> tuple[str, ...]:
    """The task ids of a multitask id: ``dmc:a,b`` -> (``dmc:a``, ``dmc:b``); items without a family take the
    previous item's (``dmc:a,gym:B,C`` -> dmc:a, gym:B, gym:C); a suite name -> its tasks."""
    if env_id in SUITES:
        return SUITES[env_id]
    tasks, family = [], None
    for item in env_id.split(","):
        item = item.strip()
        if ":" in item:
            family = item.partition(":")[0]
        elif family is None or not item:
            raise unknown_env_error(env_id)
        else:
            item = f"{family}:{item}"
        tasks.append(item)
    if len(set(tasks)) != len(tasks):
        repeated = sorted({t for t in tasks if tasks.count(t) > 1})
        raise MultitaskError(f"{env_id}: each task may appear once; repeated: {', '.join(repeated)}")
    return tuple(tasks)


def normalized_score(task_id: str, returns):
    """``returns`` of ``task_id`` divided by the family's largest return (NaN where none is known)."""
    top = MAX_RETURN_OF_TASK.get(task_id.partition("?")[0], MAX_RETURN.get(task_id.partition(":")[0]))
    return np.asarray(returns, np.float64) / top if top else np.full(np.shape(returns), np.nan)


def task_ids(spec: EnvSpec, obs):
    """The task id (int32) of each observation ``[..., obs_dim]`` of a multitask env: its one-hot's argmax."""
    return jnp.argmax(obs[..., spec.obs_dim - spec.num_tasks:], axis=-1).astype(jnp.int32)


def action_masks(spec: EnvSpec):
    """[T, action_dim] float32: 1 on each task's own action dims, 0 on its padding."""
    dims = np.asarray([task.action_dim for task in spec.tasks] or [spec.action_dim])
    return jnp.asarray(np.arange(spec.action_dim)[None, :] < dims[:, None], jnp.float32)


class PaddedInstance:
    """One task's host instance inside a multitask env: pads its observation, appends the task one-hot, and
    passes its simulator only its own action dims (a ``HostEnvInstance``)."""

    def __init__(self, instance: Any, task: int, num_tasks: int, raw_obs_width: int, action_dim: int):
        self.instance = instance
        self._action_dim = action_dim
        self._one_hot = np.eye(num_tasks, dtype=np.float32)[task]
        self._raw_width = raw_obs_width

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        padded = np.zeros(self._raw_width, np.float32)
        padded[: obs.shape[-1]] = obs
        return np.concatenate([padded, self._one_hot])

    def reset(self) -> np.ndarray:
        return self._pad(self.instance.reset())

    def step(self, action: np.ndarray):
        next_obs, reward, terminated, truncated = self.instance.step(np.asarray(action)[: self._action_dim])
        return self._pad(next_obs), reward, terminated, truncated

    def get_state(self) -> dict:
        return self.instance.get_state()

    def set_state(self, state: dict) -> None:
        self.instance.set_state(state)

    def physics_state(self):
        return self.instance.physics_state()

    def close(self) -> None:
        self.instance.close()


class MultitaskJaxState(NamedTuple):
    """A batch of M env slots of a ``MultitaskJaxEnv``: each task's own ``JaxEnvState`` batch [M, ...] (tasks
    cannot share one state: their physics differ), and the padded observations [M * T, obs_dim] (row i * T + t:
    slot i, task t, as on the host)."""

    tasks: tuple
    obs: jax.Array


class MultitaskJaxEnv:
    """Several ``JaxEnv`` tasks as one batched env inside one jitted program: ``step_batch`` runs each task's
    own physics over its own envs (a static loop over the tasks, each a ``step_batch`` of its slice), never
    every env through every task (no ``lax.switch``). Padding and the task one-hot as the module docstring says;
    each task's simulator gets only its own first ``action_dim`` dims of the action."""

    def __init__(self, spec: EnvSpec, task_envs: list):
        self.spec = spec
        self.task_envs = task_envs
        self._raw_width = spec.obs_dim - len(task_envs)

    def _pad(self, per_task_obs: list) -> jax.Array:
        """[M, d_t] per task -> [M * T, obs_dim]: padded, one-hot appended, slot-major."""
        num_tasks = len(self.task_envs)
        rows = [jnp.concatenate([jnp.pad(o, ((0, 0), (0, self._raw_width - o.shape[-1]))),
                                 jnp.broadcast_to(jax.nn.one_hot(t, num_tasks), (o.shape[0], num_tasks))], -1)
                for t, o in enumerate(per_task_obs)]
        return jnp.stack(rows, axis=1).reshape(-1, self.spec.obs_dim)

    def reset_batch(self, key: jax.Array, slots: int, clock=0) -> MultitaskJaxState:
        """`slots` env slots of every task, each task's envs reset from its own split of `key`."""
        keys = jax.random.split(key, len(self.task_envs))
        states = tuple(jax.vmap(lambda k, env=env: env.reset(k, clock))(jax.random.split(keys[t], slots))
                       for t, env in enumerate(self.task_envs))
        return MultitaskJaxState(states, self._pad([s.obs for s in states]))

    def step_batch(self, state: MultitaskJaxState, actions: jax.Array, sync_axes: tuple[str, ...] = (),
                   stops: jax.Array | None = None):
        """`actions` [M * T, action_dim] (row i * T + t) -> (state, StepInfo with [M * T] leaves; obs padded)."""
        num_tasks = len(self.task_envs)
        actions = actions.reshape(-1, num_tasks, self.spec.action_dim)
        slots = actions.shape[0]
        stops = jnp.zeros((slots, num_tasks), bool) if stops is None else stops.reshape(slots, num_tasks)
        states, infos = [], []
        for t, env in enumerate(self.task_envs):
            task_state, info = env.step_batch(state.tasks[t], actions[:, t, :env.spec.action_dim], sync_axes,
                                              stops[:, t])
            states.append(task_state)
            infos.append(info)
        slot_major = lambda *xs: jnp.stack(xs, axis=1).reshape(slots * num_tasks, *xs[0].shape[1:])
        # The observations differ in width per task: padded below; every other field is stacked as it is.
        info = jax.tree.map(slot_major, *[i._replace(obs=None, final_obs=None) for i in infos])
        obs = self._pad([s.obs for s in states])
        info = info._replace(obs=obs, final_obs=self._pad([i.final_obs for i in infos]))
        return MultitaskJaxState(tuple(states), obs), info


def _multitask_spec(env_id: str, specs: list) -> EnvSpec:
    if len({spec.action_repeat for spec in specs}) != 1:
        raise MultitaskError(f"{env_id}: the tasks' action repeats differ "
                             f"({', '.join(f'{s.env_id}: {s.action_repeat}' for s in specs)})")
    raw_width = max(spec.obs_dim for spec in specs)
    return EnvSpec(
        env_id=env_id,
        obs_dim=raw_width + len(specs),
        action_dim=max(spec.action_dim for spec in specs),
        max_episode_steps=max(s.max_episode_steps for s in specs),
        action_repeat=specs[0].action_repeat,
        can_terminate=any(s.can_terminate for s in specs),
        tasks=tuple(TaskSpec(s.env_id, s.obs_dim, s.action_dim, s.max_episode_steps, s.can_terminate)
                    for s in specs),
    )


def make_multitask(env_id: str, num_envs: int, seed: int, make_task, **kwargs) -> HostVecEnv | MultitaskJaxEnv:
    """``num_envs`` env slots of every task of ``env_id`` (instance ``i * T + t``: slot i, task t, seed
    seed + i), padded as the module docstring says; ``make_task(task_id, num_envs, seed, **kwargs)`` builds one
    task's ``HostVecEnv`` (``envs.make``). Tasks that are all JAX envs (``mjx:``, ``jax:``) give one
    ``MultitaskJaxEnv`` (its batch size is chosen at reset, as for a ``JaxEnv``)."""
    from envs import is_jax_env

    tasks = task_list(env_id)
    jax_tasks = [t for t in tasks if is_jax_env(t)]
    if jax_tasks and len(jax_tasks) < len(tasks):
        raise MultitaskError(f"{env_id}: a multitask env is all host tasks (dmc:, gym:) or all JAX tasks (mjx:, "
                             f"jax:); {', '.join(jax_tasks)} is a JAX env and the others are not")
    if jax_tasks:
        task_envs = [make_task(task, **kwargs) for task in tasks]
        return MultitaskJaxEnv(_multitask_spec(env_id, [env.spec for env in task_envs]), task_envs)
    per_task = [make_task(task, num_envs, seed, **kwargs) for task in tasks]
    specs = [env.spec for env in per_task]
    spec = _multitask_spec(env_id, specs)
    instances = [PaddedInstance(per_task[t].instances[i], t, len(tasks), spec.obs_dim - len(tasks),
                                specs[t].action_dim)
                 for i in range(num_envs) for t in range(len(tasks))]
    return HostVecEnv(spec, instances)


def describe(spec: EnvSpec) -> str:
    """One line per task: its widths and episode length (for logs and errors)."""
    return "; ".join(f"{t.env_id} (obs {t.obs_dim}, act {t.action_dim}, {t.max_episode_steps} steps)"
                     for t in spec.tasks)


__all__ = ["SUITES", "MultitaskError", "MultitaskJaxEnv", "MultitaskJaxState", "PaddedInstance", "action_masks",
           "describe", "is_multitask",
           "make_multitask", "normalized_score", "task_ids", "task_list"]
