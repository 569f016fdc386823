"""Non-stationary JAX envs: the task changes during training, on a schedule in env steps, inside jit.

Id syntax: a JAX env id, then `?` and `&`-separated options::

    mjx:CheetahRun?switch=reward&every=5000000
    mjx:WalkerWalk?switch=reward&every=2000000          # stand -> walk -> run -> stand ...
    mjx:CheetahRun?switch=gravity&scale=0.5&every=1000000
    mjx:CartpoleBalance?switch=obs_permutation&every=1000000&seed=3
    jax:PointMass?switch=obs_permutation&every=50000
    jax:PointMass?switch=action_sign&every=400000         # odd phases: the force is -action
    jax:PointMass?switch=goal_mirror&every=400000&scale=0.5

Options:

* `switch` (required): `gravity`, `actuator_gain`, `mass`, `friction` (dynamics: the
  quantity is multiplied by `scale` in odd phases and is the original in even
  ones), `reward` (cycles through the task's alternative rewards: CheetahRun
  forward -> backward; WalkerStand / WalkerWalk / WalkerRun: stand -> walk -> run,
  starting from the named one), `obs_permutation` (phase p > 0 sees the
  observation through a fixed random permutation drawn for p; phase 0 the
  original order), `action_sign` (odd phases apply -action: every optimal action
  is reversed; any JAX env), `goal_mirror` (jax:PointMass: the goal is (+scale,
  +scale) in even phases and its mirror (-scale, -scale) in odd ones; the
  observation does not show it, so the optimal policy reverses on the goal's
  diagonal and must be relearned from rewards).
* `every` (required): env steps per seed between switches. With N parallel envs
  stepping in lockstep, each env switches after ceil(every / N) of its own steps.
* `scale` (dynamics and goal_mirror, default 0.5), `seed` (obs_permutation only, default 0).
* The env's own options (`action_repeat`, `episode_length`, ...; envs/options.py) may stand beside a
  switch: `mjx:PendulumSwingup?action_repeat=4&switch=action_sign&every=1000000`.

Phase p = clock // ceil(every / N), where `clock` counts an env's steps across
episodes (`JaxEnvState.clock`); resets keep it, so the schedule is in training
steps, not episode steps. A step taken at clock c runs in phase(c): its
dynamics, its reward and the observation it returns (with N envs and
every = k N, the first k steps of each env are phase 0, the next k phase 1).
Evaluation envs start at the training clock. Dynamics and reward switches
need MuJoCo Playground (`mjx:`); the observation permutation and the action
sign work on every JAX env; the goal mirror on jax:PointMass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp

from envs import toy
from envs.core import JaxEnv
from envs.mjx_cholesky import cholesky_without_lapack
from envs.options import EnvOptionError, integer, parse_query, with_query

DYNAMICS = ("gravity", "actuator_gain", "mass", "friction")
SWITCHES = DYNAMICS + ("reward", "obs_permutation", "action_sign", "goal_mirror")
SCALED = DYNAMICS + ("goal_mirror",)   # the switches that take `scale`
# Alternative rewards per Playground task, in the order the phases cycle through them.
REWARD_CYCLES = {
    "CheetahRun": ("forward", "backward"),
    "WalkerStand": ("stand", "walk", "run"),
    "WalkerWalk": ("walk", "run", "stand"),
    "WalkerRun": ("run", "stand", "walk"),
}
_WALKER_TASK = {"stand": "WalkerStand", "walk": "WalkerWalk", "run": "WalkerRun"}


class NonStationaryError(EnvOptionError):
    """A bad non-stationary option; the message names the valid values."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    switch: str
    every: int
    scale: float = 0.5
    seed: int = 0


SWITCH_OPTIONS = ("switch", "every", "scale", "seed")


