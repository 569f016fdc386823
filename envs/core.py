"""Types shared by every environment family, and the auto-reset logic.

Two kinds of environment exist because training runs two ways (experiments/loops/):

* ``HostVecEnv`` steps N numpy environments on the host (dm_control,
  gymnasium). Each family only provides a single-instance adapter
  (``HostEnvInstance``); vectorizing and auto-resetting live here, once.
* ``JaxEnv`` is a pair of pure single-env functions (``reset``, ``step``) for
  the device loop; the caller vmaps them. A family only provides pure
  "physics" functions; action repeat, time limits, episode statistics,
  NaN recovery and re-randomized auto-reset live here, once.

Both report ``terminated`` (a true terminal state: do not bootstrap) and
``truncated`` (time limit: bootstrap from ``final_obs``) separately, never both
true, and both auto-reset so that ``obs`` is always the observation the agent
acts on next.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from envs import host_state

ENV_ID_FAMILIES = ("dmc", "dmc:<domain>-<task>", "gym:<id>", "mjx:<PlaygroundName>", "jax:PointMass",
                   "jax:PointMass1D",
                   "dmc:<task>,<task>,... (multitask)", "dmc:mt4", "dmc:mt8", "mjx:mt4")


class UnknownEnvError(ValueError):
    """An environment id that names no environment; the message lists valid ones."""


class UnsupportedEnvError(UnknownEnvError):
    """An environment that exists but that the agents cannot use (a space that is not a bounded Box, no time
    limit, a JAX env whose functions do not fit its spec); the message names what and why."""


def all_env_ids() -> list[str]:
    """The built-in id families and every family or id registered with ``envs.register`` (or named by a
    ``ctrlrl.envs`` entry point), as error messages list them."""
    from envs import registry

    return [*ENV_ID_FAMILIES, *registry.listed_ids()]


def unknown_env_error(env_id: str, kind: str = "", choices: Sequence[str] = ()) -> UnknownEnvError:
    """One-line error naming ``env_id``, the id families and, if given, the valid ``kind`` choices."""
    message = (f"Unknown env id {env_id!r}: valid ids are {', '.join(all_env_ids())} (more with envs.register "
               "or run.py --env-module)")
    if choices:
        message += f"; valid {kind} are {', '.join(choices)}"
    return UnknownEnvError(message + ".")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a multitask env (envs/multitask.py): its own widths and episode length."""

    env_id: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    can_terminate: bool


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know to build networks and count steps.

    ``max_episode_steps`` and everything else here count *agent* steps; one
    agent step is ``action_repeat`` simulator frames. A multitask env lists its
    tasks in ``tasks`` (empty for one task); its ``obs_dim`` and ``action_dim``
    are then the padded widths (envs/multitask.py).
    """

    env_id: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    action_repeat: int
    can_terminate: bool
    tasks: tuple[TaskSpec, ...] = ()

    @property
    def num_tasks(self) -> int:
        """Tasks per env slot: 1, or the tasks of a multitask env."""
        return max(1, len(self.tasks))


def scale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an agent action in [-1, 1] (clipped first) to the bounds [low, high].

    Agents always emit [-1, 1]; clipping here means a slightly out-of-range
    action (e.g. exploration noise) never reaches a simulator that rejects it.
    """
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (high - low)


@dataclasses.dataclass
class MujocoScene:
    """What drawing one MuJoCo env needs (experiments/video.py): its model and data (``mujoco.MjModel``,
    ``mujoco.MjData``), the ``camera`` (a camera id, -1 the free camera, or a ``mujoco.MjvCamera``), and ``fps``,
    the frames per second of one frame per agent step."""

    model: Any
    data: Any
    camera: Any
    fps: float


def default_camera(model) -> int:
    """The camera a video is drawn from where the env names none: the model's first (dm_control's suite and its
    Playground ports define a fixed or tracking one per task), else the free camera (-1)."""
    return 0 if model.ncam > 0 else -1


# --------------------------------------------------------------------------
# Host environments (numpy, vectorized over independent instances)
# --------------------------------------------------------------------------


