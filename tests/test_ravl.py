"""RAVL and the offline pipeline: EDAC's diversity by hand, rollouts that stop at the termination function,
the model buffer, collect.py -> run.py end to end, and bad offline inputs."""

import dataclasses
import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import replay
from agents import ravl, sac
from networks import ensemble as ensemble_lib
from networks.actor_critic import GaussianActor
from replay import ring as ring_lib
from tests.cli_utils import assert_evaluate_reproduces, run_cli, run_inprocess, run_main


def test_diversity_equals_hand_computation():
    """Three critics Q_j(s, a) = <w_j, a> (+ terms without a): grad_a Q_j = w_j, so
    ES = 1/(N-1) sum_{i != j} cos(w_i, w_j), the same for every sample."""
    spec = envs.make("jax:PointMass").spec                       # action_dim 2
    config = ravl.Config(num_critics=3, critic_hidden=(4,), actor_hidden=(4,), rollout_batch=8)
    state = sac.init(jax.random.PRNGKey(0), spec, config, capacity=4)
    w = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]], np.float32)
    params = state.critic.params
    mlp = params["params"]["critics"]["MLP_0"]
    # One hidden unit equal to <w_j, a> (identity on positives: keep it positive with a large bias), out = h.
    kernel = np.zeros((3, spec.obs_dim + 2, 4), np.float32)
    kernel[:, spec.obs_dim:, 0] = w
    hidden = {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((3, 4)).at[:, 0].set(10.0)}
    out = {"kernel": jnp.zeros((3, 4, 1)).at[:, 0, 0].set(1.0), "bias": jnp.zeros((3, 1))}
    params = {"params": {"critics": {"MLP_0": {**mlp, "hidden_0": hidden, "out": out}}}}
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, spec.obs_dim)), jnp.float32)
    action = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(5, 2)), jnp.float32)
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    cos = unit @ unit.T
    by_hand = (cos.sum() - np.trace(cos)) / 2
    assert float(ravl.diversity(params, state, obs, action)) == pytest.approx(by_hand, rel=1e-5)


def test_diversity_matches_per_sample_reverse_mode_on_a_nonlinear_ensemble():
    """The forward-mode action-gradients equal grad_a Q_j(s_b, a_b) taken sample by sample and critic by critic."""
    spec = envs.make("jax:PointMass").spec
    config = ravl.Config(num_critics=4, critic_hidden=(16, 16), actor_hidden=(4,), rollout_batch=8)
    state = sac.init(jax.random.PRNGKey(3), spec, config, capacity=4)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(6, spec.obs_dim)), jnp.float32)
    action = jnp.asarray(rng.uniform(-1, 1, size=(6, 2)), jnp.float32)
    network = sac.critic_network(config)
    total = 0.0
    for b in range(6):
        q = lambda a, j, b=b: network.apply(state.critic.params, obs[b:b + 1], a[None])[0, j]
        grads = np.stack([np.asarray(jax.grad(q)(action[b], j)) for j in range(4)])
        unit = grads / np.linalg.norm(grads, axis=1, keepdims=True)
        cos = unit @ unit.T
        total += (cos.sum() - np.trace(cos)) / 3
    assert float(ravl.diversity(state.critic.params, state, obs, action)) == pytest.approx(total / 6, rel=1e-4)


def test_diversity_gradient_is_finite_when_a_critic_is_flat_in_the_action():
    """A critic with zero output weights has grad_a Q = 0: its term is 0 and the loss's gradient stays finite
    (the norm's gradient at 0 is NaN; a run with dead ReLU units diverged on it)."""
    spec = envs.make("jax:PointMass").spec
    config = ravl.Config(num_critics=3, critic_hidden=(8,), actor_hidden=(4,), rollout_batch=8)
    state = sac.init(jax.random.PRNGKey(0), spec, config, capacity=4)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[0].set(0.0) if "out" in jax.tree_util.keystr(path) else x, state.critic.params)
    obs = jnp.ones((4, spec.obs_dim))
    action = jnp.zeros((4, 2))
    grads = jax.grad(lambda p: ravl.diversity(p, state, obs, action))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert bool(jnp.isfinite(ravl.diversity(params, state, obs, action)))


