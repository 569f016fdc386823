"""GTR (reconstruction): the kernel penalty's shape, its limits, the anchors, and a run through the loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import gtr, ppo
from experiments.on_policy import OnPolicyLoop
from networks import distributions as dist_lib
from tests.test_ppo import TINY


def test_penalty_is_bounded_and_its_gradient_vanishes_far_from_the_anchor():
    sigma, beta = 0.1, 3.0
    d = jnp.linspace(0.0, 2.0, 401)
    p = gtr.penalty(d[None], jnp.ones(1), sigma, beta)
    assert float(p[0]) == 0.0 and float(jnp.max(p)) <= beta * sigma**2 + 1e-7
    assert float(p[-1]) == pytest.approx(beta * sigma**2, rel=1e-6)
    grad = jax.vmap(jax.grad(lambda x: gtr.penalty(x[None], jnp.ones(1), sigma, beta)))(d)
    peak = int(jnp.argmax(grad))
    assert float(d[peak]) == pytest.approx(sigma, abs=0.01)          # restoring force peaks at D = sigma ...
    assert float(grad[-1]) < 1e-6 * float(grad[peak])                # ... and vanishes far away: non-monotonic
    assert float(grad[peak // 2]) < float(grad[peak]) and float(grad[3 * peak]) < float(grad[peak])


def test_penalty_limits_in_sigma():
    d = jnp.array([0.01, 0.1, 0.5])
    beta = 2.0
    huge = gtr.penalty(d[None], jnp.ones(1), 1e3, beta)
    np.testing.assert_allclose(huge, beta * d**2 / 2, rtol=1e-3)     # sigma -> inf: quadratic trust region
    tiny = gtr.penalty(d[None], jnp.ones(1), 1e-4, beta)
    np.testing.assert_allclose(tiny, 0.0, atol=1e-7)                 # sigma -> 0: no penalty, the bare surrogate


@pytest.mark.parametrize("surrogate", ["unclipped", "clipped"])
def test_unit_scale_with_infinite_sigma_reduces_to_the_chosen_surrogate(surrogate):
    """--penalty-scale unit: as sigma -> inf the kernel is flat, the penalty and its gradient vanish, and GTR's
    policy loss is the bare surrogate -- value and gradient in the policy's parameters."""
    spec = envs.make("jax:PointMass").spec
    rng = np.random.default_rng(1)
    obs = jnp.asarray(rng.normal(size=(2, 3, spec.obs_dim)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(2, 3, spec.action_dim)), jnp.float32)
    advantages = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)

    def losses(sigma, params_shift):
        config = gtr.Config(**TINY, sigma=sigma, beta=5.0, surrogate=surrogate, penalty_scale="unit")
        state = gtr.init(jax.random.PRNGKey(0), spec, config)
        anchors = gtr.push_anchor(state.anchors, state.ppo.params.policy, state.ppo.obs_stats)
        old = gtr.anchor_dists(state.ppo, anchors, obs)
        old = jax.tree.map(lambda x: x[0], old)
        zeros = jnp.zeros((2, 3))
        batch = ppo.Batch(obs, u, dist_lib.log_prob(old, u), old, zeros, zeros.astype(bool), zeros.astype(bool),
                          zeros, jnp.zeros((2, spec.obs_dim)))

        def loss(policy):
            moved = jax.tree.map(lambda x: x + params_shift, policy)
            new = gtr.anchor_dists(state.ppo, gtr.Anchors(jax.tree.map(lambda x: x[None], moved),
                                                          anchors.obs_stats, anchors.filled), obs)
            new = jax.tree.map(lambda x: x[0], new)
            terms = ppo.PolicyTerms(new, dist_lib.log_prob(new, u) - batch.log_prob, advantages, batch)
            total, metrics = gtr.objective(terms, state.ppo, anchors)
            return total, metrics["gtr/surrogate"]

        (total, surrogate_value), grad_total = jax.value_and_grad(loss, has_aux=True)(state.ppo.params.policy)
        grad_surrogate = jax.grad(lambda p: loss(p)[1])(state.ppo.params.policy)
        return total, surrogate_value, grad_total, grad_surrogate

    total, surrogate_value, grad_total, grad_surrogate = losses(1e6, 0.05)
    assert float(total) == pytest.approx(float(surrogate_value), abs=1e-9)
    for a, b in zip(jax.tree.leaves(grad_total), jax.tree.leaves(grad_surrogate)):
        np.testing.assert_allclose(a, b, atol=1e-7)
    # A finite sigma does penalize the same move: the limit is not vacuous.
    total, surrogate_value, _, _ = losses(0.05, 0.05)
    assert float(total) > float(surrogate_value) + 1e-3


def test_unit_scale_penalty_is_bounded_by_beta():
    d = jnp.linspace(0.0, 5.0, 101)
    p = gtr.penalty(d[None], jnp.ones(1), 0.3, 2.0, "unit")
    assert float(jnp.max(p)) <= 2.0 and float(p[-1]) == pytest.approx(2.0, rel=1e-4)
    np.testing.assert_allclose(p, 0.3**-2 * gtr.penalty(d[None], jnp.ones(1), 0.3, 2.0), rtol=1e-5)


