"""Recurrent cores for history-dependent agents (NEUBAY's recurrent SAC): a stacked LRU and a GRU.

An agent embeds each step's input x_t = [s_t, a_{t-1}, r_{t-1}] with a small MLP and hands the sequence of
embeddings to a core, which summarizes the history into one feature vector per step:

    core = make_core("lru", num_layers=2, hidden=256)
    params = core.init(key, input_dim)                    # Flax variables {"params": ...}
    state = core.initial_state((B,))                      # zeros: the state before an episode's first step
    ys, state = core.apply(params, xs, state, resets)     # xs [B, T, d] -> ys [B, T, hidden]   (training)
    y, state = core.step(params, x, state, reset)         # x [B, d] -> y [B, hidden]           (acting)

`resets[b, t] = True` zeroes the carried state before step t, so one sequence may hold the end of an episode
and the start of the next (NEUBAY trains on such tapes); `step(..., reset)` does the same for acting across
auto-resets. `apply` and a loop of `step` give the same outputs (to float rounding). Everything is pure;
parameters are a pytree, so `jax.vmap(core.init)(keys)` makes a leading seed axis and `jax.vmap(core.apply)`
runs all seeds at once. A state is a tuple with one real float32 array per layer, [*batch, state_width].

The modules (`LRU`, `LRUBlock`, `LRUCore`, `GRUCore`) are Flax linen modules with the same two methods,
`__call__(xs, state, resets)` and `step(x, state, reset)`, so an agent's own network can hold a core as a
submodule instead of going through `make_core`.

Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences",
arXiv 2303.06349), per layer with input width H and N complex state units:

    lambda = exp(-exp(nu_log) + i exp(theta_log))        in C^N, |lambda| = exp(-exp(nu_log)) < 1 (finite nu_log)
    gamma  = exp(gamma_log),  initialized to sqrt(1 - |lambda|^2)   (learned, as in the paper and NEUBAY)
    h_t = lambda * h_{t-1} + gamma * (B x_t)             B = B_re + i B_im in C^{N x H},  h in C^N
    y_t = Re(C h_t) + D * x_t                            C = C_re + i C_im in C^{H x N},  D in R^H

Ring initialization: |lambda|^2 ~ U[r_min^2, r_max^2] (uniform on the ring's area) and the phase
arg(lambda) ~ U[0, max_phase]. Defaults r_min = 0.0, r_max = 0.9 and max_phase = 2 pi (6.28) are NEUBAY's
(configs/*/base.yaml: "r_max: 0.9 # this affects stability"); the LRU paper's long-range settings are
r_min = 0.9, r_max = 0.999, max_phase = pi / 10 or 2 pi. B ~ N(0, 1 / (2H)) per real and imaginary part,
C ~ N(0, 1 / N) per part, D ~ N(0, 1).

A sequence is processed in parallel: the recurrence h_t = a_t h_{t-1} + b_t is associative in the pairs
(a, b), with (a_1, b_1) . (a_2, b_2) = (a_2 a_1, a_2 b_1 + b_2), so `jax.lax.associative_scan` gives every
(P_t, Q_t) = (a_t ... a_1, h_t from h_0 = 0) in O(log T) depth, and h_t = P_t h_0 + Q_t. A reset before step t
sets a_t = 0, which cuts the product: h_t = b_t (`linear_scan`).

Complex numbers stay inside a layer: parameters are real (B_re, B_im, ...), and the carried state is stored as
the real array [Re h, Im h] (width 2N), so optimizers, replay buffers and checkpoints only see float32.

Block (`LRUBlock`, the LRU paper's block as NEUBAY uses it in memory/lru.py: pre-norm, LRU, GELU, GLU,
residual), on the residual stream x of width H = hidden:

    u = LayerNorm(x)                                     learned scale and bias
    u = GELU(LRU(u))
    x = x + W_1 u * sigmoid(W_2 u)                       gated linear unit, W_1, W_2 in R^{H x H} (+ bias)

`LRUCore` projects the input to `hidden` with one Linear when its width differs (NEUBAY's agent embeds to
`hidden` itself, and then there is no projection), stacks `num_layers` blocks and returns the residual stream
after the last one (no final norm, as in NEUBAY). NEUBAY's sizes: 2 layers, hidden (d_model) 256, N
(d_hidden) 128.

`GRUCore` stacks `num_layers` Flax `nn.GRUCell`s (layer i reads layer i-1's output, the last layer's hidden
state is the output, width `hidden`), run over time with `nn.scan`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.mlp import kernel_init

State = tuple[jax.Array, ...]   # one float32 array [*batch, width] per layer

CORE_KINDS = ("lru", "gru")


# --------------------------------------------------------------------------------------------------------------
# The parallel linear recurrence
# --------------------------------------------------------------------------------------------------------------

def linear_scan(a: jax.Array, b: jax.Array, h0: jax.Array) -> jax.Array:
    """All states of h_t = a_t * h_{t-1} + b_t, t = 1..T, elementwise, by a parallel associative scan.

    a, b: [*batch, T, N] (real or complex), h0: [*batch, N]. Returns h: [*batch, T, N] (h[..., t, :] = h_{t+1}).
    """

    def combine(earlier, later):
        a_1, b_1 = earlier
        a_2, b_2 = later
        return a_2 * a_1, a_2 * b_1 + b_2                  # h -> a_2 (a_1 h + b_1) + b_2

    time_axis = a.ndim - 2
    a_cum, b_cum = jax.lax.associative_scan(combine, (a, b), axis=time_axis)
    return a_cum * h0[..., None, :] + b_cum


def _pack(h: jax.Array) -> jax.Array:
    """Complex [*, N] -> real [*, 2N] = [Re h, Im h]."""
    return jnp.concatenate([h.real, h.imag], axis=-1)


def _unpack(s: jax.Array) -> jax.Array:
    """Real [*, 2N] = [Re h, Im h] -> complex [*, N]."""
    n = s.shape[-1] // 2
    return jax.lax.complex(s[..., :n], s[..., n:])


# --------------------------------------------------------------------------------------------------------------
# LRU layer and block
# --------------------------------------------------------------------------------------------------------------

# Floors that keep the ring initialization's logs finite (u = 0 has probability 2^-24 per unit): |lambda|^2 is
# kept in [1e-8, 1 - 1e-7] and the phase above 1e-8 * max_phase.
_TINY = 1e-8


def _nu_log_init(r_min: float, r_max: float):
    """nu_log = log(-log|lambda|) with |lambda|^2 ~ U[r_min^2, r_max^2]."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype)
        r2 = jnp.clip(r_min**2 + u * (r_max**2 - r_min**2), _TINY, 1.0 - 1e-7)
        return jnp.log(-0.5 * jnp.log(r2))

    return init