def split_env_id(env_id: str) -> tuple[str, Schedule | None]:
    """`mjx:CheetahRun?switch=reward&every=5000000` -> (`mjx:CheetahRun`, Schedule); ids without a switch ->
    (id, None). The env's own options (`action_repeat`, `episode_length`, ...: envs/options.py) stay on the
    returned id. The id's query is parsed by envs/options.py, the syntax every family shares."""
    base, all_options = parse_query(env_id)
    base = with_query(base, {k: v for k, v in all_options.items() if k not in SWITCH_OPTIONS})
    options = {k: v for k, v in all_options.items() if k in SWITCH_OPTIONS}
    if not options:
        return base, None
    switch = options.get("switch")
    if switch not in SWITCHES:
        raise NonStationaryError(f"{env_id}: switch must be one of {', '.join(SWITCHES)}, got {switch!r}")
    if "every" not in options:
        raise NonStationaryError(f"{env_id}: every (env steps per seed between switches) is required, e.g. "
                                 f"{base}?switch={switch}&every=1000000")
    every, seed = (_integer(env_id, name, options.get(name, "0")) for name in ("every", "seed"))
    try:
        scale = float(options.get("scale", 0.5))
    except ValueError:
        raise NonStationaryError(f"{env_id}: scale must be a number, got {options['scale']!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise NonStationaryError(f"{env_id}: scale must be a finite number > 0, got {options['scale']}")
    if every < 1:
        raise NonStationaryError(f"{env_id}: every (env steps between switches) must be >= 1, got {every}")
    if "scale" in options and switch not in SCALED:
        raise NonStationaryError(f"{env_id}: scale applies to the switches {', '.join(SCALED)}")
    return base, Schedule(switch, every, scale, seed)


def _integer(env_id: str, name: str, text: str) -> int:
    try:
        return integer(env_id, name, text)
    except EnvOptionError as error:
        raise NonStationaryError(str(error)) from None


def phase_schedule(every: int, num_envs: int):
    """phase_of(clock) for `num_envs` envs in lockstep switching every `every` env steps in all."""
    steps_per_env = max(1, math.ceil(every / num_envs))
    return lambda clock: (clock // steps_per_env).astype(jnp.int32)


def make(base: JaxEnv, base_id: str, schedule: Schedule, num_envs: int) -> JaxEnv:
    """Wrap `base` (made from `base_id`) so that its task changes on `schedule`."""
    phase_of = phase_schedule(schedule.every, num_envs)
    base_id = parse_query(base_id)[0]
    if schedule.switch == "obs_permutation":
        return _with_obs_permutation(base, schedule, phase_of)
    if schedule.switch == "action_sign":
        return _with_action_sign(base, phase_of)
    if schedule.switch == "goal_mirror":
        if base_id != toy.POINT_MASS:
            raise NonStationaryError(f"{base_id}?switch=goal_mirror: the goal mirror is defined for "
                                     f"{toy.POINT_MASS} only")
        return _with_goal_mirror(base, schedule, phase_of)
    family, _, name = base_id.partition(":")
    if family != "mjx":
        raise NonStationaryError(f"{base_id}?switch={schedule.switch}: dynamics and reward switches need a "
                                 "Playground env (mjx:<name>); jax:PointMass supports switch=obs_permutation, "
                                 "action_sign, goal_mirror")
    playground = base.playground
    if schedule.switch == "reward":
        if name not in REWARD_CYCLES:
            raise NonStationaryError(f"{base_id} has no alternative reward; switch=reward supports "
                                     f"{', '.join('mjx:' + n for n in REWARD_CYCLES)}")
        rewards = _reward_variants(name, playground)
        return _playground_env(base, playground, phase_of, rewards=rewards)
    return _playground_env(base, playground, phase_of, model_for=_dynamics_shift(playground, schedule))


# ------------------------------------------------------------------------------------------------
# Observation permutation (any JAX env)
# ------------------------------------------------------------------------------------------------


def permutation(phase: jax.Array, obs_dim: int, seed: int) -> jax.Array:
    """The identity in phase 0, a fixed random permutation drawn for each later phase."""
    drawn = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), phase), obs_dim)
    return jnp.where(phase == 0, jnp.arange(obs_dim), drawn)


def _with_obs_permutation(base: JaxEnv, schedule: Schedule, phase_of) -> JaxEnv:
    obs_dim = base.spec.obs_dim

    def physics_reset(key, phase):
        physics, obs = base._physics_reset(key, phase)
        return physics, obs[permutation(phase, obs_dim, schedule.seed)]

    def physics_step(physics, action, phase):
        physics, obs, reward, terminated = base._physics_step(physics, action, phase)
        return physics, obs[permutation(phase, obs_dim, schedule.seed)], reward, terminated

    return _rebuilt(base, physics_reset, physics_step, phase_of)


# ------------------------------------------------------------------------------------------------
# Reversals of the optimal behaviour: the action's sign (any JAX env), PointMass's goal
# ------------------------------------------------------------------------------------------------


def action_sign(phase: jax.Array) -> jax.Array:
    """+1 in even phases, -1 in odd ones."""
    return jnp.where(phase % 2 == 1, -1.0, 1.0)


