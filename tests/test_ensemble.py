"""The probabilistic dynamics ensemble (networks/ensemble.py).

The fits use a small linear-dynamics dataset: s in U(-1, 1)^3, a in U(-1, 1)^3,

    s' = s + 0.1 a + 0.01 eps,    r = -|s|^2 + 0.01 eps',    2000 transitions,

with a little noise so that the Gaussian NLL has a floor (on deterministic targets it drives the
log-variance to its lower bound). The targets (delta s, r) have variance 0.0034 (each delta) and 0.27
(reward), 0.07 on average; the noise floor of the holdout MSE is 1e-4 (environment units) or ~0.03
(standardized units). Reduced configs: 4 members x (32, 32), batch 64, 60 epochs.
"""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks import ensemble as E

S, A, N = 3, 3, 2000
SMALL = E.EnsembleConfig(num_members=4, num_elites=3, hidden=(32, 32), weight_decays=(2.5e-5, 5e-5, 1e-4),
                         batch_size=64, max_epochs=60)
SMALL_NEUBAY = dataclasses.replace(
    E.NEUBAY_CONFIG, num_members=4, num_elites=3, hidden=(32, 32), batch_size=64, max_epochs=60)
MBPO_MSE_BOUND = 0.01    # environment units; the targets' mean variance is 0.07, the noise floor 1e-4
NEUBAY_MSE_BOUND = 0.1   # standardized units (1 = predicting the mean); the noise floor is ~0.03


def make_data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, S)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, A)).astype(np.float32)
    nxt = obs + 0.1 * act + 0.01 * rng.normal(size=(n, S)).astype(np.float32)
    rew = -np.sum(obs**2, axis=-1) + 0.01 * rng.normal(size=n).astype(np.float32)
    return {"observations": obs, "actions": act, "next_observations": nxt, "rewards": rew.astype(np.float32)}


DATA = make_data()


@pytest.fixture(scope="module")
def mbpo():
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL)
    return E.train(state, DATA, jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def neubay():
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL_NEUBAY)
    return E.train(state, DATA, jax.random.PRNGKey(1))


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("change, message", [
    ({"num_members": 1}, "num_members must be >= 2"),
    ({"num_elites": 8}, "num_elites must be in"),
    ({"num_elites": 0}, "num_elites must be in"),
    ({"hidden": ()}, "hidden"),
    ({"activation": "gelu2"}, "unknown activation"),
    ({"optimizer": "sgd"}, "unknown optimizer"),
    ({"weight_decays": (1e-4,)}, "one value per Linear layer"),
    ({"init_min_logvar": 1.0}, "init_min_logvar"),
    ({"holdout_fraction": 0.0}, "holdout_fraction"),
    ({"patience": 0}, "patience"),
    ({"min_epochs": -1}, "min_epochs"),
    ({"plateau_lr_factor": 0.0}, "plateau_lr_factor"),
    ({"input_clip": 0.0}, "input_clip"),
    ({"kernel_init": "ones"}, "unknown kernel_init"),
])
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(E.RAVL_CONFIG, **change).validate()


def test_presets_are_valid_and_hashable():
    for config in (E.RAVL_CONFIG, E.NEUBAY_CONFIG, SMALL, SMALL_NEUBAY):
        assert hash(config.validate()) == hash(config)
    # Lists (JSON, CLI) become tuples, so the config stays usable as a static jit argument.
    assert E.EnsembleConfig(hidden=[8, 8], weight_decays=[0, 0, 0]).hidden == (8, 8)


# ------------------------------------------------------------------------------------------------
# Fitting


