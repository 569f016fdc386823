import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks.mlp import MLP, layer_norm, xavier_uniform
from networks.mrq import DeterministicPolicy, MRQEncoder, TwinQ
from networks.twohot import symexp, symexp_bins, symlog, two_hot, two_hot_cross_entropy, two_hot_decode


def test_symlog_symexp_are_inverse():
    x = jnp.array([-1e4, -3.5, -1e-3, 0.0, 2e-2, 7.0, 5e5])
    np.testing.assert_allclose(symexp(symlog(x)), x, rtol=1e-5)


def test_two_hot_round_trip_and_weights():
    bins = symexp_bins(-10, 10, 65)
    x = jnp.array([-1234.5, -3.2, -0.001, 0.0, 0.37, 1.0, 42.0, 9000.0])
    encoded = two_hot(x, bins)
    assert encoded.shape == (8, 65)
    np.testing.assert_allclose(encoded.sum(-1), 1.0, rtol=1e-6)
    assert int(jnp.max(jnp.sum(encoded > 0, axis=-1))) <= 2
    np.testing.assert_allclose(jnp.sum(encoded * bins, -1), x, rtol=1e-5, atol=1e-6)
    # Decoding logits that put all mass on the two-hot weights gives x back.
    np.testing.assert_allclose(two_hot_decode(jnp.log(encoded + 1e-30), bins), x, rtol=1e-4, atol=1e-5)


def test_two_hot_clips_outside_the_bins():
    bins = symexp_bins(-2, 2, 5)
    encoded = two_hot(jnp.array([1e9, -1e9]), bins)
    np.testing.assert_allclose(encoded[0, -1], 1.0)
    np.testing.assert_allclose(encoded[1, 0], 1.0)


def test_two_hot_cross_entropy_is_minimal_at_the_target():
    bins = symexp_bins()
    target = jnp.array([3.3])
    good = jnp.log(two_hot(target, bins) + 1e-12)
    bad = jnp.zeros((1, 65))
    assert float(two_hot_cross_entropy(good, target, bins)[0]) < float(two_hot_cross_entropy(bad, target, bins)[0])


def test_layer_norm_has_no_parameters_and_normalizes():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32)) * 5 + 3
    y = layer_norm(x)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(-1), 1.0, atol=1e-3)
    params = MLP((16, 16), 3).init(jax.random.PRNGKey(0), x)
    names = set(params["params"])
    assert names == {"hidden_0", "hidden_1", "out"}   # LayerNorm adds no scale/bias


def test_xavier_uniform_bound_and_zero_bias():
    params = MLP((256,), 128).init(jax.random.PRNGKey(1), jnp.zeros((1, 64)))["params"]
    kernel = params["hidden_0"]["kernel"]
    bound = np.sqrt(2.0) * np.sqrt(6.0 / (64 + 256))
    assert float(jnp.max(jnp.abs(kernel))) <= bound + 1e-6
    assert float(jnp.max(jnp.abs(kernel))) > 0.9 * bound
    assert float(jnp.max(jnp.abs(params["hidden_0"]["bias"]))) == 0.0
    assert xavier_uniform(1.0)(jax.random.PRNGKey(0), (10, 10)).shape == (10, 10)


def test_mrq_network_shapes():
    encoder = MRQEncoder(zs_dim=32, za_dim=8, zsa_dim=24, hidden_dim=16, num_bins=65)
    obs, action = jnp.zeros((5, 7)), jnp.zeros((5, 3))
    params = encoder.init(jax.random.PRNGKey(0), obs, action)
    zs = encoder.apply(params, obs, method=MRQEncoder.zs)
    zsa = encoder.apply(params, zs, action, method=MRQEncoder.zsa)
    done, next_zs, reward_logits = encoder.apply(params, zsa, method=MRQEncoder.model)
    assert zs.shape == (5, 32) and zsa.shape == (5, 24)
    assert done.shape == (5,) and next_zs.shape == (5, 32) and reward_logits.shape == (5, 65)
    q = TwinQ(hidden_dim=16)
    q_params = q.init(jax.random.PRNGKey(1), zsa)
    values = q.apply(q_params, zsa + 1.0)
    assert values.shape == (5, 2)
    assert not np.allclose(values[:, 0], values[:, 1])     # two independent critics
    policy = DeterministicPolicy(action_dim=3, hidden_dim=16)
    action, pre = policy.apply(policy.init(jax.random.PRNGKey(2), zs), zs + 1.0)
    assert action.shape == (5, 3)
    np.testing.assert_allclose(action, jnp.tanh(pre), rtol=1e-6)


def test_unknown_activation_names_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        MLP((4,), 1, act="gelu_fancy").init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))


def test_running_stats_merge_batches_exactly():
    """Folding three batches in equals the mean / std of all of them at once; the identity before any."""
    from networks.normalizer import init_stats, normalize, std, update_stats

    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=3.0, scale=2.0, size=(n, 4)).astype(np.float32) for n in (5, 17, 40)]
    stats = init_stats(4)
    x = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    np.testing.assert_array_equal(normalize(stats, x), x)
    for batch in batches:
        stats = update_stats(stats, jnp.asarray(batch).reshape(-1, 1, 4))   # leading dims are flattened
    everything = np.concatenate(batches)
    assert float(stats.count) == len(everything)
    np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std(stats), everything.std(0), rtol=1e-4)
    np.testing.assert_allclose(normalize(stats, x), (x - everything.mean(0)) / everything.std(0), rtol=1e-4)
