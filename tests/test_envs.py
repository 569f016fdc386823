"""Tests of envs/: shapes, time limits, terminations, auto-reset, seeding, errors.

Kept fast (small num_envs, few steps); the one Playground test pays a single
XLA compile of reset + scanned steps (about 10-15 s on a 2-core CPU).
"""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.core import scale_action


@pytest.fixture(scope="module")
def cartpole():
    env = envs.make("dmc:cartpole-balance", num_envs=2, seed=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def hopper():
    env = envs.make("gym:Hopper-v5", num_envs=2, seed=0)
    yield env
    env.close()


# ----------------------------------------------------------------- host envs


def test_dmc_shapes_and_spec(cartpole):
    assert cartpole.spec == envs.EnvSpec(
        "dmc:cartpole-balance", obs_dim=5, action_dim=1, max_episode_steps=500,
        action_repeat=2, can_terminate=False,
    )
    obs = cartpole.reset()
    assert obs.shape == (2, 5) and obs.dtype == np.float32
    result = cartpole.step(np.zeros((2, 1), np.float32))
    assert result.obs.shape == result.final_obs.shape == (2, 5)
    assert result.obs.dtype == result.final_obs.dtype == np.float32
    assert result.reward.shape == (2,) and result.reward.dtype == np.float32
    assert result.terminated.dtype == result.truncated.dtype == bool
    # Balance reward is at most 1 per frame, summed over the 2-frame repeat.
    assert np.all(result.reward > 1.0) and np.all(result.reward <= 2.0)


def test_dmc_default_task_and_domains_with_underscores():
    assert envs.make("dmc").spec.env_id == "dmc:cheetah-run"
    assert envs.make("dmc:ball_in_cup-catch").spec.obs_dim == 8
    assert envs.make("dmc:cartpole-swingup_sparse").spec.action_dim == 1


def test_dmc_cheetah_evaluation_prints_no_settotalmass_warning(caplog):
    """MuJoCo warns, through dm_control's absl logger, about cheetah's deprecated `settotalmass` each time the
    model compiles (every evaluation builds fresh instances): that one message is dropped, others stay."""
    import logging

    from experiments.loops.evaluation import evaluate_host

    with caplog.at_level(logging.WARNING):
        returns, _ = evaluate_host(lambda obs, reward, first: np.zeros(obs.shape[:-1] + (6,), np.float32),
                                   "dmc", num_seeds=1, seed=0, step=0, episodes=2)
        logging.getLogger("absl").warning("another warning")
    assert returns.shape == (1, 2)
    assert not [r for r in caplog.records if "settotalmass" in r.getMessage()]
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == ["another warning"]


def test_dmc_truncates_exactly_at_step_500_and_auto_resets(cartpole):
    cartpole.reset()
    rng = np.random.default_rng(0)
    for step in range(1, 501):
        result = cartpole.step(rng.uniform(-1, 1, (2, 1)))
        assert not result.terminated.any()
        if step < 500:
            assert not result.truncated.any()
            np.testing.assert_array_equal(result.final_obs, result.obs)
    assert result.truncated.all()
    assert not np.allclose(result.final_obs, result.obs)  # obs is the new episode's first
    # The next step continues the new episode normally.
    assert not cartpole.step(np.zeros((2, 1))).truncated.any()


def test_gym_shapes_and_spec(hopper):
    assert hopper.spec == envs.EnvSpec(
        "gym:Hopper-v5", obs_dim=11, action_dim=3, max_episode_steps=1000,
        action_repeat=1, can_terminate=True,
    )
    obs = hopper.reset()
    assert obs.shape == (2, 11) and obs.dtype == np.float32
    result = hopper.step(np.zeros((2, 3)))
    assert result.obs.shape == result.final_obs.shape == (2, 11)
    assert result.reward.shape == (2,) and result.reward.dtype == np.float32


def test_gym_hopper_terminates_and_auto_resets(hopper):
    hopper.reset()
    rng = np.random.default_rng(0)
    for step in range(200):
        result = hopper.step(rng.choice([-1.0, 1.0], size=(2, 3)))
        done = result.terminated | result.truncated
        np.testing.assert_array_equal(result.final_obs[~done], result.obs[~done])
        if result.terminated.any():
            break
    assert step < 100, "large random actions should make the hopper fall quickly"
    assert not (result.terminated & result.truncated).any()
    i = int(np.argmax(result.terminated))
    assert not np.allclose(result.final_obs[i], result.obs[i])
    assert abs(result.obs[i, 0] - 1.25) < 0.01  # a fresh hopper stands at height ~1.25


def test_seeding_host_envs():
    first = envs.make("dmc:walker-walk", num_envs=2, seed=7)
    again = envs.make("dmc:walker-walk", num_envs=2, seed=7)
    shifted = envs.make("dmc:walker-walk", num_envs=1, seed=8)
    obs, obs_again, obs_shifted = first.reset(), again.reset(), shifted.reset()
    np.testing.assert_array_equal(obs, obs_again)
    assert not np.allclose(obs[0], obs[1])  # env i is seeded seed + i
    np.testing.assert_array_equal(obs[1], obs_shifted[0])
    action = np.full((2, 6), 0.3)
    np.testing.assert_array_equal(first.step(action).obs, again.step(action).obs)

    gym_a = envs.make("gym:HalfCheetah-v5", num_envs=2, seed=3).reset()
    gym_b = envs.make("gym:HalfCheetah-v5", num_envs=2, seed=3).reset()
    np.testing.assert_array_equal(gym_a, gym_b)
    assert not np.allclose(gym_a[0], gym_a[1])


def test_scale_action_clips_then_maps_to_bounds():
    scaled = scale_action(np.array([-1.0, 0.0, 1.0, 3.0]), np.zeros(4), np.full(4, 4.0))
    np.testing.assert_allclose(scaled, [0.0, 2.0, 4.0, 4.0])


def test_step_before_reset_and_bad_action_shape_raise():
    env = envs.make("dmc:cartpole-balance", num_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((2, 1)))
    env.reset()
    with pytest.raises(ValueError, match=r"expected \(2, 1\)"):
        env.step(np.zeros((1, 1)))


# -------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "env_id, must_list",
    [
        ("dmc:cartpole-flip", "dmc:cartpole-swingup_sparse"),
        ("dmc:nodomain-run", "dmc:walker-walk"),
        ("atari:Pong", "mjx:<PlaygroundName>"),
        ("mjx:CheetahSprint", "mjx:CheetahRun"),
        ("gym:Hoppper-v5", "gym:Hopper-v5"),
        ("jax:Nothing", "jax:PointMass"),
    ],
)
def test_unknown_ids_name_the_bad_id_and_the_valid_choices(env_id, must_list):
    with pytest.raises(envs.UnknownEnvError) as error:
        envs.make(env_id)
    message = str(error.value)
    assert "\n" not in message
    assert repr(env_id) in message and must_list in message
    for family in envs.list_env_ids():
        assert family in message


