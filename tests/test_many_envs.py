"""Off-policy agents with N envs per seed (`--num-envs`, the FastTD3 regime): per-env replay streams never mix two
envs' episodes, one stream draws what a plain buffer draws, the update schedule counts env steps, the device loop
steps N envs per seed, and the configurations it cannot run are refused in one line."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import replay
from agents import critic, mrq, sac, td3
from experiments.loops.off_policy import DeviceLoop
from experiments.loops.on_policy import LoopError
from replay import streams, sumtree
from tests.cli_utils import run_inprocess

SMALL = dict(batch_size=16, learning_starts=10, critic_hidden=(16, 16), actor_hidden=(16, 16), buffer_size=500)
TINY_MRQ = dict(batch_size=8, zs_dim=16, za_dim=8, zsa_dim=16, enc_hidden_dim=16, value_hidden_dim=16,
                policy_hidden_dim=16, random_steps=20, target_update_freq=10)
# env e's episodes last EPISODE_LENGTHS[e] steps; env 1's end in a terminal state, the others are truncated.
EPISODE_LENGTHS = (6, 7, 9)


def _loop_steps(num_steps):
    """Transitions of 3 envs stepped together ([3, ...] per loop step) whose observations encode (env, episode,
    step in the episode); the next observation of a step is (env, episode, step + 1), also at an episode end."""
    episode, step = np.zeros(3, int), np.zeros(3, int)
    for _ in range(num_steps):
        env = np.arange(3)
        obs = np.stack([env, episode, step], axis=1).astype(np.float32)
        next_obs = np.stack([env, episode, step + 1], axis=1).astype(np.float32)
        done = step + 1 == np.asarray(EPISODE_LENGTHS)
        terminated = done & (env == 1)
        yield replay.Transition(jnp.asarray(obs), jnp.full((3, 2), 0.5), jnp.asarray(obs[:, 2]),
                                jnp.asarray(next_obs), jnp.asarray(terminated), jnp.asarray(done & ~terminated))
        episode, step = np.where(done, episode + 1, episode), np.where(done, 0, step + 1)


def _stored(module, config, num_steps=60):
    """A fresh agent of `module` with `num_steps` loop steps of the 3 envs stored through its own `store`."""
    state = module.init(jax.random.PRNGKey(0), envs.EnvSpec("test", 3, 2, 50, 1, True), config, capacity=40)
    store = jax.jit(module.store)
    for transition in _loop_steps(num_steps):
        state = store(state, transition)
    return state


def test_storing_n_envs_never_mixes_two_envs_episodes():
    """MR.Q with 3 envs: 60 loop steps into streams of 40 slots (they wrap around). Every sampled 5-step window
    stays in its stream's env and one episode, step after step, until a terminal (masked after it); every
    sampled one-step transition of SAC leads to the next step of the same episode."""
    state = _stored(mrq, mrq.Config(**TINY_MRQ, num_envs=3))
    assert int(state.env_steps) == 180                         # env steps, summed over the 3 envs
    stream, start = mrq.sample_starts(state, jax.random.PRNGKey(1))
    many = jax.vmap(lambda k: mrq.sample_starts(state, k))(jax.random.split(jax.random.PRNGKey(2), 256))
    stream, start = (jnp.concatenate([a.reshape(-1), b.reshape(-1)]) for a, b in zip((stream, start), many))
    window = streams.window(state.replay, stream, start, 5)
    obs, mask = np.asarray(window.obs), np.asarray(window.mask)
    assert set(np.unique(np.asarray(stream))) == {0, 1, 2}      # every env's stream is drawn
    np.testing.assert_array_equal(obs[:, 0, 0], np.asarray(stream))
    for t in range(5):
        alive = mask[:, t] > 0                                  # obs[:, t + 1] is the next obs of step t
        np.testing.assert_array_equal(obs[alive, t + 1, 0], obs[alive, 0, 0])           # the same env
        np.testing.assert_array_equal(obs[alive, t + 1, 1], obs[alive, 0, 1])           # the same episode
        np.testing.assert_array_equal(obs[alive, t + 1, 2], obs[alive, 0, 2] + t + 1)   # the next step
    # Windows that reach a terminal are env 1's, and only those run past an episode's last step (masked).
    cut = mask.min(axis=1) == 0
    assert cut.any() and np.all(obs[cut, 0, 0] == 1)

    state = _stored(sac, sac.Config(**SMALL, num_envs=3))
    batch = critic.sample_batch(state.replace(config=dataclasses.replace(state.config, batch_size=1024)),
                                jax.random.PRNGKey(3))
    obs, next_obs = np.asarray(batch.obs), np.asarray(batch.next_obs)
    np.testing.assert_array_equal(next_obs[:, :2], obs[:, :2])
    np.testing.assert_array_equal(next_obs[:, 2], obs[:, 2] + 1)
    np.testing.assert_array_equal(np.asarray(batch.reward), obs[:, 2])
    ends = obs[:, 2] + 1 == np.asarray(EPISODE_LENGTHS)[obs[:, 0].astype(int)]
    np.testing.assert_array_equal(np.asarray(batch.terminated) > 0, ends & (obs[:, 0] == 1))


def test_one_stream_draws_what_a_plain_buffer_draws():
    """With one env per seed the agents' replay is one stream: after the same adds and LAP priority updates it
    draws exactly the starts and transitions a plain `ReplayBuffer` draws, from the same trees."""
    plain = replay.create(120, 2, 1, 3, prioritized=True)
    single = streams.create(1, 120, 2, 1, 3, prioritized=True)
    rng = np.random.default_rng(0)
    for t in range(150):
        args = (rng.normal(size=2).astype(np.float32), rng.uniform(-1, 1, 1).astype(np.float32),
                np.float32(rng.normal()), rng.normal(size=2).astype(np.float32), (t + 1) % 23 == 0, (t + 1) % 31 == 0)
        plain = replay.add(plain, *args)
        single = streams.add_transition(single, replay.Transition(*args))
    for round_ in range(2):
        index = jnp.asarray(rng.choice(np.flatnonzero(np.asarray(plain.can_start)), size=64))   # with repeats
        priority = jnp.asarray(rng.uniform(1, 10, size=64), jnp.float32)
        plain = replay.update_priority(plain, index, priority)
        single = streams.update_priority(single, jnp.zeros_like(index), index, priority)
    for got, want in zip(single.tree, plain.tree):
        np.testing.assert_array_equal(got[0], want)
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        stream, start = streams.sample(single, key, 256, "prioritized")
        batch, index = replay.sample_transitions(plain, key, 256)
        np.testing.assert_array_equal(stream, 0)
        np.testing.assert_array_equal(start, index)
        for got, want in zip(streams.transitions(single, stream, start), batch):
            np.testing.assert_array_equal(got, want)


def test_priority_updates_across_streams_keep_every_tree_exact():
    """LAP updates of (stream, slot) pairs from all 3 streams at once, repeats included: each stream's sum tree
    equals one rebuilt from its weights, and new transitions of every stream get the largest priority seen."""
    state = _stored(mrq, mrq.Config(**TINY_MRQ, num_envs=3))
    rng = np.random.default_rng(1)
    stream = jnp.asarray(rng.integers(0, 3, size=300))
    index = jnp.asarray(rng.integers(0, 40, size=300))
    priority = jnp.asarray(rng.uniform(1, 9, size=300), jnp.float32)
    buffer = streams.update_priority(state.replay, stream, index, priority)
    for s in range(3):
        one = streams.stream(buffer, s)
        rebuilt = sumtree.rebuild(one.capacity, np.asarray(one.can_start * one.priority))
        for got, want in zip(one.tree, rebuilt):
            np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(buffer.max_priority, np.full(3, float(priority.max())))


@pytest.mark.parametrize("num_envs, ratio, per_loop_step", [(1, 0.5, None), (4, 0.5, 2), (16, 0.125, 2),
                                                             (4, 0.1, None)])
def test_the_schedule_counts_updates_per_env_step(num_envs, ratio, per_loop_step):
    """SAC with N envs: after 48 env steps (48 / N loop steps) with learning_starts 16, floor(32 x ratio) updates
    -- the count after E env steps does not depend on N -- and at ratio x N = 2, two updates per loop step."""
    config = sac.Config(**{**SMALL, "learning_starts": 16}, num_envs=num_envs, updates_per_step=ratio)
    state = sac.init(jax.random.PRNGKey(0), envs.make("jax:PointMass").spec, config, capacity=40)
    store, update = jax.jit(sac.store), jax.jit(sac.update)
    rng = np.random.default_rng(0)
    counts = []
    for loop_step in range(1, 48 // num_envs + 1):
        rows = (num_envs,) if num_envs > 1 else ()
        obs = jnp.asarray(rng.normal(size=rows + (4,)), jnp.float32)
        transition = replay.Transition(obs, jnp.zeros(rows + (2,)), jnp.zeros(rows), obs, jnp.zeros(rows, bool),
                                       jnp.zeros(rows, bool))
        before = int(state.updates)
        state, _ = update(store(state, transition), jax.random.PRNGKey(loop_step), jnp.int32(loop_step * num_envs))
        counts.append(int(state.updates) - before)
    assert int(state.env_steps) == 48 and int(state.updates) == int(32 * ratio)
    if per_loop_step is not None:
        assert counts == [0] * (16 // num_envs) + [per_loop_step] * (32 // num_envs)


def test_mrq_with_many_envs_updates_per_env_step_and_bursts_every_period():
    """MR.Q with 3 envs at 0.5 updates per env step: floor((step - random_steps) x 0.5) updates by env step
    `step` (2, 1 or 2 per loop step of 3 env steps); the encoder trains (its burst) exactly in the loop steps
    whose updates include a multiple of target_update_freq (10): the period counts updates."""
    config = mrq.Config(**TINY_MRQ, num_envs=3, updates_per_step=0.5)
    state = _stored(mrq, config, num_steps=7)                        # 21 env steps > random_steps (20)
    update = jax.jit(mrq.update)
    for step in range(24, 60, 3):
        before, first = state.encoder.params, int(state.updates)
        state, _ = update(state, jax.random.PRNGKey(step), jnp.int32(step))
        assert int(state.updates) == int((step - 20) * 0.5)
        trained = not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                               jax.tree.leaves(state.encoder.params)))
        assert trained == any(k % 10 == 0 for k in range(first, int(state.updates))), step


def test_device_loop_steps_n_envs_per_seed():
    """TD3 with 4 envs per seed on PointMass (100-step episodes): 400 env steps per seed are 100 loop steps,
    every env finishes one episode, the replay holds 100 transitions per stream, and steps are whole loop steps."""
    loop = DeviceLoop(td3, td3.Config(**SMALL, num_envs=4), "jax:PointMass", num_seeds=2, seed=0,
                      replay_transitions=400)
    assert (loop.granularity, loop.capacity) == (4, streams.capacity_for(400, 4, 100))
    initial = loop.init()
    types = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), tree)
    initial_types = types(initial)
    state, metrics = loop.run(initial, 0, 400)
    # A chunk returns the types it takes (a weak-typed leaf would make the next chunk compile again).
    assert types(state) == initial_types
    agent = state["agent"]
    np.testing.assert_array_equal(agent.env_steps, [400, 400])
    np.testing.assert_array_equal(agent.replay.has_transition.sum(axis=-1), np.full((2, 4), 100))
    np.testing.assert_array_equal(metrics["episodes"], [4, 4])
    assert np.all(np.isfinite(metrics["episode_return"])) and np.all(metrics["episode_return"] < 0)
    # Each env starts from its own reset: no two streams hold the same first observation.
    first = np.asarray(agent.replay.obs[0, :, 0])
    assert len({tuple(row) for row in first}) == 4
    with pytest.raises(LoopError, match="whole loop steps of 4 env steps"):
        loop.run(state, 400, 2)
    # The memory estimate counts 4 env states per seed, and the same replay transitions shared by 4 streams:
    # 4 x (100 + 1 final obs + 1) slots, against 400 + 4 + 1 for one stream.
    one = DeviceLoop(td3, td3.Config(**SMALL), "jax:PointMass", num_seeds=2, seed=0, replay_transitions=400)
    many, single = loop.memory_estimate(), one.memory_estimate()
    assert many["env states"] == 4 * single["env states"]
    assert (loop.num_envs * loop.capacity, one.num_envs * one.capacity) == (408, 405)
    assert many["agent states with replay"] == pytest.approx(single["agent states with replay"], rel=0.02)


@pytest.mark.parametrize("args, expected", [
    (["--agent", "sac", "--env", "dmc:cartpole-balance", "--num-envs", "4"],
     "--num-envs 4: several envs per seed step inside the device loop, on a JAX env"),
    (["--agent", "least", "--env", "jax:PointMass", "--num-envs", "2"],
     "--num-envs must be 1 for least (its stop rule follows one env's episode), got 2"),
    (["--agent", "ravl", "--env", "gym:Hopper-v5", "--num-envs", "2"], "--num-envs is for agents that step envs"),
    (["--agent", "td3", "--env", "jax:PointMass", "--num-envs", "0"], "--num-envs must be >= 1, got 0"),
    (["--agent", "mrq", "--env", "jax:PointMass", "--num-envs", "-3"], "--num-envs must be >= 1, got -3"),
])
def test_bad_num_envs_is_one_error_line(tmp_path, args, expected):
    run_dir = tmp_path / "run"
    result = run_inprocess(*args, "--run-dir", str(run_dir))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert expected in errors[0], errors[0]
    assert not run_dir.exists()
