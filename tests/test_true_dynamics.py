"""envs/true_dynamics.py: termination rules equal gymnasium's; the MJX true dynamics reproduce gymnasium's steps.

MJX computes in float32 and datasets store qpos/qvel in float32, while
gymnasium's MuJoCo runs in float64 (and carries a solver warm start that a
restored state lacks), so steps agree to a tolerance, not bit for bit.
Measured over 1000 random transitions per task, one step from the recorded
state, max |next obs error| (median in brackets) and max |reward error|:
InvertedPendulum 7e-7, reward exact; Hopper 1.3e-5, 2e-6; Walker2d 1.4e-4
(1e-5), 5e-6; HalfCheetah 4.7e-3 (5.5e-6; p99 2.2e-4, the largest on foot
joint velocities while in contact), 1.2e-4. No termination flipped. The tests
below (InvertedPendulum and Hopper, 3-step rollouts) allow OBS_ATOL and
REWARD_ATOL.
"""

from __future__ import annotations

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import true_dynamics
from envs.core import scale_action
from envs.gym_envs import GymInstance

OBS_ATOL = 1e-3
REWARD_ATOL = 1e-3
HORIZON = 3  # steps rolled out from each recorded state (the carried sim state is exercised too)

# XLA CPU options that cut the compile time of MJX's RK4 step, which dominates
# this file: Hopper's rollout compiles in ~13 s of CPU instead of ~27 s. Same
# computation, slower code (irrelevant for 20 states).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def compile_fast(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` with FAST_COMPILE, or plainly where this XLA lacks those options."""
    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile(FAST_COMPILE)
    except jax.errors.JaxRuntimeError as error:
        if "No such compile option" not in str(error):
            raise
        return lowered.compile()