def test_num_envs_must_be_positive():
    with pytest.raises(ValueError, match="num_envs"):
        envs.make("dmc", num_envs=0)


def test_is_jax_env():
    assert envs.is_jax_env("mjx:CheetahRun") and envs.is_jax_env("jax:PointMass")
    assert not envs.is_jax_env("dmc:walker-walk") and not envs.is_jax_env("gym:Hopper-v5")


# ------------------------------------------------------------------ JAX envs


def _scan_steps(env, num_envs, num_steps, action, key=jax.random.PRNGKey(0)):
    """reset + ``num_steps`` of jit(vmap(step)) inside lax.scan; returns (initial, infos)."""

    @jax.jit
    def run(key):
        state = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(state, _):
            actions = jnp.broadcast_to(action, (num_envs, env.spec.action_dim))
            return jax.vmap(env.step)(state, actions)

        final_state, infos = jax.lax.scan(body, state, None, length=num_steps)
        return state, final_state, infos

    return run(key)


def test_toy_env_truncates_at_episode_length_and_rerandomizes():
    env = envs.make("jax:PointMass", episode_length=5)
    assert env.spec.obs_dim == 4 and env.spec.max_episode_steps == 5
    initial, final_state, infos = _scan_steps(env, num_envs=3, num_steps=12, action=0.5)
    assert infos.obs.shape == infos.final_obs.shape == (12, 3, 4)
    assert infos.obs.dtype == jnp.float32 and infos.reward.shape == (12, 3)
    truncated_steps = np.flatnonzero(np.asarray(infos.truncated[:, 0]))
    np.testing.assert_array_equal(truncated_steps, [4, 9])  # agent steps 5 and 10
    assert not infos.terminated.any()
    np.testing.assert_array_equal(infos.episode_length[:, 0], [1, 2, 3, 4, 5] * 2 + [1, 2])
    # Episode return = sum of the episode's rewards.
    np.testing.assert_allclose(infos.episode_return[4], infos.reward[:5].sum(0), rtol=1e-5)
    # At the boundary obs is a fresh start (zero velocity), not the final obs, and
    # each episode starts somewhere new.
    boundary = infos.obs[4]
    np.testing.assert_array_equal(boundary[:, 2:], 0.0)
    assert not np.allclose(boundary, infos.final_obs[4])
    assert not np.allclose(boundary, initial.obs)
    assert not np.allclose(infos.obs[9], boundary)
    not_done = ~np.asarray(infos.truncated)
    np.testing.assert_array_equal(infos.obs[not_done], infos.final_obs[not_done])
    np.testing.assert_array_equal(final_state.obs, infos.obs[-1])