def test_transition_ring_keeps_valid_rows_in_order_and_wraps():
    ring = ring_lib.create(5, 1, 1)
    batch = lambda values: replay.TransitionBatch(jnp.asarray(values, jnp.float32)[:, None],
                                                  jnp.zeros((len(values), 1)), jnp.asarray(values, jnp.float32),
                                                  jnp.zeros((len(values), 1)), jnp.zeros(len(values)))
    ring = ring_lib.add(ring, batch([1, 2, 3, 4]), jnp.array([True, False, True, True]))
    assert ring.data.reward.tolist() == [1, 3, 4, 0, 0] and int(ring.size) == 3
    ring = ring_lib.add(ring, batch([5, 6, 7]), jnp.array([True, True, True]))
    assert ring.data.reward.tolist() == [7, 3, 4, 5, 6] and int(ring.size) == 5 and int(ring.insert_index) == 1


def test_model_rollouts_stop_at_the_termination_function():
    """InvertedPendulum terminates when |angle| = |obs[1]| > 0.2. A hand-set model that tilts the pole by 0.15
    per step: from angle 0, steps 1 (0.15) and 2 (0.30, terminal) are stored, nothing after the terminal."""
    spec = envs.make("gym:InvertedPendulum-v5", num_envs=1).spec
    config = ravl.Config(num_critics=2, critic_hidden=(8,), actor_hidden=(8,), rollout_batch=4, rollout_horizon=5,
                         retain_rounds=1, model_members=2, model_elites=2, model_hidden=(8,))
    model = ensemble_lib.init(jax.random.PRNGKey(0), spec.obs_dim, spec.action_dim, ravl.model_config(config))

    def fake_step(model_state, obs, action, key, member=None, deterministic=False):
        return obs.at[:, 1].add(0.15), jnp.ones(obs.shape[0]), {}

    data = replay.TransitionBatch(jnp.zeros((3, 4)), jnp.zeros((3, 1)), jnp.zeros(3), jnp.zeros((3, 4)), jnp.zeros(3))
    world = {"data": data, "starts": jnp.zeros(1, jnp.int32), "model": model}
    state = ravl.init(jax.random.PRNGKey(1), spec, config, world)
    original = ensemble_lib.sample_step
    ensemble_lib.sample_step = fake_step
    try:
        state, stored = ravl.model_rollouts(state, world, jax.random.PRNGKey(2))
    finally:
        ensemble_lib.sample_step = original
    assert int(stored) == 4 * 2 and int(state.model_buffer.size) == 8
    buffer = state.model_buffer.data
    angles = np.asarray(buffer.next_obs[:8, 1])
    np.testing.assert_allclose(sorted(set(np.round(angles, 5))), [0.15, 0.3], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(buffer.terminated[:8]) > 0, angles > 0.2)


def _tiny_dataset(path, env_id="gym:InvertedPendulum-v5", steps=600):
    result = run_cli_collect("--env", env_id, "--policy", "random", "--steps", str(steps), "--out", str(path),
                             "--reference-episodes", "2", "--ref-expert", "1000")
    assert result.returncode == 0, result.stderr[-3000:]


def run_cli_collect(*args):
    """experiments/collect.py's main, in this process."""
    from experiments import collect

    return run_main(collect.main, *args)


TINY_RAVL = ["--num-critics", "3", "--critic-hidden", "32", "32", "--actor-hidden", "32", "32", "--batch-size", "32",
             "--rollout-batch", "64", "--rollout-every", "50", "--retain-rounds", "2", "--model-members", "3",
             "--model-elites", "2", "--model-hidden", "16", "16", "--model-max-epochs", "3"]


