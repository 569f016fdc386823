"""dm_control suite tasks under MR.Q's protocol, as a ``HostVecEnv``.

Protocol (Fujimoto et al., 2025, "Towards General-Purpose Model-Free RL"):
actions in [-1, 1] rescaled to the action spec, observations flattened
(the observation dict's values concatenated in order), action repeat 2 with
rewards summed, and dm_control's own 1000-frame limit = 500 agent steps. The
suite has no terminal states, so episodes only end by truncation.
"""

from __future__ import annotations

import math

import numpy as np

from envs.core import EnvSpec, HostVecEnv, scale_action, unknown_env_error

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


class DmcInstance:
    """One seeded dm_control environment with action repeat (a ``HostEnvInstance``)."""

    def __init__(self, domain: str, task: str, seed: int, action_repeat: int):
        from dm_control import suite

        self.env = suite.load(domain, task, task_kwargs={"random": seed})
        self._action_repeat = action_repeat
        spec = self.env.action_spec()
        self._low, self._high = spec.minimum, spec.maximum

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

    def close(self) -> None:
        self.env.close()


def make_dmc(task_id: str, num_envs: int, seed: int, action_repeat: int = 2) -> HostVecEnv:
    """``num_envs`` instances of ``task_id`` (e.g. ``'walker-walk'``); env i uses seed + i."""
    domain, task = parse_task(task_id)
    if action_repeat < 1:
        raise ValueError(f"dmc:{task_id}: action_repeat must be >= 1, got {action_repeat}.")
    instances = [DmcInstance(domain, task, seed + i, action_repeat) for i in range(num_envs)]
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
