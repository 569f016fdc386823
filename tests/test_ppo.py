"""PPO: GAE, the loss by hand, truncation vs termination, the batch layout, sharding, seeds, resume."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import ppo
from experiments.loops.on_policy import OnPolicyLoop
from networks import distributions as dist_lib
from tests.cli_utils import ROOT, TIMING_COLUMNS, run_cli, run_inprocess

# A reduced PPO for fast tests (stated once): 32 envs on jax:PointMass, unroll 8, 2 minibatches of 16
# trajectories, 2 epochs, small networks.
TINY = dict(num_envs=32, unroll_length=8, batch_size=16, num_minibatches=2, num_epochs=2,
            policy_hidden=(16, 16), value_hidden=(32, 32))
TINY_FLAGS = ["--num-envs", "32", "--unroll-length", "8", "--batch-size", "16", "--num-minibatches", "2",
              "--num-epochs", "2", "--policy-hidden", "16", "16", "--value-hidden", "32", "32"]


def gae_loop(rewards, values, next_values, terminated, done, gamma, lam):
    """GAE written as the plain backward loop of Schulman et al. (2016), Eq. 16."""
    T, N = rewards.shape
    advantages = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            delta = rewards[t, n] + gamma * (1 - terminated[t, n]) * next_values[t, n] - values[t, n]
            running = delta + gamma * lam * (1 - done[t, n]) * running
            advantages[t, n] = running
    return advantages


def test_gae_matches_plain_loop():
    rng = np.random.default_rng(0)
    T, N = 12, 5
    rewards, values, next_values = (rng.normal(size=(T, N)) for _ in range(3))
    terminated = rng.random((T, N)) < 0.15
    done = terminated | (rng.random((T, N)) < 0.15)
    advantages, targets = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values),
                                  jnp.asarray(terminated), jnp.asarray(done), 0.97, 0.9)
    expected = gae_loop(rewards, values, next_values, terminated, done, 0.97, 0.9)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + values, rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_and_termination_does_not():
    """One step, V(s)=1, V(s')=10, r=2, gamma=0.5: truncated A = 2 + 5 - 1 = 6; terminated A = 2 - 1 = 1."""
    one = lambda x: jnp.array([[x]], jnp.float32)
    truncated_adv, _ = ppo.gae(one(2.0), one(1.0), one(10.0), one(False), one(True), 0.5, 0.95)
    terminated_adv, _ = ppo.gae(one(2.0), one(1.0), one(10.0), one(True), one(True), 0.5, 0.95)
    assert float(truncated_adv[0, 0]) == pytest.approx(6.0)
    assert float(terminated_adv[0, 0]) == pytest.approx(1.0)
    # And the recursion stops at either: the next episode's advantage does not leak back.
    two = lambda a, b: jnp.array([[a], [b]], jnp.float32)
    adv, _ = ppo.gae(two(0.0, 100.0), two(0.0, 0.0), two(0.0, 0.0), two(False, False), two(True, False), 0.9, 1.0)
    assert float(adv[0, 0]) == 0.0


def test_collect_bootstraps_truncated_episodes_with_the_final_observation_value():
    """In a rollout, final_value = V_old(final obs) exactly on the steps where an episode ended."""
    env = envs.make("jax:PointMass", episode_length=5)
    config = ppo.Config(**TINY)
    state = ppo.init(jax.random.PRNGKey(0), env.spec, config)
    env_state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), config.num_envs))
    _, batch, stats = jax.jit(lambda s, e, k: ppo.collect(s, env, e, k))(state, env_state, jax.random.PRNGKey(2))
    done = np.asarray(batch.done)
    assert done.shape == (ppo.layout(config).unrolls_per_update * config.num_envs, config.unroll_length)
    assert done[:, 4].all() and not done[:, :4].any()       # time limit 5: truncation at step 5 only
    assert not np.asarray(batch.terminated).any()
    # Replay the recorded actions (U = 1, so trajectory n is env n) to reach each episode's final obs.
    states = env_state
    for t in range(5):
        states, info = jax.vmap(env.step)(states, jnp.tanh(batch.raw_action[:, t]))
    expected = ppo.value(state, state.params, state.obs_stats, info.final_obs)
    np.testing.assert_allclose(np.asarray(batch.final_value)[:, 4], expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(batch.final_value)[:, :4] == 0.0)
    assert int(stats["episodes"]) == done.sum()


