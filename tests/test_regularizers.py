"""SIGReg and the isotropy diagnostic (networks/regularizers.py).

Reference values (default grids, see the module docstring): for an N(0, 1) sample the
expected statistic is ~0.85 / N ("rl") and ~1.05 ("lejepa", whatever N); a batch whose
projections are all 0 scores ~0.71 ("rl") and ~0.40 N ("lejepa").
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks.plasticity import srank
from networks.regularizers import epps_pulley, frequency_grid, isotropy, sigreg

N, D = 1024, 16
VARIANTS = ("rl", "lejepa")
KEY = jax.random.PRNGKey(0)
KZ, KDIR = jax.random.split(KEY)
# "Near zero" for a large N(0, I) batch: "rl" below 2 / N (its mean is 0.85 / N = 8.3e-4);
# "lejepa", a test statistic that does not shrink with N, below 3 (its mean is 1.05).
NULL_TOL = {"rl": 2.0 / N, "lejepa": 3.0}


@functools.partial(jax.jit, static_argnames=("variant", "num_directions"))
def stats(zs, key, variant="rl", num_directions=None):
    """sigreg of each batch in zs [B, N, D], all with the same directions (same key)."""
    return jax.vmap(lambda z: sigreg(z, key, variant=variant, num_directions=num_directions))(zs)


def gaussian(key, n=N, d=D):
    return jax.random.normal(key, (n, d))


def collapsed(key, n=N, d=D):
    """Rank 1: every sample on one random line, N(0, 1) along it."""
    ku, kg = jax.random.split(key)
    u = jax.random.normal(ku, (d,))
    return jax.random.normal(kg, (n, 1)) * (u / jnp.linalg.norm(u))


def anisotropic(key, scale=5.0, n=N, d=D):
    return gaussian(key, n, d).at[:, 0].multiply(scale)


def uniform(key, n=N, d=D):
    """Standardized uniform: mean 0, variance 1 per feature, the wrong shape."""
    return jax.random.uniform(key, (n, d), minval=-math.sqrt(3.0), maxval=math.sqrt(3.0))


PERM = jax.random.permutation(jax.random.PRNGKey(7), N)
BATCHES = {  # all [N, D]
    "gaussian": gaussian(KZ),
    "shifted_0.25": gaussian(KZ) + 0.25,
    "shifted_1": gaussian(KZ) + 1.0,
    "scaled_0.8": 0.8 * gaussian(KZ),
    "scaled_0.5": 0.5 * gaussian(KZ),
    "aniso_2": anisotropic(KZ, 2.0),
    "aniso_2_permuted": anisotropic(KZ, 2.0)[PERM],
    "aniso_5": anisotropic(KZ, 5.0),
    "half_rank": gaussian(KZ).at[:, D // 2:].set(0.0),
    "collapsed": collapsed(KZ),
}


@pytest.fixture(scope="module")
def scores():
    """{variant: {batch name: statistic}} with the same K directions for every batch."""
    zs = jnp.stack(list(BATCHES.values()))
    return {v: dict(zip(BATCHES, np.asarray(stats(zs, KDIR, v)).tolist())) for v in VARIANTS}


# ----------------------------------------------------------------------------- known answers

def test_lejepa_grid_is_trapezoid_with_gaussian_window():
    t, c = frequency_grid("lejepa")
    assert t.shape == c.shape == (17,)
    np.testing.assert_allclose(t, np.linspace(0, 3, 17), atol=1e-6)
    # sum_j w_j = int_{-3}^{3} exp(-t^2/2) dt = sqrt(2 pi) erf(3 / sqrt 2) up to the trapezoid error.
    assert float(jnp.sum(c)) == pytest.approx(math.sqrt(2 * math.pi) * math.erf(3 / math.sqrt(2)), abs=2e-3)
    t, c = frequency_grid("rl")
    np.testing.assert_allclose(t, np.linspace(-5, 5, 8), atol=1e-6)
    np.testing.assert_allclose(c, np.full(8, 1 / 8), atol=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_point_mass_at_zero_matches_formula(variant):
    """All projections 0: phi_k(t) = 1, so e(t) = (1 - exp(-t^2/2))^2 exactly."""
    n = 10
    t, c = map(np.asarray, frequency_grid(variant))
    expected = np.sum(c * (1 - np.exp(-t ** 2 / 2)) ** 2) * (n if variant == "lejepa" else 1)
    got = epps_pulley(jnp.zeros((n, 3)), variant=variant)
    np.testing.assert_allclose(got, np.full(3, expected), rtol=1e-5)
    assert float(sigreg(jnp.zeros((n, 5)), KEY, variant=variant)) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx({"rl": 0.714, "lejepa": 0.402 * n}[variant], rel=1e-2)


# ----------------------------------------------------------------------------- Gaussian vs not

@pytest.mark.parametrize("variant", VARIANTS)
def test_near_zero_on_gaussian_large_on_collapsed_and_anisotropic(scores, variant):
    s = scores[variant]
    g, c, a = s["gaussian"], s["collapsed"], s["aniso_5"]
    assert 0.0 <= g < NULL_TOL[variant]
    assert c > 100 * g and c > 50 * NULL_TOL[variant]
    assert a > 10 * g and a > 5 * NULL_TOL[variant]
    assert g < a < c


@pytest.mark.parametrize("variant", VARIANTS)
def test_uniform_scores_between_gaussian_and_collapsed(variant):
    """Standardized uniform has the right mean and variance but the wrong shape: a smaller gap.

    In 2-D, so that the random projections (sums of D uniforms) are not themselves made
    nearly Gaussian by the central limit theorem; 4096 samples and 64 directions.
    """
    n, d = 4096, 2
    g, u, c = np.asarray(stats(jnp.stack([gaussian(KZ, n, d), uniform(KZ, n, d), collapsed(KZ, n, d)]),
                               KDIR, variant, 64))
    tol = 2.0 / n if variant == "rl" else NULL_TOL[variant]
    assert g < tol
    assert u > 10 * g
    assert u < c


# ----------------------------------------------------------------------------- properties

@pytest.mark.parametrize("variant", VARIANTS)
def test_invariant_to_sample_order(scores, variant):
    assert scores[variant]["aniso_2_permuted"] == pytest.approx(scores[variant]["aniso_2"], rel=1e-4)


def test_fresh_directions_per_key(scores):
    z = jnp.stack([BATCHES["aniso_2"]])
    assert float(stats(z, jax.random.PRNGKey(123))[0]) != pytest.approx(scores["rl"]["aniso_2"], rel=1e-3)


@pytest.mark.parametrize("variant,lr", [("rl", 256.0), ("lejepa", 10.0)])
def test_gradient_raises_rank_of_collapsed_batch(variant, lr):
    """SGD on the embeddings themselves (z is the parameter), fresh directions each step.

    "rl" averages over the batch, so each row's gradient is O(1/N): lr = N = 256.
    """
    n, d, steps = 256, 16, 20
    z0 = collapsed(jax.random.PRNGKey(1), n, d)

    @jax.jit
    def train(z):
        def step(i, z):
            return z - lr * jax.grad(sigreg)(z, jax.random.fold_in(KDIR, i), variant=variant)
        z = jax.lax.fori_loop(0, steps, step, z)
        return z, sigreg(z0, KEY, variant=variant), sigreg(z, KEY, variant=variant)

    z, before, after = train(z0)
    assert int(srank(z0)) == 1
    assert int(srank(z)) >= 8
    assert float(after) < 0.5 * float(before)


def test_variants_agree_on_which_batch_is_more_gaussian(scores):
    """Pairs where the second batch departs further from N(0, I), in the same way or more."""
    pairs = [("gaussian", "shifted_0.25"), ("shifted_0.25", "shifted_1"),
             ("gaussian", "scaled_0.8"), ("scaled_0.8", "scaled_0.5"),
             ("gaussian", "aniso_2"), ("aniso_2", "aniso_5"), ("aniso_5", "collapsed"),
             ("gaussian", "half_rank"), ("half_rank", "collapsed")]
    for better, worse in pairs:
        for v in VARIANTS:
            assert scores[v][better] < scores[v][worse], (v, better, worse, scores[v])


@pytest.mark.parametrize("variant", VARIANTS)
def test_jit_and_vmap_over_seeds_match_unbatched(variant):
    n = 256
    keys = jax.random.split(KEY, 2)
    zs = jnp.stack([anisotropic(keys[0], 2.0, n), uniform(keys[1], n)])
    fn = jax.value_and_grad(functools.partial(sigreg, variant=variant))
    one = jax.jit(fn)
    vals, grads = jax.jit(jax.vmap(fn))(zs, keys)
    assert vals.shape == (2,) and grads.shape == zs.shape
    assert bool(jnp.all(jnp.isfinite(grads)))
    for i in range(2):
        val, grad = one(zs[i], keys[i])
        np.testing.assert_allclose(vals[i], val, rtol=1e-5)
        np.testing.assert_allclose(grads[i], grad, rtol=1e-3, atol=1e-5 * float(jnp.max(jnp.abs(grad))))
    assert float(vals[0]) != pytest.approx(float(one(zs[0], keys[1])[0]), rel=1e-3)  # seeds differ


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("kwargs,match", [
    ({"num_directions": 0}, r"num_directions must be an integer >= 1"),
    ({"num_directions": 2.5}, r"num_directions must be an integer >= 1"),
    ({"variant": "vicreg"}, r"valid variants: 'rl', 'lejepa'"),
    ({"variant": "rl", "num_points": 0}, r"num_points for variant 'rl' must be an integer >= 1"),
    ({"variant": "lejepa", "num_points": 1}, r"num_points for variant 'lejepa' must be an integer >= 2.*trapezoid"),
    ({"t_max": 0.0}, r"t_max must be a finite number > 0"),
    ({"t_max": float("inf")}, r"t_max must be a finite number > 0"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sigreg(jnp.ones((4, 3)), KEY, **kwargs)


@pytest.mark.parametrize("shape", [(4,), (2, 4, 3), (0, 3), (4, 0)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        sigreg(jnp.ones(shape), KEY)
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        isotropy(jnp.ones(shape))


def test_small_valid_settings_work():
    z = gaussian(KZ, 1, 1)
    assert np.isfinite(float(sigreg(z, KEY, num_directions=1, num_points=1)))
    assert np.isfinite(float(sigreg(z, KEY, variant="lejepa", num_directions=1, num_points=2)))


# ----------------------------------------------------------------------------- isotropy

def test_isotropy_known_answers():
    a, b = 3.0, 1.0  # covariance diag(a^2 / 2, b^2 / 2): condition number 9
    z = jnp.array([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]])
    out = isotropy(z)
    assert float(out["isotropy_cond"]) == pytest.approx(9.0, rel=1e-5)
    assert float(out["isotropy_var"]) == pytest.approx((a * a + b * b) / 4, rel=1e-5)
    p = np.array([a * a, b * b]) / (a * a + b * b)
    assert float(out["isotropy_entropy"]) == pytest.approx(-(p * np.log(p)).sum() / np.log(2), rel=1e-5)

    zero = isotropy(jnp.zeros((5, 3)))
    assert (float(zero["isotropy_cond"]), float(zero["isotropy_entropy"]), float(zero["isotropy_var"])) == (1e6, 0.0, 0.0)


def test_isotropy_on_gaussian_collapsed_anisotropic():
    n = 4096
    g, c, a = (jax.jit(isotropy)(f(KZ, n=n)) for f in (gaussian, collapsed, anisotropic))
    assert float(g["isotropy_cond"]) < 1.5
    assert float(g["isotropy_entropy"]) > 0.99
    assert float(g["isotropy_var"]) == pytest.approx(1.0, abs=0.05)
    assert float(c["isotropy_cond"]) == 1e6
    assert float(c["isotropy_entropy"]) < 1e-3
    assert 15.0 < float(a["isotropy_cond"]) < 40.0  # variance 25 vs 1
    assert 0.5 < float(a["isotropy_entropy"]) < 0.7
    batched = jax.jit(jax.vmap(isotropy))(jnp.stack([gaussian(KZ, n=n), anisotropic(KZ, n=n)]))
    np.testing.assert_allclose(batched["isotropy_cond"], [g["isotropy_cond"], a["isotropy_cond"]], rtol=1e-4)
