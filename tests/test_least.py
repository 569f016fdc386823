"""LEAST: the paper's rule (median of B_Q per index, the B_G weight, the entropy-aware K) and the first
reconstruction (--rule margin) on a scripted Q-function and scripted statistics, stops stored
as truncations that bootstrap, seeds that stop independently, envs that truncate on a stop, bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import replay
from agents import least, sac, td3
from experiments.loops.off_policy import DeviceLoop
from tests.cli_utils import run_inprocess

SPEC = envs.make("jax:PointMass").spec
SMALL = dict(batch_size=16, learning_starts=10, critic_hidden=(16, 16), actor_hidden=(16, 16), buffer_size=2000)


def scripted(monkeypatch):
    """Q(s, a) := s[0]: the test writes the Q-value it wants into the observation."""
    monkeypatch.setattr(least, "q_value", lambda state, obs, action: obs[..., 0])


def _state(config, history_rows=10):
    """A LEAST state whose history holds Q = 0, 1, ..., 9 at every episode index (recorded values)."""
    state = least.init(jax.random.PRNGKey(0), SPEC, config)
    values = jnp.tile(jnp.arange(10.0)[None, :], (SPEC.max_episode_steps, 1))
    values = jnp.where(jnp.arange(config.history)[None, :] < history_rows, jnp.pad(
        values, ((0, 0), (0, config.history - 10)), constant_values=jnp.nan), jnp.nan)
    history = state.history.replace(values=values, count=jnp.full((SPEC.max_episode_steps,), history_rows, jnp.int32))
    return state.replace(history=history)


def _step(state, q):
    obs = jnp.zeros(SPEC.obs_dim).at[0].set(q)
    stop = least.early_stop(state, obs, jnp.zeros(SPEC.action_dim))
    transition = replay.Transition(obs, jnp.zeros(SPEC.action_dim), jnp.float32(0.0), obs, jnp.bool_(False), stop)
    return least.store(state, transition), bool(stop)


def test_paper_rule_median_and_learning_potential_by_hand(monkeypatch):
    """B_Q holds Q = 0..9 at every index (median 4.5); B_G holds TD loss 1 everywhere except index 0, where it
    is 3. Then G_0 = 3 and G = (3 + 1 x 99) / 100 = 1.02: w_0 = 1.02 / 4.02 and the threshold at index 0 is
    w_0 x 4.5 = 1.1418; at index 1, G_1 = 1, w_1 = 1.02 / 2.02, threshold 2.2723. Without the weight the
    threshold is the median itself."""
    scripted(monkeypatch)
    config = least.Config(**SMALL, patience=1, warmup=0, history=20, history_size="fixed", min_history=5)
    state = _state(config)
    losses = jnp.where(jnp.isnan(state.history.values), jnp.nan, 1.0).at[0, :10].set(3.0)
    state = state.replace(history=state.history.replace(losses=losses))
    decision = least.rule(state, jnp.float32(1.0))
    assert float(decision["median"]) == pytest.approx(4.5)
    assert float(decision["weight"]) == pytest.approx(1.02 / 4.02, rel=1e-5)
    assert float(decision["threshold"]) == pytest.approx(4.5 * 1.02 / 4.02, rel=1e-5)
    assert bool(decision["stop"]) and not bool(least.rule(state, jnp.float32(1.2))["stop"])
    at_one = least.rule(state.replace(episode_step=jnp.int32(1)), jnp.float32(2.0))
    assert float(at_one["threshold"]) == pytest.approx(4.5 * 1.02 / 2.02, rel=1e-5) and bool(at_one["stop"])
    bare = dataclasses.replace(config, learning_potential=False)
    assert float(least.rule(state.replace(config=bare), jnp.float32(1.0))["threshold"]) == pytest.approx(4.5)
    # A negative median is relaxed the same way: eps - (1 - w)|eps|.
    negative = state.replace(history=state.history.replace(values=state.history.values - 10.0))
    w = 1.02 / 4.02
    assert float(least.rule(negative, jnp.float32(0.0))["threshold"]) == pytest.approx(-5.5 - (1 - w) * 5.5,
                                                                                       rel=1e-5)


def test_the_median_is_over_the_k_most_recent_episodes(monkeypatch):
    """Index 0 has 30 records in a ring of 40: Q = 100 for the 20 oldest, 0..9 for the 10 newest. With K = 10 the
    median is 4.5; with K = 30 it is 100. TD3's exploration noise 0.1 gives h = 0.1 sqrt(2 pi e) / 2 and the
    entropy-aware K = 10 + round(30 (1 - h)) = 34; a near-uniform policy (h = 1) gives K_min = 10."""
    scripted(monkeypatch)
    config = least.Config(**SMALL, patience=1, warmup=0, history=40, history_floor=10, min_history=5,
                          learning_potential=False)
    state = least.init(jax.random.PRNGKey(0), SPEC, config)
    values = jnp.full((SPEC.max_episode_steps, 40), jnp.nan).at[0, :20].set(100.0).at[0, 20:30].set(jnp.arange(10.0))
    state = state.replace(history=state.history.replace(
        values=values, count=jnp.zeros(SPEC.max_episode_steps, jnp.int32).at[0].set(30)))
    h = 0.1 * np.sqrt(2 * np.pi * np.e) / 2
    assert int(least.history_size(state)) == 10 + round(30 * (1 - h)) == 34
    uniform = state.replace(entropy=jnp.float32(np.log(2.0)))
    assert int(least.history_size(uniform)) == 10
    assert float(least.rule(uniform, jnp.float32(0.0))["median"]) == pytest.approx(4.5)
    fixed = state.replace(config=dataclasses.replace(config, history_size="fixed", history=40))
    assert float(least.rule(fixed, jnp.float32(0.0))["median"]) == pytest.approx(100.0)


def test_recording_starts_at_learning_starts_and_records_the_td_loss():
    """Before --learning-starts (the default warm-up) nothing is recorded and nothing stops; after, each step
    writes Q_i = min_j Q_j(s_i, a_i) and L_i = (Q_i - y_i)^2 with y_i TD3's target (the same key)."""
    config = least.Config(**SMALL, history=20, history_size="fixed")
    state = least.init(jax.random.PRNGKey(0), SPEC, config)
    obs, action = jnp.ones(SPEC.obs_dim), 0.5 * jnp.ones(SPEC.action_dim)
    transition = replay.Transition(obs, action, jnp.float32(1.0), 2 * obs, jnp.bool_(False), jnp.bool_(False))
    early = least.store(state, transition)
    assert int(early.history.count[0]) == 0 and bool(jnp.all(jnp.isnan(early.history.values)))
    late = state.replace(base=state.base.replace(env_steps=jnp.int32(config.learning_starts)))
    stored = least.store(late, transition)
    q = float(least.q_value(late, obs, action))
    batch = replay.TransitionBatch(obs[None], action[None], jnp.ones(1), 2 * obs[None], jnp.zeros(1))
    key = jax.random.fold_in(jax.random.PRNGKey(0x1EA57), late.counters["env_steps"])
    y = float(td3.critic_target(late.base, batch, key)[0])
    assert int(stored.history.count[0]) == 1
    assert float(stored.history.values[0, 0]) == pytest.approx(q, rel=1e-6)
    assert float(stored.history.losses[0, 0]) == pytest.approx((q - y) ** 2, rel=1e-5)


