"""SIGReg-PPO: the regularizer enters the loss exactly as lambda * SIGReg(z), only through the trunk; the agent
trains in the device loop with its diagnostics; bad flags fail cleanly."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from agents import ppo, sigreg
from experiments.loops.on_policy import OnPolicyLoop
from networks import regularizers
from tests.cli_utils import run_inprocess
from tests.test_ppo import TINY, TINY_FLAGS

SMALL = dict(**TINY, trunk_hidden=(16, 16), trunk_dim=8)
SHARED = dict(**SMALL, network="shared_trunk")   # the paper's network (the default is separate)
SPEC = envs.make("jax:PointMass").spec


def _batch(rng, B=4, T=3):
    obs = jnp.asarray(rng.normal(size=(B, T, SPEC.obs_dim)), jnp.float32)
    u = jnp.asarray(rng.normal(size=(B, T, SPEC.action_dim)), jnp.float32)
    zeros = jnp.zeros((B, T))
    behaviour = ppo.dist_lib.TanhGaussian(jnp.zeros((B, T, SPEC.action_dim)), jnp.ones((B, T, SPEC.action_dim)))
    return ppo.Batch(obs, u, ppo.dist_lib.log_prob(behaviour, u), behaviour, jnp.asarray(rng.normal(size=(B, T))),
                     zeros.astype(bool), zeros.astype(bool), zeros, jnp.asarray(rng.normal(size=(B, SPEC.obs_dim))))


def test_loss_is_ppo_plus_lambda_sigreg_of_the_trunk_representation():
    config = sigreg.Config(**SHARED, sigreg_coef=0.7)
    state = sigreg.init(jax.random.PRNGKey(0), SPEC, config)
    batch, key = _batch(np.random.default_rng(0)), jax.random.PRNGKey(3)
    auxiliary = lambda params, obs, k: sigreg.sigreg_loss(params, obs, k, state)
    plain, _ = ppo.loss(state.params, state, state.obs_stats, batch, key)
    total, metrics = ppo.loss(state.params, state, state.obs_stats, batch, key, auxiliary_loss=auxiliary)
    z = state.networks.representation(state.params, batch.obs.reshape(-1, SPEC.obs_dim))   # stats are fresh: x = obs
    statistic = regularizers.sigreg(z, jax.random.fold_in(key, 1))
    assert float(metrics["sigreg/statistic"]) == pytest.approx(float(statistic), rel=1e-5)
    assert float(total) == pytest.approx(float(plain) + 0.7 * float(statistic), rel=1e-5)
    # The regularizer's gradient reaches the trunk only, never the heads.
    grads = jax.grad(lambda p: sigreg.sigreg_loss(p, batch.obs, key, state)[0])(state.params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["policy_head"]))
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["value_head"]))
    assert any(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(grads["trunk"]))


def test_zero_coefficient_is_shared_trunk_ppo():
    config = sigreg.Config(**SHARED, sigreg_coef=0.0)
    state = sigreg.init(jax.random.PRNGKey(0), SPEC, config)
    batch, key = _batch(np.random.default_rng(1)), jax.random.PRNGKey(4)
    auxiliary = lambda params, obs, k: sigreg.sigreg_loss(params, obs, k, state)
    plain, _ = ppo.loss(state.params, state, state.obs_stats, batch, key)
    total, _ = ppo.loss(state.params, state, state.obs_stats, batch, key, auxiliary_loss=auxiliary)
    assert float(total) == float(plain)


def _one_train_step(agent, state):
    env = envs.make("jax:PointMass", num_envs=TINY["num_envs"])
    env_state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(5), TINY["num_envs"]))
    new_state, _, metrics = agent.train_step(state, env, env_state, jax.random.PRNGKey(6))
    return new_state, metrics


def _max_difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_zero_coefficient_train_step_is_shared_trunk_ppo_exactly():
    """The lambda = 0 arm of compare.py: one whole update (rollout, epochs) with the SIGReg term at weight 0 gives
    bit-identical parameters to PPO's update of the same shared-trunk network without the term."""
    state = sigreg.init(jax.random.PRNGKey(0), SPEC, sigreg.Config(**SHARED, sigreg_coef=0.0))
    with_term, metrics = _one_train_step(sigreg, state)
    without_term, _ = _one_train_step(ppo, state)
    assert "sigreg/statistic" in metrics
    assert _max_difference(with_term.params, without_term.params) == 0.0
    assert _max_difference(with_term.params, state.params) > 0.0          # and the update did move them


def test_separate_networks_at_zero_coefficient_are_ppo_exactly():
    """--network separate keeps PPO's networks: same initial parameters as PPO's, and at lambda = 0 the same
    update (to float32 rounding: XLA fuses the program with the zero-weighted term differently, 1.5e-8 measured)."""
    config = sigreg.Config(**SMALL, sigreg_coef=0.0, network="separate")
    state = sigreg.init(jax.random.PRNGKey(0), SPEC, config)
    ppo_state = ppo.init(jax.random.PRNGKey(0), SPEC, ppo.Config(**TINY))
    assert _max_difference(state.params, ppo_state.params) == 0.0
    assert _max_difference(_one_train_step(sigreg, state)[0].params, _one_train_step(ppo, ppo_state)[0].params) < 1e-6


