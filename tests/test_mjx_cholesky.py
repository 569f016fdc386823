"""envs/mjx_cholesky.py: MJX steps traced on CPU hold no LAPACK custom call, and the jnp factorization
and solves equal LAPACK's.

Why: batched LAPACK custom calls block XLA:CPU's intra-op threads while they wait for their own
pieces; RAVL's Hopper rollouts deadlocked on a 2-core machine that way (5 runs of 5). These tests
check the lowered programs instead of waiting for a hang, which no test could catch reliably.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import pytest

from envs import mjx_cholesky, true_dynamics
from envs.mjx import make_playground


def custom_calls(hlo: str) -> list[str]:
    return re.findall(r"custom_call @(\w+)", hlo)   # StableHLO text: stablehlo.custom_call @target(...)


def test_true_dynamics_rollout_holds_no_custom_call_and_restores_jax_scipy():
    original = jax.scipy.linalg.cho_factor, jax.scipy.linalg.cho_solve
    dynamics = true_dynamics.make_true_dynamics("gym:Hopper-v5")

    def rollout(qpos, qvel, actions):
        states = jax.vmap(dynamics.state_from)(qpos, qvel)
        return jax.lax.scan(lambda s, a: jax.vmap(dynamics.step)(s, a)[:2], states, actions)[1]

    batch = 4
    qpos = jnp.tile(dynamics._template.qpos, (batch, 1))
    hlo = jax.jit(rollout).lower(qpos, jnp.zeros((batch, dynamics.nv)), jnp.zeros((2, batch, 3))).as_text()
    assert custom_calls(hlo) == []
    assert (jax.scipy.linalg.cho_factor, jax.scipy.linalg.cho_solve) == original
    # Without the swap, the same vmapped MJX step is LAPACK's (so the check above is not vacuous).
    from mujoco import mjx

    states = jax.vmap(dynamics.state_from)(qpos, jnp.zeros((batch, dynamics.nv)))
    plain = jax.jit(jax.vmap(lambda s: mjx.step(dynamics.model, s))).lower(states).as_text()
    assert any("potrf" in name for name in custom_calls(plain))


def test_playground_step_holds_no_custom_call():
    env = make_playground("CheetahRun")
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    lowered = jax.jit(jax.vmap(env.reset)).lower(keys)
    assert custom_calls(lowered.as_text()) == []
    states = jax.eval_shape(jax.vmap(env.reset), keys)
    hlo = jax.jit(jax.vmap(env.step)).lower(states, jnp.zeros((2, env.spec.action_dim))).as_text()
    assert custom_calls(hlo) == []


@pytest.mark.parametrize("n, scale", [(6, 1.0), (9, 1e-3)])
@pytest.mark.parametrize("lower", [False, True])
def test_factor_and_solve_equal_lapack(n, scale, lower):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, n)).astype(np.float32)
    a = (x @ x.T + n * np.eye(n, dtype=np.float32)) * scale
    factor, flag = mjx_cholesky.cho_factor(a, lower=lower)
    reference, _ = jax.scipy.linalg.cho_factor(a, lower=lower)
    reference = np.tril(reference) if lower else np.triu(reference)       # JAX leaves the other triangle
    assert flag == lower
    np.testing.assert_allclose(factor, reference, rtol=1e-5, atol=1e-6 * np.sqrt(scale))
    for b in (rng.normal(size=n), rng.normal(size=(n, 3))):
        solution = mjx_cholesky.cho_solve((factor, lower), b.astype(np.float32))
        np.testing.assert_allclose(solution, np.linalg.solve(a.astype(np.float64), b), rtol=1e-4, atol=1e-4 / scale)
    # Batched (as under vmap in MJX): the same per matrix.
    batch = np.stack([a, 2 * a])
    np.testing.assert_allclose(jax.vmap(mjx_cholesky.cholesky_lower)(batch)[1], np.sqrt(2) * np.tril(
        reference if lower else reference.T), rtol=1e-5, atol=1e-6)


def test_not_positive_definite_gives_nan():
    assert np.isnan(mjx_cholesky.cholesky_lower(-np.eye(3, dtype=np.float32))).any()