def test_fit_linear_dynamics(mbpo):
    state, history = mbpo
    first, last = history[0]["holdout_mse"], history[-1]["best_holdout_mse"]
    assert first > 10 * MBPO_MSE_BOUND, first
    elite_mse = np.asarray(state.holdout_mse)[np.asarray(state.elites)]
    assert elite_mse.max() < MBPO_MSE_BOUND, (elite_mse, last)
    # Elites: the lowest holdout MSE, lowest first; each member ends at its best snapshot.
    assert np.array_equal(state.elites, np.argsort(np.asarray(state.holdout_mse), kind="stable")[:3])
    assert np.all(np.diff([r["best_holdout_mse"] for r in history]) <= 0)
    assert history[0]["num_holdout"] == 400 and history[0]["num_train"] == 1600  # min(0.2 N, 1000)
    # The learned log-variance bounds moved from their initial values.
    assert not np.allclose(state.params["max_logvar"], SMALL.init_max_logvar)
    # The environment-units predictions are good for the reward too (its variance is 0.27).
    mean, _ = E.predict(state, DATA["observations"][:500], DATA["actions"][:500])
    reward_mse = np.mean((np.asarray(mean[state.elites, :, S]) - DATA["rewards"][:500]) ** 2)
    assert reward_mse < 0.03, reward_mse


def test_layernorm_leaky_relu_adamw_trains(neubay):
    state, history = neubay
    assert history[0]["holdout_mse"] > 2 * NEUBAY_MSE_BOUND
    elite_mse = np.asarray(state.holdout_mse)[np.asarray(state.elites)]
    assert elite_mse.max() < NEUBAY_MSE_BOUND, elite_mse
    # Fixed log-variance bounds stay where they started.
    assert np.all(np.asarray(state.params["max_logvar"]) == SMALL_NEUBAY.init_max_logvar)
    assert np.all(np.asarray(state.params["min_logvar"]) == SMALL_NEUBAY.init_min_logvar)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    # Targets that are pure noise (std 10): the holdout MSE cannot fall by 1% (fitting the mean gains
    # ~0.3%), so training stops after exactly `patience` = 5 epochs, each member at its initial params.
    rng = np.random.default_rng(4)
    noise = {**DATA, "next_observations": DATA["observations"] + 10 * rng.normal(size=(N, S)).astype(np.float32),
             "rewards": 10 * rng.normal(size=N).astype(np.float32)}
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL)
    trained, history = E.train(state, noise, jax.random.PRNGKey(1))
    assert [r["epochs_since_improvement"] for r in history] == [1, 2, 3, 4, 5]
    assert leaves_equal(trained.params, state.params)


def test_evaluate_large_datasets_in_chunks(mbpo):
    # More rows than one chunk of the holdout evaluation (4096): same MSE as computing it at once.
    state, _ = mbpo
    data = make_data(5000, seed=9)
    mean, _ = E.predict(state, data["observations"], data["actions"])
    targets = np.concatenate([data["next_observations"], data["rewards"][:, None]], axis=-1)
    expected = np.mean((np.asarray(mean) - targets) ** 2, axis=(1, 2))  # environment units = network units
    np.testing.assert_allclose(E.evaluate(state, data), expected, rtol=1e-4)


def test_train_rejects_bad_datasets():
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL)
    with pytest.raises(ValueError, match="lacks rewards"):
        E.train(state, {k: v for k, v in DATA.items() if k != "rewards"}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"actions has shape \(2000, 2\)"):
        E.train(state, {**DATA, "actions": DATA["actions"][:, :2]}, jax.random.PRNGKey(0))
    bad = DATA["rewards"].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        E.train(state, {**DATA, "rewards": bad}, jax.random.PRNGKey(0))


# ------------------------------------------------------------------------------------------------
# Normalization


def test_standardization_round_trip():
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL_NEUBAY)
    obs, act, nxt, rew = (DATA[k] for k in ("observations", "actions", "next_observations", "rewards"))
    state = E.fit_normalizers(state, obs, act, nxt, rew)
    inputs = np.concatenate([obs, act], axis=-1)
    np.testing.assert_allclose(state.input_mean, inputs.mean(0), atol=1e-5)
    np.testing.assert_allclose(state.input_std, inputs.std(0), rtol=1e-4)
    x = np.asarray(E.normalize_inputs(state, obs, act))
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1.0, rtol=1e-4)
    # Targets: standardized (delta s, r), and back to (s', r) in the environment's units.
    y = E.normalize_targets(state, obs, nxt, rew)
    np.testing.assert_allclose(np.asarray(y).mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(y).std(0), 1.0, rtol=1e-3)
    mean, logvar = E.denormalize(state, obs, y, jnp.zeros_like(y))
    np.testing.assert_allclose(mean[:, :S], nxt, atol=1e-5)
    np.testing.assert_allclose(mean[:, S], rew, atol=1e-5)
    np.testing.assert_allclose(logvar, np.broadcast_to(2 * np.log(state.target_std), logvar.shape), rtol=1e-6)
    # Without normalize_outputs the targets are the raw (delta s, r); a constant input keeps std 1.
    plain = E.fit_normalizers(E.init(jax.random.PRNGKey(0), S, A, SMALL), obs, np.zeros_like(act), nxt, rew)
    np.testing.assert_array_equal(plain.target_std, 1.0)
    np.testing.assert_array_equal(plain.input_std[S:], 1.0)
    np.testing.assert_allclose(E.normalize_targets(plain, obs, nxt, rew)[:, :S], nxt - obs)