def record(gym_id: str, num_steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A stream of random transitions from GymInstance (the dataset collection path).

    Per step: qpos/qvel *before* the step (float32, as datasets store them),
    obs before, action in [-1, 1], next obs, reward, terminated, and done
    (the episode ended here; the next record starts a new one).
    """
    instance = GymInstance(gym_id, seed)
    rng = np.random.default_rng(seed)
    action_dim = instance.env.action_space.shape[0]
    obs = instance.reset()
    rows = []
    for _ in range(num_steps):
        physics = instance.physics_state()
        action = rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)
        next_obs, reward, terminated, truncated = instance.step(action)
        rows.append((physics["qpos"], physics["qvel"], obs, action, next_obs, reward, terminated,
                     terminated or truncated))
        obs = instance.reset() if terminated or truncated else next_obs
    instance.close()
    names = ("qpos", "qvel", "obs", "action", "next_obs", "reward", "terminated", "done")
    return {name: np.array(column) for name, column in zip(names, zip(*rows))}


@pytest.mark.parametrize("gym_id", ["InvertedPendulum-v5", "Hopper-v5"])
def test_true_dynamics_reproduce_gymnasium(gym_id):
    env_id = "gym:" + gym_id
    num_starts = 20
    stream = record(gym_id, num_starts + HORIZON - 1)
    # Build it for the first time while jit traces: the cache must keep concrete arrays, not tracers.
    true_dynamics.make_true_dynamics.cache_clear()

    def rollout(qpos, qvel, index, actions):
        dynamics = true_dynamics.make_true_dynamics(env_id)
        states = true_dynamics.sim_states_at(env_id, qpos, qvel, index)
        first_obs = jax.vmap(dynamics.obs)(states)

        def body(states, action):
            states, next_obs, reward, terminated = jax.vmap(dynamics.step)(states, action)
            return states, (next_obs, reward, terminated, jax.vmap(dynamics.obs)(states))

        _, outputs = jax.lax.scan(body, states, actions)
        return first_obs, outputs

    # Starts in a shuffled order, so that indexing the dataset arrays is exercised.
    index = np.random.default_rng(1).permutation(num_starts)
    steps = index[None, :] + np.arange(HORIZON)[:, None]                     # [H, B] stream rows
    args = (stream["qpos"], stream["qvel"], jnp.asarray(index), stream["action"][steps])
    first_obs, (next_obs, reward, terminated, obs_of_state) = jax.device_get(compile_fast(rollout, *args)(*args))

    np.testing.assert_allclose(first_obs, stream["obs"][index], atol=1e-6)   # obs(state) is the dataset's obs
    np.testing.assert_array_equal(next_obs, obs_of_state)
    # Step k from start i is stream row i + k while no episode ended in rows i .. i+k-1.
    ended_before = np.cumsum(np.concatenate([np.zeros((1, num_starts), bool), stream["done"][steps[:-1]]]), 0) > 0
    valid = ~ended_before
    assert valid.sum() > num_starts
    np.testing.assert_allclose(next_obs[valid], stream["next_obs"][steps][valid], atol=OBS_ATOL)
    np.testing.assert_allclose(reward[valid], stream["reward"][steps][valid], atol=REWARD_ATOL)
    np.testing.assert_array_equal(terminated[valid], stream["terminated"][steps][valid])
    if gym_id == "InvertedPendulum-v5":               # random actions topple the pole within a few steps
        assert stream["terminated"].any()

    # The cached dynamics work outside that trace (they hold no leaked tracers).
    dynamics = true_dynamics.make_true_dynamics(env_id)
    np.testing.assert_allclose(dynamics.obs(dynamics.state_from(stream["qpos"][0], stream["qvel"][0])),
                               stream["obs"][0], atol=1e-6)
    assert dynamics.obs_dim == stream["obs"].shape[1] and dynamics.action_dim == stream["action"].shape[1]


def test_action_scaling_matches_gym_envs():
    dynamics = true_dynamics.make_true_dynamics("gym:InvertedPendulum-v5")       # ctrlrange [-3, 3]
    action = np.array([[-1.5], [-1.0], [-0.25], [0.0], [0.7], [1.0], [2.0]], np.float32)
    expected = np.stack([scale_action(a, np.array([-3.0]), np.array([3.0])) for a in action])
    np.testing.assert_allclose(jax.vmap(dynamics.scale_action)(jnp.asarray(action)), expected, atol=1e-6)


def test_hopper_true_termination_reads_the_unclipped_velocity():
    # gymnasium's healthy check reads qvel unclipped (|qvel| < 100); the obs clips it at 10.
    dynamics = true_dynamics.make_true_dynamics("gym:Hopper-v5")
    qpos = jnp.array([0.0, 1.25, 0.0, 0.0, 0.0, 0.0])
    fast = jnp.zeros(6).at[3].set(150.0)
    rule = dynamics._task.reward_terminated
    assert not rule(qpos, qpos, jnp.zeros(6), jnp.zeros(3), dynamics.dt)[1]
    assert rule(qpos, qpos, fast, jnp.zeros(3), dynamics.dt)[1]
    reward, _ = rule(qpos, qpos.at[0].set(0.08), jnp.zeros(6), jnp.ones(3), dynamics.dt)
    np.testing.assert_allclose(reward, 0.08 / 0.008 + 1.0 - 3e-3, rtol=1e-6)   # dx/dt + healthy - 1e-3|a|^2


def test_state_from_checks_shapes():
    dynamics = true_dynamics.make_true_dynamics("gym:Hopper-v5")
    with pytest.raises(ValueError, match="qpos \\(6,\\) and qvel \\(6,\\)"):
        dynamics.state_from(jnp.zeros((2, 6)), jnp.zeros((2, 6)))


# ----------------------------------------------------------------------------
# Termination functions
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("gym_id, num_steps, must_terminate", [
    ("Hopper-v5", 1000, True),
    ("Walker2d-v5", 1000, True),
    ("HalfCheetah-v5", 300, False),
    ("InvertedPendulum-v5", 500, True),
    ("InvertedDoublePendulum-v5", 500, True),
    ("Ant-v5", 300, False),          # rarely falls: the boundaries test covers its rule
])
def test_termination_fn_matches_gymnasium(gym_id, num_steps, must_terminate):
    env = gymnasium.make(gym_id, disable_env_checker=True)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rows = []
    for _ in range(num_steps):
        action = rng.uniform(env.action_space.low, env.action_space.high)
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, terminated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    obs, action, next_obs, terminated = (np.array(column) for column in zip(*rows))
    predicted = true_dynamics.termination_fn("gym:" + gym_id)(
        jnp.asarray(obs, jnp.float32), jnp.asarray(action, jnp.float32), jnp.asarray(next_obs, jnp.float32))
    assert predicted.shape == terminated.shape and predicted.dtype == bool
    np.testing.assert_array_equal(predicted, terminated)
    if must_terminate:
        assert terminated.any()


def _rule(env_id, next_obs):
    next_obs = jnp.asarray(next_obs, jnp.float32)
    return np.asarray(true_dynamics.termination_fn(env_id)(next_obs, jnp.zeros(next_obs.shape[:-1] + (1,)), next_obs))


def test_termination_fn_boundaries():
    hopper = np.zeros((6, 11))
    hopper[:, 0] = 1.25
    hopper[1, 0] = 0.69          # fallen
    hopper[2, 1] = 0.21          # tilted forward
    hopper[3, 1] = -0.21         # tilted back
    hopper[4, 5] = np.nan        # blown up
    np.testing.assert_array_equal(_rule("gym:Hopper-v5", hopper), [False, True, True, True, True, False])

    walker = np.zeros((5, 17))
    walker[:, 0] = 1.25
    walker[1, 0] = 0.79
    walker[2, 0] = 2.01
    walker[3, 1] = 1.01
    np.testing.assert_array_equal(_rule("gym:Walker2d-v5", walker), [False, True, True, True, False])

    ant = np.zeros((4, 105))
    ant[:, 0] = [0.55, 0.19, 1.01, 0.55]
    ant[3, 50] = np.inf
    np.testing.assert_array_equal(_rule("gym:Ant-v5", ant), [False, True, True, True])

    # Any leading dims: [2, 3, obs_dim] -> [2, 3].
    assert _rule("gym:Hopper-v5", np.tile(hopper[:3], (2, 1, 1))).shape == (2, 3)
    assert not _rule("gym:HalfCheetah-v5", np.full((4, 17), 1e6)).any()


@pytest.mark.parametrize("env_id", ["dmc", "dmc:walker-walk", "dmc:cheetah-run"])
def test_dmc_never_terminates(env_id):
    terminated = _rule(env_id, np.full((2, 3, 24), np.nan))
    assert terminated.shape == (2, 3) and not terminated.any()


def test_unknown_ids_raise_listing_the_supported():
    with pytest.raises(ValueError, match="gym:Humanoid-v5.*gym:Hopper-v5.*dmc"):
        true_dynamics.termination_fn("gym:Humanoid-v5")
    with pytest.raises(ValueError, match="'Hopper-v5'.*gym:Hopper-v5"):
        true_dynamics.termination_fn("Hopper-v5")
    for env_id in ("gym:Ant-v5", "dmc", "mjx:CheetahRun"):
        with pytest.raises(ValueError, match="true dynamics are not available.*gym:InvertedPendulum-v5"):
            true_dynamics.make_true_dynamics(env_id)