def test_toy_env_termination_is_not_truncation():
    env = envs.make("jax:PointMass", episode_length=1000, terminate_outside=1.2)
    assert env.spec.can_terminate
    _, _, infos = _scan_steps(env, num_envs=2, num_steps=60, action=1.0)
    assert infos.terminated.any(axis=0).all()
    assert not infos.truncated.any()


def test_toy_env_action_repeat_sums_rewards():
    once = envs.make("jax:PointMass", episode_length=10)
    twice = envs.make("jax:PointMass", episode_length=10, action_repeat=2)
    _, _, infos_once = _scan_steps(once, num_envs=1, num_steps=4, action=0.2)
    _, _, infos_twice = _scan_steps(twice, num_envs=1, num_steps=2, action=0.2)
    np.testing.assert_allclose(infos_twice.reward[:, 0],
                               infos_once.reward[:, 0].reshape(2, 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(infos_twice.obs[-1], infos_once.obs[-1], rtol=1e-5)


def test_toy_env_nan_physics_is_reset_and_flagged():
    env = envs.make("jax:PointMass")
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 2))
    actions = jnp.array([[jnp.nan, 0.0], [0.1, 0.1]])
    new_state, info = jax.jit(jax.vmap(env.step))(state, actions)
    np.testing.assert_array_equal(info.nan_reset, [True, False])
    np.testing.assert_array_equal(info.terminated, [True, False])
    assert info.reward[0] == 0.0
    assert np.isfinite(info.final_obs).all() and np.isfinite(new_state.obs).all()
    assert new_state.step[0] == 0 and new_state.step[1] == 1


def test_rollout_stacks_time_then_batch():
    env = envs.make("jax:PointMass", episode_length=4)
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))

    def policy(obs, key):
        action = -obs[:, :2]  # push towards the origin
        return action, {"norm": jnp.linalg.norm(action, axis=-1)}

    final_state, traj = jax.jit(envs.rollout, static_argnums=(0, 1, 4))(
        env, policy, state, jax.random.PRNGKey(1), 6)
    assert traj.obs.shape == (6, 3, 4) and traj.action.shape == (6, 3, 2)
    assert traj.policy_extras["norm"].shape == (6, 3)
    assert traj.info.truncated[3].all() and final_state.step.tolist() == [2, 2, 2]


def test_mjx_cartpole_under_jit_vmap_truncates_at_episode_length():
    env = envs.make("mjx:CartpoleBalance", episode_length=3)
    assert env.spec == envs.EnvSpec(
        "mjx:CartpoleBalance", obs_dim=5, action_dim=1, max_episode_steps=3,
        action_repeat=1, can_terminate=False,
    )
    initial, _, infos = _scan_steps(env, num_envs=2, num_steps=4, action=1.0)
    assert initial.obs.shape == (2, 5)
    assert infos.obs.shape == infos.final_obs.shape == (4, 2, 5)
    assert infos.reward.shape == (4, 2) and np.isfinite(infos.reward).all()
    np.testing.assert_array_equal(infos.truncated[:, 0], [False, False, True, False])
    assert not infos.terminated.any() and not infos.nan_reset.any()
    np.testing.assert_array_equal(infos.episode_length[:, 0], [1, 2, 3, 1])
    assert not np.allclose(infos.obs[2], infos.final_obs[2])
    np.testing.assert_array_equal(infos.obs[:2], infos.final_obs[:2])
    assert not np.allclose(infos.obs[2], initial.obs)  # re-randomized start


# ------------------------------------------------------- host env checkpoints

_STEP_FIELDS = ("obs", "reward", "terminated", "truncated", "final_obs")


