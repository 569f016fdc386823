"""Representation regularizers: SIGReg (Sketched Isotropic Gaussian Regularization) and an
isotropy diagnostic.

SIGReg pushes a batch of embeddings toward an isotropic Gaussian N(0, I) by testing its
1-D random projections against N(0, 1) with the Epps-Pulley statistic, a distance between
the empirical characteristic function (ECF) of the projections and the Gaussian one.

Sources
-------
- LeJEPA: Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning
  Without the Heuristics", arXiv 2511.08544 (SIGReg, the Epps-Pulley statistic with a
  Gaussian window and trapezoid quadrature).
- The RL paper, arXiv 2602.19373, code asahebpa/IsoGaussian-DRL (`ppo_sigreg.py`): the same
  idea with 16 directions, an 8-point grid on [-5, 5] and no window or sample-size factor.
  It is the default here.
- Epps & Pulley (1983), "A test for normality based on the empirical characteristic function".

Equations
---------
Let Z in R^{N x D} be the batch (N samples, D features). Draw K directions a_k uniformly on
the unit sphere S^{D-1} (a Gaussian vector divided by its norm), fresh from `key` at every
call, and project:

    s_bk = <z_b, a_k>                                        s in R^{N x K}

The ECF of projection k at frequency t, and the N(0, 1) characteristic function:

    phi_k(t) = (1/N) sum_b exp(i t s_bk)
             = (1/N) sum_b cos(t s_bk) + i (1/N) sum_b sin(t s_bk)
    phi(t)   = exp(-t^2 / 2)

and the squared ECF error (even in t, since phi_k(-t) = conj(phi_k(t)) and phi is real):

    e_k(t) = |phi_k(t) - phi(t)|^2
           = ((1/N) sum_b cos(t s_bk) - exp(-t^2/2))^2 + ((1/N) sum_b sin(t s_bk))^2

variant="rl" (default; RL paper code): K = 16, t_j = linspace(-t_max, t_max, T) with
t_max = 5, T = 8 (even, so t = 0, where e_k is identically 0, is not on the grid); an
unweighted mean over the grid and the directions:

    L_rl = mean_j mean_k e_k(t_j)

variant="lejepa" (LeJEPA): the Epps-Pulley statistic with the Gaussian window
w(t) = exp(-t^2/2), integrated over [-t_max, t_max] (t_max = 3) with the TRAPEZOID rule on
T = 17 knots t_j = linspace(0, t_max, T), using the evenness of the integrand
(int_{-t_max}^{t_max} = 2 int_0^{t_max}); times the sample size N, as in the statistic of a test:

    EP_k     = N * int_{-t_max}^{t_max} e_k(t) exp(-t^2/2) dt
             ~ N * sum_j w_j e_k(t_j),       w_j = c_j exp(-t_j^2/2)
    c_j      = 2 * trapezoid weights on [0, t_max] = (dt, 2 dt, ..., 2 dt, dt), dt = t_max/(T-1)
    L_lejepa = mean_k EP_k

K defaults to 256 for this variant (LeJEPA uses 256-1024 slices; the cost is O(N K T)).

Scale of the two losses. For an N(0, 1) sample E[e_k(t)] = (1 - exp(-t^2)) / N, so under
the null (default grids) L_rl ~ 0.85 / N (-> 0 with N: a large N(0, I) batch scores near 0)
while L_lejepa ~ 1.05 whatever N (a test statistic; under an alternative it grows like N).
A fully collapsed batch (every projection 0, phi_k = 1) scores L_rl ~ 0.71 and
L_lejepa ~ 0.40 N. The LeJEPA loss, and so its gradient, grows with the
batch size: pick its coefficient with that in mind.

Everything here is pure and works under `jax.jit`, `jax.grad` (w.r.t. z) and `jax.vmap`
over a leading seed axis (vmap z and key together). z is a single batch [N, D]; for more
batch axes, vmap or reshape to [N, D] first. The variant, K, T and t_max are static.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

VARIANTS = ("rl", "lejepa")
# Per-variant defaults: number of directions K, grid size T, grid half-width t_max.
DEFAULTS = {
    "rl": {"num_directions": 16, "num_points": 8, "t_max": 5.0},
    "lejepa": {"num_directions": 256, "num_points": 17, "t_max": 3.0},
}
MIN_POINTS = {"rl": 1, "lejepa": 2}  # the trapezoid rule needs two knots
COND_CAP = 1e6  # isotropy(): the condition number reported for rank-deficient covariances


# ----------------------------------------------------------------------------- validation

def _check_int(name: str, value, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, got {value!r}")
    return int(value)


def resolve(variant: str = "rl", num_directions: int | None = None, num_points: int | None = None,
            t_max: float | None = None) -> tuple[int, int, float]:
    """Check the static settings of `sigreg` and fill the variant's defaults for the Nones.

    Returns (num_directions, num_points, t_max). Raises ValueError naming the valid values.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown SIGReg variant {variant!r}; valid variants: "
                         + ", ".join(repr(v) for v in VARIANTS))
    d = DEFAULTS[variant]
    k = _check_int("num_directions", d["num_directions"] if num_directions is None else num_directions, 1)
    why = " (the trapezoid rule needs at least 2 knots)" if variant == "lejepa" else ""
    t = _check_int(f"num_points for variant {variant!r}",
                   d["num_points"] if num_points is None else num_points, MIN_POINTS[variant], why)
    tm = d["t_max"] if t_max is None else t_max
    if isinstance(tm, bool) or not isinstance(tm, numbers.Real) or not (math.isfinite(tm) and tm > 0):
        raise ValueError(f"t_max must be a finite number > 0, got {tm!r}")
    return k, t, float(tm)