@dataclasses.dataclass
class StepResult:
    """One vectorized host step; every array has leading dim ``num_envs``.

    ``obs`` is what the agent acts on next: where an episode ended it is the
    first observation of the new episode. ``final_obs`` is the true next
    observation of this transition (what a replay buffer stores and what a
    truncated transition bootstraps from); it equals ``obs`` where not done.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray


class HostEnvInstance(Protocol):
    """One seeded environment instance, adapted to agent conventions.

    ``step`` takes an action in [-1, 1] and returns
    ``(next_obs, reward, terminated, truncated)`` with ``obs`` flat float32 and
    never both flags set. It does not reset itself; ``HostVecEnv`` does.

    ``get_state`` returns everything that determines the instance's future
    observations and rewards (simulator state, the RNG of future resets, step
    and time-limit counters) as plain data: builtins and numpy arrays/scalars
    only, because ``HostVecEnv.set_state`` unpickles nothing else.
    ``set_state`` restores it on an instance built with the same arguments
    (any seed) so that the same actions then give bit-identical results; it
    raises ``ValueError`` for a state that does not fit.
    """

    def reset(self) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class HostVecEnv:
    """``num_envs`` independent host environments stepped in lockstep, with auto-reset."""

    def __init__(self, spec: EnvSpec, instances: Sequence[HostEnvInstance]):
        self.spec = spec
        self.num_envs = len(instances)
        self._instances = list(instances)
        self._needs_reset = True

    @property
    def instances(self) -> list[HostEnvInstance]:
        """The instances, in the order of the rows of every array this env returns."""
        return self._instances

    def reset(self) -> np.ndarray:
        """Start a new episode in every instance; returns ``[num_envs, obs_dim]`` float32."""
        self._needs_reset = False
        return np.stack([env.reset() for env in self._instances]).astype(np.float32)

    def step(self, action: np.ndarray, stop: np.ndarray | None = None) -> StepResult:
        """Step every instance with ``action[i]`` in [-1, 1]; finished ones reset at once.

        ``stop[i]`` (an agent's early stop) ends instance i's episode after this step as a
        truncation, unless it terminated anyway."""
        if self._needs_reset:
            raise RuntimeError(f"{self.spec.env_id}: call reset() before the first step().")
        action = np.asarray(action, dtype=np.float32)
        expected = (self.num_envs, self.spec.action_dim)
        if action.shape != expected:
            raise ValueError(
                f"{self.spec.env_id}: action shape {action.shape}, expected {expected}."
            )
        stop = np.zeros(self.num_envs, bool) if stop is None else np.asarray(stop, bool)
        obs, final_obs, reward, terminated, truncated = [], [], [], [], []
        for env, act, stop_here in zip(self._instances, action, stop):
            next_obs, rew, term, trunc = env.step(act)
            trunc = trunc or bool(stop_here)
            final_obs.append(next_obs)
            obs.append(env.reset() if (term or trunc) else next_obs)
            reward.append(rew)
            terminated.append(term)
            truncated.append(trunc and not term)
        return StepResult(
            obs=np.stack(obs).astype(np.float32),
            reward=np.asarray(reward, dtype=np.float32),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            final_obs=np.stack(final_obs).astype(np.float32),
        )

    def physics_states(self) -> dict[str, np.ndarray] | None:
        """{name: [num_envs, ...]} simulator state of every instance (gymnasium: qpos, qvel), None if the
        family does not expose one."""
        if not all(hasattr(env, "physics_state") for env in self._instances):
            return None
        states = [env.physics_state() for env in self._instances]
        return {k: np.stack([s[k] for s in states]) for k in states[0]}

    def get_state(self) -> bytes:
        """Everything needed to continue this env exactly, as bytes for a checkpoint.

        The format is envs/host_state.py's: the spec and ``num_envs`` it came
        from (checked on restore), whether ``reset`` is still due, and each
        instance's ``get_state`` with its type name. Cheap enough to take at
        every checkpoint (a few kB per instance for suite tasks).
        """
        return host_state.dumps(self.spec, self._needs_reset,
                                [(type(env).__name__, env.get_state()) for env in self._instances])

    def set_state(self, blob: bytes) -> None:
        """Continue from ``get_state``'s ``blob`` as if that run had never stopped.

        This env must be built like the one that saved ``blob`` (same id,
        kwargs and ``num_envs``; the seed does not matter, the saved RNG
        states replace it), and need not have been reset. Afterwards the same
        actions give bit-identical ``StepResult``s to the original run.

        Raises ``ValueError`` ("host env state is corrupt or from another env:
        ...") for bytes that are not such a state, or a state from another env;
        this env is then left as it was. Loading never runs code from the blob
        (only builtins and numpy arrays are unpickled), but a checkpoint should
        still come from a trusted place.
        """
        state = host_state.loads(blob)
        host_state.check_compatible(state, self.spec, [type(env).__name__ for env in self._instances])
        with warnings.catch_warnings():        # a snapshot to roll back to, not a checkpoint: no warnings from it
            warnings.simplefilter("ignore")
            previous = [env.get_state() for env in self._instances]
        for i, (env, (_, instance_state)) in enumerate(zip(self._instances, state["instances"])):
            try:
                env.set_state(instance_state)
            except Exception as error:
                # Leave no instance half-restored: put every one back as it was.
                for restored, old_state in zip(self._instances[: i + 1], previous):
                    restored.set_state(old_state)
                raise ValueError(f"{host_state.CORRUPT}: instance {i}: {error}") from error
        self._needs_reset = bool(state["needs_reset"])

    def close(self) -> None:
        for env in self._instances:
            env.close()


# --------------------------------------------------------------------------
# JAX environments (pure single-env functions; the caller vmaps)
# --------------------------------------------------------------------------


class JaxEnvState(NamedTuple):
    """Everything a JAX env carries between steps (a pytree).

    ``physics`` is the family's own state (a Playground ``State``, toy arrays).
    ``key`` seeds the next re-randomized reset; ``step`` and
    ``episode_return`` describe the episode in progress.
    """

    obs: jax.Array
    physics: Any
    key: jax.Array
    step: jax.Array  # agent steps taken in the current episode, int32
    episode_return: jax.Array  # float32
    clock: jax.Array  # agent steps this env has taken since it was made, across episodes (int32)


class StepInfo(NamedTuple):
    """What one JAX step reports (a pytree; vmapped it gains a leading dim).

    ``obs`` equals the new state's obs (the reset obs where done);
    ``final_obs`` is the true next observation. ``episode_return`` and
    ``episode_length`` describe the episode that just ended and are only
    meaningful where ``terminated | truncated``. ``nan_reset`` marks
    transitions where the physics produced NaN: they are reported as
    terminated with reward 0 and ``final_obs`` = the previous obs (finite), so
    nothing NaN reaches a buffer; count them, and drop them if you like.
    """

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    nan_reset: jax.Array


# physics_reset(key, phase) -> (physics, obs)
PhysicsReset = Callable[[jax.Array, jax.Array], tuple[Any, jax.Array]]
# physics_step(physics, action, phase) -> (physics, obs, reward, terminated); one frame.
# `phase` (int32) is the task's phase for non-stationary envs (envs/nonstationary.py); 0 otherwise.
PhysicsStep = Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array]]
# phase_of(clock) -> phase: which task an env that has taken `clock` steps faces.
PhaseOf = Callable[[jax.Array], jax.Array]


class JaxEnv:
    """A pure, jittable, vmappable environment built from one-frame physics functions.

    ``step`` applies the action ``spec.action_repeat`` times (summing rewards,
    stopping early at a terminal frame), truncates at
    ``spec.max_episode_steps`` agent steps, and auto-resets with a fresh key so
    the next episode starts from a newly randomized state.

    Every env state counts its steps across episodes (``clock``); a
    non-stationary env maps it to the task's phase with ``phase_of``, and the
    physics functions receive that phase (see envs/nonstationary.py).
    """

    def __init__(self, spec: EnvSpec, physics_reset: PhysicsReset, physics_step: PhysicsStep,
                 phase_of: PhaseOf | None = None):
        self.spec = spec
        self._physics_reset = physics_reset
        self._physics_step = physics_step
        self.phase_of = phase_of or (lambda clock: jnp.zeros((), jnp.int32))

    def reset(self, key: jax.Array, clock: jax.Array | int = 0) -> JaxEnvState:
        """A new episode; ``clock`` is the env's step count so far (the phase it starts in)."""
        reset_key, carry_key = jax.random.split(key)
        clock = jnp.asarray(clock, jnp.int32)
        physics, obs = self._physics_reset(reset_key, self.phase_of(clock))
        return JaxEnvState(
            obs=obs.astype(jnp.float32),
            physics=physics,
            key=carry_key,
            step=jnp.zeros((), jnp.int32),
            episode_return=jnp.zeros((), jnp.float32),
            clock=clock,
        )

    def _repeat_action(self, state: JaxEnvState, action: jax.Array):
        """Run ``action_repeat`` frames; frames after a terminal one change nothing."""
        phase = self.phase_of(state.clock)

        def frame(carry, _):
            physics, obs, reward_sum, terminated, nan = carry
            new_physics, new_obs, reward, new_terminated = self._physics_step(physics, action, phase)
            new_nan = ~(jnp.all(jnp.isfinite(new_obs)) & jnp.isfinite(reward))
            new_carry = (
                new_physics,
                new_obs.astype(jnp.float32),
                reward_sum + jnp.where(new_nan, 0.0, reward).astype(jnp.float32),
                new_terminated.astype(bool) | new_nan,
                new_nan,
            )
            # Once terminated (or NaN), keep the carry frozen for the remaining frames.
            carry = jax.tree.map(lambda old, new: jnp.where(terminated, old, new), carry, new_carry)
            return carry, None

        init = (state.physics, state.obs, jnp.zeros((), jnp.float32),
                jnp.zeros((), bool), jnp.zeros((), bool))
        carry, _ = jax.lax.scan(frame, init, None, length=self.spec.action_repeat)
        return carry

    def _advance(self, state: JaxEnvState, action: jax.Array, stop: jax.Array | bool = False):
        """One agent step without the reset: (continued state, info, done, reset key).

        `stop` (e.g. an agent's early stop, agents/least.py) ends the episode after this step as a
        truncation: the value still bootstraps, and the next episode starts from a fresh reset."""
        action = jnp.clip(action, -1.0, 1.0)
        physics, next_obs, reward, terminated, nan = self._repeat_action(state, action)
        # A NaN frame is ended as terminal; report the last finite obs so that
        # nothing NaN reaches replay buffers or statistics.
        final_obs = jnp.where(nan, state.obs, next_obs)
        step = state.step + 1
        episode_return = state.episode_return + reward
        truncated = ((step >= self.spec.max_episode_steps) | stop) & ~terminated
        done = terminated | truncated
        next_key, reset_key = jax.random.split(state.key)
        continued = JaxEnvState(final_obs, physics, next_key, step, episode_return, state.clock + 1)
        info = StepInfo(
            obs=final_obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            episode_return=episode_return,
            episode_length=step,
            nan_reset=nan,
        )
        return continued, info, done, reset_key

    def _fresh(self, reset_key: jax.Array, continued: JaxEnvState) -> JaxEnvState:
        """The state that replaces a finished episode: a newly randomized reset."""
        return self.reset(reset_key, continued.clock)._replace(key=continued.key)

    def step(self, state: JaxEnvState, action: jax.Array,
             stop: jax.Array | bool = False) -> tuple[JaxEnvState, StepInfo]:
        """One env: step, and reset with a fresh key where the episode ended (or `stop` truncates it).

        Under ``vmap`` the reset ``cond`` becomes a select, so every env pays
        for a reset on every step; batched code should call ``step_batch``.
        """
        continued, info, done, reset_key = self._advance(state, action, stop)
        new_state = jax.lax.cond(done, lambda: self._fresh(reset_key, continued), lambda: continued)
        return new_state, info._replace(obs=new_state.obs)

    def step_batch(self, states: JaxEnvState, actions: jax.Array, sync_axes: tuple[str, ...] = (),
                   stops: jax.Array | None = None) -> tuple[JaxEnvState, StepInfo]:
        """A batch of envs (leading dim N): the same result as ``vmap(step)``, cheaper (`stops` [N]: as
        `step`'s `stop`, per env).

        The reset runs only on steps where some env of the batch finished (a
        real branch: its predicate is reduced over the batch, and over the
        named ``vmap`` axes in ``sync_axes``, e.g. the seed axis, so that it
        stays unbatched). Envs without terminations, such as Playground's DM
        Control tasks, finish together once per episode, so resets cost
        almost nothing; under ``vmap(step)`` every env pays for a reset
        (about two physics steps) on every step.
        """
        stops = jnp.zeros(actions.shape[:1], bool) if stops is None else stops
        continued, info, done, reset_keys = jax.vmap(self._advance)(states, actions, stops)
        any_done = any_over(done, sync_axes)

        def reset_finished():
            fresh = jax.vmap(self._fresh)(reset_keys, continued)
            return jax.tree.map(lambda f, c: jnp.where(_expand(done, c), f, c), fresh, continued)

        new_states = jax.lax.cond(any_done, reset_finished, lambda: continued)
        return new_states, info._replace(obs=new_states.obs)


def any_over(mask: jax.Array, sync_axes: tuple[str, ...] = ()) -> jax.Array:
    """any(mask) over the array and over the named ``vmap`` axes in ``sync_axes``.

    The result is unbatched, so a ``lax.cond`` on it stays a real branch under
    that ``vmap`` (a batched predicate turns ``cond`` into a select that runs
    both branches).
    """
    flag = jnp.any(mask).astype(jnp.int32)
    for axis in sync_axes:
        flag = jax.lax.psum(flag, axis)
    return flag > 0


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    """Broadcast a [N] mask against a [N, ...] leaf."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


# --------------------------------------------------------------------------
# A user's pure-JAX env: write reset, step and spec; JaxEnv does the rest
# --------------------------------------------------------------------------


class PureJaxEnv:
    """Subclass this to bring a pure-JAX env: set ``spec`` and write ``reset`` and ``step`` for ONE env and ONE
    frame, with no episode bookkeeping::

        class Hover(envs.PureJaxEnv):
            def __init__(self, episode_length: int = 200):
                self.spec = envs.EnvSpec("my:Hover", obs_dim=2, action_dim=1, max_episode_steps=episode_length,
                                         action_repeat=1, can_terminate=False)

            def reset(self, key):                         # -> (state, obs [obs_dim])
                height = jax.random.uniform(key, (1,), minval=-1.0, maxval=1.0)
                state = (height, jnp.zeros(1))
                return state, jnp.concatenate(state)

            def step(self, state, action):                # action in [-1, 1]^action_dim
                height, speed = state                     # -> (state, obs, reward, terminated)
                speed = speed + 0.05 * action
                height = height + 0.05 * speed
                return (height, speed), jnp.concatenate([height, speed]), -jnp.abs(height[0]), jnp.array(False)

    ``state`` is any pytree whose shapes ``step`` keeps; both functions must be jittable (no Python branches on
    traced values). ``as_jax_env()`` wraps them into the ``JaxEnv`` that the loops drive, which adds everything
    else once for every env: ``spec.action_repeat`` frames per agent step with rewards summed, truncation at
    ``spec.max_episode_steps`` agent steps, auto-reset with a fresh key, episode returns, NaN recovery, batched
    stepping (``step_batch``) and the non-stationary switches that work on any JAX env. ``envs.make`` calls it
    for a registered factory that returns one (``envs.register``).
    """

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        raise NotImplementedError(f"{type(self).__name__}.reset(key) -> (state, obs)")

    def step(self, state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
        raise NotImplementedError(f"{type(self).__name__}.step(state, action) -> (state, obs, reward, terminated)")

    def as_jax_env(self) -> JaxEnv:
        """The ``JaxEnv`` of this env, its shapes checked against ``spec`` (``check_jax_env``)."""
        if not isinstance(getattr(self, "spec", None), EnvSpec):
            raise UnsupportedEnvError(f"{type(self).__name__} has no spec: set self.spec = envs.EnvSpec(...)")
        # A user's env knows no phases (envs/nonstationary.py): the frame functions drop them.
        env = JaxEnv(self.spec, lambda key, phase: self.reset(key),
                     lambda state, action, phase: self.step(state, action))
        check_jax_env(env)
        return env


def check_jax_env(env: JaxEnv) -> None:
    """Trace ``env``'s frame functions once, abstractly (``jax.eval_shape``: no compilation), and raise
    ``UnsupportedEnvError`` naming the first output that does not fit ``env.spec``: so that a mistake in a
    user's env is one line here rather than an error deep inside a training loop's trace."""
    spec = env.spec
    name = spec.env_id
    phase = jax.ShapeDtypeStruct((), jnp.int32)
    reset = jax.eval_shape(env._physics_reset, jax.ShapeDtypeStruct((2,), jnp.uint32), phase)
    if not (isinstance(reset, tuple) and len(reset) == 2):
        raise UnsupportedEnvError(f"{name}: reset(key) must return (state, obs), got {_describe(reset)}")
    state, obs = reset
    _check_shape(name, "reset's obs", obs, (spec.obs_dim,), f"(spec.obs_dim,) = ({spec.obs_dim},)")
    action = jax.ShapeDtypeStruct((spec.action_dim,), jnp.float32)
    stepped = jax.eval_shape(env._physics_step, state, action, phase)
    if not (isinstance(stepped, tuple) and len(stepped) == 4):
        raise UnsupportedEnvError(f"{name}: step(state, action) must return (state, obs, reward, terminated), "
                                  f"got {_describe(stepped)}")
    new_state, obs, reward, terminated = stepped
    _check_shape(name, "step's obs", obs, (spec.obs_dim,), f"(spec.obs_dim,) = ({spec.obs_dim},)")
    _check_shape(name, "step's reward", reward, (), "a scalar, ()")
    _check_shape(name, "step's terminated", terminated, (), "a scalar, ()")
    before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    after = jax.tree.map(lambda x: (x.shape, x.dtype), new_state)
    if jax.tree.structure(state) != jax.tree.structure(new_state) or before != after:
        raise UnsupportedEnvError(f"{name}: step must return a state of the same structure, shapes and dtypes as "
                                  f"reset's (auto-reset swaps one for the other): reset gave {before}, step gave "
                                  f"{after}")


def _check_shape(name: str, what: str, value: Any, shape: tuple, expected: str) -> None:
    if getattr(value, "shape", None) != shape:
        raise UnsupportedEnvError(f"{name}: {what} has shape {getattr(value, 'shape', _describe(value))}; "
                                  f"expected {expected}")


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return type(value).__name__
