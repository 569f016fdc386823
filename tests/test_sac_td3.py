"""SAC, TD3 and ReGraMa: targets by hand, the update schedule, delayed actors, resets, diagnostics, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import replay
from agents import critic, regrama, sac, td3
from experiments.loops.off_policy import DeviceLoop
from networks import distributions as dist_lib
from agents.critic import updates_before
from tests.cli_utils import run_inprocess

SMALL = dict(batch_size=16, learning_starts=10, critic_hidden=(16, 16), actor_hidden=(16, 16), buffer_size=500)
SPEC = envs.make("jax:PointMass").spec


def _filled(module, config, steps=40, update=False):
    """A state with `steps` transitions of a fixed random trajectory stored (and updated after each when asked);
    observations are N(0, I), so every ReLU unit of a fresh network is active on part of them."""
    state = module.init(jax.random.PRNGKey(0), SPEC, config)
    update_fn = jax.jit(module.update)
    obs = np.random.default_rng(0).normal(size=(steps + 1, 4)).astype(np.float32)
    for i in range(steps):
        t = replay.Transition(obs[i], jnp.full(2, 0.1), jnp.float32(i % 3), obs[i + 1], jnp.bool_(i == 19),
                              jnp.bool_(False))
        state = module.store(state, t)
        if update:
            state, _ = update_fn(state, jax.random.PRNGKey(i), jnp.int32(i + 1))
    return state


@pytest.mark.parametrize("ratio, expected", [(1.0, 30), (2.0, 60), (0.5, 15), (0.25, 7)])
def test_update_to_data_ratio(ratio, expected):
    """After 40 steps with learning_starts 10: floor(30 * ratio) critic updates, the first after step 11."""
    assert int(updates_before(jnp.int32(10), 10, ratio)) == 0
    assert int(updates_before(jnp.int32(40), 10, ratio)) == expected
    state = _filled(sac, sac.Config(**SMALL, updates_per_step=ratio), update=True)
    assert int(state.updates) == expected


@pytest.mark.parametrize("ratio, fraction", [(0.075, (3, 40)), (2 / 1024, (1, 512)), (1 / 3, (1, 3)), (7.3, (73, 10))])
def test_update_schedule_is_exact_past_float32(ratio, fraction):
    """The schedule is floor((t - learning_starts) p / q) with the fraction the ratio stands for, exactly, also past
    2^24 env steps per seed, where a float32 product (t has a 24-bit mantissa there) was off by one now and then;
    and the updates of consecutive N-env loop steps add up to it."""
    p, q = fraction
    steps = np.array([10, 50, 16_000_049, 16_777_217, 40_000_003, 200_000_011])
    steps = steps[steps * ratio < 2**31]
    got = np.array([int(updates_before(jnp.int32(t), 10, ratio)) for t in steps])
    np.testing.assert_array_equal(got, np.maximum(steps - 10, 0) * p // q)
    loop_ends = jnp.arange(16_777_216, 16_777_216 + 1024 * 64, 1024, dtype=jnp.int32)
    per_loop_step = jax.vmap(lambda t: updates_before(t, 10, ratio) - updates_before(t - 1024, 10, ratio))(loop_ends)
    assert int(per_loop_step.sum()) == (int(loop_ends[-1]) - 10) * p // q - (int(loop_ends[0]) - 1024 - 10) * p // q


def test_sac_target_by_hand():
    """y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')); truncation still bootstraps."""
    state = _filled(sac, sac.Config(**SMALL), update=True)
    batch = replay.TransitionBatch(jnp.ones((2, 4)), jnp.zeros((2, 2)), jnp.array([1.0, 2.0]), jnp.ones((2, 4)) * 0.5,
                                   jnp.array([0.0, 1.0]))
    key = jax.random.PRNGKey(7)
    y = sac.critic_target(state, batch, key)
    dist = sac.actor_network(state.config, SPEC).apply(state.actor.params, batch.next_obs)
    u = dist_lib.sample_pre_tanh(dist, key)
    q = sac.critic_network(state.config).apply(state.critic.target_params, batch.next_obs, jnp.tanh(u))
    soft = np.min(np.asarray(q), axis=-1) - float(state.alpha) * np.asarray(dist_lib.log_prob(dist, u))
    np.testing.assert_allclose(y, [1.0 + 0.99 * soft[0], 2.0], rtol=1e-5)