def _check_batch(z: jax.Array) -> None:
    if jnp.ndim(z) != 2 or jnp.shape(z)[0] < 1 or jnp.shape(z)[1] < 1:
        raise ValueError(f"z must be one batch of embeddings of shape [N, D] with N, D >= 1, got shape "
                         f"{jnp.shape(z)}; vmap over (or reshape away) any other leading axes")


# ----------------------------------------------------------------------------- pieces

def random_directions(key: jax.Array, dim: int, num: int, dtype=jnp.float32) -> jax.Array:
    """`num` directions uniform on the unit sphere of R^dim, as the columns of a [dim, num] array."""
    a = jax.random.normal(key, (dim, num), dtype)
    return a / jnp.maximum(jnp.linalg.norm(a, axis=0, keepdims=True), jnp.finfo(dtype).tiny)


def frequency_grid(variant: str = "rl", num_points: int | None = None,
                   t_max: float | None = None) -> tuple[jax.Array, jax.Array]:
    """The frequencies t_j [T] and weights w_j [T] of a variant (see the module docstring).

    "rl": t = linspace(-t_max, t_max, T), w_j = 1/T (a plain mean).
    "lejepa": t = linspace(0, t_max, T), w_j = 2 * trapezoid weight * exp(-t_j^2/2).
    """
    _, num_points, t_max = resolve(variant, None, num_points, t_max)
    if variant == "rl":
        t = jnp.linspace(-t_max, t_max, num_points)
        return t, jnp.full((num_points,), 1.0 / num_points)
    t = jnp.linspace(0.0, t_max, num_points)
    dt = t_max / (num_points - 1)
    trap = jnp.full((num_points,), dt).at[0].set(dt / 2).at[-1].set(dt / 2)
    return t, 2.0 * trap * jnp.exp(-0.5 * t ** 2)