def _with_action_sign(base: JaxEnv, phase_of) -> JaxEnv:
    def physics_step(physics, action, phase):
        return base._physics_step(physics, action * action_sign(phase), phase)

    return _rebuilt(base, base._physics_reset, physics_step, phase_of)


def mirrored_goal(phase: jax.Array, scale: float) -> jax.Array:
    """(+scale, +scale) in even phases, (-scale, -scale) in odd ones."""
    return jnp.full(2, scale) * action_sign(phase)


def _with_goal_mirror(base: JaxEnv, schedule: Schedule, phase_of) -> JaxEnv:
    def physics_step(physics, action, phase):
        physics, obs, _, terminated = base._physics_step(physics, action, phase)
        return physics, obs, toy.reward_to_goal(physics, mirrored_goal(phase, schedule.scale)), terminated

    return _rebuilt(base, base._physics_reset, physics_step, phase_of)


def _rebuilt(base: JaxEnv, physics_reset, physics_step, phase_of) -> JaxEnv:
    env = JaxEnv(base.spec, physics_reset, physics_step, phase_of)
    env.playground = getattr(base, "playground", None)
    return env


# ------------------------------------------------------------------------------------------------
# Playground: dynamics and reward switches
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _model_override(playground, model):
    """Let Playground's own `step` (physics, reward, observation) run on `model` while it is traced.

    Playground's DM Control envs read their model through `self.mjx_model`
    (the attribute `_mjx_model`) and have no public way to step another one;
    swapping it for the duration of the trace keeps their step, reward and
    observation code the single source of truth.
    """
    original = playground._mjx_model
    playground._mjx_model = model
    try:
        yield
    finally:
        playground._mjx_model = original


def _dynamics_shift(playground, schedule: Schedule):
    """model_for(phase): the model with the scheduled quantity x scale in odd phases."""
    base = playground.mjx_model
    scale = schedule.scale
    shifted = {
        "gravity": lambda m, s: m.tree_replace({"opt.gravity": m.opt.gravity * s}),
        "actuator_gain": lambda m, s: m.tree_replace({"actuator_gainprm": m.actuator_gainprm.at[:, 0].multiply(s)}),
        "mass": lambda m, s: m.tree_replace({"body_mass": m.body_mass * s, "body_inertia": m.body_inertia * s}),
        "friction": lambda m, s: m.tree_replace({"geom_friction": m.geom_friction.at[:, 0].multiply(s)}),
    }[schedule.switch]

    def model_for(phase):
        return shifted(base, jnp.where(phase % 2 == 1, scale, 1.0))

    return model_for


def _reward_variants(name: str, playground) -> list:
    """reward(data, action, info, metrics) for each phase of the cycle of task `name`."""
    from mujoco_playground import registry
    from mujoco_playground._src import mjx_env, reward

    if name == "CheetahRun":
        run_speed = 10.0   # Playground's CheetahRun: reward 1 at or above 10 m/s forward

        def backward(data, action, info, metrics):
            speed = mjx_env.get_sensor_data(playground.mj_model, data, "torso_subtreelinvel")[0]
            return reward.tolerance(-speed, bounds=(run_speed, float("inf")), margin=run_speed,
                                    value_at_margin=0, sigmoid="linear")

        return [playground._get_reward, backward]
    impl = playground._config.impl
    tasks = {task: registry.load(_WALKER_TASK[task], config_overrides={"impl": impl}) for task in ("stand", "walk", "run")}
    return [tasks[task]._get_reward for task in REWARD_CYCLES[name]]


def _playground_env(base: JaxEnv, playground, phase_of, model_for=None, rewards=None) -> JaxEnv:
    """Playground's reset and step, with the phase's model and/or the phase's reward."""

    def physics_reset(key, phase):
        with cholesky_without_lapack():          # as envs/mjx.py does (see envs/mjx_cholesky.py)
            state = playground.reset(key)
        return state, state.obs

    def physics_step(state, action, phase):
        model = contextlib.nullcontext() if model_for is None else _model_override(playground, model_for(phase))
        with model, cholesky_without_lapack():
            new = playground.step(state, action)
        if rewards is not None:
            values = jnp.stack([fn(new.data, action, new.info, dict(new.metrics)) for fn in rewards])
            new = new.replace(reward=values[phase % len(rewards)])
        return new, new.obs, new.reward, new.done > 0.5

    return _rebuilt(base, physics_reset, physics_step, phase_of)