def test_td3_target_smoothing_is_clipped():
    """With noise_clip 0 the smoothed target equals the deterministic one; a huge noise is clipped to +-noise_clip."""
    state = _filled(td3, td3.Config(**SMALL), update=True)
    batch = replay.TransitionBatch(jnp.ones((3, 4)), jnp.zeros((3, 2)), jnp.zeros(3), jnp.ones((3, 4)) * 0.2,
                                   jnp.zeros(3))
    deterministic = td3.critic_target(state.replace(config=dataclasses.replace(state.config, noise_clip=0.0)),
                                      batch, jax.random.PRNGKey(0))
    mu = td3.actor_network(state.config, SPEC).apply(state.actor.target_params, batch.next_obs)
    q = td3.critic_network(state.config).apply(state.critic.target_params, batch.next_obs, mu)
    np.testing.assert_allclose(deterministic, 0.99 * np.min(np.asarray(q), axis=-1), rtol=1e-5)
    wild = state.replace(config=dataclasses.replace(state.config, policy_noise=100.0, noise_clip=0.5))
    y = td3.critic_target(wild, batch, jax.random.PRNGKey(1))
    # the target action moved by exactly +-0.5 per dimension (then clipped to [-1, 1]): recompute that value
    noise = jnp.clip(100.0 * jax.random.normal(jax.random.PRNGKey(1), mu.shape), -0.5, 0.5)
    assert np.all(np.abs(np.asarray(noise)) == 0.5)
    q = td3.critic_network(state.config).apply(state.critic.target_params, batch.next_obs, jnp.clip(mu + noise, -1, 1))
    np.testing.assert_allclose(y, 0.99 * np.min(np.asarray(q), axis=-1), rtol=1e-5)


@pytest.mark.parametrize("module", [sac, td3])
def test_actor_is_delayed(module):
    """Update 0 trains the actor, update 1 does not (policy_frequency 2); TD3's targets move only with its actor."""
    state = _filled(module, module.Config(**SMALL))
    after_first, _ = jax.jit(module.update_once)(state, jax.random.PRNGKey(0), jnp.int32(0))
    after_second, _ = jax.jit(module.update_once)(after_first, jax.random.PRNGKey(1), jnp.int32(1))
    leaf = lambda tree: jax.tree.leaves(tree)[0]
    assert not np.allclose(leaf(after_first.actor.params), leaf(state.actor.params))
    np.testing.assert_array_equal(leaf(after_second.actor.params), leaf(after_first.actor.params))
    assert not np.allclose(leaf(after_second.critic.params), leaf(after_first.critic.params))
    target_moved = not np.array_equal(leaf(after_second.critic.target_params), leaf(after_first.critic.target_params))
    assert target_moved == (module is sac)        # SAC: Polyak every update; TD3: only with the actor


