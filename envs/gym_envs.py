"""gymnasium MuJoCo tasks (``gym:Hopper-v5``) as a ``HostVecEnv``.

Named ``gym_envs`` so that it never shadows the ``gymnasium``/``gym`` packages.
We keep gymnasium's ``TimeLimit`` (so ``truncated`` comes from it) and its
real terminations (a fallen Hopper), and reset finished instances ourselves
rather than using gymnasium's vector autoreset, whose semantics changed
between versions.
"""

from __future__ import annotations

import numpy as np

from envs.core import EnvSpec, HostVecEnv, scale_action, unknown_env_error


def gym_mujoco_ids() -> list[str]:
    """Registered gymnasium ids whose entry point is a MuJoCo environment."""
    import gymnasium

    return sorted(
        env_id
        for env_id, env_spec in gymnasium.envs.registry.items()
        if isinstance(env_spec.entry_point, str) and "envs.mujoco" in env_spec.entry_point
    )


class GymInstance:
    """One gymnasium environment (a ``HostEnvInstance``); its first reset uses ``seed``."""

    def __init__(self, gym_id: str, seed: int, **make_kwargs):
        import gymnasium

        self.env = gymnasium.make(gym_id, disable_env_checker=True, **make_kwargs)
        self._seed: int | None = seed
        space = self.env.action_space
        self._low, self._high = space.low.astype(np.float64), space.high.astype(np.float64)

    def reset(self) -> np.ndarray:
        # Seed only the first reset: later episodes continue the seeded RNG,
        # so a run is reproducible but episodes differ from each other.
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None
        return np.asarray(obs, dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        obs, reward, terminated, truncated, _ = self.env.step(
            scale_action(action, self._low, self._high).astype(self._low.dtype)
        )
        terminated = bool(terminated)
        return np.asarray(obs, dtype=np.float32), float(reward), terminated, bool(truncated) and not terminated

    def close(self) -> None:
        self.env.close()


def make_gym(gym_id: str, num_envs: int, seed: int, **make_kwargs) -> HostVecEnv:
    """``num_envs`` instances of ``gym_id``; ``make_kwargs`` go to ``gymnasium.make``."""
    valid = gym_mujoco_ids()
    if gym_id not in valid:
        raise unknown_env_error(f"gym:{gym_id}", "gymnasium MuJoCo ids", ["gym:" + i for i in valid])
    instances = [GymInstance(gym_id, seed + i, **make_kwargs) for i in range(num_envs)]
    probe = instances[0].env
    spec = EnvSpec(
        env_id=f"gym:{gym_id}",
        obs_dim=int(np.prod(probe.observation_space.shape)),
        action_dim=int(np.prod(probe.action_space.shape)),
        max_episode_steps=int(probe.spec.max_episode_steps),
        action_repeat=1,
        can_terminate=True,
    )
    return HostVecEnv(spec, instances)
