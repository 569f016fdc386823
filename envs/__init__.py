"""One id -> one environment.

Ids (``list_env_ids()`` lists the families):

* ``dmc`` (= ``dmc:cheetah-run``), ``dmc:<domain>-<task>`` -- dm_control, host, MR.Q protocol
* ``gym:<id>`` (e.g. ``gym:Hopper-v5``, ``gym:Pendulum-v1``) -- any gymnasium id with Box spaces, host, real
  terminations
* ``mjx:<PlaygroundName>`` (e.g. ``mjx:CheetahRun``) -- MuJoCo Playground, JAX
* ``jax:PointMass`` -- a tiny pure-JAX env for fast tests, JAX
* ``dmc:<task>,<task>,...``, ``dmc:mt4`` -- several tasks as one host env, padded, with a task one-hot in
  the observation (envs/multitask.py); ``num_envs`` env slots of every task
* any id followed by ``?key=value&...`` options (envs/options.py): ``dmc:cartpole-balance?action_repeat=4``,
  ``mjx:CartpoleBalance?action_repeat=2&episode_length=500``; on JAX ids also a non-stationary switch
  (envs/nonstationary.py), e.g. ``mjx:CheetahRun?switch=reward&every=5000000``
* your own: ``register("my", factory)`` makes ``my:<name>`` ids (envs/registry.py): a gymnasium env with Box
  spaces (host) or a ``PureJaxEnv`` / ``JaxEnv`` (JAX)

Host ids give a ``HostVecEnv`` of ``num_envs`` instances seeded ``seed + i``.
JAX ids give a ``JaxEnv`` of single-env pure functions (the caller vmaps and
seeds through the keys it passes to ``reset``); ``seed`` is not used for them,
and ``num_envs`` (the envs per seed stepping in lockstep) only converts a
non-stationary schedule from env steps per seed to steps per env.
"""

from __future__ import annotations

from envs.core import (
    EnvSpec,
    HostVecEnv,
    JaxEnv,
    JaxEnvState,
    PureJaxEnv,
    StepInfo,
    StepResult,
    UnknownEnvError,
    UnsupportedEnvError,
    all_env_ids,
    unknown_env_error,
)
from envs.options import EnvOptionError
from envs.registry import EnvModuleError, import_modules, register
from envs.rollout import Transition, rollout

__all__ = [
    "EnvModuleError", "EnvOptionError", "EnvSpec", "HostVecEnv", "JaxEnv", "JaxEnvState", "PureJaxEnv", "StepInfo",
    "StepResult", "Transition", "UnknownEnvError", "UnsupportedEnvError", "import_modules", "is_jax_env",
    "list_env_ids", "make", "register", "rollout",
]

_JAX_PREFIXES = ("mjx:", "jax:")


def list_env_ids() -> list[str]:
    """The accepted id families (with placeholders), registered ones included, as shown in error messages."""
    return all_env_ids()


def is_jax_env(env_id: str) -> bool:
    """True where ``make`` returns a ``JaxEnv`` (device loop), False for host envs. A registered id is made
    once to find out (envs/registry.py)."""
    from envs import multitask, nonstationary, options, registry

    first = multitask.task_list(env_id)[0] if multitask.is_multitask(env_id) else env_id
    base_id = nonstationary.split_env_id(first)[0]
    if registry.is_registered(options.parse_query(base_id)[0]):
        return registry.is_jax(base_id)
    return base_id.startswith(_JAX_PREFIXES)


def make(env_id: str, num_envs: int = 1, seed: int = 0, **kwargs) -> HostVecEnv | JaxEnv:
    """Build the environment named by ``env_id``; ``kwargs`` go to its family.

    dmc: ``action_repeat`` (2), ``episode_length`` (agent steps; dm_control's 1000 frames / action_repeat).
    gym: ``episode_length`` (the id's time limit), anything else ``gymnasium.make`` takes.
    mjx: ``impl`` ('jax'), ``action_repeat`` (1), ``episode_length`` (agent steps; Playground's 1000 frames /
    action_repeat), ``ctrl_dt``, ``sim_dt`` (Playground's). jax:PointMass: ``episode_length`` (100),
    ``action_repeat`` (1), ``terminate_outside`` (None). A registered id: its factory's parameters.
    The same settings may stand in the id as options (envs/options.py): ``dmc:walker-walk?action_repeat=4``.
    Raises ``UnknownEnvError`` naming the valid choices for a bad id (``EnvOptionError`` for a bad option,
    ``UnsupportedEnvError`` for an env the agents cannot drive).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    from envs import multitask, nonstationary, options, registry

    base_id, schedule = nonstationary.split_env_id(env_id)
    if schedule is not None:
        if not is_jax_env(base_id):
            raise nonstationary.NonStationaryError(
                f"{env_id}: non-stationary switches run inside jit and need a JAX env (mjx:<name>, jax:PointMass, "
                "or a registered JAX env)")
        # num_envs: the parallel envs per seed, so that `every` counts env steps per seed in all.
        return nonstationary.make(make(base_id, **kwargs), base_id, schedule, num_envs)
    if multitask.is_multitask(env_id):
        return multitask.make_multitask(env_id, num_envs, seed, make, **kwargs)
    base_id, text_options = options.parse_query(env_id)
    if registry.is_registered(base_id):
        return registry.make(env_id, num_envs, seed, **kwargs)
    if options.family_of(base_id) is None:
        raise unknown_env_error(base_id)
    switch_keys = nonstationary.SWITCH_OPTIONS if base_id.startswith(_JAX_PREFIXES) else ()
    id_options = options.typed_options(env_id, text_options, switch_keys)
    clash = {k for k in id_options if k in kwargs and kwargs[k] != id_options[k]}
    if clash:
        raise ValueError(f"{env_id}: {', '.join(sorted(clash))} given both in the id and as an argument")
    kwargs = {**kwargs, **id_options}
    family, _, name = base_id.partition(":")

    if family == "dmc":
        from envs.dmc import DEFAULT_TASK, make_dmc

        return make_dmc(name or DEFAULT_TASK, num_envs, seed, **kwargs)
    if family == "gym" and name:
        from envs.gym_envs import make_gym

        return make_gym(name, num_envs, seed, **kwargs)
    if family == "mjx" and name:
        from envs.mjx import make_playground

        return make_playground(name, **kwargs)
    if base_id in ("jax:PointMass", "jax:PointMass1D"):
        from envs.toy import make_point_mass

        return make_point_mass(**kwargs, **({"dim": 1} if base_id == "jax:PointMass1D" else {}))
    raise unknown_env_error(base_id)
