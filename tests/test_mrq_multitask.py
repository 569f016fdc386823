"""Multitask MR.Q (agents/mrq_multitask.py): masks, task ids, per-task discount and scale, EMA, random pairs,
exact resume. Small config throughout (widths 16, batch 16)."""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import replay
from agents import mrq_multitask as mt
from envs.core import EnvSpec, TaskSpec
from replay import streams
from tests.cli_utils import TIMING_COLUMNS, run_inprocess

TINY = dict(enc_dim=16, mlp_dim=16, latent_dim=16, num_q=3, za_dim=8, batch_size=16, seeding_episodes=0, utd=1.0)
TINY_FLAGS = ["--enc-dim", "16", "--mlp-dim", "16", "--latent-dim", "16", "--num-q", "3", "--za-dim", "8",
              "--batch-size", "16", "--seeding-episodes", "0", "--utd", "0.5"]

# Two tasks: task 0 has one action dim of two and 10-step episodes, task 1 both dims and 100-step episodes.
SPEC = EnvSpec("dmc:a,b", obs_dim=3 + 2, action_dim=2, max_episode_steps=100, action_repeat=1, can_terminate=False,
               tasks=(TaskSpec("dmc:a", 2, 1, 10, False), TaskSpec("dmc:b", 3, 2, 100, False)))


def _obs(task, n, key=0):
    raw = jax.random.normal(jax.random.PRNGKey(key), (n, 3))
    return jnp.concatenate([raw, jax.nn.one_hot(jnp.full(n, task), 2)], -1)


def _filled_state(config=None, steps=40, rewards=(1.0, 10.0)):
    config = config or mt.Config(**TINY)
    state = mt.init(jax.random.PRNGKey(0), SPEC, config, capacity=64)
    for t in range(steps):
        obs = jnp.concatenate([_obs(0, 1, t), _obs(1, 1, t)])
        action = mt.act(state, obs, jax.random.PRNGKey(t), True)
        transition = replay.Transition(obs, action, jnp.asarray(rewards), obs, jnp.zeros(2, bool), jnp.zeros(2, bool))
        state = mt.store(state, transition)
    return state


def test_sizes_are_the_reference_s_and_fields_override_them():
    assert mt.dims(mt.Config(size="S")) == dict(enc_dim=128, mlp_dim=256, latent_dim=384, enc_layers=2, num_q=3)
    assert mt.dims(mt.Config(size="XL")) == dict(enc_dim=2048, mlp_dim=2048, latent_dim=704, enc_layers=4, num_q=7)
    assert mt.dims(mt.Config(size="B", num_q=2))["num_q"] == 2
    with pytest.raises(ValueError, match="--size must be one of S, B, L, XL"):
        mt.Config(size="M").validate()
    with pytest.raises(ValueError, match="must divide the latent width"):
        mt.Config(latent_dim=20).validate()


@pytest.mark.parametrize("explore, seeding", [(False, 0), (True, 0), (True, 5)])
def test_padded_action_dims_are_zero_in_every_action_the_agent_makes(explore, seeding):
    state = mt.init(jax.random.PRNGKey(0), SPEC, mt.Config(**{**TINY, "seeding_episodes": seeding}))
    action = mt.act(state, _obs(0, 64), jax.random.PRNGKey(1), explore)
    assert np.all(action[:, 1] == 0.0) and np.any(action[:, 0] != 0.0)
    action = mt.act(state, _obs(1, 64), jax.random.PRNGKey(1), explore)
    assert np.all(action[:, 1] != 0.0)


def test_no_gradient_reaches_a_padded_action_output_of_the_policy():
    state = _filled_state()
    zs = jnp.zeros((8, 16)) + 0.1
    pair = jnp.array([0, 1])
    grads, _ = jax.grad(mt.policy_loss, has_aux=True)(state.policy.params, state, zs, _obs(0, 8), pair)
    out = grads["params"]["NormedMLP_0"]["Dense_2"]
    assert np.all(out["kernel"][:, 1] == 0.0) and np.all(out["bias"][1] == 0.0)
    assert np.any(out["kernel"][:, 0] != 0.0)


def test_samples_carry_the_task_of_their_stream():
    state = _filled_state()
    stream, start = streams.sample(state.replay, jax.random.PRNGKey(3), 256, "uniform")
    batch = streams.window(state.replay, stream, start, 5)
    np.testing.assert_array_equal(mt.task_of(SPEC, batch.obs[:, 0]), streams.task_of(stream, 2))
    np.testing.assert_array_equal(batch.reward[:, 0], jnp.where(stream == 0, 1.0, 10.0))


