"""MJX's Cholesky factorizations as plain jnp ops on CPU, where LAPACK's can deadlock.

MJX (JAX implementation) factors the mass matrix (``smooth.factor_m``) and
the Newton solver's Hessian with ``jax.scipy.linalg.cho_factor`` and solves
with ``cho_solve``. On CPU, under ``vmap`` over simulator states, these are
jaxlib's batched LAPACK custom calls (``potrf``, ``trsm``). Such a call splits
its batch over XLA's intra-op thread pool and blocks its calling thread, a
thread of that same pool, until the pieces finish. When as many calls run at
once as the pool has threads, every thread waits on work that none is free to
run, and the process hangs at 0% CPU.

Seen here: on the 2-core machine (a pool of 2), RAVL's Hopper rollouts in the
true simulator (``--dynamics true``, rollouts inside the jitted update) hung
5 runs out of 5 within 6k updates; gdb showed both pool threads in
``jax::ParallelBatchMap`` under ``lapack_spotrf_ffi``.

The matrices are tiny (nv = 2 to 9 for the tasks used here), so a
column-by-column factorization and row-by-row substitutions in jnp ops,
vectorized over the batch, cost little and never block a thread. Measured on
the 2-core machine, ``jit`` of 50 vmapped ``mjx:CheetahRun`` steps for 256
envs: with two other runs beside it, LAPACK compiled in 51 s and ran in 145 s,
the same algorithm unrolled in Python compiled in 72 s and ran in 147 s; with
one run beside it, these loops compiled in 42 s and ran in 131 s.

``cholesky_without_lapack()`` swaps them in while MJX code is traced on the
CPU backend; other backends keep JAX's own (cuSOLVER on GPU, whose throughput
the PPO benchmarks measured).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp
import jax.scipy.linalg


def cholesky_lower(a: jax.Array) -> jax.Array:
    """Lower-triangular L with L L^T = a, for a symmetric positive definite a [..., n, n], in jnp ops.

    Cholesky-Banachiewicz by columns: L[j, j] = sqrt(a[j, j] - |L[j, :j]|^2) and
    L[i, j] = (a[i, j] - L[i, :j] . L[j, :j]) / L[j, j] for i > j. As with LAPACK in JAX, a matrix
    that is not positive definite gives NaN (the square root of a negative pivot), not an error.
    The columns are a ``fori_loop`` rather than unrolled: no slower to run in the measurement above,
    and MJX calls this often enough per step that unrolling cost half again the compile time.
    """
    a = jnp.asarray(a)
    rows = jnp.arange(a.shape[-1])

    def column(j, lower):
        # Columns j.. of `lower` are still 0, so this subtracts exactly L[:, :j] L[j, :j].
        residual = a[..., :, j] - jnp.einsum("...ik,...k->...i", lower, lower[..., j, :])
        pivot = jnp.sqrt(jnp.take(residual, j, axis=-1))[..., None]
        new = jnp.where(rows > j, residual / pivot, jnp.where(rows == j, pivot, 0.0))
        return jnp.where(rows == j, new[..., :, None], lower)             # write column j

    return jax.lax.fori_loop(0, a.shape[-1], column, jnp.zeros_like(a))


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """``jax.scipy.linalg.cho_factor``'s contract: ``(c, lower)``, c the triangular factor (zeros elsewhere)."""
    del overwrite_a, check_finite                  # in the signature for compatibility; JAX ignores them too
    factor = cholesky_lower(a)
    return (factor if lower else jnp.swapaxes(factor, -1, -2).conj()), lower


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """``jax.scipy.linalg.cho_solve``'s contract: x with a x = b, for ``(c, lower)`` from cho_factor, b [n] or [n, k].

    Forward substitution L y = b, then back substitution L^T x = y, a row at a time.
    """
    del overwrite_b, check_finite
    c, lower = c_and_lower
    factor = c if lower else jnp.swapaxes(c, -1, -2).conj()          # L
    b = jnp.asarray(b)
    n = factor.shape[-1]
    is_row = (jnp.arange(n) == jnp.arange(n)[:, None]).reshape((n, n) + (1,) * (b.ndim - 1))  # [i] masks row i

    def forward(i, y):                  # rows of y after i are still 0, so L[i] @ y = L[i, :i] @ y[:i]
        return jnp.where(is_row[i], (b[i] - factor[i] @ y) / factor[i, i], y)

    def backward(k, x):                 # i = n-1 .. 0; (L^T)[i] = L[:, i]; rows of x up to i are still 0
        i = n - 1 - k
        return jnp.where(is_row[i], (y[i] - factor[:, i].conj() @ x) / factor[i, i], x)

    y = jax.lax.fori_loop(0, n, forward, jnp.zeros(b.shape, jnp.result_type(factor, b)))
    return jax.lax.fori_loop(0, n, backward, jnp.zeros_like(y))


@contextlib.contextmanager
def cholesky_without_lapack() -> Iterator[None]:
    """While code is traced inside this block on the CPU backend, ``jax.scipy.linalg.cho_factor`` and
    ``cho_solve`` are the jnp versions above.

    MJX looks them up at call time, so the MJX code traced inside uses them. The originals are
    restored on exit (also on an error), so nothing outside the block is affected. Use it around
    the MJX calls of a function that ``jit`` traces, e.g. an environment's step.
    """
    if jax.default_backend() != "cpu":
        yield
        return
    linalg = jax.scipy.linalg
    originals = linalg.cho_factor, linalg.cho_solve
    linalg.cho_factor, linalg.cho_solve = cho_factor, cho_solve
    try:
        yield
    finally:
        linalg.cho_factor, linalg.cho_solve = originals