def _theta_log_init(max_phase: float):
    """theta_log = log(arg lambda) with arg lambda ~ U[0, max_phase]."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype, minval=_TINY)
        return jnp.log(max_phase * u)

    return init


def _normal(std: float):
    return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


def lru_lambda(nu_log: jax.Array, theta_log: jax.Array) -> jax.Array:
    """The diagonal recurrence lambda = exp(-exp(nu_log) + i exp(theta_log)); |lambda| < 1 for any finite nu_log
    (in float32 until exp(nu_log) < 6e-8, i.e. nu_log < -16.6, where |lambda| rounds to 1)."""
    return jnp.exp(jax.lax.complex(-jnp.exp(nu_log), jnp.exp(theta_log)))


class LRU(nn.Module):
    """One Linear Recurrent Unit, width -> width with `state_dim` complex units (equations in the module doc).

    The state here is complex, h: [*batch, state_dim]; `LRUCore` stores it as real [Re h, Im h].
    """

    width: int
    state_dim: int = 128
    r_min: float = 0.0
    r_max: float = 0.9
    max_phase: float = 6.28

    def setup(self):
        if not 0.0 <= self.r_min < self.r_max <= 1.0:
            raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={self.r_min}, r_max={self.r_max}")
        n, h = self.state_dim, self.width
        self.nu_log = self.param("nu_log", _nu_log_init(self.r_min, self.r_max), (n,))
        self.theta_log = self.param("theta_log", _theta_log_init(self.max_phase), (n,))
        # gamma_log starts at log sqrt(1 - |lambda|^2) of the initial lambda (nu_log is already drawn).
        self.gamma_log = self.param(
            "gamma_log", lambda _key: 0.5 * jnp.log(-jnp.expm1(-2.0 * jnp.exp(self.nu_log))))
        self.B_re = self.param("B_re", _normal(1.0 / math.sqrt(2 * h)), (n, h))
        self.B_im = self.param("B_im", _normal(1.0 / math.sqrt(2 * h)), (n, h))
        self.C_re = self.param("C_re", _normal(1.0 / math.sqrt(n)), (h, n))
        self.C_im = self.param("C_im", _normal(1.0 / math.sqrt(n)), (h, n))
        self.D = self.param("D", _normal(1.0), (h,))

    def lam(self) -> jax.Array:
        """lambda, [state_dim] complex."""
        return lru_lambda(self.nu_log, self.theta_log)

    def _drive(self, x: jax.Array) -> jax.Array:
        """gamma * (B x): [*, width] real -> [*, state_dim] complex."""
        gamma = jnp.exp(self.gamma_log)
        return jax.lax.complex(gamma * (x @ self.B_re.T), gamma * (x @ self.B_im.T))

    def _readout(self, h: jax.Array, x: jax.Array) -> jax.Array:
        """Re(C h) + D * x = C_re Re h - C_im Im h + D * x."""
        return h.real @ self.C_re.T - h.imag @ self.C_im.T + self.D * x

    def __call__(self, xs: jax.Array, h0: jax.Array, resets: jax.Array | None = None):
        """xs [*batch, T, width], h0 [*batch, state_dim] complex, resets [*batch, T] bool or None
        -> (ys [*batch, T, width], h_T [*batch, state_dim] complex)."""
        b = self._drive(xs)
        a = jnp.broadcast_to(self.lam(), b.shape)
        if resets is not None:
            a = jnp.where(resets[..., None], jnp.zeros_like(a), a)   # h_t = 0 * h_{t-1} + b_t
        h = linear_scan(a, b, h0)
        return self._readout(h, xs), h[..., -1, :]

    def step(self, x: jax.Array, h: jax.Array, reset: jax.Array | None = None):
        """One step: x [*batch, width], h [*batch, state_dim] complex -> (y [*batch, width], h)."""
        if reset is not None:
            h = jnp.where(reset[..., None], jnp.zeros_like(h), h)
        h = self.lam() * h + self._drive(x)
        return self._readout(h, x), h


class LRUBlock(nn.Module):
    """x + GLU(GELU(LRU(LayerNorm(x)))) (the LRU paper's block, as in NEUBAY)."""

    width: int
    state_dim: int = 128
    r_min: float = 0.0
    r_max: float = 0.9
    max_phase: float = 6.28

    def setup(self):
        self.norm = nn.LayerNorm(epsilon=1e-5)
        self.lru = LRU(self.width, self.state_dim, self.r_min, self.r_max, self.max_phase)
        # NEUBAY's linears are Equinox defaults, weights U(+-1/sqrt(fan_in)) (= PyTorch's); biases start at 0 here.
        self.glu_out = nn.Dense(self.width, kernel_init=kernel_init("pytorch_default"))
        self.glu_gate = nn.Dense(self.width, kernel_init=kernel_init("pytorch_default"))

    def _mix(self, x: jax.Array, u: jax.Array) -> jax.Array:
        u = nn.gelu(u)
        return x + self.glu_out(u) * nn.sigmoid(self.glu_gate(u))

    def __call__(self, xs, h0, resets=None):
        u, h = self.lru(self.norm(xs), h0, resets)
        return self._mix(xs, u), h

    def step(self, x, h, reset=None):
        u, h = self.lru.step(self.norm(x), h, reset)
        return self._mix(x, u), h


class LRUCore(nn.Module):
    """[Linear to `hidden` if the input width differs] -> `num_layers` x LRUBlock. State: per layer [*batch, 2 N]."""

    num_layers: int = 2
    hidden: int = 256
    state_dim: int = 128
    r_min: float = 0.0
    r_max: float = 0.9
    max_phase: float = 6.28

    def setup(self):
        self.in_proj = nn.Dense(self.hidden, kernel_init=kernel_init("pytorch_default"))  # used only if needed
        self.blocks = [LRUBlock(self.hidden, self.state_dim, self.r_min, self.r_max, self.max_phase,
                                name=f"block_{i}") for i in range(self.num_layers)]

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> State:
        return tuple(jnp.zeros((*batch_shape, 2 * self.state_dim), jnp.float32) for _ in range(self.num_layers))

    def _embed(self, x: jax.Array) -> jax.Array:
        return x if x.shape[-1] == self.hidden else self.in_proj(x)

    def __call__(self, xs: jax.Array, state: State, resets: jax.Array | None = None) -> tuple[jax.Array, State]:
        x, new_state = self._embed(xs), []
        for block, s in zip(self.blocks, state):
            x, h = block(x, _unpack(s), resets)
            new_state.append(_pack(h))
        return x, tuple(new_state)

    def step(self, x: jax.Array, state: State, reset: jax.Array | None = None) -> tuple[jax.Array, State]:
        x, new_state = self._embed(x), []
        for block, s in zip(self.blocks, state):
            x, h = block.step(x, _unpack(s), reset)
            new_state.append(_pack(h))
        return x, tuple(new_state)


# --------------------------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------------------------

class _GRUStack(nn.Module):
    """One time step of `num_layers` stacked GRU cells: (carry, (x, reset)) -> (carry, y)."""

    num_layers: int
    hidden: int

    def setup(self):
        self.cells = [nn.GRUCell(self.hidden, name=f"cell_{i}") for i in range(self.num_layers)]

    def __call__(self, carry: State, inputs: tuple[jax.Array, jax.Array]):
        x, reset = inputs
        new_carry = []
        for cell, h in zip(self.cells, carry):
            h = jnp.where(reset[..., None], jnp.zeros_like(h), h)
            h, x = cell(h, x)
            new_carry.append(h)
        return tuple(new_carry), x


class GRUCore(nn.Module):
    """`num_layers` stacked GRU cells of width `hidden` (Flax `nn.GRUCell`). State: per layer [*batch, hidden]."""

    num_layers: int = 1
    hidden: int = 256

    def setup(self):
        self.stack = _GRUStack(self.num_layers, self.hidden)

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> State:
        return tuple(jnp.zeros((*batch_shape, self.hidden), jnp.float32) for _ in range(self.num_layers))

    def __call__(self, xs: jax.Array, state: State, resets: jax.Array | None = None) -> tuple[jax.Array, State]:
        if resets is None:
            resets = jnp.zeros(xs.shape[:-1], bool)
        scan = nn.scan(lambda module, carry, inputs: module(carry, inputs),
                       variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0)
        # Time-major inside the scan: xs [*batch, T, d] -> [T, *batch, d].
        state, ys = scan(self.stack, tuple(state), (jnp.moveaxis(xs, -2, 0), jnp.moveaxis(resets, -1, 0)))
        return jnp.moveaxis(ys, 0, -2), state

    def step(self, x: jax.Array, state: State, reset: jax.Array | None = None) -> tuple[jax.Array, State]:
        if reset is None:
            reset = jnp.zeros(x.shape[:-1], bool)
        state, y = self.stack(tuple(state), (x, reset))
        return y, state


# --------------------------------------------------------------------------------------------------------------
# Pure-function interface
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RecurrentCore:
    """Pure functions around a core module (`LRUCore` or `GRUCore`); `params` are the Flax variables."""

    module: nn.Module

    @property
    def hidden(self) -> int:
        """Width of the outputs y."""
        return self.module.hidden

    def init(self, key: jax.Array, input_dim: int) -> Any:
        """Parameters for inputs of width `input_dim`."""
        xs = jnp.zeros((1, 1, input_dim), jnp.float32)
        return self.module.init(key, xs, self.initial_state((1,)))

    def initial_state(self, batch_shape: tuple[int, ...] = ()) -> State:
        """The zero state (before an episode's first step), one [*batch_shape, width] array per layer."""
        return self.module.initial_state(tuple(batch_shape))

    def apply(self, params, xs: jax.Array, state: State, resets: jax.Array | None = None) -> tuple[jax.Array, State]:
        """xs [*batch, T, d] from `state` -> (ys [*batch, T, hidden], final state); resets [*batch, T] zero the
        state before the steps where they are True."""
        return self.module.apply(params, xs, state, resets)

    def step(self, params, x: jax.Array, state: State, reset: jax.Array | None = None) -> tuple[jax.Array, State]:
        """One step: x [*batch, d] -> (y [*batch, hidden], next state); reset [*batch] zeroes the state first."""
        return self.module.apply(params, x, state, reset, method="step")


def make_core(kind: str = "lru", num_layers: int = 2, hidden: int = 256, **kwargs) -> RecurrentCore:
    """A recurrent core by name: "lru" (`LRUCore`; kwargs state_dim, r_min, r_max, max_phase) or "gru"."""
    if kind == "lru":
        return RecurrentCore(LRUCore(num_layers=num_layers, hidden=hidden, **kwargs))
    if kind == "gru":
        if kwargs:
            raise ValueError(f"GRU core takes no options {sorted(kwargs)}")
        return RecurrentCore(GRUCore(num_layers=num_layers, hidden=hidden))
    raise ValueError(f"unknown recurrent core {kind!r}; valid: {', '.join(CORE_KINDS)}")
