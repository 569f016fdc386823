"""NEUBAY: one posterior sample (member) per imagined trajectory, truncation exactly at the uncertainty
threshold, the recurrent state carried over from the real prefix, prefix windows that never cross episodes,
bad inputs through the CLI, and collect.py -> run.py end to end.

Unit tests use a synthetic dataset whose observations encode (episode, step) and a reduced config (`TINY`:
2 members, two recurrent layers of width 8, 3 critic heads); the CLI tests a 600-transition random
InvertedPendulum dataset and the reduced flags `TINY_NEUBAY` (3 members x 16 x 16 trained 2 epochs, a GRU core
of width 16, horizon 100, 30 updates)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import neubay
from envs import EnvSpec
from networks import ensemble as ensemble_lib
from networks.recurrent import make_core
from replay import datasets
from tests.cli_utils import run_cli, run_inprocess, run_main

# ----------------------------------------------------------------------------
# Through the command line (first in the file: the slowest test starts first on its pytest-xdist worker);
# the end-to-end run in a new interpreter, the bad inputs (which fail before any compilation) in this one
# ----------------------------------------------------------------------------

TINY_NEUBAY = ["--model-members", "3", "--model-keep", "2", "--model-hidden", "16", "16", "--model-max-epochs", "2",
               "--prefix-length", "4", "--horizon", "100", "--rollout-batch", "8", "--buffer-size", "16", "--core", "gru", "--core-layers", "1", "--core-hidden", "16",
               "--head-hidden", "16", "--num-critics", "3", "--batch-size", "2"]


@pytest.fixture(scope="module")
def pendulum_data(tmp_path_factory):
    """600 transitions of a random policy on InvertedPendulum (experiments/collect.py, in this process)."""
    from experiments import collect

    path = tmp_path_factory.mktemp("neubay") / "pend.hdf5"
    result = run_main(collect.main, "--env", "gym:InvertedPendulum-v5", "--policy", "random", "--steps", "600",
                      "--out", str(path), "--reference-episodes", "2", "--ref-expert", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_end_to_end_cli(tmp_path, pendulum_data):
    """2 seeds, a 3-member ensemble trained 2 epochs, rollouts of up to 100 model steps from any episode step on the
    authors' schedule (utd 0.05), 30 updates; the GRU core (the LRU default compiles slower; its update is traced
    below)."""
    run_dir = tmp_path / "run"
    result = run_cli("--agent", "neubay", "--env", "gym:InvertedPendulum-v5", "--dataset", str(pendulum_data),
                     "--total-steps", "30", "--eval-every", "30", "--log-every", "10", "--eval-episodes", "2",
                     "--num-seeds", "2", "--run-dir", str(run_dir), *TINY_NEUBAY, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "world" / "dynamics" / "model.json").exists()
    rows = (run_dir / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,seed,return") and "value/q_start_min" in rows[0] and len(rows) == 3
    header, *lines = (run_dir / "train.csv").read_text().splitlines()
    columns = header.split(",")
    lengths = [float(line.split(",")[columns.index("rollout/length_max")]) for line in lines]
    assert lines and all(1 <= x <= 100 for x in lengths)


@pytest.mark.parametrize("flags, expected", [
    (["--model-members", "1", "--model-keep", "1"], "--model-members must be >= 2"),
    (["--model-members", "3", "--model-keep", "4"], "--model-keep must be in [1, --model-members=3]"),
    (["--horizon", "0"], "--horizon must be >= 1"),
    (["--prefix-length", "5000", "--rollout-starts", "after_prefix"], "--prefix-length 5000 is longer than the episodes"),
    (["--member-mapping", "random"], "--member-mapping"),
])
def test_bad_input_fails_cleanly(tmp_path, pendulum_data, flags, expected):
    run_dir = tmp_path / "run"
    result = run_inprocess("--agent", "neubay", "--env", "gym:InvertedPendulum-v5", "--dataset", str(pendulum_data),
                           "--run-dir", str(run_dir), *TINY_NEUBAY, *flags)
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")][-1]
    assert expected in error, error
    assert not run_dir.exists()


# ----------------------------------------------------------------------------
# Units, on a synthetic dataset
# ----------------------------------------------------------------------------

# dm_control ids never terminate (envs/true_dynamics.py), so rollouts end only by the rules under test.
SPEC = EnvSpec(env_id="dmc:cartpole-balance", obs_dim=3, action_dim=1, max_episode_steps=1000, action_repeat=1,
               can_terminate=False)
TINY = neubay.Config(model_members=2, model_keep=2, model_hidden=(8,), prefix_length=3, horizon=12, rollout_batch=16,
                     rollout_every=1, buffer_size=16, core_layers=2, core_hidden=8, lru_state_dim=4, head_hidden=(8,),
                     num_critics=3, batch_size=2)
TINY_AFTER = dataclasses.replace(TINY, rollout_starts="after_prefix")      # the previous rule: t >= P only

# (length, ends terminal) per episode: timeouts, terminals, and episodes too short for a prefix of 3.
EPISODES = [(7, False), (2, True), (5, True), (3, False), (4, True), (9, False), (1, False)]


def episodes_dataset(episodes=EPISODES) -> datasets.Dataset:
    """obs = (episode, step, 0), next_obs = (episode, step + 1, 0), action = episode + step / 10,
    reward = 10 episode + step."""
    rows = []
    for e, (length, terminal) in enumerate(episodes):
        for t in range(length):
            rows.append(((e, t, 0.0), (e + t / 10,), 10.0 * e + t, (e, t + 1, 0.0), terminal and t == length - 1,
                         not terminal and t == length - 1))
    obs, action, reward, next_obs, terminals, timeouts = (np.array(c, np.float32) for c in zip(*rows))
    return datasets.from_arrays({"observations": obs, "actions": action, "rewards": reward,
                                 "next_observations": next_obs, "terminals": terminals, "timeouts": timeouts})


def signed_model(config: neubay.Config) -> ensemble_lib.EnsembleState:
    """Two members with known dynamics: member 0 adds +1 to every state dimension (and gives reward +1),
    member 1 adds -1 (reward -1). Output kernels are zero, so the mean is the output bias; the log-variance
    bias is far below the lower bound, so the noise std is exp(-5) (normalizers are the identity)."""
    model = ensemble_lib.init(jax.random.PRNGKey(0), SPEC.obs_dim, SPEC.action_dim, neubay.model_config(config))
    out = model.params["net"]["out"]
    d = SPEC.obs_dim + 1
    bias = jnp.concatenate([jnp.stack([jnp.ones(d), -jnp.ones(d)]), jnp.full((2, d), -30.0)], axis=1)
    net = {**model.params["net"], "out": {"kernel": jnp.zeros_like(out["kernel"]), "bias": bias}}
    return model.replace(params={**model.params, "net": net})


# Compiled once per test process: the world (and with it the threshold) is an argument.
imagine = jax.jit(neubay.imagine)
imagine_scripted = jax.jit(lambda state, world, key: neubay.imagine(state, world, key))   # with model_step patched


@pytest.fixture(scope="module")
def tiny():
    """(dataset, world, state) of TINY on the synthetic episodes with the two signed members (rollouts from any step)."""
    dataset = episodes_dataset()
    world = neubay.build_world(dataset, SPEC, TINY, signed_model(TINY))
    return dataset, world, neubay.init(jax.random.PRNGKey(1), SPEC, TINY, world)


@pytest.fixture(scope="module")
def tiny_after():
    """The same with --rollout-starts after_prefix."""
    dataset = episodes_dataset()
    world = neubay.build_world(dataset, SPEC, TINY_AFTER, signed_model(TINY_AFTER))
    return dataset, world, neubay.init(jax.random.PRNGKey(1), SPEC, TINY_AFTER, world)


def all_alive(world):
    """Rollouts may continue from an episode's end too (same shapes: nothing recompiles)."""
    return {**world, "start_alive": jnp.ones_like(world["start_alive"])}


