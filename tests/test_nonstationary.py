"""Non-stationary envs: each switch changes exactly what it says, at exactly the scheduled step, and nothing else."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import nonstationary
from tests.cli_utils import run_inprocess

NUM_ENVS, EVERY = 2, 8          # 2 envs in lockstep, switch every 8 env steps in all = every 4 steps per env


def _trajectory(env_id, steps=10, action=0.5):
    env = envs.make(env_id, num_envs=NUM_ENVS)
    # Jitted: an MJX reset run op by op takes minutes on the CPU, compiled it takes seconds.
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))
    step = jax.jit(env.step_batch)
    obs, rewards = [], []
    for _ in range(steps):
        state, info = step(state, jnp.full((NUM_ENVS, env.spec.action_dim), action))
        obs.append(np.asarray(info.obs))
        rewards.append(np.asarray(info.reward))
    return np.stack(obs), np.stack(rewards), state


def test_schedule_parsing_and_phases():
    base, schedule = nonstationary.split_env_id("mjx:CheetahRun?switch=reward&every=5000000")
    assert base == "mjx:CheetahRun" and schedule == nonstationary.Schedule("reward", 5_000_000)
    phase_of = nonstationary.phase_schedule(10, 4)                    # ceil(10 / 4) = 3 steps per env
    assert [int(phase_of(jnp.int32(c))) for c in range(7)] == [0, 0, 0, 1, 1, 1, 2]


def test_obs_permutation_changes_only_the_order_at_the_switch():
    obs, rewards, state = _trajectory("jax:PointMass")
    obs_p, rewards_p, _ = _trajectory(f"jax:PointMass?switch=obs_permutation&every={EVERY}&seed=1")
    np.testing.assert_array_equal(rewards, rewards_p)                 # the task itself never changes
    np.testing.assert_array_equal(obs[:4], obs_p[:4])                 # steps 1-4 (clock 0-3): phase 0, identity
    # Step 5 is taken at clock 4 = phase 1: what it returns, and every step of phase 1, is permuted.
    perm = np.asarray(nonstationary.permutation(jnp.int32(1), 4, 1))
    assert not np.array_equal(perm, np.arange(4))
    np.testing.assert_array_equal(obs_p[4:8], obs[4:8][..., perm])
    perm2 = np.asarray(nonstationary.permutation(jnp.int32(2), 4, 1))
    np.testing.assert_array_equal(obs_p[8:], obs[8:][..., perm2])
    assert np.asarray(state.clock).tolist() == [10, 10]


def _point_mass_run(env_id, actions):
    """Step one PointMass env with `actions` [steps, 2] from the same start; (positions, rewards)."""
    env = envs.make(env_id, num_envs=1)
    state = env.reset(jax.random.PRNGKey(3))
    positions, rewards = [], []
    for action in actions:
        state, info = env.step(state, jnp.asarray(action, jnp.float32))
        positions.append(np.asarray(state.physics[0]))
        rewards.append(float(info.reward))
    return np.stack(positions), np.array(rewards)


def test_action_sign_reverses_the_optimal_action_exactly_at_the_scheduled_step():
    """every=5 with one env: clocks 0-4 are phase 0, 5-9 phase 1 (the force is -action), 10- phase 2."""
    push = np.tile([[0.7, -0.3]], (12, 1))
    base_pos, base_rew = _point_mass_run("jax:PointMass", push)
    flipped_pos, flipped_rew = _point_mass_run("jax:PointMass?switch=action_sign&every=5", push)
    sign = np.array([1.0] * 5 + [-1.0] * 5 + [1.0] * 2)
    mirrored_pos, mirrored_rew = _point_mass_run("jax:PointMass", push * sign[:, None])
    np.testing.assert_array_equal(flipped_pos[:5], base_pos[:5])            # phase 0: the task itself
    assert not np.allclose(flipped_pos[5], base_pos[5])                     # the step at clock 5 is reversed ...
    np.testing.assert_array_equal(flipped_pos, mirrored_pos)                # ... as if -action had been given
    np.testing.assert_array_equal(flipped_rew, mirrored_rew)


def test_goal_mirror_moves_the_goal_to_the_mirror_position_at_the_switch():
    push = np.zeros((8, 2))
    positions, _ = _point_mass_run("jax:PointMass", push)
    _, rewards = _point_mass_run("jax:PointMass?switch=goal_mirror&every=4&scale=0.3", push)
    goal = np.array([[0.3, 0.3]] * 4 + [[-0.3, -0.3]] * 4)
    np.testing.assert_allclose(rewards, -np.linalg.norm(positions - goal, axis=1), rtol=1e-6)


@pytest.fixture(scope="module")
def cheetah():
    """The stationary CheetahRun trajectory both switch tests compare against (compiled once)."""
    return _trajectory("mjx:CheetahRun", steps=6)


@pytest.mark.long   # two MJX CheetahRun compiles (~2.5 min on 2 cores); the switch schedule and the obs/action
#                     switches are checked on cheap envs above, the reward variants in long runs
def test_reward_switch_changes_only_the_reward_at_the_switch(cheetah):
    obs, rewards, _ = cheetah
    obs_s, rewards_s, _ = _trajectory(f"mjx:CheetahRun?switch=reward&every={EVERY}", steps=6)
    np.testing.assert_array_equal(obs, obs_s)                         # same physics, same observations
    np.testing.assert_array_equal(rewards[:4], rewards_s[:4])         # forward running until the switch
    assert rewards[4:].min() > 0 and np.all(rewards_s[4:] == 0.0)     # moving forward earns nothing backward


@pytest.mark.long   # a third MJX compile; the exact per-phase model is checked cheaply below
def test_gravity_switch_changes_only_the_dynamics_at_the_switch(cheetah):
    obs, rewards, _ = cheetah
    obs_s, rewards_s, _ = _trajectory(f"mjx:CheetahRun?switch=gravity&every={EVERY}&scale=0.25", steps=6)
    np.testing.assert_array_equal(obs[:4], obs_s[:4])
    np.testing.assert_array_equal(rewards[:4], rewards_s[:4])
    assert np.abs(obs[4:] - obs_s[4:]).max() > 1e-4                  # lighter gravity from the 5th step


@pytest.mark.parametrize("env_id, message", [
    ("mjx:CheetahRun?switch=wind&every=10", "switch must be one of gravity, actuator_gain, mass, friction"),
    ("mjx:CheetahRun?switch=reward&every=0", "every (env steps between switches) must be >= 1"),
    ("mjx:CartpoleBalance?switch=reward&every=10", "has no alternative reward; switch=reward supports"),
    ("jax:PointMass?switch=gravity&every=10", "dynamics and reward switches need a Playground env"),
    ("dmc:cheetah-run?switch=reward&every=10", "ppo trains on JAX envs"),
    ("mjx:CheetahRun?switch=goal_mirror&every=10", "the goal mirror is defined for jax:PointMass only"),
    ("jax:PointMass?switch=action_sign&every=10&scale=2", "scale applies to the switches gravity"),
])
def test_bad_schedules_are_clear_errors(tmp_path, env_id, message):
    result = run_inprocess("--agent", "ppo", "--env", env_id, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("switch, field", [("gravity", "opt.gravity"), ("actuator_gain", "actuator_gainprm"),
                                           ("mass", "body_mass"), ("friction", "geom_friction")])
def test_each_dynamics_switch_scales_exactly_its_quantity_in_odd_phases(switch, field):
    playground = envs.make("mjx:CheetahRun").playground
    model_for = nonstationary._dynamics_shift(playground, nonstationary.Schedule(switch, 10, scale=0.5))
    base = playground.mjx_model
    get = lambda m, name: np.asarray(m.opt.gravity if name == "opt.gravity" else getattr(m, name))
    even, odd = model_for(jnp.int32(2)), model_for(jnp.int32(3))
    expected = get(base, field).copy()
    if field in ("actuator_gainprm", "geom_friction"):
        expected[:, 0] *= 0.5                  # the gain / the sliding friction coefficient only
    else:
        expected *= 0.5
    np.testing.assert_allclose(get(even, field), get(base, field))
    np.testing.assert_allclose(get(odd, field), expected, rtol=1e-6)
    changed = {"opt.gravity": {"opt.gravity"}, "actuator_gainprm": {"actuator_gainprm"},
               "body_mass": {"body_mass", "body_inertia"}, "geom_friction": {"geom_friction"}}[field]
    for other in {"opt.gravity", "actuator_gainprm", "body_mass", "body_inertia", "geom_friction",
                  "dof_damping"} - changed:
        np.testing.assert_array_equal(get(odd, other), get(base, other))