def test_margin_rule_stops_exactly_after_patience_steps_below_the_threshold(monkeypatch):
    """--rule margin (the first reconstruction). History 0..9: 10% quantile 0.9, IQR 4.5; margin_coef 0.2 and
    gradient EMAs 2 / 1 give margin 1.8, so the threshold is -0.9. With patience 3: q = -1 three times in a row
    stops on the third; a q above the threshold in between restarts the count."""
    scripted(monkeypatch)
    config = least.Config(**SMALL, rule="margin", quantile=0.1, patience=3, warmup=0, margin_coef=0.2, history=20,
                          history_size="fixed", min_history=5, history_values="recorded")
    state = _state(config).replace(grad_short=jnp.float32(2.0), grad_long=jnp.float32(1.0))
    decision = least.rule(state, jnp.float32(-1.0))
    assert float(decision["threshold"]) == pytest.approx(-0.9, rel=1e-5)
    stops = []
    for q in (-1.0, -1.0, 0.0, -1.0, -1.0, -1.0):
        state, stop = _step(state, q)
        stops.append(stop)
    assert stops == [False, False, False, False, False, True]
    assert int(state.counters["stops"]) == 1 and int(state.episode_step) == 0     # the stop ended the episode
    # Scripted gradients: a quiet critic (short EMA = long EMA) gives margin 0.9 and threshold 0; q = -0.5 is
    # then below the threshold, while with the noisy critic above (threshold -0.9) it was not.
    noisy = _state(config).replace(grad_short=jnp.float32(2.0), grad_long=jnp.float32(1.0))
    calm = noisy.replace(grad_short=jnp.float32(1.0))
    assert float(least.rule(calm, jnp.float32(-0.5))["threshold"]) == pytest.approx(0.0, abs=1e-6)
    assert bool(least.rule(calm, jnp.float32(-0.5))["below"]) and not bool(least.rule(noisy, jnp.float32(-0.5))["below"])