# ------------------------------------------------------------------------------------------------
# Elites, sampling, disagreement


def test_elites_are_the_lowest_holdout_members_by_construction(mbpo):
    state, _ = mbpo
    # Every member = the best member + scale_m * (one random direction): larger scale, larger error.
    best = int(state.elites[0])
    scales = np.array([0.5, 0.0, 0.2, 0.05], np.float32)  # expected order: 1, 3, 2, 0
    leaves, treedef = jax.tree.flatten(state.params["net"])
    rng = np.random.default_rng(3)
    new = [leaf[best][None] + scales.reshape((-1,) + (1,) * (leaf.ndim - 1)) * rng.normal(size=leaf.shape[1:])
           for leaf in leaves]
    bounds = {k: jnp.broadcast_to(state.params[k][best], state.params[k].shape) for k in ("max_logvar", "min_logvar")}
    built = state.replace(params={"net": jax.tree.unflatten(treedef, new), **bounds})
    mse = E.evaluate(built, make_data(500, seed=7))
    assert np.all(np.diff(np.asarray(mse)[[1, 3, 2, 0]]) > 0), mse
    assert np.array_equal(E.select_elites(built, mse).elites, [1, 3, 2])


def two_member_state():
    """Two members that ignore the input: member 0 predicts delta s = (1, 2), r = 3; member 1 the negatives.

    The raw log-variance is -50, so the clamp gives ~min_logvar = -10 (std ~0.0067)."""
    config = E.EnsembleConfig(num_members=2, num_elites=1, hidden=(4,), weight_decays=(0.0, 0.0))
    state = E.init(jax.random.PRNGKey(0), 2, 1, config)
    net = jax.tree.map(jnp.zeros_like, state.params["net"])
    bias = jnp.array([[1.0, 2.0, 3.0, -50, -50, -50], [-1.0, -2.0, -3.0, -50, -50, -50]])
    net["out"]["bias"] = bias
    return state.replace(params={**state.params, "net": net}), bias[:, :3]


def test_sample_step_uses_the_given_member_per_row():
    state, means = two_member_state()
    obs = jnp.arange(12.0).reshape(6, 2)
    action = jnp.ones((6, 1))
    member = jnp.array([0, 1, 1, 0, 1, 0])
    expected = np.asarray(means)[np.asarray(member)]
    for deterministic, atol in ((True, 1e-6), (False, 0.05)):
        next_obs, reward, info = E.sample_step(state, obs, action, jax.random.PRNGKey(1), member=member,
                                               deterministic=deterministic)
        np.testing.assert_allclose(next_obs, obs + expected[:, :2], atol=atol)
        np.testing.assert_allclose(reward, expected[:, 2], atol=atol)
        np.testing.assert_array_equal(info["member"], member)
    assert not np.allclose(next_obs, obs + expected[:, :2], atol=1e-6)  # the stochastic draw added noise
    # member=None: a random elite per row; here the only elite is member 1.
    state = state.replace(elites=jnp.array([1], jnp.int32))
    next_obs, reward, info = E.sample_step(state, obs, action, jax.random.PRNGKey(2), deterministic=True)
    np.testing.assert_array_equal(info["member"], 1)
    np.testing.assert_allclose(reward, -3.0, atol=1e-6)
    # An int is broadcast; out-of-range indices are refused outside jit.
    _, reward, _ = E.sample_step(state, obs, action, jax.random.PRNGKey(2), member=0, deterministic=True)
    np.testing.assert_allclose(reward, 3.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"member indices must be in \[0, 2\)"):
        E.sample_step(state, obs, action, jax.random.PRNGKey(2), member=jnp.array([0, 2, 0, 0, 0, 0]))


