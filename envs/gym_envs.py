"""gymnasium envs (``gym:Hopper-v5``, ``gym:Pendulum-v1``, any id in gymnasium's registry, or an env a
registered factory returns) as a ``HostVecEnv``.

Named ``gym_envs`` so that it never shadows the ``gymnasium``/``gym`` packages.
We keep gymnasium's ``TimeLimit`` (so ``truncated`` comes from it) and its
real terminations (a fallen Hopper), and reset finished instances ourselves
rather than using gymnasium's vector autoreset, whose semantics changed
between versions.

Any env with a Box observation space (flattened) and a Box action space with
finite bounds works: agents act in [-1, 1], scaled to the bounds here. Other
spaces (Discrete, Dict, unbounded actions) are refused with one line naming
the space. Checkpoints (``--resume``):

* MuJoCo envs (``GymInstance``) save the simulator state and resume bit-identically;
* other envs (``BoxEnvInstance``) save every attribute of the env and of its
  wrappers that is plain data (numbers, strings, numpy arrays, lists and
  dicts of them) and the state of their numpy random generators, which
  resumes them exactly when that is all their future depends on (gymnasium's
  classic-control envs, most hand-written envs). An env may instead define
  ``get_state() -> dict`` and ``set_state(dict)`` of plain data. An env with
  an attribute of another kind (a pygame surface, a simulator handle) cannot
  be saved: its run trains and checkpoints the agents, warns once, and
  ``--resume`` of it is refused in one line naming the attribute. (With its own
  get_state, the numpy random generators among its attributes are still
  saved here: gymnasium's ``np_random`` needs no code of its own.)
"""

from __future__ import annotations

import copy
import types
import warnings
from typing import Any, Callable

import numpy as np

from envs.core import EnvSpec, HostVecEnv, MujocoScene, UnsupportedEnvError, scale_action, unknown_env_error
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


def gym_ids() -> list[str]:
    """Every id in gymnasium's registry (``gym:<id>`` accepts any with Box spaces)."""
    import gymnasium

    return sorted(gymnasium.envs.registry)


def make_gym(gym_id: str, num_envs: int, seed: int, episode_length: int | None = None, **make_kwargs) -> HostVecEnv:
    """``num_envs`` instances of ``gym_id``; ``episode_length`` (agent steps) replaces the id's time limit
    (``gymnasium.make``'s ``max_episode_steps``); ``make_kwargs`` go to ``gymnasium.make``."""
    import gymnasium

    if gym_id not in gym_ids():
        raise unknown_env_error(f"gym:{gym_id}", "gymnasium ids (any with Box spaces)", ["gym:" + i for i in gym_ids()])
    if episode_length is not None:
        make_kwargs["max_episode_steps"] = episode_length
    if gym_id in gym_mujoco_ids():
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

    def build():
        try:
            return gymnasium.make(gym_id, disable_env_checker=True, **make_kwargs)
        except (gymnasium.error.Error, ImportError) as error:     # e.g. Box2D or ALE not installed
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UnsupportedEnvError(f"gym:{gym_id}: gymnasium cannot make it: {first_line}") from None

    return make_box_env(f"gym:{gym_id}", build(), build, num_envs, seed)


# ------------------------------------------------------------------------------------------------------------
# Any gymnasium env with Box spaces
# ------------------------------------------------------------------------------------------------------------


def check_spaces(env_id: str, env) -> None:
    """Refuse, in one line naming the space, an env the agents cannot drive: observations must be a Box (any
    shape: flattened) and actions a Box with finite bounds (agents act in [-1, 1], scaled to them)."""
    from gymnasium import spaces

    observation_space, action_space = env.observation_space, env.action_space
    if not isinstance(observation_space, spaces.Box):
        hint = " (flatten it first: gymnasium.wrappers.FlattenObservation)" if isinstance(
            observation_space, (spaces.Dict, spaces.Tuple)) else ""
        raise UnsupportedEnvError(f"{env_id}: the observation space {observation_space} is not a Box; the agents "
                                  f"need Box observations{hint}")
    if not isinstance(action_space, spaces.Box):
        raise UnsupportedEnvError(f"{env_id}: the action space {action_space} is not a Box; the agents here emit "
                                  "continuous actions in [-1, 1] and need a Box action space with finite bounds")
    unbounded = np.flatnonzero(~(np.isfinite(action_space.low) & np.isfinite(action_space.high)).ravel())
    if unbounded.size:
        raise UnsupportedEnvError(f"{env_id}: the action space {action_space} is unbounded in dims "
                                  f"{unbounded.tolist()}; actions are scaled from [-1, 1] to the space's bounds, so "
                                  "give it finite low and high")


