"""Plasticity tools on parameters: GraMa and ReDo neuron scores, masks, resets, diagnostics.

- GraMa (ReGraMa, arXiv 2505.24061): the score of neuron i of
  a layer is the mean magnitude of the loss gradient over its incoming weights,

      g_i = mean_j |dL/dW_ji|   (flax kernel [in, out]: column i)    Dense
      g_i = |dL/dgamma_i|                                              LayerNorm

  normalized by the layer mean: s_i = g_i / (mean_k g_k + 1e-9).
- ReDo (Sokar et al., 2023, arXiv 2302.12902): the same normalization applied to
  the mean absolute post-activation h of the layer over a batch,

      s_i = mean_b |h_bi| / (mean_k mean_b |h_bk| + 1e-9).

  A neuron is inactive (GraMa) / dormant (ReDo) when s_i <= tau.

Every function here is pure and works under `jax.jit` and `jax.vmap` (a leading
seed axis, as made by `jax.vmap(agent.init)(keys)`); tau and the percentage may
be traced (swept). Only the layer structure (names, shapes) is static.

How layers are described
------------------------
The caller passes the params dict of ONE network (one MLP module), e.g.
`params["params"]["critic"]`, whose entries are its layers:

- networks/mlp.py's `MLP`: {"hidden_0", "hidden_1", ..., "out"} (its LayerNorm
  has no parameters, so it does not appear);
- flax auto-named modules: {"Dense_0", "LayerNorm_0", "Dense_1", ..., "Dense_n"}.

`layer_order` sorts them by numeric suffix (Dense_k before LayerNorm_k, "out"
last) and checks that the widths chain; flax numbers modules in construction
order, so for modules built out of forward order, or any other naming, give the
order explicitly as `order=[...]`. A layer with
a "kernel" is a Dense layer; one with only "scale"/"bias" is a LayerNorm. The
LAST Dense of the order is the output layer: its neurons are never scored,
masked or reset (though ReDo's zeroing of the previous layer's outgoing weights
does touch rows of its kernel, as intended). Several networks (actor, critic,
encoder, ...) are handled by calling these functions once per sub-dict.

Kernels may carry leading member axes (ensembles made with `networks.mlp.ensemble`:
kernel [members, in, out]); scores and masks then have shape [members, width]
and each member is normalized, ranked and re-initialized on its own.

Masks (`neuron_masks`)
----------------------
- "threshold":  s_i <= tau
- "percentage": the floor(p/100 * width) lowest-scored neurons of each layer
  (ties broken by lower index first)
- "hybrid":     the threshold CAPPED at p%: s_i <= tau AND among the bottom p% (at most p% of a
  layer resets; the GraMa authors' GradientReDo hybrid)
- "union":      s_i <= tau OR among the bottom p% (at least p% resets; this module's earlier "hybrid")
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from networks.mlp import MLP, activation, layer_norm
from networks.mlp import kernel_init as mlp_kernel_init

Params = Mapping[str, Any]
Initializer = Callable[..., jax.Array]

EPS = 1e-9
MASK_MODES = ("threshold", "percentage", "hybrid", "union")
_NEEDS_TAU = ("threshold", "hybrid", "union")
_NEEDS_PERCENTAGE = ("percentage", "hybrid", "union")
DIAGNOSTIC_TAUS = (0.0, 0.025, 0.1)

# ----------------------------------------------------------------------------- layers

_NUMBERED = re.compile(r"^(Dense|LayerNorm|hidden)_(\d+)$")


def _is_dense(layer: Mapping[str, Any]) -> bool:
    return "kernel" in layer


def _is_layer(layer: Any) -> bool:
    return isinstance(layer, Mapping) and ("kernel" in layer or "scale" in layer or "bias" in layer) \
        and all(not isinstance(v, Mapping) for v in layer.values())


def layer_order(params: Params) -> list[str]:
    """The layer names of one network's params in forward order (the last Dense is the output).

    Accepts `Dense_k` / `LayerNorm_k` (flax auto-names; Dense_k precedes LayerNorm_k)
    and `hidden_k` / `out` (networks/mlp.py's MLP). Sorting is numeric, so Dense_10
    follows Dense_9. For any other naming pass `order=[...]` to the functions below.
    """
    keys = []
    for name, layer in params.items():
        if not _is_layer(layer):
            raise ValueError(
                f"params entry {name!r} is not a Dense or LayerNorm layer; pass the params "
                "sub-dict of a single MLP (e.g. params['critic']), not a nested tree")
        m = _NUMBERED.match(name)
        if m:
            keys.append(((int(m.group(2)), m.group(1) == "LayerNorm"), name))
        elif name == "out":
            keys.append(((math.inf, False), name))
        else:
            raise ValueError(
                f"cannot order layer {name!r}: expected names Dense_<k>, LayerNorm_<k>, hidden_<k> "
                "or out; pass an explicit order=[...] for other namings")
    order = [name for _, name in sorted(keys)]
    _check_order(params, order)
    # Flax numbers modules in construction order, which is usually but not always the
    # forward order: check that the widths chain (out of one layer = in of the next).
    width = None
    for name in order:
        layer = params[name]
        if _is_dense(layer):
            fan_in, fan_out = jnp.shape(layer["kernel"])[-2:]
        else:
            fan_in = fan_out = jnp.shape(next(iter(layer.values())))[-1]
        if width is not None and fan_in != width:
            raise ValueError(
                f"layer widths do not chain in the numeric order {order}: {name!r} takes {fan_in} "
                f"inputs after a layer of width {width}; pass an explicit order=[...]")
        width = fan_out
    return order


def _check_order(params: Params, order: Sequence[str]) -> None:
    missing = [n for n in order if n not in params]
    if missing:
        raise ValueError(f"layers {missing} in order are not in params (have {sorted(params)})")
    if not any(_is_dense(params[n]) for n in order):
        raise ValueError("no Dense layer (with a 'kernel') in params; cannot find the output layer")


def _resolve(params: Params, order: Sequence[str] | None) -> list[str]:
    if order is None:
        return layer_order(params)
    order = list(order)
    _check_order(params, order)
    return order


def output_layer(params: Params, order: Sequence[str] | None = None) -> str:
    """Name of the output layer: the last Dense layer of the order. It is never reset."""
    order = _resolve(params, order)
    return [n for n in order if _is_dense(params[n])][-1]


def hidden_layers(params: Params, order: Sequence[str] | None = None) -> list[str]:
    """Every layer of the order except the output layer: those whose neurons are scored."""
    order = _resolve(params, order)
    out = output_layer(params, order)
    return [n for n in order if n != out]


def mlp_initializer(mlp: MLP) -> Initializer:
    """The kernel initializer an `networks.mlp.MLP` instance uses, for re-initializing its neurons."""
    return mlp_kernel_init(mlp.initializer, mlp.gain)


def mlp_activations(params: Params, x: jax.Array, act: str = "elu",
                    use_layer_norm: bool = True) -> dict[str, jax.Array]:
    """Post-activations {hidden_k: [..., batch, width]} of a networks/mlp.py `MLP` on inputs x [batch, in].

    Recomputes the MLP's forward pass (Linear -> [LayerNorm] -> act) from its params;
    `act` and `use_layer_norm` must match the module's. Kernels with leading
    member axes (ensembles) give activations [members, batch, width].
    """
    f = activation(act)
    out: dict[str, jax.Array] = {}
    for name in hidden_layers(params):
        layer = params[name]
        if not _is_dense(layer):
            raise ValueError(f"mlp_activations expects only Dense layers, got {name!r}")
        x = jnp.matmul(x, layer["kernel"]) + layer["bias"][..., None, :]
        if use_layer_norm:
            x = layer_norm(x)
        x = f(x)
        out[name] = x
    return out


def sown_activations(intermediates: Mapping[str, Any]) -> dict[str, jax.Array]:
    """{hidden_k: [..., batch, width]} from the post-activations an `MLP` sows as `features_k`.

    `intermediates` is the MLP's sub-dict of the "intermediates" collection, e.g.
    `model.apply(v, x, mutable=["intermediates"])[1]["intermediates"]` (or a nested
    entry of it). Each sown value is a tuple; its last element is used.
    """
    out = {}
    for name, value in intermediates.items():
        m = re.fullmatch(r"features_(\d+)", name)
        if m:
            out[f"hidden_{m.group(1)}"] = value[-1] if isinstance(value, (tuple, list)) else value
    if not out:
        raise ValueError(f"no features_<k> entries in intermediates (have {sorted(intermediates)}); "
                         "pass the sub-dict of one MLP")
    return out


# ----------------------------------------------------------------------------- scores

def _normalize(g: jax.Array) -> jax.Array:
    """s_i = g_i / (mean_k g_k + 1e-9) over the last (neuron) axis."""
    return g / (jnp.mean(g, axis=-1, keepdims=True) + EPS)


def grama_scores(grads: Params, order: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """GraMa score [..., width] of every hidden layer from the loss gradients of one network.

    `grads` has the structure of the params (e.g. `jax.grad(loss)(params)['critic']`).
    Dense: mean |dL/dW| over the incoming weights (kernel axis -2); LayerNorm:
    |dL/dscale| (|dL/dbias| if it has no scale).
    """
    scores = {}
    for name in hidden_layers(grads, order):
        layer = grads[name]
        if _is_dense(layer):
            g = jnp.mean(jnp.abs(layer["kernel"]), axis=-2)
        else:
            g = jnp.abs(layer["scale"] if "scale" in layer else layer["bias"])
        scores[name] = _normalize(g)
    return scores


def redo_scores(activations: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """ReDo score [..., width] of each layer from its post-activations [..., batch, width].

    `activations` maps a hidden layer's name (as in the params) to the output of that
    neuron after its nonlinearity (e.g. from `mlp_activations`, `sow`, or
    `capture_intermediates` where that captures post-activations).
    """
    return {name: _normalize(jnp.mean(jnp.abs(h), axis=-2)) for name, h in activations.items()}


# ----------------------------------------------------------------------------- masks

def _check_range(name: str, value: Any, lo: float, hi: float, lo_open: bool) -> None:
    """Raise ValueError if a concrete value is outside the range; traced values are not checked."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        return
    ok = ((v > lo) if lo_open else (v >= lo)) & (v <= hi)
    if not np.all(ok):
        rng = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be in {rng}, got {value}")


def check_tau(tau: Any) -> None:
    """ValueError unless the threshold tau is in [0, 1] (skipped for traced values)."""
    _check_range("threshold tau", tau, 0.0, 1.0, lo_open=False)


def check_percentage(percentage: Any) -> None:
    """ValueError unless the percentage is in (0, 100] (skipped for traced values)."""
    _check_range("percentage", percentage, 0.0, 100.0, lo_open=True)


def bottom_percentage(scores: jax.Array, percentage: Any) -> jax.Array:
    """Bool mask of the floor(p/100 * width) lowest scores along the last axis (ties: lower index first)."""
    check_percentage(percentage)
    width = scores.shape[-1]
    k = jnp.floor(jnp.asarray(percentage, jnp.float32) * width / 100.0)
    rank = jnp.argsort(jnp.argsort(scores, axis=-1, stable=True), axis=-1, stable=True)
    return rank < k


def neuron_masks(scores: Mapping[str, jax.Array], mode: str = "threshold", tau: Any = None,
                 percentage: Any = None) -> dict[str, jax.Array]:
    """Bool masks (True = reset) per layer from scores: mode threshold | percentage | hybrid | union.

    threshold: s <= tau (tau in [0, 1]); percentage: bottom p% of each layer
    (p in (0, 100]); hybrid: both at once, i.e. the threshold capped at p%;
    union: either (hybrid and union need tau and percentage).
    """
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}; valid: {', '.join(MASK_MODES)}")
    if mode in _NEEDS_TAU:
        if tau is None:
            raise ValueError(f"mode {mode!r} needs a threshold tau in [0, 1]")
        check_tau(tau)
    if mode in _NEEDS_PERCENTAGE:
        if percentage is None:
            raise ValueError(f"mode {mode!r} needs a percentage in (0, 100]")
        check_percentage(percentage)
    masks = {}
    for name, s in scores.items():
        if mode == "threshold":
            masks[name] = s <= tau
        elif mode == "percentage":
            masks[name] = bottom_percentage(s, percentage)
        elif mode == "hybrid":
            masks[name] = (s <= tau) & bottom_percentage(s, percentage)
        else:
            masks[name] = (s <= tau) | bottom_percentage(s, percentage)
    return masks


