"""Building blocks shared by every agent: initializers, LayerNorm, MLPs, ensembles.

Parameters are plain pytrees (Flax linen), so every agent can `jit` and `vmap`
its update over seeds with `jax.vmap(init)(keys)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def mish(x: jax.Array) -> jax.Array:
    """Mish (Misra, 2019): x * tanh(softplus(x)), TD-MPC2's activation."""
    return x * jnp.tanh(jax.nn.softplus(x))


ACTIVATIONS: dict[str, Activation] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "swish": nn.swish,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "leaky_relu": nn.leaky_relu,
    "mish": mish,
}


def activation(name: str) -> Activation:
    """Look an activation up by name, with the valid names in the error."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def xavier_uniform(gain: float = 1.0) -> nn.initializers.Initializer:
    """PyTorch's `xavier_uniform_(w, gain)`: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


# MR.Q initializes every Linear with xavier-uniform at the ReLU gain sqrt(2), bias 0.
RELU_GAIN = math.sqrt(2.0)


KERNEL_INITS = ("xavier_uniform", "lecun_uniform", "pytorch_default")


def kernel_init(name: str, gain: float = RELU_GAIN) -> nn.initializers.Initializer:
    """`xavier_uniform` at `gain` (MR.Q, PyTorch-style), `lecun_uniform` (Brax's MLP default) or
    `pytorch_default` (nn.Linear's own init, kaiming-uniform with a = sqrt(5): U(+-1/sqrt(fan_in)), as in
    CleanRL's SAC and TD3; `gain` is ignored for the last two)."""
    if name == "xavier_uniform":
        return xavier_uniform(gain)
    if name == "lecun_uniform":
        return nn.initializers.lecun_uniform()
    if name == "pytorch_default":
        return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
    raise ValueError(f"unknown kernel init {name!r}; valid: {', '.join(KERNEL_INITS)}")


def uniform_init(bound: float) -> nn.initializers.Initializer:
    """U(-bound, bound)."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def param_init(spec: str, fan_in: int, gain: float = RELU_GAIN) -> nn.initializers.Initializer:
    """An initializer of a Linear's kernel or bias by name, for a layer with `fan_in` inputs:

        "zeros"             0
        "const:c"           c everywhere (EDAC's hidden biases: "const:0.1")
        "uniform:b"         U(-b, b) (EDAC's last layers: "uniform:3e-3", "uniform:1e-3")
        "fan_in:s"          U(+-sqrt(s / fan_in)) ("fan_in:1" = PyTorch's / Equinox's default bias; NEUBAY's
                            last critic layer "fan_in:0.01")
        a KERNEL_INITS name (kernels), see `kernel_init`
    """
    if spec == "zeros":
        return nn.initializers.zeros
    kind, _, value = spec.partition(":")
    if kind == "const" and value:
        return nn.initializers.constant(float(value))
    if kind == "uniform" and value:
        return uniform_init(float(value))
    if kind == "fan_in" and value:
        return uniform_init(math.sqrt(float(value) / fan_in))
    if spec in KERNEL_INITS:
        return kernel_init(spec, gain)
    raise ValueError(f"unknown initializer {spec!r}; valid: zeros, const:<c>, uniform:<b>, fan_in:<s>, "
                     f"{', '.join(KERNEL_INITS)}")


def dense(features: int, gain: float = RELU_GAIN, name: str | None = None,
          init: str = "xavier_uniform", bias_init: str = "zeros", fan_in: int | None = None) -> nn.Dense:
    """A Linear layer with xavier-uniform (gain `gain`), lecun-uniform or PyTorch-default weights (or any
    `param_init` name) and a zero bias (or `bias_init`, a `param_init` name; "fan_in:s" needs `fan_in`)."""
    def make(spec):
        if spec.startswith("fan_in:") and fan_in is None:
            raise ValueError(f"initializer {spec!r} needs the layer's fan_in")
        return param_init(spec, fan_in or 1, gain)

    return nn.Dense(features, kernel_init=make(init), bias_init=make(bias_init), name=name)


class Linear(nn.Module):
    """`nn.Dense` (parameters "kernel" [in, out] and "bias" [out], drawn in that order) whose initializers are
    `param_init` names, so a bias can depend on the layer's fan_in ("fan_in:1": Equinox's / PyTorch's default)."""

    features: int
    kernel_init: str = "pytorch_default"
    bias_init: str = "zeros"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", param_init(self.kernel_init, fan_in), (fan_in, self.features), jnp.float32)
        bias = self.param("bias", param_init(self.bias_init, fan_in), (self.features,), jnp.float32)
        return x @ kernel + bias


def layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """LayerNorm without a learned scale or bias (PyTorch's `F.layer_norm(x, x.shape[-1:])`)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class MLP(nn.Module):
    """Linear -> [LayerNorm] -> act, repeated for each hidden width, then a Linear output.

    With `hidden=(512, 512)` this is MR.Q's BaseMLP: Linear-LN-act-Linear-LN-act-Linear.
    Every kernel starts from `initializer`, every bias at 0, unless (names of `param_init`)
    `bias_init` sets the hidden layers' biases and `out_kernel_init` / `out_bias_init` the
    output layer's (EDAC's and NEUBAY's schemes, networks/actor_critic.py INIT_SCHEMES).
    """

    hidden: Sequence[int]
    out_dim: int
    act: str = "elu"
    use_layer_norm: bool = True
    gain: float = RELU_GAIN
    initializer: str = "xavier_uniform"
    bias_init: str = "zeros"
    out_kernel_init: str | None = None
    out_bias_init: str = "zeros"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.act)
        for i, width in enumerate(self.hidden):
            x = dense(width, self.gain, name=f"hidden_{i}", init=self.initializer, bias_init=self.bias_init,
                      fan_in=x.shape[-1])(x)
            if self.use_layer_norm:
                x = layer_norm(x)
            self.sow("intermediates", f"preactivation_{i}", x)     # the input of the nonlinearity
            x = act(x)
            # Post-activation features, for plasticity diagnostics (ReDo scores, dormant ratio, srank):
            # collected only when the caller applies with mutable=["intermediates"], else a no-op.
            self.sow("intermediates", f"features_{i}", x)
        return dense(self.out_dim, self.gain, name="out", init=self.out_kernel_init or self.initializer,
                     bias_init=self.out_bias_init, fan_in=x.shape[-1])(x)


def ensemble(module_cls: type[nn.Module], size: int, out_axis: int = -1) -> type[nn.Module]:
    """`size` independent copies of `module_cls` evaluated on the same input in one batched call.

    Parameters get a leading member axis; outputs are stacked on `out_axis`.
    Used for twin critics (size 2) and larger critic / dynamics ensembles.
    """
    return nn.vmap(
        module_cls,
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True},
        in_axes=None,
        out_axes=out_axis,
        axis_size=size,
    )