def test_loss_matches_hand_computation():
    """The PPO loss on 2 trajectories x 3 steps, recomputed in numpy from the networks' outputs."""
    spec = envs.EnvSpec("test", obs_dim=3, action_dim=2, max_episode_steps=10, action_repeat=1,
                        can_terminate=True)
    config = ppo.Config(**{**TINY, "num_envs": 2, "batch_size": 2, "num_minibatches": 1}, clip_epsilon=0.2,
                        entropy_cost=0.01, value_loss_coef=0.5, normalize_observations=False)
    state = ppo.init(jax.random.PRNGKey(0), spec, config)
    rng = np.random.default_rng(1)
    B, T = 2, 3
    obs = rng.normal(size=(B, T, 3)).astype(np.float32)
    u = rng.normal(size=(B, T, 2)).astype(np.float32)
    old = dist_lib.TanhGaussian(jnp.asarray(rng.normal(size=(B, T, 2)), jnp.float32),
                                jnp.asarray(rng.uniform(0.5, 1.5, size=(B, T, 2)), jnp.float32))
    old_log_prob = dist_lib.log_prob(old, jnp.asarray(u))
    advantages = rng.normal(size=(B, T)).astype(np.float32)
    targets = rng.normal(size=(B, T)).astype(np.float32)
    zeros = jnp.zeros((B, T))
    batch = ppo.Batch(jnp.asarray(obs), jnp.asarray(u), old_log_prob, old, zeros, zeros.astype(bool),
                      zeros.astype(bool), zeros, jnp.zeros((B, 3)))
    key = jax.random.PRNGKey(5)
    total, metrics = ppo.loss(state.params, state, state.obs_stats, batch, key,
                              (jnp.asarray(advantages), jnp.asarray(targets)))

    # By hand.
    dist = ppo.policy_dist(state, state.params, state.obs_stats, jnp.asarray(obs))
    loc, scale = np.asarray(dist.loc, np.float64), np.asarray(dist.scale, np.float64)
    v = np.asarray(ppo.value(state, state.params, state.obs_stats, jnp.asarray(obs)), np.float64)
    def logp(loc, scale, u):
        gauss = np.sum(-0.5 * ((u - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi), -1)
        return gauss - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
    ratio = np.exp(logp(loc, scale, u) - logp(np.asarray(old.loc), np.asarray(old.scale), u))
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv))
    value_loss = 0.5 * 0.5 * np.mean((targets - v) ** 2)
    sample = loc + scale * np.asarray(jax.random.normal(key, loc.shape))
    entropy = np.mean(np.sum(0.5 * np.log(2 * np.pi * np.e) + np.log(scale), -1)
                      + np.sum(np.log(1 - np.tanh(sample) ** 2), -1))
    assert float(metrics["loss/policy"]) == pytest.approx(policy_loss, rel=1e-4, abs=1e-6)
    assert float(metrics["loss/value"]) == pytest.approx(value_loss, rel=1e-4)
    assert float(metrics["policy/entropy"]) == pytest.approx(entropy, rel=1e-4, abs=1e-5)
    assert float(total) == pytest.approx(policy_loss + value_loss - 0.01 * entropy, rel=1e-4, abs=1e-5)
    clip_fraction = np.mean(np.abs(ratio - 1) > 0.2)
    assert float(metrics["policy/clip_fraction"]) == pytest.approx(clip_fraction)


def test_layout_and_co_scaling_recipe():
    base = ppo.Config()
    assert ppo.layout(base) == ppo.Layout(32, 16, 32 * 1024, 16 * 30 * 2048)
    scaled = ppo.layout(ppo.Config(num_envs=2**20, scale_envs=True))
    # Minibatch size (1024) and lr fixed; minibatches x 512; unrolls per env per update unchanged.
    assert scaled.num_minibatches == 32 * 512 and scaled.unrolls_per_update == 16
    with pytest.raises(ValueError, match="--num-envs .* must divide .* e.g. --num-envs 1024"):
        ppo.layout(ppo.Config(num_envs=1000))
    with pytest.raises(ValueError, match="multiple of 64"):
        ppo.layout(ppo.Config(num_envs=1000, scale_envs=True))


def _loop_params(loop, updates):
    state = loop.init()
    state, _ = loop.run(state, 0, updates * loop.granularity)
    return jax.device_get(state["agent"].params), state