def test_regrama_reset_touches_exactly_the_inactive_neurons():
    """Kill hidden_0 neurons 2 and 5 of critic 0 (zero incoming weights, negative bias: no gradient flows into
    them). A GraMa reset (tau 0) flags them, and re-draws exactly the kernel columns and biases of the flagged
    neurons; the output layer, the target critics and the actor stay as they were."""
    config = regrama.Config(**SMALL, threshold=0.0)
    state = _filled(regrama, config)
    mlp = state.sac.critic.params["params"]["critics"]["MLP_0"]
    dead = jnp.zeros((2, 16), bool).at[0, jnp.array([2, 5])].set(True)
    hidden_0 = {"kernel": jnp.where(dead[:, None, :], 0.0, mlp["hidden_0"]["kernel"]),
                "bias": jnp.where(dead, -1.0, mlp["hidden_0"]["bias"])}
    params = {"params": {"critics": {"MLP_0": {**mlp, "hidden_0": hidden_0}}}}
    state = state.replace(sac=state.sac.replace(critic=state.sac.critic.replace(params=params)))
    key = jax.random.PRNGKey(5)
    k_sample, k_target, _ = jax.random.split(key, 3)          # the keys reset_critics uses for its batch
    batch = critic.sample_batch(state.sac, k_sample)
    flagged = {name: np.asarray(s <= 0.0) for name, s in regrama.neuron_scores(state.sac, batch, k_target).items()}
    assert np.all(flagged["hidden_0"][np.asarray(dead)])
    after = regrama.reset_critics(state, key)
    old = state.sac.critic.params["params"]["critics"]["MLP_0"]
    new = after.sac.critic.params["params"]["critics"]["MLP_0"]
    for name in ("hidden_0", "hidden_1"):
        changed_columns = np.any(np.asarray(new[name]["kernel"] != old[name]["kernel"]), axis=1)
        np.testing.assert_array_equal(changed_columns, flagged[name])
        bias_new, bias_old = np.asarray(new[name]["bias"]), np.asarray(old[name]["bias"])
        fan_in = old[name]["kernel"].shape[-2]                  # re-initialized as the authors: U(+-1/sqrt(fan_in))
        assert np.all(np.abs(bias_new[flagged[name]]) <= 1 / np.sqrt(fan_in)) and np.all(bias_new[flagged[name]] != 0)
        np.testing.assert_array_equal(bias_new[~flagged[name]], bias_old[~flagged[name]])
    for field in ("kernel", "bias"):
        np.testing.assert_array_equal(new["out"][field], old["out"][field])
    for a, b in zip(jax.tree.leaves(after.sac.critic.target_params), jax.tree.leaves(state.sac.critic.target_params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(after.sac.actor.params), jax.tree.leaves(state.sac.actor.params)):
        np.testing.assert_array_equal(a, b)
    total = sum(f.sum() for f in flagged.values())
    assert float(after.reset_fraction) == pytest.approx(total / 64)


def test_redo_reset_zeroes_outgoing_weights_and_moments():
    config = regrama.Config(**SMALL, score="redo", mask="percentage", percentage=25.0)
    state = _filled(regrama, config, update=True)
    after = regrama.reset_critics(state, jax.random.PRNGKey(5))
    old = state.sac.critic.params["params"]["critics"]["MLP_0"]
    new = after.sac.critic.params["params"]["critics"]["MLP_0"]
    reset = np.any(np.asarray(new["hidden_0"]["kernel"] != old["hidden_0"]["kernel"]), axis=1)   # [critics, 16]
    assert reset.sum(axis=1).tolist() == [4, 4]                                                   # 25 % of 16
    outgoing = np.asarray(new["hidden_1"]["kernel"])                                               # rows = inputs
    assert np.all(outgoing[reset] == 0.0)
    adam = after.sac.critic.opt_state[0]
    mu = np.asarray(adam.mu["params"]["critics"]["MLP_0"]["hidden_1"]["kernel"])
    assert np.all(mu[reset] == 0.0) and np.any(mu[~reset] != 0.0)


def test_agents_train_vmapped_in_the_device_loop_with_diagnostics():
    for module in (sac, td3, regrama):
        extra = dict(reset_every=5) if module is regrama else {}
        loop = DeviceLoop(module, module.Config(**SMALL, **extra), "jax:PointMass", num_seeds=2, seed=0,
                          replay_transitions=200)
        state, metrics = loop.run(loop.init(), 0, 40)
        assert np.all(np.isfinite(metrics["critic/loss"])) and metrics["critic/loss"].shape == (2,)
        diagnostics = loop.diagnostics(state, 40)
        for name in ("critic/dormant_0", "critic/dormant_0.025", "critic/dormant_0.1", "critic/grama_inactive_0.1",
                     "critic/srank", "critic/feature_norm"):
            assert diagnostics[name].shape == (2,), name
        assert np.all((diagnostics["critic/dormant_0.1"] >= 0) & (diagnostics["critic/dormant_0.1"] <= 1))
        if module is regrama:
            assert np.all(metrics["regrama/resets"] == 6)        # 30 updates, a reset after every 5th


@pytest.mark.parametrize("args, expected", [
    (["--agent", "regrama", "--threshold", "1.5"], "--threshold (the score threshold tau) must be in [0, 1], got 1.5"),
    (["--agent", "regrama", "--percentage", "0"], "--percentage must be in (0, 100], got 0.0"),
    (["--agent", "regrama", "--percentage", "101"], "--percentage must be in (0, 100], got 101.0"),
    (["--agent", "regrama", "--reset-every", "0"], "--reset-every must be >= 1, got 0"),
    (["--agent", "sac", "--updates-per-step", "0"],
     "--updates-per-step (the update-to-data ratio) must be in (0, 1024], got 0.0"),
    (["--agent", "td3", "--updates-per-step", "-1"],
     "--updates-per-step (the update-to-data ratio) must be in (0, 1024], got -1.0"),
    (["--agent", "sac", "--updates-per-step", "inf"], "--updates-per-step (the update-to-data ratio) must be a finite"),
    (["--agent", "td3", "--noise-clip", "-1"], "--noise-clip must be >= 0"),
])
def test_bad_input_fails_cleanly(tmp_path, args, expected):
    run_dir = tmp_path / "run"
    result = run_inprocess(*args, "--env", "jax:PointMass", "--run-dir", str(run_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and expected in errors[-1], result.stderr[-2000:]
    assert not run_dir.exists()


def test_unknown_score_is_rejected_by_the_parser(tmp_path):
    result = run_inprocess("--agent", "regrama", "--score", "weights", "--env", "jax:PointMass", "--run-dir",
                     str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--score" in result.stderr and "'grama'" in result.stderr and "'redo'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_alpha_step_uses_a_fresh_sample_from_the_updated_actor(monkeypatch):
    """CleanRL's order: the actor steps, then log pi of a NEW action from the updated actor drives alpha."""
    spec = envs.make("jax:PointMass").spec
    config = sac.Config(**SMALL)
    state = sac.init(jax.random.PRNGKey(0), spec, config, capacity=16)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, spec.obs_dim))
    key = jax.random.PRNGKey(5)
    seen = []
    original = sac.alpha_loss
    monkeypatch.setattr(sac, "alpha_loss", lambda log_alpha, log_prob, h: seen.append(log_prob) or
                        original(log_alpha, log_prob, h))
    new, _ = sac.update_actor(state, obs, key)
    _, fresh = sac.policy(new, new.actor.params, obs, jax.random.fold_in(key, 1))
    _, stale = sac.policy(state, state.actor.params, obs, key)      # the sample the actor step used
    np.testing.assert_allclose(seen[-1], fresh, rtol=1e-6)
    assert not np.allclose(fresh, stale)
