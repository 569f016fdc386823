"""The sum tree behind replay sampling (replay/sumtree.py): exact sums, the sampling law, and MR.Q's burst."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import replay
from agents import mrq
from replay import streams, sumtree


def _weights_leaf(weights):
    return lambda i: weights.at[i].get(mode="fill", fill_value=0.0)


@pytest.mark.parametrize("capacity", [1, 2, 7, 64, 1000])
def test_refreshing_changed_slots_equals_a_tree_rebuilt_from_all_weights(capacity):
    rng = np.random.default_rng(capacity)
    weights = jnp.zeros(capacity)
    levels = sumtree.create(capacity)
    for _ in range(5):
        # Repeated indices in one refresh: every write to a node writes the same recomputed sum.
        index = jnp.asarray(rng.integers(0, capacity, size=17))
        weights = weights.at[index].set(jnp.asarray(rng.integers(0, 5, size=17), jnp.float32))
        levels = sumtree.refresh(levels, _weights_leaf(weights), index)
    rebuilt = sumtree.rebuild(capacity, weights)
    assert len(levels) == len(rebuilt) and levels[-1].shape == (1,)
    for got, want in zip(levels, rebuilt):
        np.testing.assert_array_equal(got, want)
    assert float(sumtree.total(levels)) == float(jnp.sum(weights))


def test_find_equals_the_cumulative_sum_search_and_never_lands_on_a_zero_weight():
    rng = np.random.default_rng(0)
    weights = jnp.asarray(rng.integers(0, 4, size=777) * (rng.uniform(size=777) < 0.6), jnp.float32)
    levels = sumtree.rebuild(777, weights)
    # Integer weights: every partial sum is exact in float32, so both searches must agree to the slot.
    cumulative = jnp.cumsum(weights)
    boundaries = cumulative[cumulative < cumulative[-1]]
    u = jnp.concatenate([jax.random.uniform(jax.random.PRNGKey(0), (5000,)) * cumulative[-1], boundaries])
    found = sumtree.find(levels, _weights_leaf(weights), u)
    np.testing.assert_array_equal(found, jnp.searchsorted(cumulative, u, side="right"))
    assert np.all(np.asarray(weights)[np.asarray(found)] > 0)
    # A mass of exactly the total (the edge of [0, total)) still lands on the last slot with weight.
    last = int(np.flatnonzero(np.asarray(weights))[-1])
    assert int(sumtree.find(levels, _weights_leaf(weights), cumulative[-1:])[0]) == last


def test_lap_sampling_frequencies_match_priorities():
    """Chi-square goodness of fit of 200k draws against can_start x priority / total, rejected at p < 0.001."""
    buffer = replay.create(300, 1, 1, 3, prioritized=True)
    add = jax.jit(replay.add)
    for t in range(250):
        end = (t + 1) % 50 == 0
        buffer = add(buffer, jnp.zeros(1), jnp.zeros(1), 0.0, jnp.zeros(1), False, end)
    valid = np.flatnonzero(np.asarray(buffer.can_start))
    rng = np.random.default_rng(1)
    # Two rounds of updates with repeated indices, as a value update's batch has them.
    for _ in range(2):
        index = rng.choice(valid, size=400)
        buffer = replay.update_priority(buffer, jnp.asarray(index), jnp.asarray(rng.uniform(1, 10, size=400)))
    draws = np.asarray(replay.sample_indices(buffer, jax.random.PRNGKey(2), 200_000))
    weight = np.asarray(buffer.can_start * buffer.priority)
    assert set(np.unique(draws)) <= set(valid)
    expected = 200_000 * weight[valid] / weight.sum()
    observed = np.bincount(draws, minlength=300)[valid]
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_uniform_buffer_ignores_priorities_and_refuses_priority_updates():
    buffer = replay.create(50, 1, 1, 1)
    for t in range(20):
        buffer = replay.add(buffer, jnp.zeros(1), jnp.zeros(1), 0.0, jnp.zeros(1), False, t == 19)
    assert float(sumtree.total(buffer.tree)) == float(jnp.sum(buffer.can_start)) == 20.0
    with pytest.raises(ValueError, match="prioritized=False"):
        replay.update_priority(buffer, jnp.zeros(2, jnp.int32), jnp.ones(2))


def test_mrq_burst_draws_the_starts_separate_draws_would_and_trains_alike():
    """The burst draws its 250 (here 10) batches in one pass before its scan; separate per-step draws with the
    same keys give the same starts and, step by step, the same encoder (tiny MR.Q: widths 16, batch 8)."""
    from envs import EnvSpec

    spec = EnvSpec("test", obs_dim=3, action_dim=2, max_episode_steps=50, action_repeat=1, can_terminate=True)
    config = mrq.Config(batch_size=8, zs_dim=16, za_dim=8, zsa_dim=16, enc_hidden_dim=16, value_hidden_dim=16,
                        policy_hidden_dim=16, random_steps=20, target_update_freq=10)
    state = mrq.init(jax.random.PRNGKey(0), spec, config, capacity=200)
    rng = np.random.default_rng(0)
    for t in range(60):
        transition = replay.Transition(rng.normal(size=3).astype(np.float32), rng.uniform(-1, 1, 2).astype(np.float32),
                                       np.float32(rng.normal()), rng.normal(size=3).astype(np.float32),
                                       (t + 1) % 7 == 0, False)
        state = mrq.store(state, transition)
    state = replay_priorities_spread(state)
    key = jax.random.PRNGKey(5)
    burst = jax.jit(mrq.encoder_burst)(state, key)

    separate = mrq.refresh_targets(state)
    for k in jax.random.split(key, config.target_update_freq):
        start = mrq.sample_starts(separate, k)
        np.testing.assert_array_equal(start, mrq.sample_starts(state, k))
        separate, _ = jax.jit(mrq.update_encoder)(separate, k)
    for a, b in zip(jax.tree.leaves(burst.encoder.params), jax.tree.leaves(separate.encoder.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def replay_priorities_spread(state):
    """Unequal LAP priorities, so that a wrong draw would show (MR.Q's replay: one stream, replay/streams.py)."""
    index = jnp.arange(0, 60, 3)
    stream = jnp.zeros_like(index)
    return state.replace(replay=streams.update_priority(state.replay, stream, index,
                                                        jnp.linspace(1.0, 8.0, index.shape[0])))