def test_collect_then_ravl_end_to_end(tmp_path):
    """collect.py writes a random InvertedPendulum dataset that loads back as written; RAVL trains on it for 100
    gradient steps (tiny networks), saves its dynamics model under world/, and logs the value diagnostics."""
    data = tmp_path / "pend.hdf5"
    _tiny_dataset(data)
    dataset = replay.datasets.load(data, env_id="gym:InvertedPendulum-v5")
    assert dataset.num_transitions == 600 and dataset.metadata.policy == "random"
    assert dataset.metadata.ref_max_score == 1000.0 and dataset.metadata.ref_min_score > 0
    assert set(dataset.infos) == {"qpos", "qvel"}
    with h5py.File(data) as f:
        np.testing.assert_array_equal(f["observations"][:], np.asarray(dataset.observations))
    run_dir = tmp_path / "run"
    result = run_cli("--agent", "ravl", "--env", "gym:InvertedPendulum-v5", "--dataset", str(data),
                     "--total-steps", "100", "--eval-every", "100", "--log-every", "50", "--eval-episodes", "2",
                     "--num-seeds", "2", "--run-dir", str(run_dir), *TINY_RAVL, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "world" / "dynamics").exists()
    rows = (run_dir / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,seed,return") and "value/q_start_min" in rows[0] and len(rows) == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["dataset"] == str(data)
    # Its policy export alone gives the same evaluation (experiments/evaluate.py; no dataset, no world).
    assert_evaluate_reproduces(run_dir, tmp_path / "evaluate.csv", 100)


@pytest.mark.parametrize("problem", ["missing", "other_env", "nan", "truncated", "no_dataset"])
def test_bad_offline_input_fails_cleanly(tmp_path, problem):
    data = tmp_path / "pend.hdf5"
    env_id = "gym:InvertedPendulum-v5"
    if problem == "other_env":
        _tiny_dataset(data, "gym:InvertedDoublePendulum-v5", steps=50)
    elif problem in ("nan", "truncated"):
        _tiny_dataset(data, steps=50)
        if problem == "nan":
            with h5py.File(data, "r+") as f:
                f["rewards"][7] = np.nan
        else:
            blob = data.read_bytes()
            data.write_bytes(blob[: len(blob) // 2])
    run_dir = tmp_path / "run"
    args = ["--agent", "ravl", "--env", env_id, "--run-dir", str(run_dir), *TINY_RAVL]
    if problem != "no_dataset":
        args += ["--dataset", str(data)]
    result = run_inprocess(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")][-1]
    expected = {"missing": "pend.hdf5", "other_env": "InvertedDoublePendulum", "nan": "'rewards' holds nan at index 7",
                "truncated": "pend.hdf5", "no_dataset": "--dataset"}[problem]
    assert expected in error, error
    assert not run_dir.exists()


def test_saved_model_of_other_shapes_is_refused(tmp_path):
    spec = envs.make("gym:InvertedPendulum-v5", num_envs=1).spec
    other = ensemble_lib.init(jax.random.PRNGKey(0), spec.obs_dim, spec.action_dim,
                              ensemble_lib.EnsembleConfig(num_members=3, num_elites=2, hidden=(8,),
                                                          weight_decays=(1e-5, 1e-5)))
    ensemble_lib.save(tmp_path / "model", other)
    data = tmp_path / "pend.hdf5"
    _tiny_dataset(data, steps=50)
    run_dir = tmp_path / "run"
    result = run_inprocess("--agent", "ravl", "--env", "gym:InvertedPendulum-v5", "--dataset", str(data), "--run-dir",
                           str(run_dir), "--model-path", str(tmp_path / "model"), *TINY_RAVL)
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")][-1]
    assert str(tmp_path / "model") in error and "members" in error
    assert not run_dir.exists()


# ----------------------------------------------------------------------------
# The authors' choices: EDAC's initialization, the clipped log-std, the batch split, alpha's loss, the order
# ----------------------------------------------------------------------------


def test_edac_initialization_statistics():
    """--init edac (RAVL's default): every hidden bias 0.1, the critics' last layer (kernel and bias) in
    U(+-3e-3), the actor's mean/log-std layer in U(+-1e-3); hidden kernels stay U(+-1/sqrt(fan_in)). SAC keeps zero
    biases and last layers like the hidden ones."""
    spec = envs.make("jax:PointMass").spec
    config = ravl.Config(num_critics=4, critic_hidden=(64, 64), actor_hidden=(64, 64), rollout_batch=8)
    assert (config.init, config.log_std) == ("edac", "clip")
    assert (sac.Config().init, sac.Config().log_std) == ("default", "tanh")
    state = sac.init(jax.random.PRNGKey(0), spec, config, capacity=4)
    critic = state.critic.params["params"]["critics"]["MLP_0"]
    actor = state.actor.params["params"]["MLP_0"]
    for layers in (critic, actor):
        for name in ("hidden_0", "hidden_1"):
            np.testing.assert_array_equal(np.asarray(layers[name]["bias"]), np.float32(0.1))
        kernel = np.asarray(layers["hidden_1"]["kernel"])
        assert np.abs(kernel).max() <= 1 / 8 and np.abs(kernel).max() > 0.9 / 8     # fan_in 64
    for layer, bound in ((critic["out"], 3e-3), (actor["out"], 1e-3)):
        kernel, bias = np.asarray(layer["kernel"]), np.asarray(layer["bias"])
        assert kernel.shape[-2] == 64 and np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
        assert np.abs(bias).max() <= bound and np.abs(kernel.mean()) < 0.1 * bound
        assert np.all(bias != 0)
    # Uniform on [-b, b]: variance b^2 / 3 (256 critic, 256 actor samples).
    assert np.var(np.asarray(critic["out"]["kernel"])) == pytest.approx(3e-3 ** 2 / 3, rel=0.25)
    assert np.var(np.asarray(actor["out"]["kernel"])) == pytest.approx(1e-3 ** 2 / 3, rel=0.25)

    plain = sac.init(jax.random.PRNGKey(0), spec, dataclasses.replace(config, init="default"), capacity=4)
    plain_critic = plain.critic.params["params"]["critics"]["MLP_0"]
    np.testing.assert_array_equal(np.asarray(plain_critic["hidden_0"]["bias"]), 0.0)
    np.testing.assert_array_equal(np.asarray(plain_critic["out"]["bias"]), 0.0)
    assert np.abs(np.asarray(plain_critic["out"]["kernel"])).max() > 0.9 / 8       # U(+-1/sqrt(64))
    # The hidden kernels do not depend on the scheme (the same draws).
    np.testing.assert_array_equal(np.asarray(plain_critic["hidden_1"]["kernel"]), np.asarray(critic["hidden_1"]["kernel"]))


@pytest.mark.parametrize("mode, raw, log_std", [("clip", 0.0, 0.0), ("clip", 10.0, 2.0), ("clip", -10.0, -5.0),
                                                ("clip", 1.5, 1.5), ("tanh", 0.0, -1.5), ("tanh", 10.0, 2.0)])
def test_log_std_clip_and_tanh(mode, raw, log_std):
    """log sigma = clip(raw, -5, 2) (EDAC, RAVL, NEUBAY): sigma = 1 at raw 0; the tanh squash gives
    -5 + 3.5 (tanh(raw) + 1), sigma = exp(-1.5) ~ 0.22 at raw 0."""
    actor = GaussianActor(1, (4,), log_std_mode=mode)
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    out = {"kernel": jnp.zeros((4, 2)), "bias": jnp.array([0.3, raw])}
    params = {"params": {"MLP_0": {**params["params"]["MLP_0"], "out": out}}}
    dist = actor.apply(params, jnp.ones((2, 3)))
    np.testing.assert_allclose(np.asarray(dist.scale), np.exp(log_std), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dist.loc), 0.3, rtol=1e-6)


def test_real_samples_per_batch_are_floored_as_the_authors():
    """int(0.05 x 256) = 12 dataset rows (round() gave 13); int(0.05 x 16) = 0."""
    spec = envs.make("gym:InvertedPendulum-v5", num_envs=1).spec
    data = replay.TransitionBatch(jnp.zeros((20, 4)), jnp.zeros((20, 1)), -jnp.ones(20), jnp.zeros((20, 4)),
                                  jnp.zeros(20))
    world = {"data": data, "starts": jnp.zeros(1, jnp.int32)}
    config = ravl.Config(num_critics=2, critic_hidden=(8,), actor_hidden=(8,), rollout_batch=4, rollout_horizon=1,
                         retain_rounds=1, model_members=2, model_elites=2, model_hidden=(8,))
    state = ravl.init(jax.random.PRNGKey(1), spec, config, world)
    model = replay.TransitionBatch(jnp.zeros((4, 4)), jnp.zeros((4, 1)), jnp.ones(4), jnp.zeros((4, 4)), jnp.zeros(4))
    state = state.replace(model_buffer=ring_lib.add(state.model_buffer, model, jnp.ones(4, bool)))
    for batch_size, real in ((256, 12), (16, 0), (100, 5)):
        sized = state.replace(sac=state.sac.replace(config=dataclasses.replace(config, batch_size=batch_size)))
        batch = ravl.mixed_batch(sized, world, jax.random.PRNGKey(2))
        assert batch.reward.shape == (batch_size,) and int(jnp.sum(batch.reward < 0)) == real


def test_alpha_losses():
    """The authors' mean -log alpha (log pi + H) has the gradient -(mean log pi + H); CleanRL's -alpha (...) has it
    times alpha."""
    log_prob, target, log_alpha = jnp.array([-1.0, 0.5, 2.0]), -2.0, jnp.log(0.3)
    expected = -(float(jnp.mean(log_prob)) + target)
    assert float(jax.grad(sac.log_alpha_loss)(log_alpha, log_prob, target)) == pytest.approx(expected, rel=1e-6)
    assert float(jax.grad(sac.alpha_loss)(log_alpha, log_prob, target)) == pytest.approx(0.3 * expected, rel=1e-5)


@pytest.mark.parametrize("order, expected", [("edac", ["alpha", "actor", "critic"]),
                                             ("sac", ["critic", "actor", "alpha"])])
def test_update_order(monkeypatch, order, expected):
    """--update-order edac (the authors' Agent.update): alpha, then the actor, then the critics (whose target uses
    the updated actor); sac: critics, actor, alpha. Recorded while tracing one update."""
    spec = envs.make("gym:InvertedPendulum-v5", num_envs=1).spec
    config = ravl.Config(num_critics=2, critic_hidden=(8,), actor_hidden=(8,), rollout_batch=4, rollout_horizon=1,
                         retain_rounds=1, batch_size=8, model_members=2, model_elites=2, model_hidden=(8,),
                         update_order=order)
    model = ensemble_lib.init(jax.random.PRNGKey(0), spec.obs_dim, spec.action_dim, ravl.model_config(config))
    data = replay.TransitionBatch(jnp.zeros((20, 4)), jnp.zeros((20, 1)), jnp.zeros(20), jnp.zeros((20, 4)),
                                  jnp.zeros(20))
    world = {"data": data, "starts": jnp.zeros(1, jnp.int32), "model": model}
    state = ravl.init(jax.random.PRNGKey(1), spec, config, world)
    calls = []
    for name, attr in (("alpha", "alpha_step"), ("actor", "actor_step"), ("critic", "critic_target")):
        original = getattr(sac, attr)
        monkeypatch.setattr(sac, attr, lambda *a, _o=original, _n=name, **k: (calls.append(_n), _o(*a, **k))[1])
    jax.eval_shape(lambda s: ravl.update(s, world, jax.random.PRNGKey(2), jnp.asarray(2)), state)
    assert calls == expected