def test_vmapped_seeds_equal_separate_runs():
    config = ppo.Config(**TINY)
    together, _ = _loop_params(OnPolicyLoop(ppo, config, "jax:PointMass", num_seeds=2, seed=4), 2)
    alone, _ = _loop_params(OnPolicyLoop(ppo, config, "jax:PointMass", num_seeds=1, seed=5), 2)
    for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
        np.testing.assert_allclose(a[1], b[0], rtol=1e-4, atol=1e-5)


def test_sharded_over_four_devices_equals_one_device():
    """The same 2 updates with envs sharded over 4 simulated CPU devices, and on one device."""
    script = textwrap.dedent(f"""
        import jax, numpy as np, sys
        sys.path.insert(0, {str(ROOT)!r})
        from agents import ppo
        from experiments.loops.on_policy import OnPolicyLoop
        assert len(jax.devices()) == 4
        config = ppo.Config(**{TINY!r})
        out = []
        for devices in (jax.devices(), jax.devices()[:1]):
            loop = OnPolicyLoop(ppo, config, "jax:PointMass", num_seeds=2, seed=0, devices=devices)
            state = loop.init()
            state, metrics = loop.run(state, 0, 2 * loop.granularity)
            if len(devices) == 4:
                shards = state["env"].obs.sharding.shard_shape(state["env"].obs.shape)
                assert shards == (2, 8, state["env"].obs.shape[-1]), shards
            out.append(jax.device_get(state["agent"].params))
        for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        print("OK")
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_resume_equals_uninterrupted(tmp_path):
    """4 updates straight, vs 2 updates then --resume to 4: same evaluations and training metrics."""
    steps_per_update = ppo.layout(ppo.Config(**TINY)).steps_per_update
    args = ["--agent", "ppo", "--env", "jax:PointMass", *TINY_FLAGS, "--eval-every", str(2 * steps_per_update),
            "--log-every", str(steps_per_update), "--eval-episodes", "2", "--num-seeds", "2"]
    full = run_cli(*args, "--total-steps", str(4 * steps_per_update), "--run-dir", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    half = run_cli(*args, "--total-steps", str(2 * steps_per_update), "--run-dir", str(tmp_path / "cut"))
    assert half.returncode == 0, half.stderr[-3000:]
    resumed = run_cli("--run-dir", str(tmp_path / "cut"), "--resume", "--total-steps", str(4 * steps_per_update))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(tmp_path / "cut" / "eval.csv") == _rows(tmp_path / "full" / "eval.csv")
    assert len(_rows(tmp_path / "full" / "eval.csv")) == 2 * 2
    assert _rows(tmp_path / "cut" / "train.csv") == _rows(tmp_path / "full" / "train.csv")
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["derived"]["steps_per_update"] == steps_per_update


@pytest.mark.parametrize("flags, message", [
    (["--env", "mjx:CartpoleBalance", "--num-envs", "1000"],
     "--num-envs (1000) must divide batch_size x num_minibatches = 256 x 4 = 1024"),
    (["--env", "jax:PointMass", "--num-envs", "1000", "--scale-envs"], "--num-envs must be a multiple of 256"),
    (["--env", "jax:PointMass", "--num-minibatches", "0"], "--num-minibatches must be >= 1"),
    (["--env", "mjx:CartpoleBalanc"], "valid Playground DM Control suite names are mjx:AcrobotSwingup"),
    (["--env", "dmc:cartpole-balance"], "ppo trains on JAX envs"),
    (["--env", "jax:PointMass", "--preset", "gpu"], "unknown --preset 'gpu' for ppo; valid: cpu, one_unroll, playground"),
    (["--env", "jax:PointMass", "--num-envs", str(2**30), "--scale-envs"], "GiB; --num-envs"),
])
def test_bad_ppo_input_is_a_clear_error_and_writes_nothing(tmp_path, flags, message):
    result = run_inprocess("--agent", "ppo", *flags, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_per_rollout_advantages_train():
    """The CleanRL-style variant (GAE once per rollout from the behaviour values) trains to finite params."""
    config = ppo.Config(**TINY, advantages="per_rollout")
    params, state = _loop_params(OnPolicyLoop(ppo, config, "jax:PointMass", num_seeds=1, seed=0), 2)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    assert int(state["agent"].updates[0]) == 2


def test_update_kl_is_the_outer_steps_kl_and_is_logged():
    """policy/update_kl = mean KL(behaviour || policy after all epochs) over the update's first PROBE_SIZE steps."""
    config = ppo.Config(**TINY)
    env = envs.make("jax:PointMass", num_envs=config.num_envs)
    state = ppo.init(jax.random.PRNGKey(0), env.spec, config)
    env_state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), config.num_envs))
    _, batch, _ = ppo.collect(state, env, env_state, jax.random.PRNGKey(2))
    new, metrics = ppo.update(state, batch, jax.random.PRNGKey(3))
    obs = np.asarray(batch.obs).reshape(-1, env.spec.obs_dim)[:ppo.PROBE_SIZE]
    old_dist = ppo.policy_dist(state, state.params, state.obs_stats, obs)      # the behaviour policy
    new_dist = ppo.policy_dist(new, new.params, new.obs_stats, obs)
    expected = float(jnp.mean(dist_lib.kl_divergence(old_dist, new_dist)))
    assert float(metrics["policy/update_kl"]) == pytest.approx(expected, rel=1e-4) and expected > 0


