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
column-by-column factorization and row-by-row substitutions in jnp ops, which
XLA fuses and vectorizes over the batch, cost little and never block a
thread. ``cholesky_without_lapack()`` swaps them in while MJX code is traced
on the CPU backend; other backends keep JAX's own (cuSOLVER on GPU, whose
throughput the PPO benchmarks measured).
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
    """
    a = jnp.asarray(a)
    n = a.shape[-1]
    rows = jnp.arange(n)
    lower = jnp.zeros_like(a)
    for j in range(n):                  # n is static and small: unrolled at trace time
        # Columns j.. of `lower` are still 0, so this subtracts exactly L[:, :j] L[j, :j].
        residual = a[..., :, j] - jnp.einsum("...ik,...k->...i", lower, lower[..., j, :])
        pivot = jnp.sqrt(residual[..., j:j + 1])
        column = jnp.where(rows > j, residual / pivot, jnp.where(rows == j, pivot, 0.0))
        lower = lower.at[..., :, j].set(column)
    return lower


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """``jax.scipy.linalg.cho_factor``'s contract: ``(c, lower)``, c the triangular factor (zeros elsewhere)."""
    del overwrite_a, check_finite                  # in the signature for compatibility; JAX ignores them too
    factor = cholesky_lower(a)
    return (factor if lower else jnp.swapaxes(factor, -1, -2).conj()), lower


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """``jax.scipy.linalg.cho_solve``'s contract: x with a x = b, for ``(c, lower)`` from cho_factor, b [n] or [n, k].

    Forward substitution L y = b, then back substitution L^T x = y, a row at a time (unrolled).
    """
    del overwrite_b, check_finite
    c, lower = c_and_lower
    factor = c if lower else jnp.swapaxes(c, -1, -2).conj()          # L
    b = jnp.asarray(b)
    n = factor.shape[-1]
    y = jnp.zeros(b.shape, jnp.result_type(factor, b))
    for i in range(n):                  # rows of y after i are still 0, so L[i] @ y = L[i, :i] @ y[:i]
        y = y.at[i].set((b[i] - factor[i] @ y) / factor[i, i])
    x = jnp.zeros_like(y)
    for i in reversed(range(n)):        # (L^T)[i] = L[:, i]; rows of x up to i are still 0
        x = x.at[i].set((y[i] - factor[:, i].conj() @ x) / factor[i, i])
    return x


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
