"""One id -> one environment.

Ids (``list_env_ids()`` lists the families):

* ``dmc`` (= ``dmc:cheetah-run``), ``dmc:<domain>-<task>`` -- dm_control, host, MR.Q protocol
* ``gym:<id>`` (e.g. ``gym:Hopper-v5``) -- gymnasium MuJoCo, host, real terminations
* ``mjx:<PlaygroundName>`` (e.g. ``mjx:CheetahRun``) -- MuJoCo Playground, JAX
* ``jax:PointMass`` -- a tiny pure-JAX env for fast tests, JAX
* ``dmc:<task>,<task>,...``, ``dmc:mt4`` -- several tasks as one host env, padded, with a task one-hot in
  the observation (envs/multitask.py); ``num_envs`` env slots of every task
* any JAX id followed by ``?switch=...&every=...`` -- a non-stationary version
  (envs/nonstationary.py), e.g. ``mjx:CheetahRun?switch=reward&every=5000000``

Host ids give a ``HostVecEnv`` of ``num_envs`` instances seeded ``seed + i``.
JAX ids give a ``JaxEnv`` of single-env pure functions (the caller vmaps and
seeds through the keys it passes to ``reset``); ``seed`` is not used for them,
and ``num_envs`` (the envs per seed stepping in lockstep) only converts a
non-stationary schedule from env steps per seed to steps per env.
"""

from __future__ import annotations

from envs.core import (
    ENV_ID_FAMILIES,
    EnvSpec,
    HostVecEnv,
    JaxEnv,
    JaxEnvState,
    StepInfo,
    StepResult,
    UnknownEnvError,
    unknown_env_error,
)
from envs.rollout import Transition, rollout

__all__ = [
    "EnvSpec", "HostVecEnv", "JaxEnv", "JaxEnvState", "StepInfo", "StepResult",
    "Transition", "UnknownEnvError", "is_jax_env", "list_env_ids", "make", "rollout",
]

_JAX_PREFIXES = ("mjx:", "jax:")


def list_env_ids() -> list[str]:
    """The accepted id families (with placeholders), as shown in error messages."""
    return list(ENV_ID_FAMILIES)


def is_jax_env(env_id: str) -> bool:
    """True where ``make`` returns a ``JaxEnv`` (device loop), False for host envs."""
    return env_id.startswith(_JAX_PREFIXES)


def make(env_id: str, num_envs: int = 1, seed: int = 0, **kwargs) -> HostVecEnv | JaxEnv:
    """Build the environment named by ``env_id``; ``kwargs`` go to its family.

    dmc: ``action_repeat`` (2). gym: anything ``gymnasium.make`` takes.
    mjx: ``impl`` ('jax'), ``action_repeat`` (1), ``episode_length`` (frames,
    Playground's default 1000). jax:PointMass: ``episode_length`` (100),
    ``action_repeat`` (1), ``terminate_outside`` (None).
    JAX envs also take ``action_repeat`` in the id: ``mjx:PendulumSwingup?action_repeat=4``.
    Raises ``UnknownEnvError`` naming the valid choices for a bad id.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    from envs import nonstationary

    base_id, schedule = nonstationary.split_env_id(env_id)
    if schedule is not None:
        if not is_jax_env(base_id):
            raise nonstationary.NonStationaryError(
                f"{env_id}: non-stationary switches run inside jit and need a JAX env (mjx:<name>, jax:PointMass)")
        # num_envs: the parallel envs per seed, so that `every` counts env steps per seed in all.
        return nonstationary.make(make(base_id, **kwargs), base_id, schedule, num_envs)
    from envs import multitask

    if multitask.is_multitask(env_id):
        return multitask.make_multitask(env_id, num_envs, seed, make, **kwargs)
    env_id, options = nonstationary.env_options(env_id)
    if options:
        if not is_jax_env(env_id):
            raise nonstationary.NonStationaryError(
                f"{env_id}: options in the id ({', '.join(options)}) are for JAX envs (mjx:<name>, jax:PointMass)")
        clash = {k for k in options if k in kwargs and kwargs[k] != options[k]}
        if clash:
            raise ValueError(f"{env_id}: {', '.join(sorted(clash))} given both in the id and as an argument")
        kwargs = {**kwargs, **options}
    family, _, name = env_id.partition(":")

    if family == "dmc":
        from envs.dmc import DEFAULT_TASK, make_dmc

        return make_dmc(name or DEFAULT_TASK, num_envs, seed, **kwargs)
    if family == "gym" and name:
        from envs.gym_envs import make_gym

        return make_gym(name, num_envs, seed, **kwargs)
    if family == "mjx" and name:
        from envs.mjx import make_playground

        return make_playground(name, **kwargs)
    if env_id in ("jax:PointMass", "jax:PointMass1D"):
        from envs.toy import make_point_mass

        return make_point_mass(**kwargs, **({"dim": 1} if env_id == "jax:PointMass1D" else {}))
    raise unknown_env_error(env_id)