@pytest.mark.parametrize(
    "env_id, steps_before, steps_after, bang_bang",
    [
        # The 10 steps after the checkpoint cross the 500-step time limit, so
        # the restored env must also reproduce the time limit and the reset.
        ("dmc:cartpole-balance", 495, 10, False),
        # Cheetah's reset runs 200 physics steps from random joint angles.
        ("dmc:cheetah-run", 20, 30, False),
        # Reacher draws its target into the *model* at every reset.
        ("dmc:reacher-easy", 20, 30, False),
        # Stacking boxes: many contacts, so the solver warmstart matters.
        ("dmc:stacker-stack_2", 20, 20, False),
        # Bang-bang actions make the hopper fall: terminations and resets on both sides.
        ("gym:Hopper-v5", 40, 60, True),
        # Humanoid's reward reads mjData's xipos from before the step, and its
        # contacts make the solver warmstart matter.
        ("gym:Humanoid-v5", 10, 20, False),
    ],
)
def test_host_env_resumes_bit_identically_from_get_state(env_id, steps_before, steps_after, bang_bang):
    original = envs.make(env_id, num_envs=2, seed=0)
    rng = np.random.default_rng(1)
    shape = (2, original.spec.action_dim)
    sample = (lambda: rng.choice([-1.0, 1.0], size=shape)) if bang_bang else (lambda: rng.uniform(-1, 1, shape))
    original.reset()
    for _ in range(steps_before):
        original.step(sample())
    blob = original.get_state()
    assert isinstance(blob, bytes)
    actions = [sample() for _ in range(steps_after)]
    expected = [original.step(action) for action in actions]
    if env_id in ("dmc:cartpole-balance", "gym:Hopper-v5"):
        assert any((r.terminated | r.truncated).any() for r in expected), "no reset was covered"

    # Same seed, and another seed: the saved state must replace everything the seed decided.
    for seed in (0, 7):
        resumed = envs.make(env_id, num_envs=2, seed=seed)
        resumed.reset()
        resumed.step(sample())  # let the fresh env drift away from the saved state first
        resumed.set_state(blob)
        for t, (action, want) in enumerate(zip(actions, expected)):
            got = resumed.step(action)
            for field in _STEP_FIELDS:
                assert np.array_equal(getattr(got, field), getattr(want, field)), (seed, t, field)


def test_set_state_before_reset_and_round_trip():
    original = envs.make("gym:Hopper-v5", num_envs=2, seed=3)
    fresh_blob = original.get_state()  # before any reset: the seed is still owed
    first_obs = original.reset()

    unreset = envs.make("gym:Hopper-v5", num_envs=2, seed=9)
    unreset.set_state(fresh_blob)
    with pytest.raises(RuntimeError, match="reset"):
        unreset.step(np.zeros((2, 3)))
    np.testing.assert_array_equal(unreset.reset(), first_obs)

    # A reset env restored without calling reset() may step at once.
    blob = original.get_state()
    restored = envs.make("gym:Hopper-v5", num_envs=2, seed=9)
    restored.set_state(blob)
    assert restored.get_state() == blob
    action = np.full((2, 3), 0.5)
    np.testing.assert_array_equal(restored.step(action).obs, original.step(action).obs)


def test_set_state_rejects_other_envs_and_garbage():
    cartpole = envs.make("dmc:cartpole-balance", num_envs=2, seed=0)
    cartpole.reset()
    before = cartpole.get_state()

    cheetah = envs.make("dmc:cheetah-run", num_envs=2, seed=0)
    with pytest.raises(ValueError, match="corrupt or from another env.*'dmc:cheetah-run'.*'dmc:cartpole-balance'"):
        cartpole.set_state(cheetah.get_state())
    with pytest.raises(ValueError, match="num_envs=1"):
        cartpole.set_state(envs.make("dmc:cartpole-balance", num_envs=1).get_state())
    with pytest.raises(ValueError, match="action_repeat 4 != 2"):
        cartpole.set_state(envs.make("dmc:cartpole-balance", num_envs=2, action_repeat=4).get_state())
    with pytest.raises(ValueError, match="corrupt or from another env"):
        cartpole.set_state(envs.make("gym:Hopper-v5", num_envs=2).get_state())
    for garbage in (b"", b"not a pickle", before[: len(before) // 2], bytes(range(256))):
        with pytest.raises(ValueError, match="host env state is corrupt or from another env"):
            cartpole.set_state(garbage)
    with pytest.raises(ValueError, match="keys"):
        cartpole.set_state(pickle.dumps({"some": "dict"}))
    # Loading never calls anything outside numpy's array reconstruction.
    with pytest.raises(ValueError, match="refers to builtins.print"):
        cartpole.set_state(pickle.dumps(print))
    assert cartpole.get_state() == before  # failed restores changed nothing