def test_no_stop_during_warmup_or_without_history(monkeypatch):
    scripted(monkeypatch)
    config = least.Config(**SMALL, patience=1, warmup=5, min_history=5, history=20, history_values="recorded")
    state = _state(config)
    stops = []
    for _ in range(8):
        state, stop = _step(state, -100.0)
        stops.append(stop)
    # base.env_steps counts stored transitions: steps 0..4 are inside the warm-up; the 6th step may stop.
    assert stops == [False] * 5 + [True] * 3
    sparse = _state(config, history_rows=4).replace(base=state.base)        # 4 values < min_history 5
    assert not bool(least.early_stop(sparse, jnp.full(SPEC.obs_dim, -100.0), jnp.zeros(SPEC.action_dim)))


def test_seeds_stop_independently(monkeypatch):
    scripted(monkeypatch)
    config = least.Config(**SMALL, patience=1, warmup=0, min_history=5, history=20, history_values="recorded")
    states = jax.tree.map(lambda *x: jnp.stack(x), _state(config), _state(config, history_rows=4))
    obs = jnp.full((2, SPEC.obs_dim), -100.0)
    stops = jax.vmap(least.early_stop)(states, obs, jnp.zeros((2, SPEC.action_dim)))
    assert stops.tolist() == [True, False]


def test_a_stop_is_a_truncation_that_bootstraps():
    """An eager rule on PointMass (no terminal states): every episode it ends is stored as truncated, never
    terminated, so TD3's target keeps gamma * Q'(s', a')."""
    config = least.Config(**SMALL, quantile=0.9, patience=1, warmup=50, min_history=1, history=5,
                          history_size="fixed", learning_potential=False)
    loop = DeviceLoop(least, config, "jax:PointMass", num_seeds=2, seed=0, replay_transitions=2000)
    state, metrics = loop.run(loop.init(), 0, 400)
    agent = state["agent"]
    stops = np.asarray(agent.counters["stops"])
    assert np.all(stops > 0), stops
    buffer = jax.tree.map(lambda x: x[0, 0], agent.base.replay)       # seed 0's only stream (one env per seed)
    assert float(jnp.sum(buffer.terminated)) == 0.0
    # Episodes in the buffer: each ends with one empty slot holding its final obs; stopped ones are < 100 long.
    has = np.asarray(buffer.has_transition[: int(buffer.insert_index)])
    lengths = np.diff(np.flatnonzero(np.concatenate([[0.0], has, [0.0]]) == 0))[:-1] - 1
    assert np.any((lengths > 0) & (lengths < 100))
    batch = replay.TransitionBatch(buffer.obs[:4], buffer.action[:4], buffer.reward[:4], buffer.obs[1:5],
                                   buffer.terminated[:4])
    base = jax.tree.map(lambda x: x[0], agent.base)
    deterministic = dataclasses.replace(base.config, noise_clip=0.0)
    target = td3.critic_target(base.replace(config=deterministic), batch, jax.random.PRNGKey(0))
    next_q = td3.critic_network(base.config).apply(base.critic.target_params, batch.next_obs,
                                                   td3.actor_network(base.config, SPEC).apply(base.actor.target_params,
                                                                                             batch.next_obs))
    np.testing.assert_allclose(target, batch.reward + 0.99 * np.min(np.asarray(next_q), axis=-1), rtol=1e-5)
    assert metrics["least/mean_episode_length"].shape == (2,)
    assert np.all(metrics["least/mean_episode_length"] < 100)


