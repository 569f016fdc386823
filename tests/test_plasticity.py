"""GraMa / ReDo scores, masks, resets and plasticity diagnostics (networks/plasticity.py).

The reference network is networks/mlp.py's MLP 3 -> 4 -> 4 -> 1 (ReLU, no LayerNorm)
with two hand-killed hidden units: zero incoming weights and bias -1, so their
pre-activation is -1 for every input, their output and every gradient through them 0.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from networks.mlp import MLP, ensemble
from networks.plasticity import (
    dormant_ratio,
    feature_norm,
    grama_inactive_ratio,
    grama_scores,
    hidden_layers,
    layer_order,
    mlp_activations,
    mlp_initializer,
    neuron_masks,
    output_layer,
    plasticity_diagnostics,
    redo_scores,
    sown_activations,
    reset_neurons,
    reset_optimizer_moments,
    srank,
)

MODEL = MLP(hidden=(4, 4), out_dim=1, act="relu", use_layer_norm=False)
DEAD = {"hidden_0": 1, "hidden_1": 2}  # layer -> killed unit


def make_net(key):
    """Params of MODEL with DEAD units killed and every other hidden unit active on small inputs."""
    params = MODEL.init(key, jnp.zeros((1, 3)))["params"]
    params = jax.tree.map(lambda x: x, params)  # a fresh, mutable copy
    for name, unit in DEAD.items():
        layer = dict(params[name])
        kernel = jnp.abs(layer["kernel"])  # positive weights + bias 1: live units stay active
        layer["kernel"] = kernel.at[..., unit].set(0.0)
        layer["bias"] = jnp.ones_like(layer["bias"]).at[..., unit].set(-1.0)
        params[name] = layer
    return params


def data(key, batch=16):
    kx, ky = jax.random.split(key)
    return 0.1 * jax.random.normal(kx, (batch, 3)), jax.random.normal(ky, (batch, 1))


def loss(params, x, y):
    return jnp.mean((MODEL.apply({"params": params}, x) - y) ** 2)


def dead_masks(params):
    return {name: jnp.arange(params[name]["bias"].shape[-1]) == DEAD[name] for name in DEAD}


@pytest.fixture(scope="module")
def net():
    params = make_net(jax.random.key(0))
    x, y = data(jax.random.key(1))
    return params, x, y, jax.grad(loss)(params, x, y)


def test_layer_order_is_numeric_and_finds_the_output():
    params = make_net(jax.random.key(0))
    assert layer_order(params) == ["hidden_0", "hidden_1", "out"]
    assert output_layer(params) == "out" and hidden_layers(params) == ["hidden_0", "hidden_1"]
    fake = {f"Dense_{k}": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)} for k in (10, 2, 0, 1)}
    fake["LayerNorm_1"] = {"scale": jnp.ones(2), "bias": jnp.zeros(2)}
    assert layer_order(fake) == ["Dense_0", "Dense_1", "LayerNorm_1", "Dense_2", "Dense_10"]
    assert output_layer(fake) == "Dense_10"
    with pytest.raises(ValueError, match="cannot order layer 'encoder'"):
        layer_order({"encoder": {"kernel": jnp.zeros((2, 2))}})
    with pytest.raises(ValueError, match="single MLP"):
        layer_order({"critic": params})
    # Modules built out of forward order get numbers that do not chain: caught by the widths.
    swapped = {"Dense_0": {"kernel": jnp.zeros((4, 1))}, "Dense_1": {"kernel": jnp.zeros((3, 4))}}
    with pytest.raises(ValueError, match="pass an explicit order"):
        layer_order(swapped)
    assert output_layer(swapped, order=["Dense_1", "Dense_0"]) == "Dense_0"


def test_grama_and_redo_flag_exactly_the_dead_units(net):
    params, x, _, grads = net
    scores = grama_scores(grads)
    assert set(scores) == {"hidden_0", "hidden_1"}  # the output layer is never scored
    for name, unit in DEAD.items():
        s = np.asarray(scores[name])
        assert s[unit] == 0.0 and np.all(np.delete(s, unit) > 0)
        np.testing.assert_allclose(s.mean(), 1.0, rtol=1e-5)  # normalized by the layer mean
    expected = dead_masks(params)
    for masks in (neuron_masks(scores, "threshold", tau=0.0), neuron_masks(scores, "percentage", percentage=25)):
        for name in DEAD:
            np.testing.assert_array_equal(masks[name], expected[name])

    acts = mlp_activations(params, x, act="relu", use_layer_norm=False)
    # mlp_activations reproduces the module's forward pass.
    out = acts["hidden_1"] @ params["out"]["kernel"] + params["out"]["bias"]
    np.testing.assert_allclose(out, MODEL.apply({"params": params}, x), rtol=1e-5, atol=1e-6)
    # ... and the post-activations the MLP sows under "intermediates".
    _, state = MODEL.apply({"params": params}, x, mutable=["intermediates"])
    sown = sown_activations(state["intermediates"])
    assert set(sown) == set(acts)
    for name in acts:
        np.testing.assert_allclose(sown[name], acts[name], rtol=1e-6)
    masks = neuron_masks(redo_scores(acts), "threshold", tau=0.0)
    for name in DEAD:
        np.testing.assert_array_equal(masks[name], expected[name])
    assert float(dormant_ratio(acts, 0.0)) == 0.25
    assert float(grama_inactive_ratio(grads, 0.0)) == 0.25


def test_reset_changes_exactly_the_masked_columns_and_biases(net):
    params = net[0]
    masks = dead_masks(params)
    new, changed = reset_neurons(jax.random.key(2), params, masks, kernel_init=mlp_initializer(MODEL))
    assert jax.tree.structure(new) == jax.tree.structure(params) == jax.tree.structure(changed)
    for name, unit in DEAD.items():
        old_k, new_k = np.asarray(params[name]["kernel"]), np.asarray(new[name]["kernel"])
        np.testing.assert_array_equal(np.delete(new_k, unit, axis=1), np.delete(old_k, unit, axis=1))
        fan_in, fan_out = old_k.shape
        limit = math.sqrt(2.0) * math.sqrt(6.0 / (fan_in + fan_out))  # MLP's xavier-uniform, ReLU gain
        assert np.all(new_k[:, unit] != 0) and np.all(np.abs(new_k[:, unit]) <= limit)
        np.testing.assert_array_equal(np.delete(new[name]["bias"], unit), np.delete(params[name]["bias"], unit))
        assert new[name]["bias"][unit] == 0.0  # was -1
        expected_k = np.zeros_like(old_k, bool)
        expected_k[:, unit] = True
        np.testing.assert_array_equal(changed[name]["kernel"], expected_k)
        np.testing.assert_array_equal(changed[name]["bias"], masks[name])
    for leaf in ("kernel", "bias"):  # the output layer is untouched
        np.testing.assert_array_equal(new["out"][leaf], params["out"][leaf])
        assert not np.any(changed["out"][leaf])
    with pytest.raises(ValueError, match="output layer"):
        reset_neurons(jax.random.key(2), params, {"out": jnp.ones(1, bool)})


def test_redo_reset_zeroes_outgoing_weights_and_adam_moments(net):
    params = net[0]
    masks = dead_masks(params)
    new, changed = reset_neurons(jax.random.key(3), params, masks, zero_outgoing=True)
    # hidden_0 unit 1 feeds row 1 of hidden_1; hidden_1 unit 2 feeds row 2 of out.
    k1_old, k1 = np.asarray(params["hidden_1"]["kernel"]), np.asarray(new["hidden_1"]["kernel"])
    assert np.all(k1[1] == 0)
    keep = np.ones_like(k1, bool)
    keep[1] = False
    keep[:, 2] = False
    np.testing.assert_array_equal(k1[keep], k1_old[keep])
    np.testing.assert_array_equal(changed["hidden_1"]["kernel"], ~keep)
    out_old, out = np.asarray(params["out"]["kernel"]), np.asarray(new["out"]["kernel"])
    assert np.all(out[2] == 0) and np.all(out_old[2] != 0)
    np.testing.assert_array_equal(np.delete(out, 2, axis=0), np.delete(out_old, 2, axis=0))
    np.testing.assert_array_equal(new["out"]["bias"], params["out"]["bias"])

    # One optimizer over a tree holding this network under "mlp"; moments set to 1 to see the zeros.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    full = {"mlp": params, "other": {"w": jnp.ones(3)}}
    opt_state = jax.tree.map(jnp.ones_like, tx.init(full))
    opt_state = reset_optimizer_moments(opt_state, changed, path=("mlp",))
    adam = opt_state[1][0]
    assert isinstance(adam, optax.ScaleByAdamState) and int(adam.count) == 1
    for moment in (adam.mu, adam.nu):
        np.testing.assert_array_equal(moment["other"]["w"], 1.0)
        for v, c in zip(jax.tree.leaves(moment["mlp"]), jax.tree.leaves(changed)):
            np.testing.assert_array_equal(v, np.where(c, 0.0, 1.0))


def test_layer_norm_params_are_scored_and_reset():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):  # flax numbers modules in construction order
            x = nn.LayerNorm()(nn.Dense(4)(x))
            return nn.Dense(1)(nn.relu(x))

    net = Net()
    params = net.init(jax.random.key(0), jnp.zeros((1, 3)))["params"]
    assert layer_order(params) == ["Dense_0", "LayerNorm_0", "Dense_1"]
    x, y = data(jax.random.key(1), 8)
    grads = jax.grad(lambda p: jnp.mean((net.apply({"params": p}, x) - y) ** 2))(params)
    scores = grama_scores(grads)
    assert set(scores) == {"Dense_0", "LayerNorm_0"}
    np.testing.assert_allclose(scores["LayerNorm_0"] * jnp.mean(jnp.abs(grads["LayerNorm_0"]["scale"])),
                               jnp.abs(grads["LayerNorm_0"]["scale"]), rtol=1e-5)
    params = dict(params, LayerNorm_0={"scale": jnp.full(4, 2.0), "bias": jnp.full(4, 0.5)})
    mask = jnp.array([True, False, False, True])
    new, changed = reset_neurons(jax.random.key(2), params, {"LayerNorm_0": mask}, zero_outgoing=True,
                                 kernel_init=nn.initializers.lecun_normal())
    np.testing.assert_array_equal(new["LayerNorm_0"]["scale"], [1.0, 2.0, 2.0, 1.0])
    np.testing.assert_array_equal(new["LayerNorm_0"]["bias"], [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(new["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    np.testing.assert_array_equal(new["Dense_1"]["kernel"][1:3], params["Dense_1"]["kernel"][1:3])
    assert np.all(new["Dense_1"]["kernel"][np.array([0, 3])] == 0)
    np.testing.assert_array_equal(changed["LayerNorm_0"]["scale"], mask)


def test_ensemble_members_are_scored_and_reset_separately():
    model = ensemble(MLP, 2)((4,), 1, "relu", False)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3)))["params"]
    h0 = dict(params["hidden_0"])
    h0["kernel"] = jnp.abs(h0["kernel"]).at[0, :, 3].set(0.0)  # member 0, unit 3 dead
    h0["bias"] = jnp.ones((2, 4)).at[0, 3].set(-1.0)
    params = dict(params, hidden_0=h0)
    x = data(jax.random.key(1))[0]
    acts = mlp_activations(params, x, act="relu", use_layer_norm=False)
    assert acts["hidden_0"].shape == (2, 16, 4)
    _, state = model.apply({"params": params}, x, mutable=["intermediates"])
    np.testing.assert_allclose(sown_activations(state["intermediates"])["hidden_0"], acts["hidden_0"], rtol=1e-6)
    masks = neuron_masks(redo_scores(acts), "threshold", tau=0.0)
    np.testing.assert_array_equal(masks["hidden_0"], [[False, False, False, True], [False] * 4])
    new, _ = reset_neurons(jax.random.key(2), params, masks)
    k_old, k = np.asarray(h0["kernel"]), np.asarray(new["hidden_0"]["kernel"])
    np.testing.assert_array_equal(k[1], k_old[1])
    np.testing.assert_array_equal(k[0, :, :3], k_old[0, :, :3])
    limit = math.sqrt(2.0) * math.sqrt(6.0 / (3 + 4))  # per-member fans, not 2 * 3
    assert np.all(k[0, :, 3] != 0) and np.all(np.abs(k[0, :, 3]) <= limit)


def test_percentage_threshold_and_hybrid_masks():
    s = {"a": jnp.array([5.0, 1.0, 3.0, 2.0]), "b": jnp.array([[5.0, 1.0, 3.0, 2.0], [0.0, 9.0, 8.0, 7.0]])}
    m = neuron_masks(s, "percentage", percentage=50)
    np.testing.assert_array_equal(m["a"], [False, True, False, True])
    np.testing.assert_array_equal(m["b"], [[False, True, False, True], [True, False, False, True]])
    np.testing.assert_array_equal(neuron_masks(s, "percentage", percentage=25)["a"], [False, True, False, False])
    np.testing.assert_array_equal(neuron_masks(s, "percentage", percentage=10)["a"], [False] * 4)  # floor(0.4) = 0
    np.testing.assert_array_equal(neuron_masks(s, "percentage", percentage=100)["a"], [True] * 4)
    ties = neuron_masks({"t": jnp.ones(4)}, "percentage", percentage=50)["t"]
    np.testing.assert_array_equal(ties, [True, True, False, False])  # ties: lower index first

    h = {"h": jnp.array([0.05, 0.5, 3.0, 0.45])}
    np.testing.assert_array_equal(neuron_masks(h, "threshold", tau=0.1)["h"], [True, False, False, False])
    # hybrid: the threshold capped at p% (the authors' GradientReDo): at most floor(p% x width) resets
    np.testing.assert_array_equal(neuron_masks(h, "hybrid", tau=0.1, percentage=50)["h"], [True, False, False, False])
    np.testing.assert_array_equal(neuron_masks(h, "hybrid", tau=0.5, percentage=25)["h"], [True, False, False, False])
    np.testing.assert_array_equal(neuron_masks(h, "hybrid", tau=0.5, percentage=50)["h"], [True, False, False, True])
    # union: either rule (at least p%)
    np.testing.assert_array_equal(neuron_masks(h, "union", tau=0.1, percentage=50)["h"], [True, False, False, True])
    np.testing.assert_array_equal(neuron_masks(h, "union", tau=0.5, percentage=25)["h"], [True, True, False, True])


def test_he_uniform_reinit_has_the_authors_moments():
    """ReGraMa's re-initialization: kernels U(+-sqrt(6 / fan_in)) (variance 2 / fan_in), biases
    U(+-1 / sqrt(fan_in)) (variance 1 / (3 fan_in)); measured over a 512 x 2048 layer reset entirely."""
    from networks.plasticity import fan_in_uniform_bias

    fan_in, width = 512, 2048
    params = {"Dense_0": {"kernel": jnp.zeros((fan_in, width)), "bias": jnp.zeros(width)},
              "Dense_1": {"kernel": jnp.zeros((width, 1)), "bias": jnp.zeros(1)}}
    new, _ = reset_neurons(jax.random.key(0), params, {"Dense_0": jnp.ones(width, bool)},
                           kernel_init=jax.nn.initializers.he_uniform(), bias_init=fan_in_uniform_bias,
                           bias_init_takes_fan_in=True)
    kernel, bias = np.asarray(new["Dense_0"]["kernel"]), np.asarray(new["Dense_0"]["bias"])
    assert np.abs(kernel).max() <= np.sqrt(6 / fan_in) and np.abs(bias).max() <= 1 / np.sqrt(fan_in)
    assert kernel.var() == pytest.approx(2 / fan_in, rel=0.01) and abs(kernel.mean()) < 1e-3
    assert bias.var() == pytest.approx(1 / (3 * fan_in), rel=0.08)


def test_dormant_ratio_srank_and_feature_norm_by_hand():
    # Mean |h| per unit: layer a [0, 0.08, 0.92, 3.0] (mean 1), layer b [0.01, 0.01, 1.0, 2.98] (mean 1),
    # so the scores equal these numbers: tau 0 -> 1/8, 0.025 -> 3/8, 0.1 -> 4/8.
    acts = {"a": jnp.array([[0.0, 0.16, 0.92, 3.0], [0.0, 0.0, -0.92, 3.0]]),
            "b": jnp.array([[0.01, -0.02, 1.0, 2.98], [-0.01, 0.0, 1.0, 2.98]])}
    np.testing.assert_allclose(redo_scores(acts)["a"], [0.0, 0.08, 0.92, 3.0], rtol=1e-5)
    for tau, expected in ((0.0, 1 / 8), (0.025, 3 / 8), (0.1, 4 / 8)):
        assert float(dormant_ratio(acts, tau)) == expected

    # Φ = U diag(3, 1, 0.01) V^T: cumulative 3/4.01 = 0.748, 4/4.01 = 0.9975 >= 0.99 -> srank 2;
    # with delta 0.001 the threshold 0.999 needs all three.
    u, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (6, 3)))
    v, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (3, 3)))
    phi = u @ jnp.diag(jnp.array([3.0, 1.0, 0.01])) @ v.T
    assert int(srank(phi)) == 2
    assert int(srank(phi, delta=0.001)) == 3
    assert int(srank(jnp.eye(4))) == 4
    assert int(srank(jnp.zeros((5, 3)))) == 0
    np.testing.assert_allclose(feature_norm(jnp.array([[3.0, 4.0], [0.0, 0.0]])), 2.5)

    d = plasticity_diagnostics(activations=acts, features=phi)
    assert set(d) == {"dormant_0", "dormant_0.025", "dormant_0.1", "srank", "feature_norm"}


def pipeline(key, params, opt_state, x, y, tau, pct):
    """GraMa hybrid masks -> ReDo-style reset with moment reset -> diagnostics; tau and pct traced."""
    grads = jax.grad(loss)(params, x, y)
    masks = neuron_masks(grama_scores(grads), "hybrid", tau=tau, percentage=pct)
    new, changed = reset_neurons(key, params, masks, zero_outgoing=True, kernel_init=mlp_initializer(MODEL))
    opt_state = reset_optimizer_moments(opt_state, changed)
    acts = mlp_activations(params, x, act="relu", use_layer_norm=False)
    diag = plasticity_diagnostics(acts, grads, acts["hidden_1"])
    return new, opt_state, masks, diag


def test_jit_and_vmap_over_seeds_equal_separate_runs():
    tx = optax.adam(1e-3)
    keys = jax.random.split(jax.random.key(7), 2)
    params = jax.vmap(make_net)(keys)
    opt_state = jax.tree.map(jnp.ones_like, jax.vmap(tx.init)(params))
    x, y = jax.vmap(data)(jax.random.split(jax.random.key(8), 2))
    reset_keys = jax.random.split(jax.random.key(9), 2)
    batched = jax.jit(jax.vmap(pipeline, in_axes=(0, 0, 0, 0, 0, None, None)))(
        reset_keys, params, opt_state, x, y, 0.0, 25.0)
    single_run = jax.jit(pipeline)
    for i in range(2):
        one = jax.tree.map(lambda a: a[i], (params, opt_state, x, y))
        single = single_run(reset_keys[i], *one, 0.0, 25.0)
        jax.tree.map(lambda b, s: np.testing.assert_allclose(b[i], s, rtol=1e-5, atol=1e-6), batched, single)
    masks, diag = batched[2], batched[3]
    for name in DEAD:  # the dead units are found in both seeds
        assert np.all(masks[name][:, DEAD[name]])
    np.testing.assert_array_equal(diag["dormant_0"], [0.25, 0.25])
    np.testing.assert_array_equal(diag["grama_inactive_0"], [0.25, 0.25])


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="threshold", tau=1.5), r"tau must be in \[0, 1\]"),
    (dict(mode="threshold", tau=-0.1), r"tau must be in \[0, 1\]"),
    (dict(mode="percentage", percentage=0), r"percentage must be in \(0, 100\]"),
    (dict(mode="percentage", percentage=150), r"percentage must be in \(0, 100\]"),
    (dict(mode="hybrid", tau=0.1, percentage=-5), r"percentage must be in \(0, 100\]"),
    (dict(mode="hybrid", tau=0.1), r"needs a percentage in \(0, 100\]"),
    (dict(mode="threshold"), r"needs a threshold tau in \[0, 1\]"),
    (dict(mode="bottom", tau=0.1), "valid: threshold, percentage, hybrid, union"),
])
def test_bad_inputs_raise_with_the_valid_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        neuron_masks({"a": jnp.ones(4)}, **kwargs)


def test_bad_tau_in_diagnostics_raises():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dormant_ratio({"a": jnp.ones((2, 4))}, 2.0)
