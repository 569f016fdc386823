"""gymnasium MuJoCo tasks (``gym:Hopper-v5``) as a ``HostVecEnv``.

Named ``gym_envs`` so that it never shadows the ``gymnasium``/``gym`` packages.
We keep gymnasium's ``TimeLimit`` (so ``truncated`` comes from it) and its
real terminations (a fallen Hopper), and reset finished instances ourselves
rather than using gymnasium's vector autoreset, whose semantics changed
between versions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.core import EnvSpec, HostVecEnv, MujocoScene, scale_action, unknown_env_error
from envs.host_state import array_fields


def gym_mujoco_ids() -> list[str]:
    """Registered gymnasium ids whose entry point is a MuJoCo environment."""
    import gymnasium

    return sorted(
        env_id
        for env_id, env_spec in gymnasium.envs.registry.items()
        if isinstance(env_spec.entry_point, str) and "envs.mujoco" in env_spec.entry_point
    )


def _model_sized_data_fields(model) -> list[str]:
    """Names of the ``mjData`` arrays whose size the model fixes.

    The others live in mjData's arena and are sized by the current contacts
    and constraints (``efc_*``, island arrays); they are empty in a fresh
    ``MjData`` and rebuilt from scratch by every ``mj_forward``/``mj_step``.
    """
    import mujoco

    return sorted(name for name, value in array_fields(mujoco.MjData(model)).items() if value.size)


class GymInstance:
    """One gymnasium environment (a ``HostEnvInstance``); its first reset uses ``seed``.

    Its checkpoint state (``get_state``) holds:

    * the full MuJoCo integration state (``mj_getState`` with
      ``mjSTATE_INTEGRATION``: time, qpos, qvel, act, ctrl, the solver
      warmstart, ...), not just qpos/qvel;
    * every model-sized ``mjData`` array (``xpos``, ``xipos``, ``cfrc_ext``,
      ...), because they are *not* a function of that state: ``mj_step``
      computes them before integrating, so after a step they describe the
      previous frame, and some envs read them before stepping (Ant's forward
      reward uses the torso ``xpos`` before and after the step, Humanoid's the
      ``xipos`` centre of mass). Recomputing them with ``mj_forward`` instead
      changes the first reward after a restore;
    * the bit generator state of ``np_random`` (which draws every reset's
      noise), ``TimeLimit``'s step count, ``OrderEnforcing``'s has-reset flag,
      and the seed still owed to the first reset.

    gymnasium's MuJoCo envs never change their model after construction, so
    the model is not saved.
    """

    def __init__(self, gym_id: str, seed: int, **make_kwargs):
        import gymnasium

        self.env = gymnasium.make(gym_id, disable_env_checker=True, **make_kwargs)
        self._seed: int | None = seed
        space = self.env.action_space
        self._low, self._high = space.low.astype(np.float64), space.high.astype(np.float64)
        self._buffer_fields = _model_sized_data_fields(self.env.unwrapped.model)

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

    def physics_state(self) -> dict[str, np.ndarray]:
        """qpos and qvel now (what the observation of this step was computed from), for offline datasets
        whose model rollouts restart the simulator from dataset states (agents/ravl.py --dynamics true)."""
        data = self.env.unwrapped.data
        return {"qpos": np.array(data.qpos, np.float32), "qvel": np.array(data.qvel, np.float32)}

    def scene(self) -> MujocoScene:
        """The simulator as it is now, for drawing: gymnasium's free camera with the env's own default settings
        (distance, elevation, tracked body), as its rgb_array rendering uses them."""
        import mujoco

        sim = self.env.unwrapped
        camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(sim.model, camera)
        config = getattr(getattr(sim, "mujoco_renderer", None), "default_cam_config", None) or {}
        for name, value in config.items():
            if isinstance(value, np.ndarray):
                getattr(camera, name)[:] = value
            else:
                setattr(camera, name, value)
        if config.get("trackbodyid", -1) >= 0:
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        return MujocoScene(sim.model, sim.data, camera, 1.0 / sim.dt)

    def _wrappers(self) -> tuple[Any, Any]:
        """The ``TimeLimit`` and ``OrderEnforcing`` wrappers, whose counters are state.

        Raises ``NotImplementedError`` for any other wrapper in the chain:
        one we know nothing about could hold state we would silently drop.
        """
        from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TimeLimit

        found: dict[type, Any] = {TimeLimit: None, OrderEnforcing: None}
        wrapper = self.env
        while wrapper is not self.env.unwrapped:
            kind = type(wrapper)
            if kind in found:
                found[kind] = wrapper
            elif kind is not PassiveEnvChecker:  # its checks do not change results
                raise NotImplementedError(
                    f"cannot checkpoint gymnasium wrapper {kind.__name__}: its state is unknown."
                )
            wrapper = wrapper.env
        return found[TimeLimit], found[OrderEnforcing]

    def get_state(self) -> dict[str, Any]:
        import mujoco

        time_limit, order = self._wrappers()
        sim = self.env.unwrapped
        physics = np.empty(mujoco.mj_stateSize(sim.model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(sim.model, sim.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
        data = array_fields(sim.data)
        return {
            "physics": physics,
            "data": {name: data[name].copy() for name in self._buffer_fields},
            "np_random": sim.np_random.bit_generator.state,
            "elapsed_steps": None if time_limit is None else time_limit._elapsed_steps,
            "has_reset": None if order is None else order._has_reset,
            "first_reset_seed": self._seed,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        import mujoco

        expected = {"physics", "data", "np_random", "elapsed_steps", "has_reset", "first_reset_seed"}
        if set(state) != expected:
            raise ValueError(f"gymnasium state has keys {sorted(state)}, expected {sorted(expected)}.")
        time_limit, order = self._wrappers()
        sim = self.env.unwrapped
        sig = mujoco.mjtState.mjSTATE_INTEGRATION
        size = mujoco.mj_stateSize(sim.model, sig)
        if np.shape(state["physics"]) != (size,):
            raise ValueError(
                f"gymnasium physics state has shape {np.shape(state['physics'])}, "
                f"this model's is ({size},)."
            )
        if sorted(state["data"]) != self._buffer_fields:
            raise ValueError("gymnasium state holds other mjData fields than this model has.")
        data = array_fields(sim.data)
        for name in self._buffer_fields:
            if np.shape(state["data"][name]) != data[name].shape:
                raise ValueError(
                    f"mjData field {name} has shape {np.shape(state['data'][name])}, "
                    f"here {data[name].shape}."
                )
        mujoco.mj_setState(sim.model, sim.data, np.asarray(state["physics"], np.float64), sig)
        # mj_forward makes the arena (contacts, constraints) consistent with the
        # state; then the saved arrays put back the previous frame's values
        # that the original run still had (see the class docstring).
        mujoco.mj_forward(sim.model, sim.data)
        for name in self._buffer_fields:
            np.copyto(data[name], state["data"][name])
        # Raises ValueError for another bit generator type.
        sim.np_random.bit_generator.state = state["np_random"]
        if time_limit is not None:
            time_limit._elapsed_steps = state["elapsed_steps"]
        if order is not None:
            order._has_reset = state["has_reset"]
        self._seed = state["first_reset_seed"]

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
