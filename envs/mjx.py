"""MuJoCo Playground (MJX) DM Control suite tasks as ``JaxEnv``s.

Only the DM Control suite is offered: Playground's locomotion and manipulation
tasks need the MuJoCo Menagerie, which is downloaded at first use, and our
machines may be offline.

Playground's own ``done`` is treated as termination (for its DM Control tasks
it only fires when the physics goes NaN); the time limit is ours, so that
truncation is reported separately and bootstraps.
"""

from __future__ import annotations

import math

from envs.core import EnvSpec, JaxEnv, UnknownEnvError, unknown_env_error
from envs.mjx_cholesky import cholesky_without_lapack
from envs.options import EnvOptionError


def playground_names() -> list[str]:
    """Names accepted after ``mjx:``, e.g. ``CheetahRun``."""
    from mujoco_playground import dm_control_suite

    return list(dm_control_suite.ALL_ENVS)


def make_playground(
    name: str,
    impl: str = "jax",
    action_repeat: int = 1,
    episode_length: int | None = None,
    ctrl_dt: float | None = None,
    sim_dt: float | None = None,
) -> JaxEnv:
    """Load Playground task ``name``.

    ``impl='jax'`` works on every backend (CPU, GPU, TPU); ``'warp'`` needs
    warp installed. One frame is one Playground ``step``: ``ctrl_dt`` seconds,
    integrated in ``ctrl_dt / sim_dt`` physics substeps (Playground's config
    keys; left out, the task's own). ``action_repeat`` frames make one agent
    step, as Brax's training wrapper repeats them (what Playground's PPO
    configs set, e.g. 4 for PendulumSwingup; the ``action_repeat`` key of a
    Playground *env* config is not read by the env). ``episode_length`` counts
    agent steps, as for every family (envs/options.py); left out, it is
    Playground's ``episode_length`` (frames, 1000 for the DMC ports) divided by
    ``action_repeat``, rounded up, so that the default episode lasts as long
    in time whatever ``action_repeat`` is, and ends where Brax's wrapper ends it.
    ``mjx:CartpoleBalance?action_repeat=2&episode_length=500`` is MR.Q's DMC
    protocol (1000 frames as 500 agent steps of 2).
    """
    from mujoco_playground import registry

    if name not in playground_names():
        names = ["mjx:" + n for n in playground_names()]
        raise unknown_env_error(f"mjx:{name}", "Playground DM Control suite names", names)
    overrides = {"impl": impl, **{k: v for k, v in (("ctrl_dt", ctrl_dt), ("sim_dt", sim_dt)) if v is not None}}
    env = registry.load(name, config_overrides=overrides)
    substeps = env.dt / env.sim_dt
    if substeps < 1 or abs(substeps - round(substeps)) > 1e-6 * substeps:
        raise EnvOptionError(f"mjx:{name}: ctrl_dt ({env.dt}) must be a whole multiple of sim_dt ({env.sim_dt}): "
                             "one frame integrates ctrl_dt / sim_dt physics steps")
    if action_repeat < 1 or (episode_length is not None and episode_length < 1):
        raise EnvOptionError(f"mjx:{name}: action_repeat ({action_repeat}) and episode_length ({episode_length}) "
                             "must be >= 1")
    if episode_length is None:
        episode_length = math.ceil(int(env._config.episode_length) / action_repeat)  # no public accessor

    # MJX traced with jnp Cholesky factorizations on CPU: LAPACK's can deadlock there (envs/mjx_cholesky.py).
    def physics_reset(key, phase):
        with cholesky_without_lapack():
            playground_state = env.reset(key)
        return playground_state, playground_state.obs

    def physics_step(playground_state, action, phase):
        with cholesky_without_lapack():
            playground_state = env.step(playground_state, action)
        terminated = playground_state.done > 0.5
        return playground_state, playground_state.obs, playground_state.reward, terminated

    obs_size = env.observation_size
    if not isinstance(obs_size, int):
        raise UnknownEnvError(f"mjx:{name}: dict observations ({obs_size}) are not supported.")
    spec = EnvSpec(
        env_id=f"mjx:{name}",
        obs_dim=obs_size,
        action_dim=int(env.action_size),
        max_episode_steps=episode_length,
        action_repeat=action_repeat,
        can_terminate=False,
    )
    # Playground's actions are already in [-1, 1]; JaxEnv clips them there.
    jax_env = JaxEnv(spec, physics_reset, physics_step)
    jax_env.playground = env      # for envs/nonstationary.py (dynamics and reward switches)
    # For videos (experiments/video.py): what of a state drawing it needs, as Playground's own render_array sets
    # it, and the model and frame rate (one frame per agent step) to draw it with.
    jax_env.render_state = lambda state: {name: getattr(state.data, name) for name in RENDER_FIELDS}
    jax_env.render_model = env.mj_model
    jax_env.render_fps = 1.0 / (env.dt * action_repeat)
    return jax_env


RENDER_FIELDS = ("qpos", "qvel", "mocap_pos", "mocap_quat", "xfrc_applied")
