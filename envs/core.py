"""Types shared by every environment family, and the auto-reset logic.

Two kinds of environment exist because training runs two ways (see DESIGN.md):

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
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np


ENV_ID_FAMILIES = ("dmc", "dmc:<domain>-<task>", "gym:<id>", "mjx:<PlaygroundName>", "jax:PointMass")


class UnknownEnvError(ValueError):
    """An environment id that names no environment; the message lists valid ones."""


def unknown_env_error(env_id: str, kind: str = "", choices: Sequence[str] = ()) -> UnknownEnvError:
    """One-line error naming ``env_id``, the id families and, if given, the valid ``kind`` choices."""
    message = f"Unknown env id {env_id!r}: valid ids are {', '.join(ENV_ID_FAMILIES)}"
    if choices:
        message += f"; valid {kind} are {', '.join(choices)}"
    return UnknownEnvError(message + ".")


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know to build networks and count steps.

    ``max_episode_steps`` and everything else here count *agent* steps; one
    agent step is ``action_repeat`` simulator frames.
    """

    env_id: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    action_repeat: int
    can_terminate: bool


def scale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an agent action in [-1, 1] (clipped first) to the bounds [low, high].

    Agents always emit [-1, 1]; clipping here means a slightly out-of-range
    action (e.g. exploration noise) never reaches a simulator that rejects it.
    """
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return low + (action + 1.0) * 0.5 * (high - low)


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
    """

    def reset(self) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]: ...

    def close(self) -> None: ...


class HostVecEnv:
    """``num_envs`` independent host environments stepped in lockstep, with auto-reset."""

    def __init__(self, spec: EnvSpec, instances: Sequence[HostEnvInstance]):
        self.spec = spec
        self.num_envs = len(instances)
        self._instances = list(instances)
        self._needs_reset = True

    def reset(self) -> np.ndarray:
        """Start a new episode in every instance; returns ``[num_envs, obs_dim]`` float32."""
        self._needs_reset = False
        return np.stack([env.reset() for env in self._instances]).astype(np.float32)

    def step(self, action: np.ndarray) -> StepResult:
        """Step every instance with ``action[i]`` in [-1, 1]; finished ones reset at once."""
        if self._needs_reset:
            raise RuntimeError(f"{self.spec.env_id}: call reset() before the first step().")
        action = np.asarray(action, dtype=np.float32)
        expected = (self.num_envs, self.spec.action_dim)
        if action.shape != expected:
            raise ValueError(
                f"{self.spec.env_id}: action shape {action.shape}, expected {expected}."
            )
        obs, final_obs, reward, terminated, truncated = [], [], [], [], []
        for env, act in zip(self._instances, action):
            next_obs, rew, term, trunc = env.step(act)
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


# physics_reset(key) -> (physics, obs)
PhysicsReset = Callable[[jax.Array], tuple[Any, jax.Array]]
# physics_step(physics, action) -> (physics, obs, reward, terminated); one frame
PhysicsStep = Callable[[Any, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array]]


class JaxEnv:
    """A pure, jittable, vmappable environment built from one-frame physics functions.

    ``step`` applies the action ``spec.action_repeat`` times (summing rewards,
    stopping early at a terminal frame), truncates at
    ``spec.max_episode_steps`` agent steps, and auto-resets with a fresh key so
    the next episode starts from a newly randomized state.
    """

    def __init__(self, spec: EnvSpec, physics_reset: PhysicsReset, physics_step: PhysicsStep):
        self.spec = spec
        self._physics_reset = physics_reset
        self._physics_step = physics_step

    def reset(self, key: jax.Array) -> JaxEnvState:
        reset_key, carry_key = jax.random.split(key)
        physics, obs = self._physics_reset(reset_key)
        return JaxEnvState(
            obs=obs.astype(jnp.float32),
            physics=physics,
            key=carry_key,
            step=jnp.zeros((), jnp.int32),
            episode_return=jnp.zeros((), jnp.float32),
        )

    def _repeat_action(self, state: JaxEnvState, action: jax.Array):
        """Run ``action_repeat`` frames; frames after a terminal one change nothing."""

        def frame(carry, _):
            physics, obs, reward_sum, terminated, nan = carry
            new_physics, new_obs, reward, new_terminated = self._physics_step(physics, action)
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

    def step(self, state: JaxEnvState, action: jax.Array) -> tuple[JaxEnvState, StepInfo]:
        action = jnp.clip(action, -1.0, 1.0)
        physics, next_obs, reward, terminated, nan = self._repeat_action(state, action)
        # A NaN frame is ended as terminal; report the last finite obs so that
        # nothing NaN reaches replay buffers or statistics.
        final_obs = jnp.where(nan, state.obs, next_obs)
        step = state.step + 1
        episode_return = state.episode_return + reward
        truncated = (step >= self.spec.max_episode_steps) & ~terminated
        done = terminated | truncated

        next_key, reset_key = jax.random.split(state.key)
        continued = JaxEnvState(final_obs, physics, next_key, step, episode_return)
        # Under vmap this cond becomes a select (both branches run); unbatched it skips the reset.
        new_state = jax.lax.cond(
            done,
            lambda: self.reset(reset_key)._replace(key=next_key),
            lambda: continued,
        )
        info = StepInfo(
            obs=new_state.obs,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            episode_return=episode_return,
            episode_length=step,
            nan_reset=nan,
        )
        return new_state, info
