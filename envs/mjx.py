"""MuJoCo Playground (MJX) DM Control suite tasks as ``JaxEnv``s.

Only the DM Control suite is offered: Playground's locomotion and manipulation
tasks need the MuJoCo Menagerie, which is downloaded at first use, and our
machines may be offline.

Playground's own ``done`` is treated as termination (for its DM Control tasks
it only fires when the physics goes NaN); the time limit is ours, so that
truncation is reported separately and bootstraps.
"""

from __future__ import annotations

from envs.core import EnvSpec, JaxEnv, UnknownEnvError, unknown_env_error
from envs.mjx_cholesky import cholesky_without_lapack


def playground_names() -> list[str]:
    """Names accepted after ``mjx:``, e.g. ``CheetahRun``."""
    from mujoco_playground import dm_control_suite

    return list(dm_control_suite.ALL_ENVS)


def make_playground(
    name: str,
    impl: str = "jax",
    action_repeat: int = 1,
    episode_length: int | None = None,
) -> JaxEnv:
    """Load Playground task ``name``.

    ``impl='jax'`` works on every backend (CPU, GPU, TPU); ``'warp'`` needs
    warp installed. ``episode_length`` counts simulator control steps (frames),
    as in Playground's config (default there: 1000), so the default episode is
    the same length in time whatever ``action_repeat`` is;
    ``spec.max_episode_steps = episode_length // action_repeat`` agent steps.
    """
    from mujoco_playground import registry

    if name not in playground_names():
        names = ["mjx:" + n for n in playground_names()]
        raise unknown_env_error(f"mjx:{name}", "Playground DM Control suite names", names)
    env = registry.load(name, config_overrides={"impl": impl})
    if episode_length is None:
        episode_length = int(env._config.episode_length)  # no public accessor
    if action_repeat < 1 or episode_length < 1 or episode_length % action_repeat:
        raise ValueError(
            f"mjx:{name}: episode_length ({episode_length}) must be a positive "
            f"multiple of action_repeat ({action_repeat})."
        )

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
        max_episode_steps=episode_length // action_repeat,
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
