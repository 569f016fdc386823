"""Multitask host envs (envs/multitask.py) and the per-env-stream replay (replay/streams.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import multitask
from replay import streams

MIX = "dmc:cartpole-balance,reacher-easy"


@pytest.fixture(scope="module")
def mix():
    env = envs.make(MIX, num_envs=2, seed=0)
    yield env
    env.close()


def test_an_id_lists_its_tasks_and_suites_name_theirs():
    assert multitask.task_list("dmc:cartpole-balance,reacher-easy") == ("dmc:cartpole-balance", "dmc:reacher-easy")
    assert multitask.task_list("dmc:mt4") == multitask.SUITES["dmc:mt4"]
    assert multitask.is_multitask("dmc:mt4") and not multitask.is_multitask("dmc:cartpole-balance")
    with pytest.raises(multitask.MultitaskError, match="repeated: dmc:cartpole-balance"):
        envs.make("dmc:cartpole-balance,cartpole-balance")
    with pytest.raises(envs.UnknownEnvError, match="valid dm_control tasks"):
        envs.make("dmc:cartpole-balance,nope-nope")
    with pytest.raises(multitask.MultitaskError, match="JAX env"):
        envs.make("dmc:cartpole-balance,jax:PointMass")          # host and JAX tasks mixed


def test_the_spec_pads_to_the_widest_task_and_appends_the_task_one_hot(mix):
    spec = mix.spec
    assert [t.env_id for t in spec.tasks] == ["dmc:cartpole-balance", "dmc:reacher-easy"]
    assert [(t.obs_dim, t.action_dim) for t in spec.tasks] == [(5, 1), (6, 2)]
    assert (spec.obs_dim, spec.action_dim, spec.num_tasks) == (6 + 2, 2, 2)
    obs = mix.reset()
    assert obs.shape == (2 * 2, 8)                      # instance i * T + t
    np.testing.assert_array_equal(obs[:, 5], [0, obs[1, 5], 0, obs[3, 5]])   # cartpole's 6th dim is padding
    np.testing.assert_array_equal(obs[:, 6:], [[1, 0], [0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(multitask.task_ids(spec, obs), [0, 1, 0, 1])
    np.testing.assert_array_equal(multitask.action_masks(spec), [[1, 0], [1, 1]])


def test_a_padded_action_dimension_never_reaches_the_simulator():
    a, b = (envs.make(MIX, num_envs=1, seed=3) for _ in range(2))
    a.reset(), b.reset()
    action = np.array([[0.5, 0.0], [0.2, -0.3]], np.float32)
    padded = action.copy()
    padded[0, 1] = 0.9                                  # cartpole has one action dim: its 2nd is padding
    for _ in range(5):
        ra, rb = a.step(action), b.step(padded)
        np.testing.assert_array_equal(ra.obs, rb.obs)
        np.testing.assert_array_equal(ra.reward, rb.reward)
    a.close(), b.close()


def test_a_multitask_env_state_restores_exactly(mix):
    mix.reset()
    for _ in range(3):
        mix.step(np.full((4, 2), 0.3, np.float32))
    blob = mix.get_state()
    other = envs.make(MIX, num_envs=2, seed=99)
    other.set_state(blob)
    action = np.full((4, 2), -0.2, np.float32)
    np.testing.assert_array_equal(other.step(action).obs, mix.step(action).obs)
    other.close()


def _filled(num_tasks=2, capacity=40, steps=30, episode=10, prioritized=False):
    buffer = streams.create(num_tasks, capacity, obs_dim=3, action_dim=1, horizon=3, prioritized=prioritized)
    for t in range(steps):
        task = jnp.arange(num_tasks, dtype=jnp.float32)
        obs = jnp.stack([task, jnp.full(num_tasks, t, jnp.float32), jnp.zeros(num_tasks)], -1)
        end = (t + 1) % episode == 0
        buffer = streams.add(buffer, obs, task[:, None], task + 1.0, obs + jnp.array([0, 1, 0]),
                             jnp.zeros(num_tasks, bool), jnp.full(num_tasks, end))
    return buffer


@pytest.mark.parametrize("sampling", ["uniform", "stratified", "prioritized"])
def test_samples_carry_their_stream_s_task_and_never_cross_an_episode(sampling):
    buffer = _filled(prioritized=sampling == "prioritized")
    stream, start = streams.sample(buffer, jax.random.PRNGKey(0), 512, sampling)
    batch = streams.window(buffer, stream, start, 3)
    # Every stored obs holds its task in dim 0 and its time step in dim 1; the action and reward too.
    np.testing.assert_array_equal(batch.obs[:, :, 0], jnp.broadcast_to(stream[:, None], (512, 4)))
    np.testing.assert_array_equal(batch.action[:, :, 0], jnp.broadcast_to(stream[:, None], (512, 3)))
    np.testing.assert_array_equal(batch.reward, jnp.broadcast_to(stream[:, None] + 1.0, (512, 3)))
    np.testing.assert_array_equal(np.diff(batch.obs[:, :, 1], axis=1), 1.0)     # consecutive steps
    first = np.asarray(batch.obs[:, 0, 1])
    assert np.all(first % 10 <= 10 - 3)                 # the window ends inside the start's episode
    np.testing.assert_array_equal(streams.task_of(stream, 2), stream)
    if sampling == "stratified":
        np.testing.assert_array_equal(stream, np.arange(512) % 2)
    else:
        assert 200 < int(jnp.sum(stream)) < 312        # both streams hold as much data: about half each


def test_uniform_sampling_weights_every_valid_start_alike():
    buffer = _filled(num_tasks=2, capacity=40, steps=30)
    stream, start = streams.sample(buffer, jax.random.PRNGKey(1), 40_000, "uniform")
    counts = np.zeros(buffer.can_start.shape)
    np.add.at(counts, (np.asarray(stream), np.asarray(start)), 1)
    valid = np.asarray(buffer.can_start) > 0
    assert counts[~valid].sum() == 0
    expected = 40_000 / valid.sum()
    assert np.all(np.abs(counts[valid] - expected) < 5 * np.sqrt(expected))


def test_reward_scale_is_per_task():
    buffer = _filled(num_tasks=2)
    np.testing.assert_allclose(streams.mean_abs_reward_per_task(buffer, 2), [1.0, 2.0])
    four = streams.create(4, 20, 1, 1, 1)
    four = streams.add(four, jnp.zeros((4, 1)), jnp.zeros((4, 1)), jnp.array([1.0, -3.0, 5.0, 7.0]),
                       jnp.zeros((4, 1)), jnp.zeros(4, bool), jnp.zeros(4, bool))
    # Streams 0, 2 are env slots 0, 1 of task 0; streams 1, 3 of task 1.
    np.testing.assert_allclose(streams.mean_abs_reward_per_task(four, 2), [3.0, 5.0])
