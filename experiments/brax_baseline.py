"""Reference throughputs for the PPO benchmark: Brax's PPO and the raw physics.

``brax_ppo_training_sps`` runs ``brax.training.agents.ppo.train`` on a MuJoCo
Playground task, wrapped and configured the way Playground trains with Brax
(``wrap_for_brax_training``, ``make_ppo_networks`` with swish MLPs), with the
hyperparameters the caller gives. It returns Brax's own ``training/sps``
(environment steps per second of training, as Brax reports it to
``progress_fn``) averaged over every training epoch but the first, because
the first epoch's wall time includes compiling the whole training step.
One Brax "training step" is one rollout of
``batch_size * num_minibatches * unroll_length`` env steps followed by
``num_updates_per_batch`` epochs of SGD over it; here every Brax epoch is
exactly one training step. Brax's sps is measured inside its
``training_epoch_with_timing`` and covers the training step only: evaluation,
checkpointing and the host-side bookkeeping between epochs are outside it.
Evaluation is switched off anyway (``run_evals=False``).

``physics_steps_per_s`` is the physics limit for the same task: Playground's
``env.step`` vmapped over ``num_envs`` and scanned for ``num_steps`` steps
with uniformly random actions, no auto-reset, no policy, no learning.

Why the shim: Brax 0.14.2's trainers call ``jax.device_put_replicated``, which
the JAX installed here (0.10.x) no longer has. ``device_put_replicated_shim``
puts an equivalent function on ``jax`` only while the baseline runs (stack one
copy per device along a new leading axis, shard that axis over the devices on
a mesh whose axis has the name Brax's ``pmap`` uses, so that the second epoch
does not recompile; see the shim's docstring) and removes it afterwards;
nothing in site-packages is changed.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
import warnings
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

_MISSING = object()
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


# Brax's trainers pmap over an axis named "i" (``_PMAP_AXIS_NAME``).
BRAX_PMAP_AXIS_NAME = "i"


def _make_device_put_replicated(axis_name: str):
    def device_put_replicated(x, devices):
        """What ``jax.device_put_replicated`` did: one copy of ``x`` per device,
        stacked along a new leading axis of length ``len(devices)``, that axis
        sharded over ``devices``."""
        devices = list(devices)
        mesh = jax.sharding.Mesh(np.array(devices), (axis_name,))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))
        stacked = jax.tree.map(lambda a: jnp.stack([jnp.asarray(a)] * len(devices)), x)
        return jax.device_put(stacked, sharding)

    return device_put_replicated


@contextlib.contextmanager
def device_put_replicated_shim(axis_name: str = BRAX_PMAP_AXIS_NAME) -> Iterator[None]:
    """Provide ``jax.device_put_replicated`` (removed from JAX) while inside.

    If ``jax`` still has the attribute it is left untouched; otherwise the
    replacement is installed and deleted again on exit.

    ``axis_name`` must be the axis name of the ``pmap`` the replicated values
    are fed to. This JAX implements ``pmap`` as ``jit`` of ``shard_map``, whose
    outputs live on a mesh whose single axis is the pmap's axis name, and
    ``jit``'s cache is keyed on the input shardings, mesh axis names included.
    Replicating onto a mesh with any other axis name makes the second call
    (fed the first call's outputs) compile the whole program again, which
    would land a full recompilation in Brax's second, timed, epoch.
    """
    previous = getattr(jax, "device_put_replicated", _MISSING)
    replacement = _make_device_put_replicated(axis_name)
    if previous is _MISSING:
        jax.device_put_replicated = replacement
    try:
        yield
    finally:
        if previous is _MISSING and getattr(jax, "device_put_replicated", _MISSING) is replacement:
            del jax.device_put_replicated


def _load_playground(env_name: str):
    from mujoco_playground import registry

    return registry.load(env_name, config_overrides={"impl": "jax"})


def brax_ppo_training_sps(
    env_name: str,
    *,
    num_envs: int,
    unroll_length: int,
    batch_size: int,
    num_minibatches: int,
    num_updates_per_batch: int,
    discounting: float,
    gae_lambda: float,
    learning_rate: float,
    entropy_cost: float,
    reward_scaling: float,
    clipping_epsilon: float,
    normalize_observations: bool,
    policy_hidden: tuple[int, ...],
    value_hidden: tuple[int, ...],
    max_grad_norm: float | None,
    training_steps: int = 2,
    seed: int = 0,
) -> dict:
    """Brax PPO's training throughput (env steps/s) on Playground ``env_name``.

    Runs ``training_steps`` Brax training steps, each its own Brax epoch; the
    first includes compilation and is reported separately
    (``first_epoch_sps_incl_compile``); ``sps`` is the mean of Brax's
    ``training/sps`` over the other ``timed_epochs = training_steps - 1``.

    Also returned: ``epoch_sps`` and ``epoch_seconds`` (every epoch, from
    Brax's metrics), ``compile_seconds_per_epoch`` (XLA compile time between
    consecutive ``progress_fn`` calls, the first entry including setup; a
    warning is issued if the timed epochs' entries are not ~0) and
    ``wall_seconds_incl_setup``.

    ``num_resets_per_eval`` is left at 0 on purpose: Brax multiplies its
    reported sps by ``max(num_resets_per_eval, 1)`` although each timed call
    runs only ``1 / num_resets_per_eval`` of the steps, so with Playground's
    DM Control setting (10) ``training/sps`` reads 10x too high.
    """
    import brax
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo_train
    from flax import linen
    from mujoco_playground import wrapper

    if training_steps < 2:
        raise ValueError("training_steps must be >= 2: the first epoch includes compilation.")
    rollout_envs = batch_size * num_minibatches
    if rollout_envs % num_envs:
        # Brax unrolls batch_size * num_minibatches // num_envs times per
        # training step; anything else silently changes the batch.
        raise ValueError(
            f"batch_size * num_minibatches ({rollout_envs}) must be a multiple of "
            f"num_envs ({num_envs})."
        )

    env_steps_per_training_step = batch_size * num_minibatches * unroll_length
    num_timesteps = training_steps * env_steps_per_training_step
    # Brax runs max(num_evals - 1, 1) epochs of
    # ceil(num_timesteps / (epochs * env_steps_per_training_step)) training
    # steps each: this gives `training_steps` epochs of one training step.
    num_evals = training_steps + 1

    network_factory = functools.partial(
        ppo_networks.make_ppo_networks,
        policy_hidden_layer_sizes=tuple(policy_hidden),
        value_hidden_layer_sizes=tuple(value_hidden),
        activation=linen.swish,
    )

    epochs: list[dict] = []
    compile_seconds = [0.0]  # XLA compile time since the last progress_fn call

    def on_event_duration(event, duration_secs, **_):
        if event == _BACKEND_COMPILE_EVENT:
            compile_seconds[0] += duration_secs

    def progress_fn(step, metrics):
        if "training/sps" in metrics:
            epochs.append(
                {
                    "step": int(step),
                    "sps": float(metrics["training/sps"]),
                    "walltime": float(metrics["training/walltime"]),
                    "compile_seconds": compile_seconds[0],
                }
            )
            compile_seconds[0] = 0.0

    env = _load_playground(env_name)
    t0 = time.perf_counter()
    jax.monitoring.register_event_duration_secs_listener(on_event_duration)
    with contextlib.ExitStack() as stack:
        stack.callback(jax.monitoring.unregister_event_duration_listener, on_event_duration)
        stack.enter_context(device_put_replicated_shim())
        ppo_train.train(
            environment=env,
            num_timesteps=num_timesteps,
            wrap_env_fn=wrapper.wrap_for_brax_training,
            num_envs=num_envs,
            episode_length=1000,
            action_repeat=1,
            learning_rate=learning_rate,
            entropy_cost=entropy_cost,
            discounting=discounting,
            unroll_length=unroll_length,
            batch_size=batch_size,
            num_minibatches=num_minibatches,
            num_updates_per_batch=num_updates_per_batch,
            normalize_observations=normalize_observations,
            reward_scaling=reward_scaling,
            clipping_epsilon=clipping_epsilon,
            gae_lambda=gae_lambda,
            max_grad_norm=max_grad_norm,
            network_factory=network_factory,
            seed=seed,
            num_evals=num_evals,
            num_eval_envs=16,
            run_evals=False,
            progress_fn=progress_fn,
        )
    wall_seconds = time.perf_counter() - t0

    if len(epochs) != training_steps:
        raise RuntimeError(f"expected {training_steps} Brax epochs, progress_fn saw {len(epochs)}")
    timed = [e["sps"] for e in epochs[1:]]
    walltimes = [e["walltime"] for e in epochs]
    epoch_seconds = [walltimes[0]] + [b - a for a, b in itertools.pairwise(walltimes)]
    # Compilation after the first epoch means the timed epochs are not what
    # they claim to be (e.g. a shim whose shardings differ from pmap's).
    late_compile = sum(e["compile_seconds"] for e in epochs[1:])
    if late_compile > 0.05 * sum(epoch_seconds[1:]):
        warnings.warn(
            f"{late_compile:.2f} s of XLA compilation happened after Brax's first epoch; "
            "the timed epochs' sps includes it.",
            stacklevel=2,
        )
    return {
        "env_steps_per_training_step": env_steps_per_training_step,
        "timed_epochs": len(timed),
        "sps": float(np.mean(timed)),
        "first_epoch_sps_incl_compile": epochs[0]["sps"],
        "brax_version": brax.__version__,
        "epoch_sps": [e["sps"] for e in epochs],
        "epoch_seconds": epoch_seconds,
        "compile_seconds_per_epoch": [e["compile_seconds"] for e in epochs],
        "num_timesteps": num_timesteps,
        "wall_seconds_incl_setup": wall_seconds,
    }


def physics_steps_per_s(env_name: str, num_envs: int, num_steps: int = 100, seed: int = 0) -> dict:
    """Raw Playground ``env.step`` throughput, ``num_envs`` envs in lockstep.

    ``lax.scan`` of ``num_steps`` calls to ``vmap(env.step)`` with uniform
    random actions in [-1, 1], jitted; no auto-reset. Timed on a call after
    compilation and one warm-up call.
    """
    env = _load_playground(env_name)
    action_size = int(env.action_size)

    @jax.jit
    def rollout(state, key):
        def body(carry, _):
            state, key = carry
            key, key_action = jax.random.split(key)
            action = jax.random.uniform(
                key_action, (num_envs, action_size), minval=-1.0, maxval=1.0
            )
            state = jax.vmap(env.step)(state, action)
            return (state, key), None

        (state, key), _ = jax.lax.scan(body, (state, key), None, length=num_steps)
        return state, key

    key_reset, key = jax.random.split(jax.random.PRNGKey(seed))
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(key_reset, num_envs))
    jax.block_until_ready(state)

    t0 = time.perf_counter()
    compiled = rollout.lower(state, key).compile()
    compile_seconds = time.perf_counter() - t0
    state, key = jax.block_until_ready(compiled(state, key))  # warm-up

    t0 = time.perf_counter()
    state, key = jax.block_until_ready(compiled(state, key))
    seconds = time.perf_counter() - t0
    return {
        "env_steps_per_s": num_envs * num_steps / seconds,
        "num_envs": num_envs,
        "num_steps": num_steps,
        "seconds": seconds,
        "compile_seconds": compile_seconds,
    }


if __name__ == "__main__":
    import json

    # A CPU-sized check: Playground's DM Control PPO config with fewer envs,
    # minibatches and updates per batch.
    t = time.perf_counter()
    brax_result = brax_ppo_training_sps(
        "CartpoleBalance",
        num_envs=1024,
        unroll_length=30,
        batch_size=256,
        num_minibatches=4,
        num_updates_per_batch=4,
        discounting=0.995,
        gae_lambda=0.95,
        learning_rate=1e-3,
        entropy_cost=1e-2,
        reward_scaling=10.0,
        clipping_epsilon=0.3,
        normalize_observations=True,
        policy_hidden=(32,) * 4,
        value_hidden=(256,) * 5,
        max_grad_norm=None,
        training_steps=3,
    )
    brax_result["call_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    physics_result = physics_steps_per_s("CartpoleBalance", 1024)
    physics_result["call_seconds"] = time.perf_counter() - t
    print(json.dumps({"brax_ppo": brax_result, "physics": physics_result}, indent=2))