def test_envs_end_an_episode_on_stop_as_a_truncation():
    env = envs.make("jax:PointMass")
    state = env.reset(jax.random.PRNGKey(0))
    state, info = env.step(state, jnp.zeros(2), True)
    assert bool(info.truncated) and not bool(info.terminated) and int(state.step) == 0
    host = envs.make("gym:InvertedPendulum-v5", num_envs=2, seed=0)
    host.reset()
    result = host.step(np.zeros((2, 1), np.float32), np.array([True, False]))
    assert result.truncated.tolist() == [True, False] and not result.terminated.any()
    host.close()


@pytest.mark.parametrize("args, expected", [
    (["--quantile", "1"], "--quantile must be in (0, 1), got 1.0"),
    (["--quantile", "0"], "--quantile must be in (0, 1), got 0.0"),
    (["--patience", "0"], "--patience must be >= 1, got 0"),
    (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["--history-floor", "60"], "--history-floor must be in [1, --history=50], got 60"),
    (["--min-history", "20"], "--min-history must be in [1, 10] (the smallest K), got 20"),
])
def test_bad_input_fails_cleanly(tmp_path, args, expected):
    run_dir = tmp_path / "run"
    result = run_inprocess("--agent", "least", "--env", "jax:PointMass", *args, "--run-dir", str(run_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and expected in errors[-1], result.stderr[-2000:]
    assert not run_dir.exists()


def test_unknown_base_is_rejected(tmp_path):
    result = run_inprocess("--agent", "least", "--base", "ddpg", "--env", "jax:PointMass", "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 2 and "'td3'" in result.stderr and "'sac'" in result.stderr
    with pytest.raises(ValueError, match="--base must be one of td3, sac"):
        dataclasses.replace(least.Config(), base="ddpg").validate()


def test_sac_base_k_follows_an_ema_of_the_actors_entropy(monkeypatch):
    """With --base sac, each update that stepped moves the per-dimension entropy h by an EMA (decay 0.99) toward
    actor/entropy / action_dim; an update that did not step leaves it. PointMass has 2 action dimensions."""
    config = least.Config(**SMALL, base="sac", history=20, history_floor=10, min_history=5)
    state = least.init(jax.random.PRNGKey(0), SPEC, config)
    assert float(state.entropy) == pytest.approx(np.log(2.0))          # a near-uniform policy: K = K_min
    assert int(least.history_size(state)) == 10

    def scripted_update(base, key, step, stepped):
        metrics = {"critic/grad_norm": jnp.float32(1.0), "actor/entropy": jnp.float32(-4.0)}
        return base.replace(updates=base.updates + stepped), metrics

    monkeypatch.setattr(sac, "update", lambda base, key, step: scripted_update(base, key, step, 1))
    stepped, _ = least.update(state, jax.random.PRNGKey(1), jnp.int32(0))
    expected = 0.99 * np.log(2.0) + 0.01 * (-2.0)
    assert float(stepped.entropy) == pytest.approx(expected, rel=1e-6)
    monkeypatch.setattr(sac, "update", lambda base, key, step: scripted_update(base, key, step, 0))
    idle, _ = least.update(stepped, jax.random.PRNGKey(2), jnp.int32(1))
    assert float(idle.entropy) == pytest.approx(expected, rel=1e-6)
    h = np.exp(expected - np.log(2.0))
    assert int(least.history_size(idle)) == 10 + round(10 * (1 - h))