# ----------------------------------------------------------------------------- resets

def _draw(init: Initializer, key: jax.Array, shape: tuple[int, ...], dtype, core: int) -> jax.Array:
    """A fresh draw of `shape`, treating all but the last `core` axes as independent members
    (so fans are computed from the per-member shape, as `nn.vmap` does at init)."""
    lead, inner = shape[:len(shape) - core], shape[len(shape) - core:]
    if not lead:
        return init(key, inner, dtype)
    keys = jax.random.split(key, math.prod(lead))
    return jax.vmap(lambda k: init(k, inner, dtype))(keys).reshape(shape)


def fan_in_uniform_bias(fan_in: int) -> Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's nn.Linear bias initialization."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def reset_neurons(key: jax.Array, params: Params, masks: Mapping[str, jax.Array], *,
                  kernel_init: Initializer = mlp_kernel_init("xavier_uniform"),
                  bias_init: Initializer | Callable[[int], Initializer] = nn.initializers.zeros,
                  bias_init_takes_fan_in: bool = False,
                  zero_outgoing: bool = False,
                  order: Sequence[str] | None = None) -> tuple[dict, dict]:
    """Re-initialize the masked neurons of one network; returns (new params, changed).

    For a masked neuron i of a Dense layer: kernel column i (its incoming weights) is a
    fresh draw of `kernel_init` (the layer's own initializer; the default is
    networks/mlp.py's MLP default, xavier-uniform at the ReLU gain; use
    `mlp_initializer(mlp)` or `nn.initializers.lecun_normal()` for plain nn.Dense)
    and bias i is `bias_init` (zeros; with `bias_init_takes_fan_in`, `bias_init(fan_in)` is the initializer,
    e.g. `fan_in_uniform_bias`). LayerNorm: scale_i = 1, bias_i = 0.
    With `zero_outgoing` (ReDo), row i of the next Dense layer's kernel is set to 0.
    `changed` has the structure of params: bool arrays, True where an entry was
    reset (use it with `reset_optimizer_moments`). Masking the output layer is an error.
    """
    order = _resolve(params, order)
    out_name = output_layer(params, order)
    for name in masks:
        if name == out_name:
            raise ValueError(f"{name!r} is the output layer; its neurons are never reset")
        if name not in order:
            raise ValueError(f"mask for unknown layer {name!r}; layers: {order}")

    new = {n: dict(layer) for n, layer in params.items()}
    changed = {n: {k: jnp.zeros(jnp.shape(v), bool) for k, v in layer.items()} for n, layer in params.items()}
    for idx, name in enumerate(order):
        if name not in masks:
            continue
        m = masks[name]
        layer = new[name]
        lkey = jax.random.fold_in(key, idx)
        if _is_dense(layer):
            kernel = layer["kernel"]
            if m.shape != kernel.shape[:-2] + kernel.shape[-1:]:
                raise ValueError(f"mask for {name!r} has shape {m.shape}, kernel is {kernel.shape}")
            kkey, bkey = jax.random.split(lkey)
            fresh = _draw(kernel_init, kkey, kernel.shape, kernel.dtype, core=2)
            col = jnp.broadcast_to(m[..., None, :], kernel.shape)
            layer["kernel"] = jnp.where(col, fresh, kernel)
            changed[name]["kernel"] = changed[name]["kernel"] | col
            if "bias" in layer:
                bias = layer["bias"]
                init_bias = bias_init(kernel.shape[-2]) if bias_init_takes_fan_in else bias_init
                layer["bias"] = jnp.where(m, _draw(init_bias, bkey, bias.shape, bias.dtype, core=1), bias)
                changed[name]["bias"] = changed[name]["bias"] | m
        else:
            for field, value in (("scale", 1.0), ("bias", 0.0)):
                if field in layer:
                    p = layer[field]
                    if m.shape != p.shape:
                        raise ValueError(f"mask for {name!r} has shape {m.shape}, {field} is {p.shape}")
                    layer[field] = jnp.where(m, jnp.asarray(value, p.dtype), p)
                    changed[name][field] = changed[name][field] | m

    if zero_outgoing:
        for idx, name in enumerate(order):
            if name not in masks:
                continue
            nxt = next((n for n in order[idx + 1:] if _is_dense(new[n])), None)
            if nxt is None:
                continue
            m, kernel = masks[name], new[nxt]["kernel"]
            if kernel.shape[-2] != m.shape[-1]:
                raise ValueError(
                    f"cannot zero outgoing weights of {name!r}: width {m.shape[-1]} != input width "
                    f"{kernel.shape[-2]} of the next Dense {nxt!r}")
            row = jnp.broadcast_to(m[..., :, None], kernel.shape)
            new[nxt]["kernel"] = jnp.where(row, jnp.zeros((), kernel.dtype), kernel)
            changed[nxt]["kernel"] = changed[nxt]["kernel"] | row
    return new, changed