def test_random_elites_and_per_member_layout(mbpo):
    state, _ = mbpo
    obs, act = jnp.asarray(DATA["observations"][:256]), jnp.asarray(DATA["actions"][:256])
    _, _, info = E.sample_step(state, obs, act, jax.random.PRNGKey(0))
    drawn = set(np.asarray(info["member"]).tolist())
    assert drawn == set(np.asarray(state.elites).tolist())  # every elite drawn, nothing else
    # predict_per_member on a member-major layout equals predict + gather.
    mean, logvar = E.predict(state, obs, act)
    rows = obs.reshape(4, 64, S), act.reshape(4, 64, A)
    pm_mean, pm_logvar = E.predict_per_member(state, *rows)
    np.testing.assert_allclose(pm_mean, mean.reshape(4, 4, 64, S + 1)[jnp.arange(4), jnp.arange(4)], atol=1e-5)
    np.testing.assert_allclose(pm_logvar, logvar.reshape(4, 4, 64, S + 1)[jnp.arange(4), jnp.arange(4)], atol=1e-5)


def test_disagreement(mbpo):
    state, _ = mbpo
    obs, act = jnp.asarray(DATA["observations"][:64]), jnp.asarray(DATA["actions"][:64])
    far = 5.0 * obs, 5.0 * act
    for kind in E.DISAGREEMENTS:
        u = E.disagreement(state, obs, act, kind)
        assert u.shape == (64,) and np.all(np.asarray(u) >= 0)
    # Members disagree more away from the data than on it.
    assert np.mean(E.disagreement(state, *far)) > 3 * np.mean(E.disagreement(state, obs, act))
    # max_deviation by hand: max over elites of the L2 deviation from the elites' mean (network units).
    mean, _ = E.predict(state, obs, act)
    elite = np.asarray(mean)[np.asarray(state.elites)]
    by_hand = np.max(np.linalg.norm(elite - elite.mean(0), axis=-1), axis=0)
    np.testing.assert_allclose(E.disagreement(state, obs, act), by_hand, rtol=1e-4, atol=1e-6)
    # Identical members agree exactly.
    same = state.replace(params=jax.tree.map(lambda p: jnp.broadcast_to(p[:1], p.shape), state.params))
    for kind in ("max_deviation", "std"):
        np.testing.assert_allclose(E.disagreement(same, obs, act, kind), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown disagreement"):
        E.disagreement(state, obs, act, "variance")


# ------------------------------------------------------------------------------------------------
# Loss and log-variance bounds


def softplus(x):
    return np.logaddexp(0.0, x)


def test_loss_matches_hand_computation():
    config = E.EnsembleConfig(num_members=2, num_elites=1, hidden=(3,), weight_decays=(0.1, 0.2))
    state = E.init(jax.random.PRNGKey(0), 1, 1, config)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), state.params)
    params["max_logvar"] = jnp.array([[0.5, 0.2], [0.1, 0.3]])
    params["min_logvar"] = jnp.array([[-1.0, -2.0], [-0.5, -3.0]])
    x = rng.normal(size=(2, 5, 2)).astype(np.float32)
    y = rng.normal(size=(2, 5, 2)).astype(np.float32)
    total, aux = E.loss(params, config, jnp.asarray(x), jnp.asarray(y))

    p = jax.tree.map(np.asarray, params)
    expected_nll, nll_from_density = [], []
    for m in range(2):
        h = x[m] @ p["net"]["hidden_0"]["kernel"][m] + p["net"]["hidden_0"]["bias"][m]
        h = h / (1.0 + np.exp(-h))  # swish
        out = h @ p["net"]["out"]["kernel"][m] + p["net"]["out"]["bias"][m]
        mu, raw = out[:, :2], out[:, 2:]
        hi, lo = p["max_logvar"][m], p["min_logvar"][m]
        logvar = lo + softplus((hi - softplus(hi - raw)) - lo)
        expected_nll.append(np.mean((y[m] - mu) ** 2 * np.exp(-logvar) + logvar))
        # The same from the Gaussian density: 2 * mean(-log N(y; mu, e^l)) - log(2 pi).
        neg_log_density = 0.5 * np.log(2 * np.pi) + 0.5 * logvar + 0.5 * (y[m] - mu) ** 2 / np.exp(logvar)
        nll_from_density.append(2 * np.mean(neg_log_density) - np.log(2 * np.pi))
    bound = 0.01 * (p["max_logvar"].sum() - p["min_logvar"].sum())
    decay = (0.1 * 0.5 * np.sum(p["net"]["hidden_0"]["kernel"] ** 2)
             + 0.2 * 0.5 * np.sum(p["net"]["out"]["kernel"] ** 2))
    np.testing.assert_allclose(aux["nll"], expected_nll, rtol=1e-5)
    np.testing.assert_allclose(aux["nll"], nll_from_density, rtol=1e-5)
    np.testing.assert_allclose(aux["bound"], bound, rtol=1e-5)
    np.testing.assert_allclose(aux["decay"], decay, rtol=1e-5)
    np.testing.assert_allclose(total, sum(expected_nll) + bound + decay, rtol=1e-5)
    # AdamW: the decay is the optimizer's, not the loss's; fixed bounds: no bound term, no gradient.
    fixed = dataclasses.replace(config, optimizer="adamw", learn_logvar_bounds=False)
    total_fixed, _ = E.loss(params, fixed, jnp.asarray(x), jnp.asarray(y))
    np.testing.assert_allclose(total_fixed, sum(expected_nll), rtol=1e-5)
    grads = jax.grad(lambda q: E.loss(q, fixed, jnp.asarray(x), jnp.asarray(y))[0])(params)
    assert np.all(np.asarray(grads["max_logvar"]) == 0) and np.all(np.asarray(grads["min_logvar"]) == 0)