def test_each_trajectory_keeps_one_member(tiny):
    """Trajectory i uses the kept member of rank i // B, B = 16 / 2 = 8 (the authors' layout), for every step."""
    _, world, state = tiny
    world = {**all_alive(world), "threshold": jnp.float32(np.inf)}   # never truncate: every trajectory runs H steps
    tape, info = imagine(state, world, jax.random.PRNGKey(2))
    p, h = TINY.prefix_length, TINY.horizon
    assert tape.obs.shape == (TINY.rollout_batch, p + h + 1, SPEC.obs_dim)
    assert bool(jnp.all(tape.valid[:, p:])) and not bool(jnp.any(tape.terminated))
    increments = np.asarray(tape.obs[:, p + 1:] - tape.obs[:, p:-1])             # [B, H, S], imagined steps only
    rewards = np.asarray(tape.reward[:, p:])
    member = np.asarray(info["member"])
    np.testing.assert_array_equal(member, np.asarray(world["model"].elites)[np.arange(16) // 8])
    assert set(member.tolist()) == {0, 1}                  # both posterior samples occur in the batch
    for b in range(TINY.rollout_batch):
        sign = 1.0 if member[b] == 0 else -1.0
        np.testing.assert_allclose(increments[b], sign, atol=0.05)               # one member, every step
        np.testing.assert_allclose(rewards[b], sign, atol=0.05)


def test_member_mapping():
    """block: trajectory i -> kept rank (i K) // batch = i // B when K divides the batch; sample: uniform draws."""
    model = signed_model(TINY).replace(elites=jnp.array([1, 0], jnp.int32))   # rank 0 is member 1
    block = lambda batch, config=TINY: np.asarray(neubay.assign_members(config, model, jax.random.PRNGKey(0), batch))
    np.testing.assert_array_equal(block(6), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(block(5), [1, 1, 1, 0, 0])                     # uneven blocks differ by one
    kept = ensemble_lib.init(jax.random.PRNGKey(0), 1, 1, ensemble_lib.EnsembleConfig(
        num_members=8, num_elites=4, hidden=(2,), weight_decays=(0.0, 0.0))).replace(
        elites=jnp.array([7, 3, 5, 1], jnp.int32))
    members = np.asarray(neubay.assign_members(TINY, kept, jax.random.PRNGKey(0), 12))
    np.testing.assert_array_equal(members, np.repeat([7, 3, 5, 1], 3))
    sample = dataclasses.replace(TINY, member_mapping="sample")
    drawn = np.asarray(neubay.assign_members(sample, kept, jax.random.PRNGKey(0), 400))
    assert set(drawn.tolist()) == {7, 3, 5, 1} and not np.array_equal(drawn, np.repeat([7, 3, 5, 1], 100))


def test_rollout_positions_cover_every_step_and_the_end(tiny):
    """"any": each episode of length T contributes the starts t = 0 .. T (T + 1 positions, the authors'
    HistorySampler), s_t its observation at t (the last next_observation at T, where the episode is over);
    "after_prefix": only t >= P after P real transitions."""
    dataset, world, _ = tiny
    positions = neubay.rollout_positions(dataset, TINY)
    assert positions["row"].size == dataset.num_transitions + len(EPISODES)
    prefix = neubay.real_prefix(world, jnp.arange(positions["row"].size), TINY.prefix_length)
    current = np.asarray(prefix.next_obs)                                        # s_t encodes (episode, t)
    np.testing.assert_array_equal(current[:, 1], positions["time"])
    for e, (length, _) in enumerate(EPISODES):
        mine = current[:, 0] == e
        assert sorted(positions["time"][mine].tolist()) == list(range(length + 1))
        assert positions["time"][mine & ~positions["alive"]].tolist() == [length]
    # The history's last transition keeps the dataset's terminal flag (no bootstrap from a terminal s_T).
    ends = ~positions["alive"]
    np.testing.assert_array_equal(np.asarray(prefix.terminated)[ends, -1], [terminal for _, terminal in EPISODES])
    assert not np.asarray(prefix.terminated)[~ends].any() and not np.asarray(prefix.terminated)[:, :-1].any()
    after = neubay.rollout_positions(dataset, TINY_AFTER)
    assert after["time"].min() >= TINY.prefix_length and np.all(after["alive"])
    np.testing.assert_array_equal(after["row"], neubay.prefix_starts(dataset, TINY.prefix_length) + 3)


def scripted_step(model, obs, action, member, key, kind):
    """A world that counts: s' = s + (0, 0, 1), r = 0, and the disagreement at the k-th imagined step is k
    (every prefix ends at a dataset state with obs[2] = 0)."""
    return obs.at[:, 2].add(1.0), jnp.zeros(obs.shape[0]), obs[:, 2] + 1.0


def test_truncation_exactly_at_the_uncertainty_threshold(monkeypatch, tiny):
    """A trajectory keeps every step up to and including the first with u > threshold (that step is a
    truncation: it bootstraps), and nothing after it; u == threshold does not truncate. A threshold above
    every u lets all H = 12 steps run."""
    monkeypatch.setattr(neubay, "model_step", scripted_step)
    _, world, state = tiny
    world = all_alive(world)
    p = TINY.prefix_length
    for threshold, kept in [(4.0, 5), (4.5, 5), (3.999, 4), (0.5, 1), (100.0, 12)]:
        tape, info = imagine_scripted(state, {**world, "threshold": jnp.float32(threshold)}, jax.random.PRNGKey(2))
        valid = np.asarray(tape.valid[:, p:])
        np.testing.assert_array_equal(valid, np.broadcast_to(np.arange(TINY.horizon) < kept, valid.shape))
        assert not bool(jnp.any(tape.terminated))
        np.testing.assert_allclose(np.asarray(tape.obs[:, p + kept, 2]), kept)   # the truncated step's s' is kept
        assert float(info["rollout/uncertainty_truncated"]) == (1.0 if kept < TINY.horizon else 0.0)
        assert float(info["rollout/length"]) == kept

    # Truncation bootstraps, termination does not: the same step as a terminal has target r exactly.
    xs = neubay.tape_inputs(tape)
    target = jax.jit(neubay.critic_target)
    y_truncated = target(state, tape, xs, jax.random.PRNGKey(3))
    last = p + kept - 1
    y_terminal = target(state, tape.replace(terminated=tape.terminated.at[:, last].set(True)), xs,
                        jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(y_terminal[:, last]), np.asarray(tape.reward[:, last]))
    assert np.all(np.abs(np.asarray(y_truncated[:, last] - tape.reward[:, last])) > 1e-6)
    np.testing.assert_array_equal(np.asarray(y_terminal[:, :last]), np.asarray(y_truncated[:, :last]))


def test_threshold_is_the_quantile_of_the_disagreement_on_the_data(tiny):
    dataset = tiny[0]
    model = ensemble_lib.init(jax.random.PRNGKey(4), SPEC.obs_dim, SPEC.action_dim, neubay.model_config(TINY))
    u = np.asarray(ensemble_lib.disagreement(model, dataset.observations, dataset.actions, kind="std"))
    world = neubay.build_world(dataset, SPEC, TINY, model)
    assert float(world["threshold"]) == pytest.approx(u.max(), rel=1e-6)
    median = neubay.build_world(dataset, SPEC, dataclasses.replace(TINY, uncertainty_quantile=0.5), model)
    assert float(median["threshold"]) == pytest.approx(np.quantile(u, 0.5), rel=1e-6)


@pytest.mark.parametrize("core", ["lru", "gru"])
def test_recurrent_state_carries_over_from_the_prefix(tiny_after, core):
    """The actor's state after a full prefix (what the rollout acts from) equals the core run over the embedded
    prefix inputs x_t = [s_t, a_{t-1}, r_{t-1}] with core.apply, and stepping the history with act_step."""
    dataset, world, state = tiny_after
    config = dataclasses.replace(TINY_AFTER, core=core)
    if core != TINY.core:
        state = neubay.init(jax.random.PRNGKey(5), SPEC, config, world)
    starts = jnp.asarray(neubay.prefix_starts(dataset, config.prefix_length))
    prefix = neubay.real_prefix(world, jnp.arange(starts.shape[0]), config.prefix_length)
    carried = jax.jit(neubay.warm_up)(state, state.actor.params, prefix)

    # By hand from the dataset: the previous action and reward are the dataset's, zeros at an episode start.
    obs, action, reward = (np.asarray(a) for a in (dataset.observations, dataset.actions, dataset.rewards))
    rows = np.asarray(starts)[:, None] + np.arange(config.prefix_length)
    first = obs[rows][..., 1] == 0
    prev_action = np.where(first[..., None], 0.0, action[rows - 1])
    prev_reward = np.where(first, 0.0, reward[rows - 1])
    xs = jnp.asarray(np.concatenate([obs[rows], prev_action, prev_reward[..., None]], axis=-1), jnp.float32)
    embedded = neubay.actor_network(config, SPEC).apply(state.actor.params, xs, method="embed")
    options = {"state_dim": config.lru_state_dim} if core == "lru" else {}
    recurrent = make_core(core, config.core_layers, config.core_hidden, **options)
    core_params = {"params": state.actor.params["params"]["encoder"]["core"]}
    _, expected = recurrent.apply(core_params, embedded, recurrent.initial_state((rows.shape[0],)))
    assert len(expected) == config.core_layers == 2
    for a, b in zip(carried, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)

    # Acting step by step through the same history reaches the same state.
    step = jax.jit(neubay.act_step, static_argnames="explore")
    carry = neubay.ActCarry(neubay.initial_carry(state, (rows.shape[0],)).core, jnp.asarray(prev_action[:, 0]))
    for t in range(config.prefix_length):
        _, carry = step(state, carry, jnp.asarray(obs[rows[:, t]]), jnp.asarray(prev_reward[:, t]),
                        jnp.asarray(first[:, t]), jax.random.PRNGKey(0), explore=False)
        carry = carry.replace(prev_action=jnp.asarray(action[rows[:, t]]))     # the dataset's action was taken
    for a, b in zip(carry.core, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_real_windows_never_cross_episodes(tiny_after):
    dataset, world, state = tiny_after
    p = TINY.prefix_length
    starts = neubay.prefix_starts(dataset, p)
    obs, terminals = np.asarray(dataset.observations), np.asarray(dataset.terminals) > 0
    # Brute force: the window's rows share an episode and its last transition is not terminal.
    by_hand = [i for i in range(obs.shape[0] - p + 1) if obs[i, 0] == obs[i + p - 1, 0] and not terminals[i + p - 1]]
    assert starts.tolist() == by_hand and len(by_hand) > 0
    # Episode 1 (2 steps, the second terminal) and episode 6 (1 step) hold no prefix of 3.
    assert not set(obs[starts, 0].astype(int)) & {1, 6}

    prefix = neubay.real_prefix(world, jnp.arange(starts.size), p)
    pobs = np.asarray(prefix.obs)
    assert np.all(pobs[:, :, 0] == pobs[:, :1, 0])                                 # one episode per window
    np.testing.assert_array_equal(pobs[:, :, 1], pobs[:, :1, 1] + np.arange(p))     # consecutive steps
    np.testing.assert_array_equal(np.asarray(prefix.next_obs)[:, :2], pobs[:, -1, :2] + [0, 1])
    at_start = pobs[:, 0, 1] == 0
    expected_prev = np.where(at_start, 0.0, pobs[:, 0, 0] + (pobs[:, 0, 1] - 1) / 10)
    np.testing.assert_allclose(np.asarray(prefix.prev_action)[:, 0], expected_prev, rtol=1e-6)

    # Stored and sampled windows keep their real prefix whole, followed by the model from s_P.
    tape, _ = imagine(state, {**world, "threshold": jnp.float32(np.inf)}, jax.random.PRNGKey(7))
    buffer = neubay.store(state.buffer, tape)
    batch = neubay.sample_tapes(buffer, jax.random.PRNGKey(8), 32)
    bobs = np.asarray(batch.obs)
    assert np.all(np.asarray(batch.real[:, :p])) and not np.any(np.asarray(batch.real[:, p:]))
    assert np.all(bobs[:, :p + 1, 0] == bobs[:, :1, 0])
    np.testing.assert_array_equal(bobs[:, :p + 1, 1], bobs[:, :1, 1] + np.arange(p + 1))


def test_update_with_the_default_core_traces(tiny):
    """The LRU update (the CLI run above uses --core gru, which compiles faster) traces to the expected
    metrics and an unchanged state structure; compiling and running it is the CLI test's job for GRU."""
    _, world, state = tiny
    assert TINY.core == "lru"
    for every in (1, None):                     # the fixed schedule and the authors'
        state = state.replace(config=dataclasses.replace(TINY, rollout_every=every))
        new_state, metrics = jax.eval_shape(lambda s, k: neubay.update(s, world, k, jnp.asarray(1)), state,
                                            jax.random.PRNGKey(0))
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        assert {"critic/loss", "actor/loss", "alpha", "buffer/size", *neubay.ROLLOUT_METRICS} <= set(metrics)
        assert all(m.shape == () for m in metrics.values())


def test_left_padded_history_equals_the_core_over_the_real_prefix(tiny):
    """Starts at t = 0, 1, 2 < P = 3 and t = 5 > P. The prefix holds the last min(t, P) real transitions at window
    steps P - k .. P - 1, zeros before them (valid False, reset True) and a reset at s_0; the actor's encoder over
    the padded window x_0 .. x_P with those resets gives, at the real steps and at s_t, exactly the outputs of
    core.apply over the real prefix alone (from the zero state, no padding)."""
    dataset, world, state = tiny
    p = TINY.prefix_length
    times, rows = np.asarray(world["start_time"]), np.asarray(world["start_row"])
    ends = np.asarray(world["start_from_next"])
    episode5 = np.asarray(dataset.observations)[:, 0] == 5                    # 9 steps: t = 0 .. 9 all occur
    picks = [int(np.flatnonzero((times == t) & ~ends & episode5[np.minimum(rows, len(episode5) - 1)])[0])
             for t in (0, 1, 2, 5)]
    prefix = neubay.real_prefix(world, jnp.asarray(picks), p)
    for b, t in enumerate((0, 1, 2, 5)):
        k = min(t, p)
        np.testing.assert_array_equal(np.asarray(prefix.valid[b]), np.arange(p) >= p - k)
        np.testing.assert_array_equal(np.asarray(prefix.reset[b]), np.arange(p + 1) <= p - t)
        np.testing.assert_array_equal(np.asarray(prefix.obs[b, :p - k]), 0.0)
        np.testing.assert_array_equal(np.asarray(prefix.obs[b, p - k:, :2]),
                                      np.array([[5, s] for s in range(t - k, t)], np.float32).reshape(k, 2))
        np.testing.assert_array_equal(np.asarray(prefix.next_obs[b, :2]), [5, t])
    np.testing.assert_allclose(np.asarray(prefix.prev_action[:, 0]), [0, 0, 0, 5 + 1 / 10], rtol=1e-6)  # a_{t-P-1}

    # The window's inputs x_0 .. x_P (as tape_inputs builds them) through the actor's encoder, with the resets.
    prev_actions = jnp.concatenate([prefix.prev_action[:, None], prefix.action], axis=1)
    prev_rewards = jnp.concatenate([prefix.prev_reward[:, None], prefix.reward], axis=1)
    xs = neubay.history_inputs(jnp.concatenate([prefix.obs, prefix.next_obs[:, None]], axis=1), prev_actions,
                               prev_rewards)
    actor = neubay.actor_network(TINY, SPEC)
    encode = lambda x, resets=None: actor.apply(state.actor.params, x, neubay.initial_core_state(TINY, x.shape[:1]),
                                                resets, method=lambda m, x, s, r: m.encoder(x, s, r))[0]
    padded = np.asarray(encode(xs, prefix.reset))
    recurrent = make_core(TINY.core, TINY.core_layers, TINY.core_hidden, state_dim=TINY.lru_state_dim)
    core_params = {"params": state.actor.params["params"]["encoder"]["core"]}
    for b, t in enumerate((0, 1, 2, 5)):
        real = xs[b:b + 1, p - min(t, p):]                                     # the real prefix and s_t only
        if t <= p:                                                             # it starts the episode: a_{-1} = 0
            np.testing.assert_array_equal(np.asarray(real[0, 0, SPEC.obs_dim:]), 0.0)
        embedded = actor.apply(state.actor.params, real, method="embed")
        alone, _ = recurrent.apply(core_params, embedded, recurrent.initial_state((1,)))
        np.testing.assert_allclose(padded[b, p - min(t, p):], np.asarray(alone[0]), rtol=1e-5, atol=1e-6)


def test_rollouts_start_at_step_zero_from_a_padded_history(tiny):
    """Every position at t = 0 (the same shapes, nothing recompiles): the window's history is all padding, the
    model starts at an episode's s_0 with a reset, and the actor over the stored window (as the update runs it)
    gives at s_0 the policy of an empty history."""
    _, world, state = tiny
    p = TINY.prefix_length
    zero = np.flatnonzero(np.asarray(world["start_time"]) == 0)
    choose = jnp.asarray(zero[np.arange(world["start_time"].shape[0]) % zero.size])
    world0 = {**world, **{k: world[k][choose] for k in ("start_row", "start_time", "start_from_next", "start_alive")},
              "threshold": jnp.float32(np.inf)}
    tape, info = imagine(state, world0, jax.random.PRNGKey(3))
    assert not bool(jnp.any(tape.valid[:, :p])) and not bool(jnp.any(tape.real))
    assert bool(jnp.all(tape.reset[:, :p + 1])) and not bool(jnp.any(tape.reset[:, p + 1:]))
    assert bool(jnp.all(tape.valid[:, p:]))                                   # H = 12 imagined steps each
    np.testing.assert_array_equal(np.asarray(tape.obs[:, p, 1]), 0.0)          # s_0 of its episode
    assert int(info["data_size"]) == TINY.rollout_batch * TINY.horizon and float(info["rollout/start_step"]) == 0
    xs = neubay.tape_inputs(tape)
    actor = neubay.actor_network(TINY, SPEC)
    dist, _ = actor.apply(state.actor.params, xs, neubay.initial_core_state(TINY, xs.shape[:1]), tape.reset)
    s0 = neubay.history_inputs(tape.obs[:, p], jnp.zeros((16, SPEC.action_dim)), jnp.zeros(16))
    first, _ = actor.apply(state.actor.params, s0, neubay.initial_core_state(TINY, (16,)), method="step")
    np.testing.assert_allclose(np.asarray(dist.loc[:, p]), np.asarray(first.loc), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dist.scale[:, p]), np.asarray(first.scale), rtol=1e-5, atol=1e-6)


def test_the_authors_rollout_schedule(tiny):
    """--rollout-every None: a round at the first update, then ceil(0.05 x data_size) updates before the next; the
    masked round in between writes nothing."""
    _, world, _ = tiny
    config = dataclasses.replace(TINY, rollout_every=None, buffer_size=32)
    assert neubay.Config().rollout_every is None and neubay.Config().utd == 0.05
    state = neubay.init(jax.random.PRNGKey(1), SPEC, config, world)
    schedule = jax.jit(neubay.rollout_schedule)
    state = schedule(state, world, jax.random.PRNGKey(2), jnp.asarray(1))
    data_size = float(state.rollout_metrics["rollout/data_size"])
    assert int(state.buffer.size) == 16 and data_size > 16
    assert int(state.rollout_countdown) == int(np.ceil(0.05 * data_size)) - 1
    before = state
    state = schedule(state, world, jax.random.PRNGKey(3), jnp.asarray(2))
    assert int(state.buffer.size) == 16 and int(state.rollout_countdown) == int(before.rollout_countdown) - 1
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(state.buffer), jax.tree.leaves(before.buffer)))
    assert float(state.rollout_metrics["rollout/data_size"]) == data_size
    state = schedule(state.replace(rollout_countdown=jnp.zeros((), jnp.int32)), world, jax.random.PRNGKey(4),
                     jnp.asarray(3))
    assert int(state.buffer.size) == 32 and int(state.buffer.insert) == 0


def test_neubay_initialization_and_log_std():
    """--init neubay (the authors' Equinox defaults): biases U(+-1/sqrt(fan_in)) in the embedding and the heads, the
    critic heads' last layer U(+-sqrt(0.01 / fan_in)) with a zero bias, the actor's output layer U(+-1/sqrt(fan_in));
    the log-std is clipped. --init default: zero biases."""
    config = dataclasses.replace(TINY, head_hidden=(64,), core_hidden=32)
    assert (neubay.Config().init, neubay.Config().log_std) == ("neubay", "clip")
    xs, core = jnp.zeros((1, 1, neubay.input_dim(SPEC))), neubay.initial_core_state(config, (1,))
    actor = neubay.actor_network(config, SPEC).init(jax.random.PRNGKey(0), xs, core)["params"]
    critic = neubay.critic_network(config).init(jax.random.PRNGKey(1), xs, core, jnp.zeros((1, 1, 1)))["params"]
    assert neubay.actor_network(config, SPEC).log_std_mode == "clip"

    def within(x, bound, filled=0.8):
        x = np.abs(np.asarray(x))
        return x.max() <= bound and x.max() > filled * bound

    assert within(actor["encoder"]["embed_linear"]["bias"], 1 / np.sqrt(5))             # fan_in S + A + 1 = 5
    assert within(critic["encoder"]["embed_linear"]["bias"], 1 / np.sqrt(5))
    assert within(actor["head"]["MLP_0"]["hidden_0"]["bias"], 1 / np.sqrt(32))
    assert within(actor["head"]["MLP_0"]["out"]["kernel"], 1 / 8, 0.6) and within(actor["head"]["MLP_0"]["out"]["bias"],
                                                                                  1 / 8, 0.01)
    heads = critic["heads"]["critics"]["MLP_0"]
    assert within(heads["hidden_0"]["bias"], 1 / np.sqrt(33))
    assert within(heads["out"]["kernel"], np.sqrt(0.01 / 64), 0.9)                       # 192 draws
    np.testing.assert_array_equal(np.asarray(heads["out"]["bias"]), 0.0)
    plain = dataclasses.replace(config, init="default")
    plain_actor = neubay.actor_network(plain, SPEC).init(jax.random.PRNGKey(0), xs, core)["params"]
    np.testing.assert_array_equal(np.asarray(plain_actor["encoder"]["embed_linear"]["bias"]), 0.0)
    np.testing.assert_array_equal(np.asarray(plain_actor["head"]["MLP_0"]["out"]["bias"]), 0.0)
    # Same kernels draw for draw (only the biases and the last layers change).
    np.testing.assert_array_equal(np.asarray(plain_actor["encoder"]["embed_linear"]["kernel"]),
                                  np.asarray(actor["encoder"]["embed_linear"]["kernel"]))
