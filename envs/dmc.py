"""dm_control suite tasks under MR.Q's protocol, as a ``HostVecEnv``.

Protocol (Fujimoto et al., 2025, "Towards General-Purpose Model-Free RL"):
actions in [-1, 1] rescaled to the action spec, observations flattened
(the observation dict's values concatenated in order), action repeat 2 with
rewards summed, and dm_control's own 1000-frame limit = 500 agent steps. The
suite has no terminal states, so episodes only end by truncation.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from envs.core import EnvSpec, HostVecEnv, MujocoScene, default_camera, scale_action, unknown_env_error
from envs.host_state import array_fields
from envs.options import EnvOptionError

DEFAULT_TASK = "cheetah-run"


def dmc_task_ids() -> list[str]:
    """Every ``dmc:<domain>-<task>`` id the installed dm_control suite offers."""
    from dm_control import suite

    return [f"dmc:{domain}-{task}" for domain, task in suite.ALL_TASKS]


def parse_task(task_id: str) -> tuple[str, str]:
    """Split ``'ball_in_cup-catch'`` into ``('ball_in_cup', 'catch')``, validating it.

    Domains may contain underscores but no hyphen, so the domain is everything
    before the first hyphen and the task everything after it.
    """
    from dm_control import suite

    domain, _, task = task_id.partition("-")
    if (domain, task) not in suite.ALL_TASKS:
        raise unknown_env_error(f"dmc:{task_id}", "dm_control tasks", dmc_task_ids())
    return domain, task


def _flatten(observation) -> np.ndarray:
    return np.concatenate(
        [np.asarray(value, dtype=np.float32).ravel() for value in observation.values()]
    )


# MuJoCo >= 3.3 warns, through dm_control's absl logger, each time a suite model that uses the deprecated
# `settotalmass` compiler attribute (cartpole, cheetah, ...) is compiled: several lines at every evaluation,
# which builds fresh instances. It is dm_control's model, not ours to fix, so exactly this message is dropped.
KNOWN_WARNING = "compiler attribute 'settotalmass' is deprecated"


class _DropKnownWarning:
    """A logging filter (on absl's logger) that drops MuJoCo's `settotalmass` deprecation warning."""

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(KNOWN_WARNING)


def silence_known_warnings() -> None:
    """Add the filter to absl's logger once (dm_control logs MuJoCo's warnings there)."""
    import logging

    logger = logging.getLogger("absl")
    if not any(isinstance(f, _DropKnownWarning) for f in logger.filters):
        logger.addFilter(_DropKnownWarning())


# (domain, task) -> the model's arrays as compiled, before any episode changed
# them; shared by all instances of a task (some models are tens of MB).
_PRISTINE_MODEL_ARRAYS: dict[tuple[str, str], dict[str, np.ndarray]] = {}


class DmcInstance:
    """One seeded dm_control environment with action repeat (a ``HostEnvInstance``).

    Its checkpoint state (``get_state``) holds:

    * the full MuJoCo integration state (``mj_getState`` with
      ``mjSTATE_INTEGRATION``: time, qpos, qvel, act, ctrl, applied forces,
      mocap, the solver's warmstart, ...), not just qpos/qvel;
    * the model arrays that differ from the freshly compiled model, because
      several tasks randomize the *model* per episode (reacher, fish and
      swimmer move their target geom, finger its target site, manipulator its
      receptacle body, point_mass its wrap parameters, quadruped-escape its
      terrain), which no ``mj_getState`` covers;
    * the task's attributes, i.e. its ``numpy.random.RandomState`` (which draws
      every future reset) and per-episode values such as cheetah's
      ``_timeout_progress`` or dog's ``_stand_height``;
    * dm_control's step counter (time limit) and pending-reset flag.
    """

    def __init__(self, domain: str, task: str, seed: int, action_repeat: int):
        from dm_control import suite

        silence_known_warnings()
        self.env = suite.load(domain, task, task_kwargs={"random": seed})
        self._action_repeat = action_repeat
        spec = self.env.action_spec()
        self._low, self._high = spec.minimum, spec.maximum
        # No episode has run yet, so the model is still as compiled.
        self._pristine = _PRISTINE_MODEL_ARRAYS.get((domain, task))
        if self._pristine is None:
            self._pristine = {}
            for name, value in array_fields(self.env.physics.model.ptr).items():
                self._pristine[name] = value.copy()
                self._pristine[name].flags.writeable = False
            _PRISTINE_MODEL_ARRAYS[(domain, task)] = self._pristine

    def reset(self) -> np.ndarray:
        return _flatten(self.env.reset().observation)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        action = scale_action(action, self._low, self._high)
        reward = 0.0
        for _ in range(self._action_repeat):
            time_step = self.env.step(action)
            reward += time_step.reward or 0.0
            if time_step.last():  # the time limit can fall inside a repeat
                break
        return _flatten(time_step.observation), reward, False, time_step.last()

    def scene(self) -> MujocoScene:
        """The simulator as it is now, for drawing (one frame per agent step: action repeat x control step)."""
        physics = self.env.physics
        return MujocoScene(physics.model.ptr, physics.data.ptr, default_camera(physics.model.ptr),
                           1.0 / (self.env.control_timestep() * self._action_repeat))

    def get_state(self) -> dict[str, Any]:
        import mujoco

        physics, task = self.env.physics, self.env.task
        model = array_fields(physics.model.ptr)
        return {
            "physics": physics.get_state(sig=mujoco.mjtState.mjSTATE_INTEGRATION),
            # Compared bitwise: NaN-safe, and exactness is the point.
            "model": {
                name: value.copy()
                for name, value in model.items()
                if value.tobytes() != self._pristine[name].tobytes()
            },
            "task_random": task.random.get_state(),
            "task": {k: copy.deepcopy(v) for k, v in vars(task).items() if k != "_random"},
            # dm_control Environment keeps these privately; no public accessor.
            "step_count": self.env._step_count,
            "reset_next_step": self.env._reset_next_step,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        import mujoco

        physics, task = self.env.physics, self.env.task
        sig = mujoco.mjtState.mjSTATE_INTEGRATION
        expected = {"physics", "model", "task_random", "task", "step_count", "reset_next_step"}
        if set(state) != expected:
            raise ValueError(f"dm_control state has keys {sorted(state)}, expected {sorted(expected)}.")
        size = mujoco.mj_stateSize(physics.model.ptr, sig)
        if np.shape(state["physics"]) != (size,):
            raise ValueError(
                f"dm_control physics state has shape {np.shape(state['physics'])}, "
                f"this model's is ({size},)."
            )
        model = array_fields(physics.model.ptr)
        for name, value in state["model"].items():
            if name not in model or np.shape(value) != model[name].shape:
                raise ValueError(f"dm_control state has model field {name!r} that this model lacks.")

        # Model first: it is what the physics state is interpreted against.
        for name, live in model.items():
            np.copyto(live, state["model"].get(name, self._pristine[name]))
        physics.set_state(np.asarray(state["physics"], np.float64), sig=sig)
        # dm_control's legacy step (the suite default) begins with mj_step2,
        # i.e. it expects the position/velocity stage (mj_step1) of *this*
        # state in mjData; mj_setState restores only the state, so recompute
        # it (without this, cheetah's first step after a restore differs).
        mujoco.mj_step1(physics.model.ptr, physics.data.ptr)

        task.random.set_state(state["task_random"])
        for name in [k for k in vars(task) if k != "_random" and k not in state["task"]]:
            delattr(task, name)
        for name, value in state["task"].items():
            setattr(task, name, copy.deepcopy(value))
        self.env._step_count = state["step_count"]
        self.env._reset_next_step = state["reset_next_step"]

    def close(self) -> None:
        self.env.close()


def make_dmc(task_id: str, num_envs: int, seed: int, action_repeat: int = 2,
             episode_length: int | None = None) -> HostVecEnv:
    """``num_envs`` instances of ``task_id`` (e.g. ``'walker-walk'``); env i uses seed + i.

    ``episode_length`` counts agent steps (envs/options.py): the episode ends after ``episode_length x
    action_repeat`` frames. Left out, dm_control's own time limit (1000 frames for the suite) decides:
    ``ceil(1000 / action_repeat)`` agent steps, 500 under MR.Q's action repeat of 2.
    """
    domain, task = parse_task(task_id)
    if action_repeat < 1 or (episode_length is not None and episode_length < 1):
        raise EnvOptionError(f"dmc:{task_id}: action_repeat ({action_repeat}) and episode_length "
                             f"({episode_length}) must be >= 1.")
    instances = [DmcInstance(domain, task, seed + i, action_repeat) for i in range(num_envs)]
    if episode_length is not None:
        for instance in instances:
            # dm_control's time limit in frames (set from time_limit / control_timestep; no public setter).
            # Saved nowhere: like the rest of the constructor's arguments, a restore rebuilds it from the id.
            instance.env._step_limit = episode_length * action_repeat
    probe = instances[0].env
    frame_limit = probe._step_limit  # dm_control's time limit in frames; no public accessor
    spec = EnvSpec(
        env_id=f"dmc:{task_id}",
        obs_dim=sum(int(np.prod(v.shape)) for v in probe.observation_spec().values()),
        action_dim=int(np.prod(probe.action_spec().shape)),
        max_episode_steps=math.ceil(frame_limit / action_repeat),
        action_repeat=action_repeat,
        can_terminate=False,
    )
    return HostVecEnv(spec, instances)