def test_logvar_within_soft_bounds(mbpo, neubay):
    obs, act = 100.0 * DATA["observations"][:64], 100.0 * DATA["actions"][:64]  # far outside the data
    for state, _ in (mbpo, neubay):
        _, logvar = E.predict(state, obs, act)
        network_logvar = np.asarray(logvar) - 2 * np.log(np.asarray(state.target_std))  # the clamped one
        hi = np.asarray(state.params["max_logvar"])[:, None, :]
        lo = np.asarray(state.params["min_logvar"])[:, None, :]
        # The soft clamp exceeds a bound by at most log(1 + e^{-(hi - lo)}) ~ e^{-(hi - lo)}.
        slack = np.log1p(np.exp(-(hi - lo))) + 1e-5
        assert np.all(network_logvar <= hi + slack) and np.all(network_logvar >= lo - 1e-5)
    raw = jnp.array([-1e4, -30.0, -10.0, 0.0, 0.5, 30.0, 1e4])
    clamped = np.asarray(E.soft_clamp(raw, -10.0, 0.5))
    assert np.all(np.isfinite(clamped)) and np.all(np.diff(clamped) > -1e-7)
    assert clamped[0] >= -10.0 and clamped[-1] <= 0.5 + 3e-5


# ------------------------------------------------------------------------------------------------
# jit / vmap


