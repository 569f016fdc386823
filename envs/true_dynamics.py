"""Known termination rules and the real simulator as a "model", for offline model-based RL.

Offline model-based agents (agents/ravl.py, "The Edge-of-Reach Problem in
Offline Model-Based RL", arXiv 2402.12527) roll a dynamics model out from
dataset states. Two things here serve them:

* ``termination_fn(env_id)``: gymnasium v5's default termination rule for a
  task, written on observations, ``terminated = fn(obs, action, next_obs)``
  (jnp, batched over leading dims). Model rollouts use it, as MBPO, MOPO and
  RAVL do ("known termination functions"). dm_control tasks never terminate.
* ``make_true_dynamics(env_id)``: the task's own MuJoCo model on the device
  (MJX, JAX implementation), stepped from dataset simulator states
  (``infos/qpos``, ``infos/qvel``, recorded by ``GymInstance.physics_state``)
  inside ``jit``. This is the paper's central experiment: with the *true*
  dynamics and truncated rollouts, value-based methods still collapse, so the
  failure is not model error but states at the edge of reach.

Everything below follows gymnasium's ``*_v5.py`` with default arguments; in
particular ``exclude_current_positions_from_observation=True``, so obs index 0
is qpos[1] (Hopper, Walker2d, HalfCheetah) or qpos[2] (Ant).

MJX runs in float32 (unless jax x64 is on) while gymnasium's MuJoCo runs in
float64, and a state restored from (qpos, qvel) starts with a zero solver
warm start: one step agrees with gymnasium to ~1e-5 in the observation
(median), at worst ~5e-3 on HalfCheetah's foot velocities in contact; rewards
to ~1e-4 (tests/test_true_dynamics.py states the measurements).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs.mjx_cholesky import cholesky_without_lapack

# terminated = fn(obs, action, next_obs); every argument has the same leading dims.
TerminationFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------
# Healthy rules of gymnasium v5 (defaults), shared by termination_fn and TrueDynamics
# --------------------------------------------------------------------------
# gymnasium writes them as chained Python comparisons (``low < z < high``); a
# NaN fails every comparison, so a NaN state is unhealthy, as it is here.


def _hopper_healthy(z: jax.Array, angle: jax.Array, state: jax.Array) -> jax.Array:
    """hopper_v5.is_healthy: ``state`` = state_vector()[2:] = (qpos[2:], qvel), all in (-100, 100);
    z = qpos[1] in (0.7, inf); angle = qpos[2] in (-0.2, 0.2)."""
    healthy_state = jnp.all((-100.0 < state) & (state < 100.0), axis=-1)
    return healthy_state & (0.7 < z) & (z < jnp.inf) & (-0.2 < angle) & (angle < 0.2)


def _walker2d_healthy(z: jax.Array, angle: jax.Array) -> jax.Array:
    """walker2d_v5.is_healthy: z = qpos[1] in (0.8, 2.0); angle = qpos[2] in (-1, 1)."""
    return (0.8 < z) & (z < 2.0) & (-1.0 < angle) & (angle < 1.0)


def _inverted_pendulum_terminated(obs: jax.Array) -> jax.Array:
    """inverted_pendulum_v5.step: not all obs finite, or |pole angle| = |obs[1]| > 0.2."""
    return ~jnp.all(jnp.isfinite(obs), axis=-1) | (jnp.abs(obs[..., 1]) > 0.2)


# --------------------------------------------------------------------------
# Termination functions on observations
# --------------------------------------------------------------------------


def _hopper_done(obs, action, next_obs):
    # obs = (qpos[1:], clip(qvel, -10, 10)): obs[0] = z, obs[1] = torso angle,
    # obs[1:] = (qpos[2:], clipped qvel). gymnasium checks the *unclipped* qvel
    # against (-100, 100); clipped at 10 it always passes here (NaN still fails),
    # so the only disagreement is a joint speed above 100, which the obs hides.
    return ~_hopper_healthy(next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:])


def _walker2d_done(obs, action, next_obs):
    # obs[0] = qpos[1] = torso height z, obs[1] = qpos[2] = torso angle.
    return ~_walker2d_healthy(next_obs[..., 0], next_obs[..., 1])


def _inverted_pendulum_done(obs, action, next_obs):
    # obs = (qpos, qvel): obs[1] = pole hinge angle.
    return _inverted_pendulum_terminated(next_obs)


def _inverted_double_pendulum_done(obs, action, next_obs):
    # Terminated when the tip of the second pole has height y <= 1. Poles are
    # 0.6 long on a cart at height 0: y = 0.6 cos(t1) + 0.6 cos(t1 + t2), and
    # obs[1:5] = (sin t1, sin t2, cos t1, cos t2). gymnasium reads the tip
    # from data.site_xpos after mj_step, i.e. from the kinematics of RK4's last
    # stage rather than of the final qpos: the two differ only within a sliver
    # of the boundary y = 1.
    sin1, sin2, cos1, cos2 = (next_obs[..., i] for i in range(1, 5))
    y = 0.6 * cos1 + 0.6 * (cos1 * cos2 - sin1 * sin2)
    return y <= 1.0


def _ant_done(obs, action, next_obs):
    # ant_v5.is_healthy: state_vector() finite and 0.2 <= z <= 1.0 with
    # z = qpos[2] = obs[0]. The obs holds every entry of the state vector but
    # the x, y position (and, by default, the clipped contact forces), and a
    # non-finite x, y never stays alone in a simulation, so the finiteness
    # check reads the whole obs.
    z = next_obs[..., 0]
    return ~(jnp.all(jnp.isfinite(next_obs), axis=-1) & (0.2 <= z) & (z <= 1.0))


def _never_done(obs, action, next_obs):
    return jnp.zeros(next_obs.shape[:-1], bool)


_TERMINATION_FNS: dict[str, TerminationFn] = {
    "gym:Hopper-v5": _hopper_done,
    "gym:Walker2d-v5": _walker2d_done,
    "gym:HalfCheetah-v5": _never_done,
    "gym:InvertedPendulum-v5": _inverted_pendulum_done,
    "gym:InvertedDoublePendulum-v5": _inverted_double_pendulum_done,
    "gym:Ant-v5": _ant_done,
}


def termination_ids() -> list[str]:
    """Ids ``termination_fn`` knows (besides every ``dmc`` id, which never terminates)."""
    return sorted(_TERMINATION_FNS)


def termination_fn(env_id: str) -> TerminationFn:
    """gymnasium v5's default termination rule for ``env_id`` as ``fn(obs, action, next_obs) -> bool``.

    jnp, pure, batched over any leading dims: ``[..., obs_dim]`` in,
    ``[...]`` bool out. ``dmc`` ids (dm_control, MR.Q protocol) never
    terminate. Raises ``ValueError`` listing the supported ids otherwise.
    """
    if env_id == "dmc" or env_id.startswith("dmc:"):
        return _never_done
    if env_id not in _TERMINATION_FNS:
        raise ValueError(
            f"no known termination function for env id {env_id!r}; supported: "
            f"{', '.join(termination_ids())}, and dmc / dmc:<domain>-<task> (never terminate)."
        )
    return _TERMINATION_FNS[env_id]


# --------------------------------------------------------------------------
# True dynamics: the task's MuJoCo model on the device (MJX)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Task:
    """What gymnasium v5 computes around ``do_simulation`` for one task (default arguments)."""

    # obs(qpos, qvel) -> obs
    obs: Callable[[jax.Array, jax.Array], jax.Array]
    # reward_terminated(qpos_before, qpos_after, qvel_after, ctrl, dt) -> (reward, terminated);
    # ctrl is the action gymnasium receives (already scaled to the ctrlrange).
    reward_terminated: Callable[..., tuple[jax.Array, jax.Array]]


def _locomotion_obs(clip_qvel: bool):
    def obs(qpos, qvel):
        return jnp.concatenate([qpos[1:], jnp.clip(qvel, -10.0, 10.0) if clip_qvel else qvel])

    return obs


def _hopper_reward(qpos0, qpos1, qvel1, ctrl, dt):
    # reward = forward_reward_weight (1) * dx/dt + healthy_reward (1) * is_healthy
    #          - ctrl_cost_weight (1e-3) * |a|^2
    healthy = _hopper_healthy(qpos1[1], qpos1[2], jnp.concatenate([qpos1[2:], qvel1]))
    reward = (qpos1[0] - qpos0[0]) / dt + healthy.astype(qpos1.dtype) - 1e-3 * jnp.sum(ctrl**2)
    return reward, ~healthy


def _walker2d_reward(qpos0, qpos1, qvel1, ctrl, dt):
    # Same form as Hopper's, with Walker2d's healthy rule.
    healthy = _walker2d_healthy(qpos1[1], qpos1[2])
    reward = (qpos1[0] - qpos0[0]) / dt + healthy.astype(qpos1.dtype) - 1e-3 * jnp.sum(ctrl**2)
    return reward, ~healthy


def _half_cheetah_reward(qpos0, qpos1, qvel1, ctrl, dt):
    # reward = dx/dt - ctrl_cost_weight (0.1) * |a|^2; never terminates.
    return (qpos1[0] - qpos0[0]) / dt - 0.1 * jnp.sum(ctrl**2), jnp.zeros((), bool)


def _inverted_pendulum_reward(qpos0, qpos1, qvel1, ctrl, dt):
    # reward = 1 while the pole is up (v5: 0 on the terminating step).
    terminated = _inverted_pendulum_terminated(jnp.concatenate([qpos1, qvel1]))
    return 1.0 - terminated.astype(qpos1.dtype), terminated


_TASKS: dict[str, _Task] = {
    "gym:InvertedPendulum-v5": _Task(lambda qpos, qvel: jnp.concatenate([qpos, qvel]), _inverted_pendulum_reward),
    "gym:Hopper-v5": _Task(_locomotion_obs(clip_qvel=True), _hopper_reward),
    "gym:Walker2d-v5": _Task(_locomotion_obs(clip_qvel=True), _walker2d_reward),
    "gym:HalfCheetah-v5": _Task(_locomotion_obs(clip_qvel=False), _half_cheetah_reward),
}


def true_dynamics_ids() -> list[str]:
    """Ids ``make_true_dynamics`` supports."""
    return sorted(_TASKS)


@dataclasses.dataclass(frozen=True, eq=False)
class TrueDynamics:
    """The real simulator of a gymnasium v5 task as pure, jittable, vmappable functions.

    A simulator state (``sim_state``) is one ``mjx.Data`` (a pytree; a batch
    is the same pytree with a leading axis, made with ``jax.vmap``). It is a
    few kB per state (Hopper: ~6.6 kB). Functions are unbatched: ``jax.vmap``
    them over a batch. Build with ``make_true_dynamics(env_id)``.
    """

    env_id: str
    obs_dim: int
    action_dim: int
    nq: int
    nv: int
    frame_skip: int  # simulator steps per agent step (gymnasium's env.frame_skip)
    dt: float  # frame_skip * model timestep (gymnasium's env.dt)
    ctrl_low: np.ndarray  # the actuators' ctrlrange = gymnasium's action_space bounds
    ctrl_high: np.ndarray
    model: Any  # mjx.Model (JAX implementation)
    _template: Any  # mjx.Data from mjx.make_data, every field at its reset value
    _task: _Task

    def state_from(self, qpos: jax.Array, qvel: jax.Array) -> Any:
        """The simulator state with these qpos [nq] and qvel [nv] (e.g. a dataset's ``infos/qpos``, ``infos/qvel``).

        Everything else (time, ctrl, activations, the solver warm start) is
        ``mjx.make_data``'s. Derived quantities (positions of bodies,
        contacts) are not computed here: nothing read from a state needs them,
        and ``step`` starts with the forward pass, as ``mj_step`` does.
        """
        qpos, qvel = jnp.asarray(qpos), jnp.asarray(qvel)
        if qpos.shape != (self.nq,) or qvel.shape != (self.nv,):
            raise ValueError(
                f"{self.env_id}: state_from takes one state, qpos ({self.nq},) and qvel ({self.nv},); "
                f"got {qpos.shape} and {qvel.shape} (vmap it over a batch)."
            )
        dtype = self._template.qpos.dtype
        return self._template.replace(qpos=qpos.astype(dtype), qvel=qvel.astype(dtype))

    def obs(self, sim_state: Any) -> jax.Array:
        """gymnasium's observation of this state (``_get_obs``)."""
        return self._task.obs(sim_state.qpos, sim_state.qvel)

    def scale_action(self, action: jax.Array) -> jax.Array:
        """An agent action in [-1, 1] (clipped first) mapped to the ctrlrange, as ``envs.core.scale_action``."""
        action = jnp.clip(action, -1.0, 1.0)
        low, high = jnp.asarray(self.ctrl_low, action.dtype), jnp.asarray(self.ctrl_high, action.dtype)
        return low + (action + 1.0) * 0.5 * (high - low)

    def step(self, sim_state: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
        """One agent step, as gymnasium's ``env.step``: ``(next_sim_state, next_obs, reward, terminated)``.

        ``action`` in [-1, 1] is scaled to the ctrlrange (as envs/gym_envs.py
        does before ``env.step``) and held for ``frame_skip`` simulator steps;
        reward and termination are gymnasium v5's for the task.
        """
        from mujoco import mjx

        action = jnp.asarray(action)
        if action.shape != (self.action_dim,):
            raise ValueError(f"{self.env_id}: step takes one action of shape ({self.action_dim},), got {action.shape}.")
        ctrl = self.scale_action(action.astype(self._template.ctrl.dtype))
        qpos_before = sim_state.qpos
        state = sim_state.replace(ctrl=ctrl)
        with cholesky_without_lapack():     # batched LAPACK Cholesky can deadlock XLA:CPU (envs/mjx_cholesky.py)
            state = jax.lax.fori_loop(0, self.frame_skip, lambda _, s: mjx.step(self.model, s), state)
        reward, terminated = self._task.reward_terminated(qpos_before, state.qpos, state.qvel, ctrl, self.dt)
        return state, self.obs(state), reward, terminated

    def states_at(self, qpos: jax.Array, qvel: jax.Array, index: jax.Array) -> Any:
        """A batch of simulator states from dataset arrays: qpos [N, nq], qvel [N, nv], index [B] -> [B] states."""
        return jax.vmap(self.state_from)(qpos[index], qvel[index])


@functools.lru_cache(maxsize=None)
def make_true_dynamics(env_id: str) -> TrueDynamics:
    """The ``TrueDynamics`` of ``env_id`` (e.g. ``gym:Hopper-v5``), built from gymnasium's own MuJoCo model.

    Cached per id, so calling it inside a traced function (an agent's jitted
    update) is cheap. Raises ``ValueError`` listing the supported ids.
    """
    if env_id not in _TASKS:
        raise ValueError(
            f"true dynamics are not available for env id {env_id!r}; supported: {', '.join(true_dynamics_ids())}."
        )
    import gymnasium
    from mujoco import mjx

    env = gymnasium.make(env_id.removeprefix("gym:"), disable_env_checker=True)
    try:
        sim = env.unwrapped
        model = sim.model
        space = env.action_space
        # Eager even when first called while jit traces a caller: the cached
        # model and template must hold concrete arrays, never tracers.
        with jax.ensure_compile_time_eval():
            mjx_model = mjx.put_model(model, impl="jax")
            template = mjx.make_data(mjx_model, impl="jax")
        obs_dim = int(np.prod(env.observation_space.shape))
        return TrueDynamics(
            env_id=env_id,
            obs_dim=obs_dim,
            action_dim=int(model.nu),
            nq=int(model.nq),
            nv=int(model.nv),
            frame_skip=int(sim.frame_skip),
            dt=float(sim.dt),
            ctrl_low=np.asarray(space.low, np.float64),
            ctrl_high=np.asarray(space.high, np.float64),
            model=mjx_model,
            _template=template,
            _task=_TASKS[env_id],
        )
    finally:
        env.close()


def sim_states_at(env_id: str, qpos: jax.Array, qvel: jax.Array, index: jax.Array) -> Any:
    """Dataset-side helper: the simulator states of transitions ``index`` [B] of a dataset's
    ``infos/qpos`` [N, nq] and ``infos/qvel`` [N, nv] (the state each ``obs`` was computed from)."""
    return make_true_dynamics(env_id).states_at(qpos, qvel, index)
