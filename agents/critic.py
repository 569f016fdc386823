"""The off-policy pieces that SAC, TD3, LEAST, ReGraMa, RAVL (and MR.Q's storing and schedule) share, written once.

    store            one loop step's transitions into the agent's replay, one per env stream (and count them)
    sample_batch     one-step transitions drawn uniformly over every stream of the replay
    ensemble         the Q ensemble of a config's critic fields (num_critics, critic_hidden, activation, ...)
    td_loss          L_Q = sum_j mean_batch (Q_j(s, a) - y)^2, the targets y are the agent's own; an optional
                     penalty on the critics' last hidden pre-activations (an add-on's hook, e.g. SIGReg)
    diagnostics      the critics' plasticity on a replay batch: dormant and GraMa-inactive ratios, srank
    scheduled_updates  the updates owed after a loop step of N env steps at an update-to-data ratio

An agent's state needs `replay` (replay/streams.py: one stream per env of the seed), `env_steps`, `critic`
(networks/training.py `Trained`) and `config` (with `batch_size`) for the pieces that read it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import jax
import jax.numpy as jnp

import replay
from networks import plasticity
from networks.actor_critic import QEnsemble
from replay import streams

CriticPenalty = Callable[[object, jax.Array, jax.Array], tuple[jax.Array, dict]]
"""penalty(state, features, key) -> (term added to L_Q, metrics): `features` are the last hidden layer's
pre-activations of every critic, [num_critics, batch, width] (agents/sigreg.py's SIGReg on SAC is one)."""


def ensemble(config, init: str = "default") -> QEnsemble:
    """The critics of `config`; `init` is the bias and last-layer scheme (networks/actor_critic.py INIT_SCHEMES)."""
    return QEnsemble(config.num_critics, config.critic_hidden, config.activation, config.layer_norm,
                     config.initializer, init)


def store(state, transition: replay.Transition):
    """Add one loop step's transitions to `state.replay`, env e's into stream e ([N, ...] leaves; one env's
    unbatched transition into the only stream), and count them in `state.env_steps` (env steps, summed over
    the seed's envs)."""
    buffer = streams.add_transition(state.replay, transition)
    return state.replace(replay=buffer, env_steps=state.env_steps + streams.num_streams(buffer))


def sample_batch(state, key: jax.Array) -> replay.TransitionBatch:
    """`state.config.batch_size` one-step transitions, uniform over the valid slots of every stream."""
    stream, index = streams.sample(state.replay, key, state.config.batch_size)
    return streams.transitions(state.replay, stream, index)


def mlp(tree: dict) -> dict:
    """The critics' MLP sub-dict (layers hidden_0.., out; leaves with a leading critic axis) of a params,
    gradients or intermediates tree of `QEnsemble`."""
    return tree["critics"]["MLP_0"]


def td_loss(network: QEnsemble, critic_params: dict, batch: replay.TransitionBatch, target: jax.Array,
            penalty: CriticPenalty | None = None, state=None, key: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """sum_j mean (Q_j(s, a) - y)^2 (CleanRL sums the twin critics' MSEs), + `penalty(state, features, key)` of
    the critics' last hidden pre-activations when an add-on gives one."""
    if penalty is None:
        q = network.apply(critic_params, batch.obs, batch.action)                          # [B, N]
    else:
        q, variables = network.apply(critic_params, batch.obs, batch.action, mutable=["intermediates"])
        sown = mlp(variables["intermediates"])
        last = max(int(name.split("_")[-1]) for name in sown if name.startswith("preactivation_"))
        extra, extra_metrics = penalty(state, sown[f"preactivation_{last}"][-1], key)     # [N, B, width]
    loss = jnp.sum(jnp.mean(jnp.square(q - target[:, None]), axis=0))
    metrics = {"critic/loss": loss, "critic/q": jnp.mean(q), "critic/target": jnp.mean(target)}
    if penalty is not None:
        loss = loss + extra
        metrics.update(extra_metrics)
    return loss, metrics


def activations(network: QEnsemble, critic_params: dict, obs: jax.Array, action: jax.Array) -> dict:
    """Post-activations of every hidden layer of the critics: {hidden_k: [num_critics, B, width]}."""
    _, variables = network.apply(critic_params, obs, action, mutable=["intermediates"])
    return plasticity.sown_activations(mlp(variables["intermediates"]))


def diagnostics(state, key: jax.Array, network: QEnsemble, target_fn, loss_fn) -> dict:
    """Critic plasticity on a replay batch: ReDo dormant ratios, GraMa-inactive ratios (from the gradients of
    `loss_fn(params, state, batch, y)`, y = `target_fn(state, batch, key)`), and the effective rank (srank) and
    norm of the last hidden layer's features; means over critics."""
    k_sample, k_target = jax.random.split(key)
    batch = sample_batch(state, k_sample)
    hidden = activations(network, state.critic.params, batch.obs, batch.action)
    target = jax.lax.stop_gradient(target_fn(state, batch, k_target))
    grads, _ = jax.grad(loss_fn, has_aux=True)(state.critic.params, state, batch, target)
    features = hidden[max(hidden, key=lambda name: int(name.split("_")[-1]))]          # [critics, B, width]
    values = plasticity.plasticity_diagnostics(hidden, mlp(grads["params"]), features)
    return {f"critic/{name}": jnp.mean(jnp.asarray(v, jnp.float32)) for name, v in values.items()}


# ----------------------------------------------------------------------------
# The update-to-data schedule
# ----------------------------------------------------------------------------


MAX_RATIO_DENOMINATOR = 46_340
"""The update-to-data ratio is held as the nearest fraction p/q with q <= 46 340 (= floor(sqrt(2^31))), so that
`updates_before` is exact integer arithmetic in int32: exact for every ratio with at most four decimals and for
every k/N with N <= 46 340 (e.g. FastTD3's 2/1024)."""


def ratio_fraction(updates_per_step: float) -> Fraction:
    """`updates_per_step` (a static Python float, e.g. 0.075) as the fraction it stands for (3/40), not the binary
    float's exact value (0.0749999...), which would owe one update fewer at every multiple of 40."""
    return Fraction(updates_per_step).limit_denominator(MAX_RATIO_DENOMINATOR)


def updates_before(step: jax.Array, learning_starts: int, updates_per_step: float) -> jax.Array:
    """Updates owed once `step` env steps are stored: floor((step - learning_starts) * p / q), at least 0, where
    p/q = `ratio_fraction(updates_per_step)` for a static (Python) ratio.

    Integer arithmetic: with t = a q + b (b < q) and p = c q + d (d < q), floor(t p / q) = t c + a d + floor(b d / q),
    and b d < q^2 < 2^31. A float32 product t * ratio would be off by one update now and then past ~1.7e7 env steps
    per seed (a 24-bit mantissa), which runs with 1024 envs per seed reach.
    """
    if not isinstance(updates_per_step, (int, float)):
        # A traced ratio (a config field not declared static, e.g. a user's agent): a float32 product, exact up to
        # 2^24 env steps per seed.
        return jnp.floor(jnp.maximum(step - learning_starts, 0) * updates_per_step).astype(jnp.int32)
    ratio = ratio_fraction(updates_per_step)
    p, q = ratio.numerator, ratio.denominator
    c, d = divmod(p, q)
    t = jnp.maximum(jnp.asarray(step, jnp.int32) - learning_starts, 0)
    a, b = t // q, t % q
    return t * c + a * d + (b * d) // q


def scheduled_updates(update_once: Callable, state, key: jax.Array, step: jax.Array, learning_starts: int,
                      updates_per_step: float, num_envs: int = 1, key_of: Callable = jax.random.fold_in):
    """Run the updates due after a loop step that stored `num_envs` transitions, env steps `step - num_envs + 1`
    to `step` (`step` counts env steps per seed, summed over its envs, from 1).

    The first update follows env step `learning_starts + 1` (CleanRL's `global_step >
    learning_starts`); from then on the update-to-data ratio `updates_per_step`
    holds per env step on average: 2 means two updates per env step, 0.5 one
    every other env step; with N envs a loop step owes N x that (e.g. 2/128 at
    N = 128: two updates per loop step, FastTD3's regime). `update_once(state,
    key, index) -> (state, metrics)` receives the global update index; `step`
    must be the same for every seed (passed unbatched), so the loop count and
    any schedule on `index` (e.g. a delayed actor) are real branches under
    `vmap` -- as long as `updates_per_step` is static too (a traced ratio
    batched over lanes makes them selects). Metrics are those of the last
    update, zeros when none ran. `key_of(key, i)` is the key of the loop
    step's i-th update (default fold_in(key, i)).
    """
    first = updates_before(step - num_envs, learning_starts, updates_per_step)
    count = updates_before(step, learning_starts, updates_per_step) - first
    metric_shapes = jax.eval_shape(update_once, state, key, first)[1]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)

    def body(i, carry):
        state, _ = carry
        return update_once(state, key_of(key, i), first + i)

    return jax.lax.fori_loop(0, count, body, (state, zeros))