@pytest.mark.parametrize("regularized, other", [("value", "policy"), ("policy", "value")])
def test_separate_networks_regularize_one_network_only(regularized, other):
    config = sigreg.Config(**SMALL, sigreg_coef=0.5, network="separate", regularized=regularized)
    state = sigreg.init(jax.random.PRNGKey(0), SPEC, config)
    batch, key = _batch(np.random.default_rng(2)), jax.random.PRNGKey(3)
    z = state.networks.representation(state.params, batch.obs.reshape(-1, SPEC.obs_dim))
    hidden = (TINY["value_hidden"] if regularized == "value" else TINY["policy_hidden"])[-1]
    assert z.shape == (batch.obs.shape[0] * batch.obs.shape[1], hidden)
    grads = jax.grad(lambda p: sigreg.sigreg_loss(p, batch.obs, key, state)[0])(state.params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(getattr(grads, other)))
    assert any(float(jnp.max(jnp.abs(g))) > 0.0 for g in jax.tree.leaves(getattr(grads, regularized)))


def test_trains_vmapped_with_diagnostics():
    loop = OnPolicyLoop(sigreg, sigreg.Config(**SHARED), "jax:PointMass", num_seeds=2, seed=0)
    state, metrics = loop.run(loop.init(), 0, 2 * loop.granularity)
    assert metrics["sigreg/statistic"].shape == (2,) and np.all(np.isfinite(metrics["sigreg/statistic"]))
    diagnostics = loop.diagnostics(state, 2 * loop.granularity)
    for name in ("trunk/dormant_0", "trunk/dormant_0.1", "trunk/srank", "trunk/isotropy_cond",
                 "trunk/isotropy_entropy"):
        assert diagnostics[name].shape == (2,), name
    assert np.all(diagnostics["trunk/srank"] >= 1) and np.all(diagnostics["trunk/srank"] <= 8)
    # PPO reports the same diagnostics for its two networks.
    loop = OnPolicyLoop(ppo, ppo.Config(**TINY), "jax:PointMass", num_seeds=1, seed=0)
    state, _ = loop.run(loop.init(), 0, loop.granularity)
    assert {"policy/srank", "value/srank", "value/dormant_0"} <= set(loop.diagnostics(state, 0))


@pytest.mark.parametrize("change, message", [
    (dict(sigreg_coef=-0.1), "--sigreg-coef (lambda) must be >= 0"),
    (dict(sigreg_directions=0), "num_directions"),
    (dict(sigreg_variant="lejepa", sigreg_points=1), "lejepa"),
    (dict(sigreg_variant="gauss"), "valid variants"),
    (dict(network="both"), "--network must be shared_trunk or separate"),
    (dict(regularized="trunk"), "--regularized must be value or policy"),
])
def test_bad_sigreg_config(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(sigreg.Config(**SHARED), **change).validate()


def test_bad_coefficient_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_inprocess("--agent", "sigreg", "--env", "jax:PointMass", *TINY_FLAGS, "--sigreg-coef", "-1",
                     "--run-dir", str(run_dir))
    assert result.returncode == 2
    assert "error: --sigreg-coef (lambda) must be >= 0, got -1.0" in result.stderr
    assert not run_dir.exists()


def test_sigreg_flag_on_sac_and_mrq():
    """--sigreg-coef (agents/sigreg_off_policy.py: sac_sigreg, mrq_sigreg) adds the same regularizer to SAC's critics
    (their last hidden pre-activation) and to MR.Q's state embedding zs, through the base agents' hooks: the loss
    grows by exactly coef x the statistic, and 0 leaves the agents as published."""
    import replay
    from agents import mrq, sac, sigreg_off_policy

    spec = envs.make("jax:PointMass").spec
    rng = np.random.default_rng(0)
    batch = replay.TransitionBatch(jnp.asarray(rng.normal(size=(32, 4)), jnp.float32), jnp.zeros((32, 2)),
                                   jnp.zeros(32), jnp.asarray(rng.normal(size=(32, 4)), jnp.float32), jnp.zeros(32))
    key = jax.random.PRNGKey(2)
    small = dict(critic_hidden=(16, 16), actor_hidden=(16, 16), buffer_size=100)
    plain_state = sac.init(jax.random.PRNGKey(0), spec, sac.Config(**small))
    plain, _ = sac.critic_loss(plain_state.critic.params, plain_state, batch, jnp.zeros(32), key)
    state = plain_state.replace(config=sigreg_off_policy.SACConfig(**small, sigreg_coef=0.5))
    total, metrics = sac.critic_loss(state.critic.params, state, batch, jnp.zeros(32), key,
                                     sigreg_off_policy.critic_penalty)
    assert float(metrics["critic/sigreg"]) > 0
    assert float(total) == pytest.approx(float(plain) + 0.5 * float(metrics["critic/sigreg"]), rel=1e-5)

    tiny = dict(batch_size=8, zs_dim=16, za_dim=8, zsa_dim=16, enc_hidden_dim=16, value_hidden_dim=16,
                policy_hidden_dim=16, buffer_size=100)
    state = mrq.init(jax.random.PRNGKey(0), spec, mrq.Config(**tiny))
    sub = replay.Subsequence(jnp.asarray(rng.normal(size=(8, 6, 4)), jnp.float32), jnp.zeros((8, 5, 2)),
                             jnp.zeros((8, 5)), jnp.zeros((8, 5)), jnp.ones((8, 5)))
    plain, _ = mrq.encoder_loss(state.encoder.params, state.encoder.target_params, sub, state, key)
    with_reg = state.replace(config=sigreg_off_policy.MRQConfig(**tiny, sigreg_coef=0.5))
    total, _ = mrq.encoder_loss(state.encoder.params, state.encoder.target_params, sub, with_reg, key,
                                sigreg_off_policy.encoder_penalty)
    zs = mrq._networks(with_reg.config, spec)[0].apply(state.encoder.params, sub.obs[:, 0],
                                                        method=mrq.MRQEncoder.zs)
    assert float(total) == pytest.approx(float(plain) + 0.5 * float(regularizers.sigreg(zs, key)), rel=1e-5)
