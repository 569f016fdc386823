"""A tiny pure-JAX environment for fast tests of the device loop.

MuJoCo Playground programs take many seconds to compile on a CPU; this one
compiles in well under a second, so tests of scanned training loops, auto-reset
and replay can run on every commit. It still has a clear optimum (hold the
mass at the origin: return near 0) so a learning test can check progress.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from envs.core import EnvSpec, JaxEnv

POINT_MASS = "jax:PointMass"
POINT_MASS_1D = "jax:PointMass1D"       # the same task on a line: other widths, for multitask tests
_DT = 0.05
_DAMPING = 0.1  # velocity decay per second; keeps random-action episodes bounded


def make_point_mass(
    episode_length: int = 100,
    action_repeat: int = 1,
    terminate_outside: float | None = None,
    dim: int = 2,
) -> JaxEnv:
    """2-D point mass: obs = (x, y, vx, vy), action = force in [-1, 1]^2 (`dim=1`: jax:PointMass1D, on a line:
    obs (x, vx), action 1-D).

    Reward per frame = -|position|; starts uniformly in [-1, 1]^2 at rest.
    ``episode_length`` counts agent steps. ``terminate_outside`` (optional)
    ends the episode as terminal when |x| or |y| exceeds it, which lets tests
    exercise the terminated path; by default the task never terminates.
    """
    if episode_length < 1 or action_repeat < 1:
        raise ValueError(
            f"jax:PointMass: episode_length ({episode_length}) and action_repeat "
            f"({action_repeat}) must be >= 1."
        )

    def physics_reset(key, phase):
        position = jax.random.uniform(key, (dim,), minval=-1.0, maxval=1.0)
        physics = (position, jnp.zeros(dim))
        return physics, jnp.concatenate(physics)

    def physics_step(physics, action, phase):
        position, velocity = physics
        velocity = velocity * (1.0 - _DAMPING * _DT) + _DT * action
        position = position + _DT * velocity
        reward = reward_to_goal((position, velocity), jnp.zeros(dim))
        if terminate_outside is None:
            terminated = jnp.zeros((), bool)
        else:
            terminated = jnp.any(jnp.abs(position) > terminate_outside)
        return (position, velocity), jnp.concatenate([position, velocity]), reward, terminated

    spec = EnvSpec(
        env_id=POINT_MASS if dim == 2 else POINT_MASS_1D,
        obs_dim=2 * dim,
        action_dim=dim,
        max_episode_steps=episode_length,
        action_repeat=action_repeat,
        can_terminate=terminate_outside is not None,
    )
    return JaxEnv(spec, physics_reset, physics_step)


def reward_to_goal(physics, goal: jax.Array) -> jax.Array:
    """PointMass's reward for holding the mass at `goal`: -|position - goal| (the task's goal is the origin)."""
    position, _ = physics
    return -jnp.linalg.norm(position - goal)
