"""MR.Q's pieces: n-step returns at terminals, the masked encoder loss, the update schedule."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import replay
from agents import mrq
from replay import streams
from envs import EnvSpec

SPEC = EnvSpec("test", obs_dim=3, action_dim=2, max_episode_steps=50, action_repeat=1, can_terminate=True)
SMALL = mrq.Config(batch_size=8, zs_dim=16, za_dim=8, zsa_dim=16, enc_hidden_dim=16, value_hidden_dim=16,
                   policy_hidden_dim=16, random_steps=20, target_update_freq=10)


def test_n_step_return_stops_at_the_terminal_and_keeps_its_reward():
    gamma = 0.9
    reward = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    terminated = jnp.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    ret, not_done = mrq.n_step_return(reward, terminated, gamma)
    np.testing.assert_allclose(ret, [1 + 0.9 * 2 + 0.81 * 3, 1 + 0.9 * 2, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(not_done, [1.0, 0.0, 0.0])
    # The reference's sum_t gamma^t notdone_t r_t would drop the terminal reward (row 1: 1.0, not 2.8)
    # and add the next episode's reward (row 2: 0.9 * 2 + 0.81 * 3).
    reference = jnp.sum(reward * (1 - terminated) * gamma ** jnp.arange(3), axis=-1)
    assert not np.allclose(reference[1:], ret[1:])


def _state_with_data(config=SMALL, terminal_every=7):
    state = mrq.init(jax.random.PRNGKey(0), SPEC, config, capacity=200)
    rng = np.random.default_rng(0)
    for t in range(60):
        terminal = (t + 1) % terminal_every == 0
        transition = replay.Transition(rng.normal(size=3).astype(np.float32), rng.uniform(-1, 1, 2).astype(np.float32),
                                       np.float32(rng.normal()), rng.normal(size=3).astype(np.float32), terminal, False)
        state = mrq.store(state, transition)
    return state


def test_encoder_loss_ignores_everything_after_a_terminal():
    state = _state_with_data()
    batch = replay.Subsequence(
        obs=jax.random.normal(jax.random.PRNGKey(1), (4, 6, 3)),
        action=jax.random.uniform(jax.random.PRNGKey(2), (4, 5, 2), minval=-1, maxval=1),
        reward=jnp.ones((4, 5)),
        terminated=jnp.zeros((4, 5)).at[:, 1].set(1.0),
        mask=jnp.array([[1.0, 1.0, 0.0, 0.0, 0.0]] * 4),
    )
    garbage = batch.replace(obs=batch.obs.at[:, 3:].set(1e3), action=batch.action.at[:, 2:].set(-0.7),
                            reward=batch.reward.at[:, 2:].set(-500.0),
                            terminated=batch.terminated.at[:, 3].set(1.0))
    loss = lambda b: mrq.encoder_loss(state.encoder.params, state.encoder.target_params, b, state)[0]
    grad = lambda b: jax.grad(lambda p: mrq.encoder_loss(p, state.encoder.target_params, b, state)[0])(state.encoder.params)
    np.testing.assert_allclose(loss(batch), loss(garbage), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad(batch)), jax.tree.leaves(grad(garbage))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # ...while data before the terminal does matter.
    changed = batch.replace(reward=batch.reward.at[:, 0].set(-500.0))
    assert abs(float(loss(changed)) - float(loss(batch))) > 1e-3


def test_done_loss_only_once_a_terminal_is_stored():
    without = _state_with_data(terminal_every=10_000)
    with_terminal = _state_with_data(terminal_every=7)
    assert not bool(without.replay.any_terminated) and bool(with_terminal.replay.any_terminated)
    batch = streams.window(with_terminal.replay, jnp.array([0, 0]), jnp.array([0, 1]), 5)   # stream 0: one env
    _, metrics = mrq.encoder_loss(without.encoder.params, without.encoder.target_params, batch, without)
    assert float(metrics["encoder/done_loss"]) == 0.0
    _, metrics = mrq.encoder_loss(with_terminal.encoder.params, with_terminal.encoder.target_params, batch, with_terminal)
    assert float(metrics["encoder/done_loss"]) > 0.0


def test_schedule_random_phase_burst_and_updates():
    state = _state_with_data()
    update = jax.jit(mrq.update)
    key = jax.random.PRNGKey(3)
    before = state.encoder.params
    state, metrics = update(state, key, SMALL.random_steps)          # still the random phase
    assert int(state.updates) == 0 and float(metrics["value/loss"]) == 0.0
    state, metrics = update(state, key, SMALL.random_steps + 1)      # first update: burst + value/policy
    assert int(state.updates) == 1 and float(metrics["encoder/loss"]) > 0.0
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.encoder.params))]
    assert all(changed)
    # the targets were copied at the burst, then the online critic moved on
    assert all(np.allclose(a, b) for a, b in
               zip(jax.tree.leaves(state.encoder.target_params), jax.tree.leaves(before)))
    encoder_after_burst = state.encoder.params
    state, _ = update(state, key, SMALL.random_steps + 2)             # no burst: encoder unchanged
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(encoder_after_burst), jax.tree.leaves(state.encoder.params)))
    assert float(state.reward_scale) > 0 and float(state.target_reward_scale) == 1.0


def test_act_is_random_then_policy_and_in_bounds():
    state = _state_with_data(dataclasses.replace(SMALL, random_steps=1000))
    obs = jnp.zeros((64, 3))
    random_actions = mrq.act(state, obs, jax.random.PRNGKey(0), True)
    assert random_actions.shape == (64, 2) and float(jnp.std(random_actions)) > 0.4
    greedy = mrq.act(state, obs, jax.random.PRNGKey(0), False)
    np.testing.assert_allclose(greedy, greedy[:1].repeat(64, 0), rtol=1e-6)   # deterministic in obs
    trained = _state_with_data(dataclasses.replace(SMALL, random_steps=0))
    noisy = mrq.act(trained, obs, jax.random.PRNGKey(0), True)
    assert float(jnp.max(jnp.abs(noisy))) <= 1.0
    assert 0.1 < float(jnp.std(noisy - mrq.act(trained, obs, jax.random.PRNGKey(0), False))) < 0.3


def test_config_validation_names_the_field():
    import pytest

    with pytest.raises(ValueError, match="--batch-size"):
        mrq.Config(batch_size=0).validate()
    with pytest.raises(ValueError, match="--discount"):
        mrq.Config(discount=1.5).validate()
    with pytest.raises(ValueError, match="--q-horizon"):
        mrq.Config(q_horizon=6).validate()