def ecf_error(s: jax.Array, t: jax.Array) -> jax.Array:
    """e_k(t_j) = |phi_k(t_j) - exp(-t_j^2/2)|^2 for projections s [N, K] at frequencies t [T] -> [K, T]."""
    ts = s[..., None] * t  # [N, K, T]
    re = jnp.mean(jnp.cos(ts), axis=0)
    im = jnp.mean(jnp.sin(ts), axis=0)
    return (re - jnp.exp(-0.5 * t ** 2)) ** 2 + im ** 2


def epps_pulley(s: jax.Array, *, variant: str = "rl", num_points: int | None = None,
                t_max: float | None = None) -> jax.Array:
    """The statistic of each 1-D sample against N(0, 1): projections s [N, K] -> [K].

    "rl": mean_j e_k(t_j); "lejepa": N * sum_j w_j e_k(t_j) (module docstring).
    """
    if jnp.ndim(s) != 2:
        raise ValueError(f"s must have shape [N, K] (samples x projections), got shape {jnp.shape(s)}")
    t, w = frequency_grid(variant, num_points, t_max)
    t, w = t.astype(s.dtype), w.astype(s.dtype)
    stat = ecf_error(s, t) @ w
    return stat * s.shape[0] if variant == "lejepa" else stat


# ----------------------------------------------------------------------------- SIGReg

def sigreg(z: jax.Array, key: jax.Array, *, variant: str = "rl", num_directions: int | None = None,
           num_points: int | None = None, t_max: float | None = None) -> jax.Array:
    """SIGReg loss of a batch of embeddings z [N, D]: the mean over K fresh random unit
    directions (drawn from `key`) of the Epps-Pulley statistic of the projections against N(0, 1).

    variant "rl" (default: K=16, T=8, t_max=5, unweighted mean) or "lejepa" (K=256, T=17,
    t_max=3, Gaussian window, trapezoid rule, times N); None takes the variant's default.
    Returns a scalar; differentiable in z; O(N K T).
    """
    num_directions, num_points, t_max = resolve(variant, num_directions, num_points, t_max)
    _check_batch(z)
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(jnp.float32)
    a = random_directions(key, z.shape[1], num_directions, z.dtype)
    return jnp.mean(epps_pulley(z @ a, variant=variant, num_points=num_points, t_max=t_max))


# ----------------------------------------------------------------------------- diagnostics

def isotropy(z: jax.Array) -> dict[str, jax.Array]:
    """Isotropy of the covariance of a batch z [N, D], keyed for train.csv.

    With C = (1/N) sum_b (z_b - mean)(z_b - mean)^T and its eigenvalues lambda_1..D (clipped
    at 0), p_i = lambda_i / sum_i lambda_i:

    - "isotropy_cond":    lambda_max / lambda_min, the condition number (eigenvalue spread) of
      C; 1 when isotropic; capped at COND_CAP = 1e6, which a rank-deficient (or zero) C reports.
    - "isotropy_entropy": -sum_i p_i log p_i / log D in [0, 1]; 1 when isotropic, 0 when C has
      rank 1 (for D > 1) or C = 0; 1 when D = 1 and C != 0.
    - "isotropy_var":     trace(C) / D, the mean per-feature variance (SIGReg's target is 1).
    """
    _check_batch(z)
    z = jnp.asarray(z, jnp.result_type(z, jnp.float32))
    zc = z - jnp.mean(z, axis=0)
    cov = zc.T @ zc / z.shape[0]
    lam = jnp.clip(jnp.linalg.eigvalsh(cov), 0.0)  # ascending
    lo, hi, total = lam[0], lam[-1], jnp.sum(lam)
    cond = jnp.where(lo * COND_CAP > hi, hi / jnp.where(lo > 0, lo, 1.0), COND_CAP)
    p = lam / jnp.where(total > 0, total, 1.0)
    dim = z.shape[1]
    entropy = -jnp.sum(xlogy(p, p)) / math.log(dim) if dim > 1 else jnp.where(total > 0, 1.0, 0.0)
    return {"isotropy_cond": cond, "isotropy_entropy": entropy, "isotropy_var": total / dim}
