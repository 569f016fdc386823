"""Recurrent cores (networks/recurrent.py): causality, carried state, step == sequence, the parallel scan against
a loop, LRU stability, resets inside a sequence, jit + vmap over seeds.

Small widths and few distinct shapes (each shape is one XLA compilation), so the file runs in seconds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks.recurrent import LRU, linear_scan, lru_lambda, make_core

B, T, D_IN, HIDDEN, N = 3, 12, 5, 16, 8
KINDS = ["lru", "gru"]
TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(0)


def normal(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def small_core(kind, **kwargs):
    if kind == "lru":
        kwargs.setdefault("state_dim", N)
    return make_core(kind, num_layers=2, hidden=HIDDEN, **kwargs)


@pytest.fixture(scope="module", params=KINDS)
def setup(request):
    """A small 2-layer core, its parameters, a batch of sequences, a non-zero state (so that the carried state
    matters), and the jitted init, apply and step."""
    core = small_core(request.param)
    init = jax.jit(core.init, static_argnums=1)
    params = init(jax.random.PRNGKey(0), D_IN)
    xs = normal(B, T, D_IN)
    state = tuple(0.5 * normal(*z.shape) for z in core.initial_state((B,)))
    return core, params, xs, state, jax.jit(core.apply), jax.jit(core.step), init


def assert_states_close(s1, s2):
    assert len(s1) == len(s2)
    for a, b in zip(s1, s2):
        np.testing.assert_allclose(a, b, **TOL)


def test_shapes_and_zero_initial_state(setup):
    core, params, xs, state, apply, *_ = setup
    ys, final = apply(params, xs, state)
    assert ys.shape == (B, T, HIDDEN) and core.hidden == HIDDEN
    assert all(s.shape == z.shape and s.dtype == jnp.float32 for s, z in zip(final, state))
    assert all(float(jnp.abs(z).max()) == 0.0 for z in core.initial_state((B,)))
    assert all(z.shape[:2] == (4, 2) for z in core.initial_state((4, 2)))


def test_causality(setup):
    """The output at t does not change when inputs after t change."""
    core, params, xs, state, apply, *_ = setup
    ys, _ = apply(params, xs, state)
    for t in (0, 4, T - 2):
        ys2, _ = apply(params, xs.at[:, t + 1:].set(3.0 * normal(B, T - t - 1, D_IN)), state)
        np.testing.assert_allclose(ys2[:, :t + 1], ys[:, :t + 1], rtol=1e-6, atol=1e-6)
        assert not np.allclose(ys2[:, t + 1:], ys[:, t + 1:])


def test_state_carry_over(setup):
    """A prefix, then the rest from the returned state == the whole sequence at once."""
    core, params, xs, state, apply, *_ = setup
    ys, final = apply(params, xs, state)
    k = T // 2
    ys1, mid = apply(params, xs[:, :k], state)
    ys2, final2 = apply(params, xs[:, k:], mid)
    np.testing.assert_allclose(jnp.concatenate([ys1, ys2], axis=1), ys, **TOL)
    assert_states_close(final2, final)


def test_step_equals_apply(setup):
    """A loop of `step` == `apply` on the whole sequence, without and with resets."""
    core, params, xs, state, apply, step, _ = setup
    resets = jnp.zeros((B, T), bool).at[0, T // 2].set(True).at[1, 0].set(True)
    for r in (jnp.zeros_like(resets), resets):
        ys, final = apply(params, xs, state, r)
        s, outs = state, []
        for t in range(T):
            y, s = step(params, xs[:, t], s, r[:, t])
            outs.append(y)
        np.testing.assert_allclose(jnp.stack(outs, axis=1), ys, **TOL)
        assert_states_close(s, final)


def test_resets_start_a_fresh_sequence(setup):
    """resets[t] = True: the outputs from t on equal those of a fresh sequence (zero state) starting at t."""
    core, params, xs, state, apply, *_ = setup
    k = T // 2
    resets = jnp.zeros((B, T), bool).at[0, k].set(True).at[2, 0].set(True)
    ys, final = apply(params, xs, state, resets)
    plain, _ = apply(params, xs, state, jnp.zeros_like(resets))
    # Sequence 0: before the reset as without it; from it on as a fresh start.
    np.testing.assert_allclose(ys[0, :k], plain[0, :k], **TOL)
    fresh, fresh_final = apply(params, xs[:, k:], core.initial_state((B,)))
    np.testing.assert_allclose(ys[0, k:], fresh[0], **TOL)
    assert_states_close([s[0] for s in final], [s[0] for s in fresh_final])
    # Sequence 1 (no reset) is untouched; sequence 2 (reset at 0) ignores the state it was given.
    np.testing.assert_allclose(ys[1], plain[1], **TOL)
    from_zero, _ = apply(params, xs, core.initial_state((B,)))
    np.testing.assert_allclose(ys[2], from_zero[2], **TOL)
    assert not np.allclose(plain[2], from_zero[2])


def with_lru_modulus(params, r):
    """The same parameters with every LRU eigenvalue at modulus r (and gamma = sqrt(1 - r^2)); GRU unchanged."""
    values = {"nu_log": np.log(-np.log(r)), "gamma_log": 0.5 * np.log1p(-r**2)}
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full_like(leaf, values[path[-1].key]) if path[-1].key in values else leaf, params)


def test_long_sequence_stays_finite(setup):
    """T = 1000 from the init, and (LRU) with every |lambda| = 0.9995, a memory of ~2000 steps."""
    core, params, _, _, apply, *_ = setup
    xs = normal(B, 1000, D_IN)
    for p in (params, with_lru_modulus(params, 0.9995)):
        ys, final = apply(p, xs, core.initial_state((B,)))
        assert bool(jnp.all(jnp.isfinite(ys))) and float(jnp.abs(ys).max()) < 1e3
        assert all(bool(jnp.all(jnp.isfinite(s))) for s in final)


def test_gradients_are_finite_and_reach_every_parameter(setup):
    """Gradients flow through the complex parameterization (nu_log, theta_log, gamma_log, B, C) and the GRU."""
    core, params, xs, state, *_ = setup
    grads = jax.jit(jax.grad(lambda p: jnp.mean(core.apply(p, xs, state)[0] ** 2)))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.abs(g).max()) > 0, path


def test_jit_vmap_over_seeds(setup):
    """Parameters of 2 seeds on a leading axis; one jitted, vmapped apply / step == each seed alone."""
    core, _, xs, state, apply, step, init = setup
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    # vmap(init) traces (checked by shape; compiling it would only cost time) and equals stacked inits.
    shapes = jax.eval_shape(jax.vmap(lambda k: core.init(k, D_IN)), keys)
    params = jax.tree.map(lambda *leaves: jnp.stack(leaves), init(keys[0], D_IN), init(keys[1], D_IN))
    assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, params)

    xs2 = jnp.stack([xs, xs[::-1]])                                      # one batch per seed
    state2 = jax.tree.map(lambda s: jnp.stack([s, -s]), state)
    ys, final = jax.jit(jax.vmap(core.apply))(params, xs2, state2)
    y1, s1 = jax.jit(jax.vmap(core.step))(params, xs2[:, :, 0], state2, jnp.zeros((2, B), bool))
    for i in range(2):
        p_i, s_i = jax.tree.map(lambda a: a[i], (params, state2))
        ys_i, final_i = apply(p_i, xs2[i], s_i)
        np.testing.assert_allclose(ys[i], ys_i, **TOL)
        assert_states_close([s[i] for s in final], final_i)
        y1_i, s1_i = step(p_i, xs2[i, :, 0], s_i, jnp.zeros(B, bool))
        np.testing.assert_allclose(y1[i], y1_i, **TOL)
        assert_states_close([s[i] for s in s1], s1_i)
    ys_other, _ = apply(jax.tree.map(lambda a: a[1], params), xs2[0], jax.tree.map(lambda a: a[0], state2))
    assert not np.allclose(ys[0], ys_other), "the two seeds must have different parameters"


# ---------------------------------------------------------------- LRU specifics

def test_linear_scan_equals_sequential_loop():
    """The parallel associative scan == the loop h_t = a_t h_{t-1} + b_t (float64 numpy), zeros in a included."""
    shape = (2, 37, 6)
    a = RNG.uniform(0.3, 1.0, shape) * np.exp(1j * RNG.uniform(0, 2 * np.pi, shape))
    a[0, 10] = 0.0
    b = RNG.normal(size=shape) + 1j * RNG.normal(size=shape)
    h0 = RNG.normal(size=(2, 6)) + 1j * RNG.normal(size=(2, 6))
    h = jax.jit(linear_scan)(*(jnp.asarray(v, jnp.complex64) for v in (a, b, h0)))
    ref, prev = np.zeros(shape, complex), h0
    for t in range(shape[1]):
        prev = a[:, t] * prev + b[:, t]
        ref[:, t] = prev
    np.testing.assert_allclose(np.asarray(h), ref, rtol=1e-4, atol=1e-4)


def test_lru_layer_matches_its_equations():
    """LRU.__call__ (parallel scan) against a float64 loop written from the raw parameters."""
    layer = LRU(width=HIDDEN, state_dim=N)
    p = dict(nu_log=np.log(-np.log(RNG.uniform(0.5, 0.99, N))), theta_log=np.log(RNG.uniform(0.01, 6.28, N)),
             gamma_log=RNG.normal(size=N) * 0.1, D=RNG.normal(size=HIDDEN),
             B_re=RNG.normal(size=(N, HIDDEN)), B_im=RNG.normal(size=(N, HIDDEN)),
             C_re=RNG.normal(size=(HIDDEN, N)), C_im=RNG.normal(size=(HIDDEN, N)))
    x = RNG.normal(size=(B, T, HIDDEN))
    h0 = RNG.normal(size=(B, N)) + 1j * RNG.normal(size=(B, N))
    params = {"params": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}
    ys, h_last = jax.jit(layer.apply)(params, jnp.asarray(x, jnp.float32), jnp.asarray(h0, jnp.complex64))

    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    Bm, C, gamma = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"], np.exp(p["gamma_log"])
    h, ref = h0, np.zeros((B, T, HIDDEN))
    for t in range(T):
        h = lam * h + gamma * (x[:, t] @ Bm.T)                    # h_t = lambda h_{t-1} + gamma (B x_t)
        ref[:, t] = (h @ C.T).real + p["D"] * x[:, t]             # y_t = Re(C h_t) + D x_t
    np.testing.assert_allclose(np.asarray(ys), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(h_last), h, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("r_min,r_max,max_phase", [(0.0, 0.9, 6.28), (0.9, 0.999, np.pi / 10), (0.0, 1.0, 6.28)])
def test_lru_init_is_stable_and_on_the_ring(r_min, r_max, max_phase):
    """|lambda| < 1 for every unit, in [r_min, r_max], phase in [0, max_phase], gamma = sqrt(1 - |lambda|^2)."""
    layer = LRU(width=HIDDEN, state_dim=512, r_min=r_min, r_max=r_max, max_phase=max_phase)
    p = jax.jit(lambda key: layer.init(key, method="lam"))(jax.random.PRNGKey(0))["params"]   # no forward pass
    mod = np.abs(np.asarray(lru_lambda(p["nu_log"], p["theta_log"])))
    assert np.all(mod < 1.0), "every unit must be stable at init"
    assert np.all(mod >= r_min - 1e-6) and np.all(mod <= r_max + 1e-6)
    assert np.ptp(mod) > 0.5 * (r_max - r_min)                             # spread over the ring
    phase = np.exp(np.asarray(p["theta_log"]))
    assert np.all(phase >= 0) and np.all(phase <= max_phase + 1e-6)
    assert np.all(np.isfinite(np.asarray(p["gamma_log"])))
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - mod**2), rtol=1e-3, atol=1e-6)


def test_input_projection_only_when_widths_differ():
    core = small_core("lru")

    def names(input_dim):
        return jax.eval_shape(lambda key: core.init(key, input_dim), jax.random.PRNGKey(0))["params"]

    assert "in_proj" in names(D_IN) and "in_proj" not in names(HIDDEN)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="lru, gru"):
        make_core("lstm")
    with pytest.raises(ValueError, match="r_min"):
        jax.eval_shape(lambda k: make_core("lru", 1, HIDDEN, r_min=0.95, r_max=0.9).init(k, HIDDEN),
                       jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="no options"):
        make_core("gru", 1, HIDDEN, r_max=0.9)