def test_predict_jits_and_vmaps(mbpo):
    state, _ = mbpo
    obs, act = jnp.asarray(DATA["observations"][:40]), jnp.asarray(DATA["actions"][:40])
    mean, logvar = E.predict(state, obs, act)
    assert mean.shape == logvar.shape == (4, 40, S + 1)
    jit_mean, jit_logvar = jax.jit(E.predict)(state, obs, act)
    np.testing.assert_allclose(jit_mean, mean, atol=1e-5)
    np.testing.assert_allclose(jit_logvar, logvar, atol=1e-5)
    # vmap over a leading time axis of the inputs.
    v_mean, _ = jax.vmap(E.predict, in_axes=(None, 0, 0))(state, obs.reshape(4, 10, S), act.reshape(4, 10, A))
    np.testing.assert_allclose(v_mean, mean.reshape(4, 4, 10, S + 1).transpose(1, 0, 2, 3), atol=1e-5)
    # vmap over seeds: ensembles made with vmap(init), one program predicting for all of them.
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    seeds = jax.jit(jax.vmap(functools.partial(E.init, obs_dim=S, action_dim=A, config=SMALL)))(keys)
    s_mean, _ = jax.jit(jax.vmap(E.predict, in_axes=(0, None, None)))(seeds, obs, act)
    one = E.init(keys[1], S, A, SMALL)
    np.testing.assert_allclose(s_mean[1], E.predict(one, obs, act)[0], atol=1e-5)
    # sample_step under jit with a traced member array.
    step = jax.jit(E.sample_step, static_argnames=("deterministic",))
    next_obs, reward, _ = step(state, obs, act, jax.random.PRNGKey(0), jnp.zeros(40, jnp.int32), deterministic=True)
    np.testing.assert_allclose(next_obs, mean[0, :, :S], atol=1e-5)
    np.testing.assert_allclose(reward, mean[0, :, S], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Saving and loading


def test_save_load_round_trip(mbpo, tmp_path):
    state, _ = mbpo
    path = E.save(tmp_path / "model", state)
    loaded = E.load(path, SMALL, S, A)
    assert loaded.config == state.config
    assert leaves_equal(loaded, state)
    obs, act = DATA["observations"][:8], DATA["actions"][:8]
    np.testing.assert_array_equal(E.predict(loaded, obs, act)[0], E.predict(state, obs, act)[0])
    # Saving again replaces the model atomically; nothing temporary is left beside it.
    changed = state.replace(holdout_mse=state.holdout_mse + 1.0)
    E.save(path, changed)
    assert leaves_equal(E.load(path, SMALL, S, A), changed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # Training-only fields may differ; another num_elites re-chooses the elites from the saved MSE.
    other = E.load(path, dataclasses.replace(SMALL, lr=3e-4, num_elites=2), S, A)
    assert np.array_equal(other.elites, state.elites[:2]) and other.config.lr == 3e-4


@pytest.mark.parametrize("change, dims, message", [
    ({"num_members": 3}, (S, A), "num_members 4 != 3"),
    ({"hidden": (64, 64)}, (S, A), r"hidden \[32, 32\] != \[64, 64\]"),
    ({}, (5, A), "obs_dim 3 != 5"),
    ({}, (S, 2), "action_dim 3 != 2"),
    ({"layer_norm": True}, (S, A), "layer_norm False != True"),
    ({"optimizer": "adamw"}, (S, A), "optimizer"),
])
def test_load_other_architecture_names_file_and_mismatch(tmp_path, change, dims, message):
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL)
    path = E.save(tmp_path / "model", state)
    with pytest.raises(ValueError, match=message) as error:
        E.load(path, dataclasses.replace(SMALL, **change), *dims)
    assert str(path) in str(error.value) and "4 members x hidden (32, 32)" in str(error.value)


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dynamics model at"):
        E.load(tmp_path / "nowhere", SMALL, S, A)
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL)
    path = E.save(tmp_path / "model", state)
    meta = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"dynamics model at {path} is incomplete or corrupt"):
        E.load(path, SMALL, S, A)
    (path / "model.json").write_text(json.dumps(meta))
    for item in (path / "arrays").iterdir():  # the arrays gone: corrupt, named
        if item.is_dir():
            import shutil
            shutil.rmtree(item)
        else:
            item.unlink()
    with pytest.raises(ValueError, match=f"dynamics model at {path} is incomplete or corrupt"):
        E.load(path, SMALL, S, A)
    # save never overwrites a directory that is not a model.
    other = tmp_path / "results"
    other.mkdir()
    (other / "keep.txt").write_text("data")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        E.save(other, state)
    assert (other / "keep.txt").read_text() == "data"


def test_config_round_trips_through_model_json(tmp_path):
    path = E.save(tmp_path / "m", E.init(jax.random.PRNGKey(0), S, A, SMALL_NEUBAY))
    saved = json.loads((path / "model.json").read_text())["config"]
    assert E.EnsembleConfig(**saved) == SMALL_NEUBAY
    assert math.isinf(float(E.load(path, SMALL_NEUBAY, S, A).holdout_mse[0]))  # untrained: inf