def _terms(rng):
    B, T = 2, 3
    old = dist_lib.TanhGaussian(jnp.asarray(rng.normal(size=(B, T, 2)), jnp.float32),
                                jnp.asarray(rng.uniform(0.5, 1.5, size=(B, T, 2)), jnp.float32))
    new = dist_lib.TanhGaussian(old.loc + 0.3, old.scale * 1.2)
    u = jnp.asarray(rng.normal(size=(B, T, 2)), jnp.float32)
    zeros = jnp.zeros((B, T))
    batch = ppo.Batch(jnp.asarray(rng.normal(size=(B, T, 3)), jnp.float32), u, dist_lib.log_prob(old, u), old,
                      zeros, zeros.astype(bool), zeros.astype(bool), zeros, jnp.zeros((B, 3)))
    log_ratio = dist_lib.log_prob(new, u) - dist_lib.log_prob(old, u)
    advantages = jnp.asarray(rng.normal(size=(B, T)), jnp.float32)
    return ppo.PolicyTerms(new, log_ratio, advantages, batch), old


def test_penalty_equals_hand_computation_and_one_anchor_mixture_equals_single():
    terms, old = _terms(np.random.default_rng(0))
    config = gtr.Config(**TINY, sigma=0.2, beta=5.0)
    anchors_dist = jax.tree.map(lambda x: x[None], old)                      # K = 1
    d = gtr.divergences(config, anchors_dist, terms)[0]
    # KL of diagonal Gaussians by hand.
    lo, so, ln, sn = (np.asarray(x, np.float64) for x in (old.loc, old.scale, terms.dist.loc, terms.dist.scale))
    kl = np.sum(np.log(sn / so) + (so**2 + (lo - ln) ** 2) / (2 * sn**2) - 0.5, axis=-1)
    np.testing.assert_allclose(d, kl, rtol=1e-5)
    by_hand = np.mean(5.0 * 0.2**2 * (1 - np.exp(-kl**2 / (2 * 0.2**2))))
    mixture = gtr.mixture_kernel(d[None], jnp.ones(1), 0.2)
    single = gtr.kernel(d, 0.2)
    np.testing.assert_allclose(mixture, single, rtol=1e-6)
    assert float(jnp.mean(gtr.penalty(d[None], jnp.ones(1), 0.2, 5.0))) == pytest.approx(by_hand, rel=1e-5)
    # Two identical anchors with any weights give the single anchor's penalty.
    np.testing.assert_allclose(gtr.penalty(jnp.stack([d, d]), jnp.array([0.3, 0.7]), 0.2, 5.0),
                               gtr.penalty(d[None], jnp.ones(1), 0.2, 5.0), rtol=1e-6)


def test_recency_weights():
    w = gtr.recency_weights(3, 0.5, jnp.int32(3))
    np.testing.assert_allclose(w, np.array([1, 0.5, 0.25]) / 1.75, rtol=1e-6)
    np.testing.assert_allclose(gtr.recency_weights(3, 0.5, jnp.int32(1)), [1, 0, 0])   # only one snapshot yet


def test_anchor_push_keeps_the_last_k_policies():
    spec = envs.make("jax:PointMass").spec
    state = gtr.init(jax.random.PRNGKey(0), spec, gtr.Config(**TINY, num_anchors=2))
    anchors = state.anchors
    for i in range(3):
        policy = jax.tree.map(lambda x: jnp.full_like(x, float(i)), state.ppo.params.policy)
        anchors = gtr.push_anchor(anchors, policy, state.ppo.obs_stats)
    leaf = jax.tree.leaves(anchors.policy)[0]
    assert float(leaf[0].ravel()[0]) == 2.0 and float(leaf[1].ravel()[0]) == 1.0 and int(anchors.filled) == 2


def test_gtr_trains_in_the_device_loop():
    config = gtr.Config(**TINY, num_anchors=3, divergence="sq_log_ratio", surrogate="clipped")
    loop = OnPolicyLoop(gtr, config, "jax:PointMass", num_seeds=2, seed=0)
    state = loop.init()
    state, metrics = loop.run(state, 0, 2 * loop.granularity)
    for name in ("gtr/divergence", "gtr/kernel", "gtr/beyond_sigma", "gtr/penalty", "policy/kl"):
        assert np.all(np.isfinite(metrics[name])), name
    assert np.all(metrics["gtr/kernel"] <= 1.0) and int(state["agent"].anchors.filled[0]) == 2


@pytest.mark.parametrize("change, message", [
    (dict(sigma=0.0), "--sigma must be > 0"), (dict(num_anchors=0), "--num-anchors (K) must be >= 1"),
    (dict(anchor_decay=0.0), "--anchor-decay must be in (0, 1]"),
    (dict(penalty_scale="cubic"), "--penalty-scale must be sigma_sq or unit"),
])
def test_bad_gtr_config(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        dataclasses.replace(gtr.Config(**TINY), **change).validate()