def _get_in(tree: Any, path: Sequence[Any]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _set_in(tree: Any, path: Sequence[Any], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy = dict(tree)
    copy[head] = _set_in(tree[head], rest, value)
    return type(tree)(copy) if not isinstance(tree, dict) else copy


def _is_moment_state(x: Any) -> bool:
    # optax.ScaleByAdamState (adam, adamw, ...) and other NamedTuples with Adam-like moments.
    return hasattr(x, "_replace") and hasattr(x, "mu") and hasattr(x, "nu")


def reset_optimizer_moments(opt_state: Any, changed: Params, path: Sequence[Any] = ()) -> Any:
    """Zero the Adam first and second moments (mu, nu) of every entry marked in `changed`.

    Finds every optax ScaleByAdamState (also inside chain / inject_hyperparams) in
    `opt_state`; `path` locates the network's sub-dict inside the optimizer's params
    tree (e.g. ("params", "critic") when one optimizer covers several networks;
    () when the optimizer is over exactly this network's params). The step count is kept.
    """
    path = tuple(path)

    def reset(state):
        if not _is_moment_state(state):
            return state
        moments = {}
        for field in ("mu", "nu"):
            tree = getattr(state, field)
            sub = _get_in(tree, path)
            sub = jax.tree.map(lambda v, c: jnp.where(c, jnp.zeros((), v.dtype), v), sub, changed)
            moments[field] = _set_in(tree, path, sub)
        return state._replace(**moments)

    return jax.tree.map(reset, opt_state, is_leaf=_is_moment_state)


# ----------------------------------------------------------------------------- diagnostics

def inactive_ratio(scores: Mapping[str, jax.Array], tau: Any) -> jax.Array:
    """Fraction of all scored neurons (pooled over layers and members) with s <= tau."""
    check_tau(tau)
    hits = sum(jnp.sum(s <= tau) for s in scores.values())
    total = sum(s.size for s in scores.values())
    return hits / total


def dormant_ratio(activations: Mapping[str, jax.Array], tau: Any) -> jax.Array:
    """ReDo dormant ratio: fraction of hidden neurons with ReDo score <= tau (tau=0: exactly silent)."""
    return inactive_ratio(redo_scores(activations), tau)


def grama_inactive_ratio(grads: Params, tau: Any, order: Sequence[str] | None = None) -> jax.Array:
    """Fraction of hidden neurons with GraMa score <= tau."""
    return inactive_ratio(grama_scores(grads, order), tau)


def srank(features: jax.Array, delta: float = 0.01) -> jax.Array:
    """Effective rank (Kumar et al., 2020) of a feature matrix [..., batch, dim].

    With singular values sigma_1 >= sigma_2 >= ...: the smallest k with
    sum_{i<=k} sigma_i >= (1 - delta) * sum_i sigma_i. A zero matrix has srank 0.
    """
    sigma = jnp.linalg.svd(features, compute_uv=False)
    cum = jnp.cumsum(sigma, axis=-1)
    total = cum[..., -1:]
    k = jnp.sum(cum < (1.0 - delta) * total, axis=-1) + 1
    return jnp.where(total[..., 0] > 0, k, 0).astype(jnp.int32)


def feature_norm(features: jax.Array) -> jax.Array:
    """Mean L2 norm of the rows (one per sample) of a feature matrix [..., batch, dim]."""
    return jnp.mean(jnp.linalg.norm(features, axis=-1), axis=-1)


def plasticity_diagnostics(activations: Mapping[str, jax.Array] | None = None,
                           grads: Params | None = None,
                           features: jax.Array | None = None,
                           taus: Sequence[float] = DIAGNOSTIC_TAUS,
                           delta: float = 0.01,
                           order: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """The logged metrics of whatever is given, keyed for train.csv.

    dormant_<tau> (ReDo, from activations), grama_inactive_<tau> (from grads),
    srank and feature_norm (from the feature matrix Φ [batch, dim]).
    """
    for tau in taus:
        check_tau(tau)
    out: dict[str, jax.Array] = {}
    if activations is not None:
        s = redo_scores(activations)
        out.update({f"dormant_{tau:g}": inactive_ratio(s, tau) for tau in taus})
    if grads is not None:
        s = grama_scores(grads, order)
        out.update({f"grama_inactive_{tau:g}": inactive_ratio(s, tau) for tau in taus})
    if features is not None:
        out["srank"] = srank(features, delta)
        out["feature_norm"] = feature_norm(features)
    return out