def test_ravl_holds_out_20_percent_uncapped_and_neubay_decays_5e_5():
    from agents import neubay, ravl

    assert ravl.model_config(ravl.Config()).max_holdout is None
    assert ravl.model_config(ravl.Config()).holdout_fraction == 0.2
    assert neubay.model_config(neubay.Config()).adamw_weight_decay == 5e-5


# ------------------------------------------------------------------------------------------------
# RAVL's schedule: a minimum of epochs, one learning-rate cut at the first plateau before it, a cap


def scripted_train(monkeypatch, config, improving_epochs, max_epochs=None):
    """E.train with `_epoch` replaced by a script: some member improves at the epochs in `improving_epochs`
    (1-based), none at the others. Returns (history, the lr_scale each epoch was called with)."""
    scales = []

    def fake_epoch(params, opt_state, best_params, best_mse, *args):
        lr_scale = args[-2]                     # (x_train, y_train, x_holdout, y_holdout, rows, key, lr_scale, config)
        scales.append(float(lr_scale))
        improved = len(scales) in improving_epochs
        metrics = {"train_loss": jnp.float32(0.0), "holdout_mse": jnp.ones(config.num_members),
                   "num_improved": jnp.int32(1 if improved else 0)}
        return params, opt_state, best_params, best_mse, metrics

    # Only the host-side schedule runs: nothing here compiles for the config (it is static in the jitted parts).
    monkeypatch.setattr(E, "_epoch", fake_epoch)
    monkeypatch.setattr(E, "fit_normalizers", lambda state, *arrays: state)
    monkeypatch.setattr(E, "_member_mse", lambda params, config, x, y: jnp.ones(config.num_members))
    _, history = E.train(SCRIPTED_STATE.replace(config=config), make_data(200), jax.random.PRNGKey(1),
                         max_epochs=max_epochs)
    return history, scales


SCRIPTED_STATE = E.init(jax.random.PRNGKey(0), S, A, SMALL)


def test_training_cannot_stop_before_min_epochs_and_cuts_the_lr_once(monkeypatch):
    """Improvement at epochs 1-3, then none: the first plateau (epochs 4-8) comes before min_epochs = 20, so the
    lr drops x0.3 for epoch 9 on and the count restarts; the second plateau (9-13) is before the minimum too and
    changes nothing; the first epoch past the minimum that ends a plateau is 21 (the authors' i >= min_epochs
    on the 0-based i = 20)."""
    config = dataclasses.replace(SMALL, max_epochs=None, min_epochs=20, plateau_lr_factor=0.3)
    history, scales = scripted_train(monkeypatch, config, {1, 2, 3})
    assert len(history) == 21
    assert scales == [1.0] * 8 + [pytest.approx(0.3)] * 13
    assert [r["epoch"] for r in history if r["lr_lowered"]] == [8]
    assert [r["lr"] for r in history] == [pytest.approx(1e-3)] * 8 + [pytest.approx(3e-4)] * 13
    assert [r["epochs_since_improvement"] for r in history][3:] == [1, 2, 3, 4, 5] + list(range(1, 14))


def test_min_epochs_without_a_factor_and_the_cap(monkeypatch):
    # No factor: the plateau before the minimum changes nothing, the lr stays; stop at epoch min_epochs + 1.
    config = dataclasses.replace(SMALL, max_epochs=None, min_epochs=12, plateau_lr_factor=None)
    history, scales = scripted_train(monkeypatch, config, {1})
    assert len(history) == 13 and scales == [1.0] * 13
    # The cap wins over the minimum (RAVL's 2000, or --model-max-epochs to cut a slow CPU run short).
    config = dataclasses.replace(SMALL, max_epochs=7, min_epochs=350, plateau_lr_factor=0.3)
    history, scales = scripted_train(monkeypatch, config, {1})
    assert len(history) == 7 and scales == [1.0] * 6 + [pytest.approx(0.3)]   # plateau at epoch 6: one cut
    history, _ = scripted_train(monkeypatch, config, set(), max_epochs=3)
    assert len(history) == 3
    # min_epochs = 0 is MBPO's and NEUBAY's rule: the first plateau stops, the factor is never used.
    config = dataclasses.replace(SMALL, max_epochs=None, min_epochs=0, plateau_lr_factor=0.3)
    history, scales = scripted_train(monkeypatch, config, {1, 2})
    assert len(history) == 7 and scales == [1.0] * 7