def test_each_task_has_its_own_discount_and_reward_scale():
    config = mt.Config(**TINY)
    # L / 5 = 2 -> (2 - 1) / 2 = 0.5, clipped to 0.95; L = 100 -> 20 -> 0.95; a 500-step task: 0.99.
    np.testing.assert_allclose(mt.task_discounts(config, SPEC), [0.95, 0.95])
    long_spec = dataclasses.replace(SPEC, tasks=(SPEC.tasks[0], dataclasses.replace(SPEC.tasks[1],
                                                                                   max_episode_steps=500)))
    np.testing.assert_allclose(mt.task_discounts(config, long_spec), [0.95, 0.99])
    # The value target's return uses each sample's own task's discount.
    state = _filled_state(dataclasses.replace(config, reward_scale="per_task"))
    state = dataclasses.replace(state, spec=long_spec)
    batch = streams.window(state.replay, jnp.array([0, 1]), jnp.array([0, 0]), 5)
    target = mt.value_target(state.replace(reward_scale=jnp.ones(2), target_reward_scale=jnp.zeros(2)), batch,
                             jnp.array([0, 1]), jax.random.PRNGKey(0))
    np.testing.assert_allclose(target, [sum(0.95**t for t in range(5)), 10 * sum(0.99**t for t in range(5))],
                               rtol=1e-5)
    # The per-task reward scale follows each task's own mean |r|: 1 and 10.
    np.testing.assert_allclose(streams.mean_abs_reward_per_task(state.replay, 2), [1.0, 10.0])
    updated, _ = mt.update_once(state, jax.random.PRNGKey(1))
    np.testing.assert_allclose(updated.reward_scale, 1.0 + config.tau * (np.array([1.0, 10.0]) - 1.0), rtol=1e-6)