def time_limit(env) -> int | None:
    """The ``max_episode_steps`` of the env's ``TimeLimit`` wrapper (which is what truncates), None if none."""
    from gymnasium.wrappers import TimeLimit

    while env is not env.unwrapped:
        if isinstance(env, TimeLimit):
            return int(env._max_episode_steps)        # no public accessor
        env = env.env
    return None


def make_box_env(env_id: str, first, make_another: Callable[[], Any], num_envs: int, seed: int) -> HostVecEnv:
    """``num_envs`` instances of a gymnasium env with Box spaces: ``first`` (already made) and ``num_envs - 1``
    from ``make_another()``; instance i's first reset is seeded ``seed + i``."""
    check_spaces(env_id, first)
    limit = time_limit(first)
    if limit is None:
        first.close()
        raise UnsupportedEnvError(f"{env_id}: the env has no time limit; wrap it in "
                                  "gymnasium.wrappers.TimeLimit(env, max_episode_steps) (gymnasium.make does, for "
                                  "ids registered with max_episode_steps; gym:<id>?episode_length=N sets one)")
    envs = [first] + [make_another() for _ in range(num_envs - 1)]
    spec = EnvSpec(
        env_id=env_id,
        obs_dim=int(np.prod(first.observation_space.shape)),
        action_dim=int(np.prod(first.action_space.shape)),
        max_episode_steps=limit,
        action_repeat=1,
        can_terminate=True,
    )
    return HostVecEnv(spec, [BoxEnvInstance(env_id, env, seed + i) for i, env in enumerate(envs)])


class NotSaved(Exception):
    """Raised while collecting a state that cannot be saved as plain data; the message says why."""


class BoxEnvInstance:
    """One gymnasium env with Box spaces (a ``HostEnvInstance``); its first reset uses ``seed``.

    Its checkpoint state is the plain-data attributes of the env and of each wrapper around it, the states of
    their numpy random generators, and the seed still owed to the first reset (see the module docstring). The
    env, its spaces, its ``EnvSpec``, functions and wrapper constructor arguments are what the env was built
    with, and are not saved.
    """

    def __init__(self, env_id: str, env, seed: int):
        self.env_id = env_id
        self.env = env
        self._seed: int | None = seed
        space = env.action_space
        self._low, self._high = space.low.astype(np.float64), space.high.astype(np.float64)
        self._action_shape, self._action_dtype = space.shape, space.dtype
        self._warned = False

    def reset(self) -> np.ndarray:
        # Seed only the first reset: later episodes continue the seeded RNG (as GymInstance does).
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None
        return np.asarray(obs, dtype=np.float32).ravel()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        scaled = scale_action(np.reshape(action, self._action_shape), self._low, self._high)
        obs, reward, terminated, truncated, _ = self.env.step(scaled.astype(self._action_dtype))
        terminated = bool(terminated)
        return np.asarray(obs, dtype=np.float32).ravel(), float(reward), terminated, bool(truncated) and not terminated

    def _layers(self) -> list:
        """The wrappers, outermost first, then the env itself."""
        layers, layer = [], self.env
        while layer is not self.env.unwrapped:
            layers.append(layer)
            layer = layer.env
        return layers + [layer]

    def get_state(self) -> dict[str, Any]:
        """{"layers": [(type name, attributes)], "first_reset_seed": ...}, or {"not_saved": why} for an env that
        holds something other than plain data (a warning says so, once)."""
        try:
            layers = [(type(layer).__name__, _layer_state(layer, is_env=layer is self.env.unwrapped))
                      for layer in self._layers()]
        except NotSaved as reason:
            if not self._warned:
                warnings.warn(f"{self.env_id}: checkpoints hold the agents but not this env ({reason}); --resume of "
                              "this run will be refused. Define get_state() and set_state() of plain data on the env "
                              "to make it resumable (envs/gym_envs.py).", stacklevel=2)
                self._warned = True
            return {"not_saved": str(reason)}
        return {"layers": layers, "first_reset_seed": self._seed}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state) == {"not_saved"}:
            raise ValueError(f"{self.env_id} cannot be resumed: its checkpoint does not hold the env "
                             f"({state['not_saved']}); start the run again, or define get_state() and set_state() "
                             "of plain data on the env")
        if set(state) != {"layers", "first_reset_seed"}:
            raise ValueError(f"gymnasium state has keys {sorted(state)}, expected ['first_reset_seed', 'layers'].")
        layers = self._layers()
        saved_types = [kind for kind, _ in state["layers"]]
        if saved_types != [type(layer).__name__ for layer in layers]:
            raise ValueError(f"the env was {' > '.join(saved_types)}, here it is "
                             f"{' > '.join(type(layer).__name__ for layer in layers)}.")
        for layer, (_, attributes) in zip(layers, state["layers"]):
            _set_layer_state(layer, attributes)
        self._seed = state["first_reset_seed"]

    def close(self) -> None:
        self.env.close()


