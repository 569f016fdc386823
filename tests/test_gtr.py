"""GTR (reconstruction): the kernel penalty's shape, its limits, the anchors, and a run through the loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import gtr, ppo
from experiments.loops.on_policy import OnPolicyLoop
from networks import distributions as dist_lib
from tests.test_ppo import TINY


def test_penalty_is_bounded_and_its_force_peaks_at_sigma_in_distance():
    """Distance form: penalty(rho) = beta sigma^2 (1 - exp(-rho^2 / 2 sigma^2)), D = KL = rho^2 / 2."""
    sigma, beta = 0.1, 3.0
    rho = jnp.linspace(0.0, 2.0, 401)
    by_rho = lambda r: gtr.penalty((r**2 / 2)[None], jnp.ones(1), sigma, beta)
    p = by_rho(rho)
    assert float(p[0]) == 0.0 and float(jnp.max(p)) <= beta * sigma**2 + 1e-7
    assert float(p[-1]) == pytest.approx(beta * sigma**2, rel=1e-6)
    force = jax.vmap(jax.grad(by_rho))(rho)
    peak = int(jnp.argmax(force))
    assert float(rho[peak]) == pytest.approx(sigma, abs=0.01)        # restoring force peaks at rho = sigma ...
    assert float(force[-1]) < 1e-6 * float(force[peak])              # ... and vanishes far away: non-monotonic
    np.testing.assert_allclose(force[1:5] / rho[1:5], beta, rtol=0.03)     # rho <= sigma / 5: force = beta rho


def test_squared_form_is_bounded_and_its_gradient_vanishes_far_from_the_anchor():
    sigma, beta = 0.1, 3.0
    d = jnp.linspace(0.0, 2.0, 401)
    p = gtr.penalty(d[None], jnp.ones(1), sigma, beta, form="squared")
    assert float(p[0]) == 0.0 and float(jnp.max(p)) <= beta * sigma**2 + 1e-7
    assert float(p[-1]) == pytest.approx(beta * sigma**2, rel=1e-6)
    grad = jax.vmap(jax.grad(lambda x: gtr.penalty(x[None], jnp.ones(1), sigma, beta, form="squared")))(d)
    peak = int(jnp.argmax(grad))
    assert float(d[peak]) == pytest.approx(sigma, abs=0.01)          # restoring force peaks at D = sigma ...
    assert float(grad[-1]) < 1e-6 * float(grad[peak])                # ... and vanishes far away: non-monotonic
    assert float(grad[peak // 2]) < float(grad[peak]) and float(grad[3 * peak]) < float(grad[peak])


def test_penalty_limits_in_sigma():
    d = jnp.array([0.01, 0.1, 0.5])
    beta = 2.0
    huge = gtr.penalty(d[None], jnp.ones(1), 1e3, beta)
    np.testing.assert_allclose(huge, beta * d, rtol=1e-3)            # sigma -> inf: the KL penalty beta KL
    huge_sq = gtr.penalty(d[None], jnp.ones(1), 1e3, beta, divergence_kind="sq_log_ratio")
    np.testing.assert_allclose(huge_sq, beta * d / 2, rtol=1e-3)     # beta (log r)^2 / 2
    huge_squared = gtr.penalty(d[None], jnp.ones(1), 1e3, beta, form="squared")
    np.testing.assert_allclose(huge_squared, beta * d**2 / 2, rtol=1e-3)   # squared form: quartic trust region
    for form in ("distance", "squared"):
        tiny = gtr.penalty(d[None], jnp.ones(1), 1e-4, beta, form=form)
        np.testing.assert_allclose(tiny, 0.0, atol=1e-7)             # sigma -> 0: no penalty, the bare surrogate


@pytest.mark.parametrize("form, power", [("distance", 1), ("squared", 3)])
def test_restoring_force_near_the_anchor_is_linear_in_the_distance_form(form, power):
    """Finite differences of the penalty in the policy's mean shift delta (KL = delta^2 / 2 s^2): the force
    doubles when delta doubles in the distance form (linear), and grows 8x in the squared form (cubic)."""
    scale = jnp.full((1, 2), 0.5)
    anchor = dist_lib.TanhGaussian(jnp.zeros((1, 2)), scale)

    def penalty_at(delta):
        policy = dist_lib.TanhGaussian(jnp.array([[delta, 0.0]]), scale)
        d = dist_lib.kl_divergence(anchor, policy)
        return float(gtr.penalty(d[None], jnp.ones(1), 2.0, 10.0, form=form)[0])   # sigma >> the shift

    def force(delta, h=1e-3):
        return (penalty_at(delta + h) - penalty_at(delta - h)) / (2 * h)

    delta = 0.05
    assert force(2 * delta) / force(delta) == pytest.approx(2.0**power, rel=0.05)


def test_moment_matched_reference_is_the_mixtures_gaussian():
    anchors = dist_lib.TanhGaussian(jnp.array([[[1.0]], [[-1.0]], [[3.0]]]), jnp.array([[[1.0]], [[1.0]], [[2.0]]]))
    ref = gtr.moment_matched(anchors, jnp.array([0.5, 0.5, 0.0]))
    np.testing.assert_allclose(ref.loc, [[[0.0]]], atol=1e-7)
    np.testing.assert_allclose(ref.scale, [[[np.sqrt(2.0)]]], rtol=1e-6)      # E[s^2 + mu^2] - mean^2 = 1 + 1
    one = gtr.moment_matched(jax.tree.map(lambda x: x[:1], anchors), jnp.ones(1))
    np.testing.assert_allclose(one.loc, anchors.loc[:1])
    np.testing.assert_allclose(one.scale, anchors.scale[:1])


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
        config = gtr.Config(**TINY, sigma=sigma, beta=5.0, surrogate=surrogate, penalty_scale="unit", num_anchors=1)
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
    by_hand = np.mean(5.0 * 0.2**2 * (1 - np.exp(-kl / 0.2**2)))     # rho^2 = 2 KL
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


def test_anchors_persist_for_the_configured_period():
    config = gtr.Config(**TINY, num_anchors=2, anchor_period=3)
    env = envs.make("jax:PointMass", num_envs=config.num_envs)
    state = gtr.init(jax.random.PRNGKey(0), env.spec, config)
    env_state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), config.num_envs))
    step = jax.jit(lambda s, e, k: gtr.train_step(s, env, e, k))
    snapshots, policies = [], []
    for i in range(7):
        policies.append(jax.tree.leaves(state.ppo.params.policy)[0])
        state, env_state, _ = step(state, env_state, jax.random.PRNGKey(10 + i))
        snapshots.append(jax.tree.leaves(state.anchors.policy)[0])
    for i, newest_from in enumerate([0, 0, 0, 3, 3, 3, 6]):        # pushed at updates 0, 3, 6
        np.testing.assert_array_equal(snapshots[i][0], policies[newest_from])
    np.testing.assert_array_equal(snapshots[3][1], policies[0])    # the previous snapshot is kept (K = 2)
    assert not np.array_equal(policies[1], policies[0])            # the policy moved while the anchor stayed
    assert int(state.anchors.filled) == 2


def test_gtr_trains_in_the_device_loop():
    config = gtr.Config(**TINY, num_anchors=3, anchor_period=1, divergence="sq_log_ratio", surrogate="clipped",
                        anchor_reference="moment_matched")
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
    (dict(kernel_form="cubic"), "--kernel-form must be distance or squared"),
    (dict(anchor_reference="last"), "--anchor-reference must be kernel_mixture or moment_matched"),
    (dict(anchor_period=0), "--anchor-period must be >= 1"),
])
def test_bad_gtr_config(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        dataclasses.replace(gtr.Config(**TINY), **change).validate()