def test_ema_targets_move_by_tau_per_update():
    state = _filled_state()
    state = state.replace(encoder=state.encoder.replace(
        target_params=jax.tree.map(lambda p: p + 1.0, state.encoder.params)))
    new, _ = mt.update_once(state, jax.random.PRNGKey(2))
    tau = state.config.tau
    for network in ("encoder", "value", "policy"):
        old_target = getattr(state, network).target_params
        expected = jax.tree.map(lambda t, p: t + tau * (p - t), old_target, getattr(new, network).params)
        for got, want in zip(jax.tree.leaves(getattr(new, network).target_params), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_the_random_pair_min_and_mean_use_the_pair_drawn():
    q = jnp.array([[5.0, 1.0, 3.0, 9.0, 7.0]])
    pairs = set()
    for seed in range(30):
        pair = mt.random_pair(jax.random.PRNGKey(seed), 5)
        i, j = int(pair[0]), int(pair[1])
        assert i != j
        pairs.add((i, j))
        assert float(mt.pair_min(q, pair)[0]) == min(q[0, i], q[0, j])
        assert float(mt.pair_mean(q, pair)[0]) == (q[0, i] + q[0, j]) / 2
    assert len(pairs) > 8                                        # the pair changes from draw to draw
    assert float(mt.pair_mean(q[:, :2], jnp.array([1, 0]))[0]) == 5.0   # two critics: critic 0 (TD3)


def test_updates_follow_the_fractional_schedule():
    state = _filled_state(mt.Config(**{**TINY, "utd": 0.25}), steps=8)
    # Two tasks: 0.25 updates per env step is 0.5 per loop step, one on every even step (floor(0.5 * step) -
    # floor(0.5 * (step - 1))); the store-only filling above made none.
    counts = []
    for step in range(9, 13):
        state, _ = mt.update(state, jax.random.PRNGKey(step), jnp.int32(step))
        counts.append(int(state.updates))
    assert counts == [0, 1, 1, 2]


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def test_a_multitask_run_resumes_exactly_and_logs_every_task(tmp_path):
    args = ["--agent", "mrq_multitask", "--env", "dmc:cartpole-balance,reacher-easy", "--num-seeds", "2",
            "--eval-every", "20", "--log-every", "20", "--eval-episodes", "1", "--buffer-size", "15", *TINY_FLAGS]
    whole = run_inprocess(*args, "--total-steps", "40", "--run-dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    half = run_inprocess(*args, "--total-steps", "20", "--run-dir", str(tmp_path / "split"))
    assert half.returncode == 0, half.stderr[-3000:]
    resumed = run_inprocess("--run-dir", str(tmp_path / "split"), "--resume", "--total-steps", "40")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(tmp_path / "split" / "eval.csv") == _rows(tmp_path / "whole" / "eval.csv")
    assert _rows(tmp_path / "split" / "train.csv") == _rows(tmp_path / "whole" / "train.csv")
    rows = _rows(tmp_path / "whole" / "eval.csv")
    assert [(r["step"], r["seed"], r["task"]) for r in rows[:3]] == [
        ("20", "0", "all"), ("20", "0", "dmc:cartpole-balance"), ("20", "0", "dmc:reacher-easy")]
    score = {r["task"]: float(r["score"]) for r in rows[:3]}
    assert score["all"] == pytest.approx((score["dmc:cartpole-balance"] + score["dmc:reacher-easy"]) / 2, rel=1e-4)
    assert float(rows[1]["return"]) == pytest.approx(1000 * score["dmc:cartpole-balance"], rel=1e-4)


def test_a_multitask_id_mixing_host_and_jax_tasks_is_refused_with_a_clear_error():
    with pytest.raises(envs.multitask.MultitaskError, match="all host tasks .* or all JAX tasks"):
        envs.make("dmc:cartpole-balance,jax:PointMass")


def test_a_multitask_run_on_jax_tasks_in_the_device_loop_resumes_exactly_and_logs_every_task(tmp_path):
    args = ["--agent", "mrq_multitask", "--env", "jax:PointMass,PointMass1D", "--num-seeds", "2",
            "--eval-every", "20", "--log-every", "20", "--eval-episodes", "2", "--buffer-size", "15", *TINY_FLAGS]
    whole = run_inprocess(*args, "--total-steps", "40", "--run-dir", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    half = run_inprocess(*args, "--total-steps", "20", "--run-dir", str(tmp_path / "split"))
    assert half.returncode == 0, half.stderr[-3000:]
    resumed = run_inprocess("--run-dir", str(tmp_path / "split"), "--resume", "--total-steps", "40")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(tmp_path / "split" / "eval.csv") == _rows(tmp_path / "whole" / "eval.csv")
    assert _rows(tmp_path / "split" / "train.csv") == _rows(tmp_path / "whole" / "train.csv")
    rows = _rows(tmp_path / "whole" / "eval.csv")
    assert [(r["step"], r["seed"], r["task"]) for r in rows[:3]] == [
        ("20", "0", "all"), ("20", "0", "jax:PointMass"), ("20", "0", "jax:PointMass1D")]
    returns = {r["task"]: float(r["return"]) for r in rows[:3]}
    assert returns["all"] == pytest.approx((returns["jax:PointMass"] + returns["jax:PointMass1D"]) / 2, rel=1e-4)
    assert "episode_return/jax:PointMass1D" in _rows(tmp_path / "whole" / "train.csv")[0]


def test_a_single_task_agent_on_a_multitask_jax_env_is_refused(tmp_path):
    result = run_inprocess("--agent", "sac", "--env", "jax:PointMass,PointMass1D", "--total-steps", "10",
                           "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0 and "error: --agent sac trains on one task" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_a_multitask_jax_env_steps_each_task_as_its_own_env_and_pads():
    """jax:PointMass (obs 4, act 2) + jax:PointMass1D (obs 2, act 1): each task's rows equal its own env stepped
    alone with its own action dims; the padded action dim changes nothing; obs padded + one-hot, slot-major."""
    env = envs.make("jax:PointMass,PointMass1D")
    assert (env.spec.obs_dim, env.spec.action_dim, env.spec.num_tasks) == (4 + 2, 2, 2)
    two, one = envs.make("jax:PointMass"), envs.make("jax:PointMass1D")
    key = jax.random.PRNGKey(3)
    state = env.reset_batch(key, slots=3)
    actions = jax.random.uniform(jax.random.PRNGKey(4), (6, 2), minval=-1, maxval=1)
    new_state, info = jax.jit(env.step_batch)(state, actions)
    garbage = actions.at[1::2, 1].set(5.0)                 # task 1's padded dim
    _, info_garbage = jax.jit(env.step_batch)(state, garbage)
    np.testing.assert_array_equal(info.reward, info_garbage.reward)
    np.testing.assert_array_equal(info.obs, info_garbage.obs)
    keys = jax.random.split(key, 2)
    for t, task_env in enumerate((two, one)):
        alone = jax.vmap(task_env.reset)(jax.random.split(keys[t], 3))
        alone, alone_info = task_env.step_batch(alone, actions[t::2, :task_env.spec.action_dim])
        np.testing.assert_allclose(info.reward[t::2], alone_info.reward, rtol=1e-6)
        width = task_env.spec.obs_dim
        np.testing.assert_allclose(new_state.obs[t::2, :width], alone.obs, rtol=1e-6)
        np.testing.assert_array_equal(new_state.obs[t::2, width:4], 0.0)
        np.testing.assert_array_equal(new_state.obs[t::2, 4:], np.eye(2)[[t] * 3])
    assert info.reward.shape == (6,) and info.final_obs.shape == (6, 6)


def test_a_single_task_agent_on_a_multitask_env_is_refused_naming_the_multitask_agent(tmp_path):
    result = run_inprocess("--agent", "mrq", "--env", "dmc:cartpole-balance,reacher-easy", "--total-steps", "10",
                           "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "error: --agent mrq trains on one task" in result.stderr
    assert "use --agent mrq_multitask" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
