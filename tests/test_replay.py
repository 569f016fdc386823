import jax
import jax.numpy as jnp
import numpy as np
import pytest

import replay


def _fill(buffer, episodes, obs_dim=1):
    """Add episodes given as (length, ends_terminated); obs encodes (episode, step)."""
    add = jax.jit(replay.add)
    for e, (length, terminal) in enumerate(episodes):
        for t in range(length):
            obs = jnp.full((obs_dim,), 100.0 * e + t)
            next_obs = jnp.full((obs_dim,), 100.0 * e + t + 1)
            last = t == length - 1
            buffer = add(buffer, obs, jnp.array([float(e)]), 1.0 * e + 0.01 * t, next_obs,
                         last and terminal, last and not terminal)
    return buffer


def test_subsequences_never_cross_an_episode_end():
    horizon = 5
    buffer = replay.create(200, 1, 1, horizon)
    buffer = _fill(buffer, [(12, False), (3, True), (9, False), (7, True), (20, False)])
    starts = np.flatnonzero(np.asarray(buffer.can_start))
    batch = replay.subsequence(buffer, jnp.asarray(starts), horizon)
    obs = np.asarray(batch.obs)[..., 0]
    episode = np.floor(obs / 100.0)
    mask = np.asarray(batch.mask)
    for row in range(len(starts)):
        for t in range(horizon):
            if mask[row, t]:
                # transition t and its next obs belong to the start's episode
                assert episode[row, t] == episode[row, 0]
                assert episode[row, t + 1] == episode[row, 0]
                assert obs[row, t + 1] == obs[row, t] + 1
    # windows past a truncated end are never allowed: the last starts of truncated episodes are closed
    truncated_last = 11   # episode 0: slots 0..11, final obs in slot 12
    assert buffer.can_start[truncated_last - horizon + 1] == 1.0
    assert all(buffer.can_start[truncated_last - k] == 0.0 for k in range(horizon - 1))
    # a terminated episode shorter than the horizon still gives masked windows
    assert buffer.can_start[13] == 1.0   # episode 1 starts in slot 13 (3 steps, terminal)
    row = int(np.flatnonzero(starts == 13)[0])
    np.testing.assert_array_equal(mask[row], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(batch.terminated)[row, :3], [0, 0, 1])


def test_final_observation_slot_holds_the_true_next_obs():
    buffer = replay.create(50, 1, 1, 2)
    buffer = _fill(buffer, [(4, False), (4, False)])
    np.testing.assert_array_equal(np.asarray(buffer.obs[:10, 0]), [0, 1, 2, 3, 4, 100, 101, 102, 103, 104])
    np.testing.assert_array_equal(np.asarray(buffer.has_transition[:10]), [1, 1, 1, 1, 0, 1, 1, 1, 1, 0])
    assert int(buffer.insert_index) == 10


def test_wraparound_invalidates_overwritten_windows():
    horizon = 3
    buffer = replay.create(16, 1, 1, horizon)
    buffer = _fill(buffer, [(10, False)] * 4)
    starts = np.flatnonzero(np.asarray(buffer.can_start))
    batch = replay.subsequence(buffer, jnp.asarray(starts), horizon)
    obs = np.asarray(batch.obs)[..., 0]
    # every allowed window is consecutive in time within one episode
    np.testing.assert_array_equal(np.diff(obs, axis=1), np.ones((len(starts), horizon)))


def test_uniform_sampling_only_returns_valid_starts_and_covers_them():
    buffer = _fill(replay.create(100, 1, 1, 3), [(20, False), (10, True)])
    index = np.asarray(replay.sample_indices(buffer, jax.random.PRNGKey(0), 4000))
    valid = np.flatnonzero(np.asarray(buffer.can_start))
    assert set(index) == set(valid)
    counts = np.bincount(index, minlength=100)[valid]
    assert counts.min() > 0.6 * counts.mean()


def test_lap_sampling_follows_priorities_and_new_items_get_the_max():
    buffer = _fill(replay.create(100, 1, 1, 1, prioritized=True), [(10, False)])
    valid = np.flatnonzero(np.asarray(buffer.can_start))
    buffer = replay.update_priority(buffer, jnp.asarray(valid), jnp.where(jnp.asarray(valid) == 3, 9.0, 1.0))
    index = np.asarray(replay.sample_indices(buffer, jax.random.PRNGKey(1), 20000))
    share = np.mean(index == 3)
    expected = 9.0 / (9.0 + (len(valid) - 1))
    assert abs(share - expected) < 0.02
    assert float(buffer.max_priority) == 9.0
    buffer = replay.add(buffer, jnp.zeros(1), jnp.zeros(1), 0.0, jnp.zeros(1), False, False)
    assert float(buffer.priority[11]) == 9.0       # slot 10 holds the final obs of episode 0


def test_mean_abs_reward_ignores_final_obs_slots():
    buffer = _fill(replay.create(100, 1, 1, 1), [(3, False)])
    assert float(replay.mean_abs_reward(buffer)) == pytest.approx(np.mean([0.0, 0.01, 0.02]) or 1e-8, abs=1e-6)


def test_buffer_vmaps_over_seeds():
    buffers = jax.vmap(lambda _: replay.create(32, 2, 1, 2, prioritized=True))(jnp.arange(3))
    add = jax.jit(jax.vmap(replay.add))
    obs = jnp.arange(6.0).reshape(3, 2)
    buffers = add(buffers, obs, jnp.zeros((3, 1)), jnp.ones(3), obs + 1, jnp.zeros(3, bool), jnp.array([True, False, False]))
    np.testing.assert_array_equal(np.asarray(buffers.insert_index), [2, 1, 1])
    index = jax.vmap(lambda b, k: replay.sample_indices(b, k, 8))(buffers, jax.random.split(jax.random.PRNGKey(0), 3))
    assert index.shape == (3, 8)


def test_capacity_and_errors():
    assert replay.capacity_for(1000, 10**6, 500) == 1000 + 2 + 1
    with pytest.raises(ValueError, match="horizon"):
        replay.create(4, 1, 1, horizon=5)
    buffer = replay.create(32, 1, 1, 2)
    with pytest.raises(ValueError, match="exceeds"):
        replay.subsequence(buffer, jnp.zeros(2, jnp.int32), 3)