def _is_plain(value: Any) -> bool:
    """Builtins and numpy arrays and scalars only (what envs/host_state.py loads without running code)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (list, tuple)):
        return type(value) in (list, tuple) and all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return type(value) is dict and all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _is_construction(name: str, value: Any) -> bool:
    """What a layer was built with and never changes: the wrapped env, spaces, its EnvSpec, functions, the
    wrapper's recorded constructor arguments."""
    import gymnasium

    return (isinstance(value, (gymnasium.Env, gymnasium.spaces.Space, gymnasium.envs.registration.EnvSpec,
                               types.FunctionType, types.MethodType, types.BuiltinFunctionType))
            or name == "_saved_kwargs")


def _layer_state(layer, is_env: bool) -> dict[str, Any]:
    """A layer's state: the bit generator states of its numpy random generators (gymnasium's ``np_random``), and
    either its own ``get_state()`` (the env, where it defines get_state and set_state) or its plain-data
    attributes."""
    own = is_env and callable(getattr(layer, "get_state", None)) and callable(getattr(layer, "set_state", None))
    attributes, generators = {}, {}
    for name, value in vars(layer).items():
        if isinstance(value, np.random.Generator):
            generators[name] = ("Generator", value.bit_generator.state)
        elif isinstance(value, np.random.RandomState):
            generators[name] = ("RandomState", value.get_state(legacy=False))
        elif own:
            continue
        elif _is_plain(value):
            attributes[name] = copy.deepcopy(value)
        elif not _is_construction(name, value):
            raise NotSaved(f"{type(layer).__name__}.{name} is of type {type(value).__name__}, not plain data")
    if own:
        state = layer.get_state()
        if not (isinstance(state, dict) and _is_plain(state)):
            raise NotSaved(f"{type(layer).__name__}.get_state() returned something other than a dict of plain data")
        return {"get_state": copy.deepcopy(state), "generators": generators}
    return {"attributes": attributes, "generators": generators}


def _set_layer_state(layer, state: dict[str, Any]) -> None:
    for name, (kind, value) in state["generators"].items():
        generator = getattr(layer, name, None)
        if generator is None:       # not drawn yet here (gymnasium makes np_random at the first reset)
            generator = (np.random.Generator(getattr(np.random, value["bit_generator"])()) if kind == "Generator"
                         else np.random.RandomState())
            setattr(layer, name, generator)
        if type(generator).__name__ != kind:
            raise ValueError(f"{type(layer).__name__}.{name} was a numpy {kind}, here it is a "
                             f"{type(generator).__name__}.")
        if kind == "Generator":
            generator.bit_generator.state = value        # raises ValueError for another bit generator type
        else:
            generator.set_state(value)
    if "get_state" in state:
        layer.set_state(copy.deepcopy(state["get_state"]))
        return
    # Attributes made after the checkpoint (e.g. in a later reset) did not exist then: remove them.
    for name in [k for k, v in vars(layer).items() if _is_plain(v) and k not in state["attributes"]]:
        delattr(layer, name)
    for name, value in state["attributes"].items():
        setattr(layer, name, copy.deepcopy(value))