def test_lr_scale_scales_the_parameter_steps():
    """The cut reaches the optimizer: one epoch from the same state and key with lr_scale 0.3 moves every
    parameter by 0.3 x the step of lr_scale 1 (Adam's step is linear in the lr)."""
    state = E.init(jax.random.PRNGKey(0), S, A, SMALL)
    x = E.normalize_inputs(state, jnp.asarray(DATA["observations"]), jnp.asarray(DATA["actions"]))
    y = E.normalize_targets(state, jnp.asarray(DATA["observations"]), jnp.asarray(DATA["next_observations"]),
                            jnp.asarray(DATA["rewards"]))
    rows = jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32), (SMALL.num_members, 256))
    mse = jnp.full(SMALL.num_members, jnp.inf)
    single = dataclasses.replace(SMALL, batch_size=256)      # one minibatch: one Adam step, |step| = lr at step 1
    moved = {}
    for scale in (1.0, 0.3):
        params, *_ = E._epoch(state.params, state.opt_state, state.params, mse, x[:256], y[:256], x[:64], y[:64],
                              rows, jax.random.PRNGKey(2), jnp.float32(scale), single)
        moved[scale] = jax.tree.map(lambda a, b: np.asarray(a - b), params, state.params)
    for a, b in zip(jax.tree.leaves(moved[0.3]), jax.tree.leaves(moved[1.0])):
        np.testing.assert_allclose(a, 0.3 * b, rtol=1e-4, atol=2e-6)   # ulp of min_logvar = -10
    assert max(float(np.abs(b).max()) for b in jax.tree.leaves(moved[1.0])) == pytest.approx(SMALL.lr, rel=1e-3)


def test_training_on_noise_cuts_the_lr_then_stops_after_the_minimum():
    """Pure-noise targets never improve by 1%: epochs 1-5 are the first plateau (before min_epochs = 7), the lr
    is cut x0.3 for epochs 6 on and the count restarts; epochs 6-10 are the next plateau, past the minimum."""
    rng = np.random.default_rng(4)
    noise = {**DATA, "next_observations": DATA["observations"] + 10 * rng.normal(size=(N, S)).astype(np.float32),
             "rewards": 10 * rng.normal(size=N).astype(np.float32)}
    config = dataclasses.replace(SMALL, max_epochs=None, min_epochs=7, plateau_lr_factor=0.3)
    _, history = E.train(E.init(jax.random.PRNGKey(0), S, A, config), noise, jax.random.PRNGKey(1))
    assert [r["epochs_since_improvement"] for r in history] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert [r["lr"] for r in history] == [pytest.approx(1e-3)] * 5 + [pytest.approx(3e-4)] * 5


def test_ravl_schedule_and_input_clip_are_the_authors():
    from agents import neubay, ravl

    for config in (E.RAVL_CONFIG, ravl.model_config(ravl.Config())):
        assert (config.min_epochs, config.plateau_lr_factor, config.max_epochs, config.input_clip) == (350, 0.3, 2000,
                                                                                                      10.0)
    neubay_config = neubay.model_config(neubay.Config())
    assert (neubay_config.min_epochs, neubay_config.plateau_lr_factor, neubay_config.max_epochs,
            neubay_config.input_clip) == (0, None, None, None)
    # Standardized inputs beyond +-10 are clipped (RAVL's MeanStdevFilter); without input_clip they are not.
    state = E.init(jax.random.PRNGKey(0), 1, 1, dataclasses.replace(SMALL, input_clip=10.0))
    x = E.normalize_inputs(state, jnp.array([[-30.0], [3.0]]), jnp.array([[12.0], [-10.5]]))
    np.testing.assert_array_equal(np.asarray(x), [[-10.0, 10.0], [3.0, -10.0]])
    plain = E.init(jax.random.PRNGKey(0), 1, 1, SMALL)
    np.testing.assert_array_equal(np.asarray(E.normalize_inputs(plain, jnp.array([[-30.0]]), jnp.array([[12.0]]))),
                                  [[-30.0, 12.0]])