def test_observation_statistics_forget_with_obs_norm_decay():
    """decay d: the statistics are exponentially weighted moments (old observations weigh d per update)."""
    from networks.normalizer import init_stats, std, update_stats

    rng = np.random.default_rng(0)
    first, second = rng.normal(0.0, 1.0, (100, 2)), rng.normal(5.0, 2.0, (100, 2))
    stats = update_stats(update_stats(init_stats(2), jnp.asarray(first), 0.5), jnp.asarray(second), 0.5)
    weights = np.r_[np.full(100, 0.5), np.ones(100)][:, None]
    data = np.r_[first, second]
    mean = (weights * data).sum(0) / weights.sum()
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(std(stats), np.sqrt((weights * (data - mean) ** 2).sum(0) / weights.sum()), rtol=1e-5)
    exact = update_stats(update_stats(init_stats(2), jnp.asarray(first), 1.0), jnp.asarray(second), 1.0)
    np.testing.assert_allclose(exact.mean, data.mean(0), rtol=1e-5)            # decay 1: the plain running moments
    with pytest.raises(ValueError, match=r"--obs-norm-decay must be in \(0, 1\]"):
        ppo.Config(**TINY, obs_norm_decay=0.0).validate()


@pytest.mark.parametrize("env_id, flags, expected", [
    ("mjx:PendulumSwingup", [], dict(env="mjx:PendulumSwingup?action_repeat=4", num_epochs=4)),
    ("mjx:BallInCup", [], dict(discount=0.95, total_steps=60_000_000)),
    ("mjx:FingerSpin", ["--discount", "0.9"], dict(discount=0.9)),                  # a flag still wins
    ("mjx:AcrobotSwingupSparse", [], dict(total_steps=100_000_000, discount=0.995)),
    ("mjx:SwimmerSwimmer6", [], dict(total_steps=100_000_000)),
    ("mjx:WalkerRun", [], dict(total_steps=100_000_000)),
    ("mjx:PendulumSwingup?action_repeat=1", [], dict(env="mjx:PendulumSwingup?action_repeat=1")),
    ("mjx:CheetahRun", [], dict(env="mjx:CheetahRun", discount=0.995, num_epochs=16, total_steps=60_000_000)),
])
def test_playground_preset_applies_playgrounds_per_task_overrides(env_id, flags, expected):
    from experiments import run

    run_args, config = run.parse(["--agent", "ppo", "--env", env_id, "--preset", "playground", *flags])
    for name, value in expected.items():
        assert getattr(run_args if hasattr(run_args, name) else config, name) == value, name
    _, cpu = run.parse(["--agent", "ppo", "--env", env_id, "--preset", "cpu"])
    assert cpu.discount == 0.99 and cpu.num_epochs == 16                            # only the playground preset


def test_action_repeat_in_the_env_id():
    spec = envs.make("jax:PointMass?action_repeat=3").spec
    assert spec.action_repeat == 3 and spec.env_id == "jax:PointMass"
    assert envs.make("jax:PointMass?action_repeat=2&switch=action_sign&every=10").spec.action_repeat == 2
    with pytest.raises(envs.UnknownEnvError, match="action_repeat must be >= 1"):
        envs.make("jax:PointMass?action_repeat=0")
    # Host ids take their own options too (envs/options.py); a switch needs a JAX env.
    assert envs.make("dmc:cheetah-run?action_repeat=4").spec.action_repeat == 4
    with pytest.raises(envs.UnknownEnvError, match="need a JAX env"):
        envs.make("dmc:cheetah-run?action_repeat=2&switch=action_sign&every=10")
