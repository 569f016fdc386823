"""Throughput benchmarks, as JSON.

    python experiments/bench.py --agent mrq --env dmc:cartpole-balance
    python experiments/bench.py --agent mrq --env mjx:CartpoleBalance --seeds 1 4 10
    python experiments/bench.py --agent ppo --env mjx:CartpoleBalance --num-envs 4096
    python experiments/bench.py --agent ppo --env mjx:CartpoleBalance --num-envs 65536 262144 1048576 --preset playground

On-policy agents (PPO), for each `--num-envs`, in one process on one device:
(a) the physics limit: Playground's raw `env.step` under `jit(vmap)`, random
actions, no reset, no learning; (b) our training steps/s (env steps per second
of whole updates: rollout + epochs x minibatches), and the part of it spent
collecting (rollout with policy inference, timed alone); (c) Brax's
`ppo.train` with the same hyperparameters, its own `training/sps` after the
compiling epoch (experiments/brax_baseline.py, with the shim for
`jax.device_put_replicated`). Hyperparameters: the preset (default as in
run.py: `cpu` on a CPU, `playground` elsewhere) with `--scale-envs` from the
preset's num_envs, so every num_envs keeps the preset's unrolls per update.

Multitask MR.Q (`--agent mrq_multitask --env dmc:mt4`): per seed count, one seeding episode per env, then
`--steps` timed loop steps (each steps one env of every task per seed): agent steps/s per task per seed,
and the replay's bytes per slot and MB per task per seed (at 1e5 transitions and at the buffer size).

Start-up with the compile cache (`--startup mrq ppo sac`): each agent's short run.py run (`STARTUP_RUNS`),
twice, each in a new process, with the compile cache in a new empty directory: the first run (cold)
compiles every program and writes it to the cache, the second (warm) loads them. Wall-clock seconds of
each, their ratio, and the cache's entries after each (the warm run should add none).

Off-policy agents (MR.Q):
Each seed count builds the same loop `run.py` uses (host env stepping
included), fills the buffer with random steps, then times one full schedule
period of training steps (for MR.Q: 250 value/policy updates plus one
250-step encoder burst), after compilation. "N seeds for the price of one" is
`time_ratio_vs_1_seed`: the wall time of a step with N seeds over one seed.
`--capacity` sizes the replay as a run of that many transitions would (a
sampler whose cost grows with the buffer shows here, not at the default 4 x
steps). For agents whose state holds a replay buffer the report adds the time
of one draw of a batch (`sample_ms_per_draw`, timed alone) and its share of a
step; MR.Q draws two batches per step (the value batch and, amortised, one
encoder batch of the burst).

    python experiments/bench.py --agent mrq --env dmc:cartpole-balance --seeds 1 --capacity 1000 500000
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import numpy as np

import agents
import replay
from experiments import jax_setup, loops
from experiments.loops.driver import drive
from replay import streams

RUN_PY = Path(__file__).resolve().parent / "run.py"

STARTUP_RUNS = {
    "mrq": ["--agent", "mrq", "--env", "dmc:cartpole-balance", "--random-steps", "300", "--total-steps", "300",
            "--eval-every", "300", "--log-every", "300", "--eval-episodes", "1"],
    "ppo": ["--agent", "ppo", "--env", "mjx:CartpoleBalance", "--preset", "cpu", "--num-envs", "64", "--batch-size",
            "16", "--total-steps", "1920", "--eval-every", "1920", "--log-every", "1920", "--eval-episodes", "1"],
    "sac": ["--agent", "sac", "--env", "dmc:cartpole-balance", "--learning-starts", "300", "--total-steps", "300",
            "--eval-every", "300", "--log-every", "300", "--eval-episodes", "1"],
}
"""The short run.py runs whose start-up `--startup` measures: the smallest runs that build every program a longer
run uses, with one evaluation episode. MR.Q and SAC (default networks) step dm_control on the host and stop at
the end of their random warm-up: their update is one compiled program whose training branch is built whether
or not it runs, and an update's own compute (MR.Q's first is a 250-step encoder burst) is not start-up.
PPO (the cpu preset's networks, 64 envs in 4 minibatches of 16) steps MJX inside its compiled program and
trains one update (1920 env steps per seed)."""


@dataclasses.dataclass(frozen=True)
class BenchArgs(jax_setup.JaxFlags):
    agent: str = "mrq"
    """Agent name."""
    env: str = "dmc:cartpole-balance"
    """Environment id."""
    seeds: tuple[int, ...] = (1, 4, 10)
    """Seed counts to measure."""
    steps: int = 0
    """Timed training steps per seed count (0: one period of the agent's schedule, 250 for MR.Q)."""
    out: str | None = None
    """Also write the JSON to this file."""
    num_envs: tuple[int, ...] = (4096,)
    """On-policy agents: parallel env counts to measure (powers of two up to what the device holds)."""
    updates: int = 2
    """On-policy agents: timed updates per measurement (after one compiling update)."""
    preset: str | None = None
    """On-policy agents: hyperparameter preset (default: as run.py picks it for this backend)."""
    brax: bool = True
    """On-policy agents: also time Brax's PPO (the reference)."""
    sweep_points: int = 0
    """> 0: measure the sweep speedup instead: this many values of --sweep-field as ONE program vs as that many
    sequential runs (each with --seeds[0] seeds), wall-clock including compilation."""
    sweep_field: str = "learning_rate"
    """The traced field the sweep varies (geometric values around the config's)."""
    capacity: tuple[int, ...] = (0,)
    """Off-policy agents: replay capacities in transitions to measure each seed count at (0: 4 x the timed steps,
    as small as the measurement needs; a 500k-step run allocates 500000)."""
    startup: tuple[str, ...] = ()
    """Measure start-up with the compile cache cold and warm instead, for these agents' short runs (mrq, ppo, sac:
    STARTUP_RUNS); --agent and --env are ignored."""
    startup_repeats: int = 1
    """--startup: cold/warm pairs per agent, each with a new cache (the JSON gives each and the medians)."""
    note: str | None = None
    """Free text recorded in the JSON (e.g. what else the machine was running)."""


def measure(agent, config, env_id: str, num_seeds: int, steps: int, capacity: int = 0) -> dict:
    """One seed count: `steps` timed loop steps after a warm-up of as many; a replay of `capacity` transitions
    per seed (0: 4 x the timed env steps). With N envs per seed (the config's `num_envs`, JAX envs) a loop step
    steps all N, stores N transitions and makes the updates owed for N env steps: `ms_per_step` is per loop
    step, the agent steps/s count env steps."""
    if isinstance(agent, agents.OffPolicyAgent) and agent.multitask:
        return measure_multitask(agent, config, env_id, num_seeds, steps)
    record = agents.record(agent)
    num_envs = record.envs_per_seed(config)
    # Training starts at the last warm-up loop step, so the warm-up compiles every branch and the timed window
    # holds exactly one schedule period (the record names its warm-up field: MR.Q's random_steps, SAC's
    # learning_starts).
    config = dataclasses.replace(config, **{record.warmup_flag: (steps - 1) * num_envs})
    env_steps = steps * num_envs
    loop = loops.make(agent, config, env_id, num_seeds, seed=0, replay_transitions=capacity or 4 * env_steps)
    warmup, elapsed, state = _timed_chunks(loop, 2 * env_steps, env_steps)
    result = {"num_seeds": num_seeds, "num_envs": num_envs, "replay_slots": num_envs * loop.capacity,
              "timed_steps": steps, "seconds": round(elapsed, 3), "ms_per_step": round(1000 * elapsed / steps, 2),
              "agent_steps_per_s_per_seed": round(env_steps / elapsed, 2),
              "agent_steps_per_s_all_seeds": round(num_seeds * env_steps / elapsed, 2),
              "compile_and_warmup_s": round(warmup, 1), "updates_per_loop_step": config.updates_per_step * num_envs}
    buffer = getattr(state["agent"], "replay", None)
    if isinstance(buffer, replay.ReplayBuffer):
        sample_ms = 1000 * time_sampling(buffer, config.batch_size)
        result.update({"sample_ms_per_draw": round(sample_ms, 3),
                       "one_draw_share_of_step": round(sample_ms / result["ms_per_step"], 4)})
    loop.close()
    return result


def time_sampling(buffer, batch_size: int, repeats: int = 50) -> float:
    """Seconds per draw of `batch_size` starts from every seed's `buffer` (replay/streams.py `sample`, jitted,
    vmapped over seeds, as the update calls it), after a compiling draw."""
    sampling = "prioritized" if buffer.prioritized else "uniform"
    draw = jax.jit(jax.vmap(lambda b, k: streams.sample(b, k, batch_size, sampling), in_axes=(0, None)))
    jax.block_until_ready(draw(buffer, jax.random.PRNGKey(0)))
    start = time.perf_counter()
    for i in range(repeats):
        jax.block_until_ready(draw(buffer, jax.random.PRNGKey(i + 1)))
    return (time.perf_counter() - start) / repeats


def measure_multitask(agent, config, env_id: str, num_seeds: int, steps: int, seeding_episodes: int = 1) -> dict:
    """A multitask agent (mrq_multitask) on a multitask env: every loop step steps one env of each of the T tasks
    per seed, so agent steps/s per task per seed is loop steps/s. `seeding_episodes` random episodes per env are
    stored, one training step compiles the update, then `steps` training steps are timed (updates at `utd`)."""
    config = dataclasses.replace(config, seeding_episodes=seeding_episodes)
    probe = loops.make(agent, config, env_id, 1, seed=0, replay_transitions=1)
    spec = probe.spec
    probe.close()
    warm = seeding_episodes * spec.max_episode_steps + 1
    loop = loops.make(agent, config, env_id, num_seeds, seed=0, replay_transitions=warm + steps)
    warmup, elapsed, state = _timed_chunks(loop, warm + steps, warm)
    buffer = state["agent"].replay
    capacity = buffer.capacity
    # The per-slot arrays ([seeds, streams, capacity, ...]) and the sum tree above them (about one float per
    # slot); the per-stream counters are a few bytes each.
    replay_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(buffer) if leaf.ndim >= 3 and leaf.shape[2] == capacity)
    replay_bytes += sum(level.nbytes for level in buffer.tree)
    loop.close()
    tasks = spec.num_tasks
    per_slot = replay_bytes / (num_seeds * tasks * capacity)
    return {"num_seeds": num_seeds, "tasks": [t.env_id for t in spec.tasks], "timed_steps": steps,
            "updates_timed": round(steps * config.utd * tasks, 1), "seconds": round(elapsed, 3),
            "ms_per_step": round(1000 * elapsed / steps, 2),
            "agent_steps_per_s_per_task_per_seed": round(steps / elapsed, 2),
            "agent_steps_per_s_all_tasks_all_seeds": round(num_seeds * tasks * steps / elapsed, 2),
            "replay_bytes_per_slot_per_task": round(per_slot, 1),
            "replay_mb_per_task_per_seed_at_1e5": round(per_slot * 1e5 / 2**20, 2),
            "replay_mb_per_task_per_seed_at_buffer_size": round(per_slot * config.buffer_size / 2**20, 1),
            "compile_and_warmup_s": round(warmup, 1)}


def on_policy_config(agent, preset: str, num_envs: int):
    """The preset's hyperparameters at `num_envs`, minibatches co-scaled from the preset's num_envs."""
    base = agent.Config(**agent.PRESETS[preset])
    return dataclasses.replace(base, num_envs=num_envs, scale_envs=True, reference_num_envs=base.num_envs)


def time_ours(agent, config, env_id: str, updates: int) -> dict:
    """Our training and collection throughput (1 seed), after one compiling update each."""
    from experiments.loops.keys import SEED_AXIS
    from experiments.loops.on_policy import OnPolicyLoop

    loop = OnPolicyLoop(agent, config, env_id, num_seeds=1, seed=0)
    steps = loop.granularity
    # The first update compiles the update program; the next `updates` are timed.
    compile_s, train_s, state = _timed_chunks(loop, (updates + 1) * steps, steps)

    collect = jax.jit(jax.vmap(lambda a, e, k: agent.collect(a, loop.env, e, k, (SEED_AXIS,))[:2],
                               in_axes=(0, 0, None), axis_name=SEED_AXIS))
    env_state, batch = collect(state["agent"], state["env"], jax.random.PRNGKey(0))
    jax.block_until_ready(batch)
    start = time.perf_counter()
    for i in range(updates):
        env_state, batch = collect(state["agent"], env_state, jax.random.PRNGKey(i + 1))
        jax.block_until_ready(batch)
    collect_s = time.perf_counter() - start
    return {"sps": updates * steps / train_s, "seconds": train_s, "compile_and_first_update_s": compile_s,
            "collect_share": collect_s / train_s, "learn_share": max(0.0, 1 - collect_s / train_s),
            "steps_per_update": steps}


def measure_on_policy(agent, env_id: str, config, updates: int, brax: bool = True) -> dict:
    """At `config.num_envs`: the physics limit, our PPO's training and collection steps/s and, with `brax`,
    Brax's PPO at the same hyperparameters (`updates` timed updates after a compiling one)."""
    from experiments import brax_baseline

    config.validate()
    num_envs = config.num_envs
    name = env_id.partition(":")[2]
    physics = brax_baseline.physics_steps_per_s(name, num_envs)
    ours = time_ours(agent, config, env_id, updates)
    result = {"num_envs": num_envs, "num_minibatches": agent.layout(config).num_minibatches,
              "physics_sps": round(physics["env_steps_per_s"]), "ours_sps": round(ours["sps"]),
              "ours_over_physics": round(ours["sps"] / physics["env_steps_per_s"], 4),
              "ours_physics_share": round(ours["collect_share"], 3),
              "ours_learning_share": round(ours["learn_share"], 3), "ours": ours}
    if brax:
        reference = brax_baseline.brax_ppo_training_sps(
            name, num_envs=num_envs, unroll_length=config.unroll_length, batch_size=config.batch_size,
            num_minibatches=result["num_minibatches"], num_updates_per_batch=config.num_epochs,
            discounting=config.discount, gae_lambda=config.gae_lambda, learning_rate=config.learning_rate,
            entropy_cost=config.entropy_cost, reward_scaling=config.reward_scaling,
            clipping_epsilon=config.clip_epsilon, normalize_observations=config.normalize_observations,
            policy_hidden=config.policy_hidden, value_hidden=config.value_hidden,
            max_grad_norm=config.max_grad_norm or None, training_steps=updates + 1)
        result["brax_sps"] = round(reference["sps"])
        result["ours_over_brax"] = round(ours["sps"] / reference["sps"], 3)
        result["brax"] = reference
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}), file=sys.stderr, flush=True)
    return result


def main_on_policy(agent, args: BenchArgs) -> dict:
    preset = args.preset or agent.default_preset()
    results = [measure_on_policy(agent, args.env, on_policy_config(agent, preset, n), args.updates, args.brax)
               for n in args.num_envs]
    config = dataclasses.asdict(on_policy_config(agent, preset, args.num_envs[0]))
    return {"agent": args.agent, "env": args.env, "device": str(jax.devices()[0]),
            "device_kind": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
            "preset": preset, "hyperparameters": {k: v for k, v in config.items() if k != "num_envs"},
            "what": "env steps/s per seed: physics limit (raw Playground step), our whole PPO update "
                    "(rollout + epochs), Brax ppo.train at equal hyperparameters; shares = our time "
                    "collecting (physics + policy) vs learning",
            "results": results}


def _timed_chunks(loop, total_steps: int, first_chunk: int):
    """Drive a fresh state of `loop` for `first_chunk` steps (it compiles), then on to `total_steps` as one more
    chunk; returns (seconds of the first chunk, seconds of the rest, final state)."""
    state, times = loop.init(), []
    for start, end in ((0, first_chunk), (first_chunk, total_steps)):
        began = time.perf_counter()
        state, _ = drive(loop, state, start, end)
        jax.block_until_ready(state["agent"])
        times.append(time.perf_counter() - began)
    return times[0], times[1], state


def _timed_run(make_loop_fn, units: int) -> dict:
    """Build a loop, train `units` x its granularity steps; wall-clock with and without the first (compiling)
    chunk (building the loop counts as the first chunk's)."""
    start = time.perf_counter()
    loop = make_loop_fn()
    build = time.perf_counter() - start
    first, rest, _ = _timed_chunks(loop, units * loop.granularity, loop.granularity)
    loop.close()
    return {"total_s": build + first + rest, "after_first_chunk_s": rest}


def measure_sweep(agent, args: BenchArgs) -> dict:
    """`--sweep-points` values of `--sweep-field` around the default config (on-policy: the preset at
    `--num-envs[0]`) as one program vs as many sequential runs."""
    if isinstance(agent, agents.OnPolicyAgent):
        config = on_policy_config(agent, args.preset or agent.default_preset(), args.num_envs[0])
        units = args.updates + 1
    else:
        config, units = agent.Config(), args.steps or 200
    return {"agent": args.agent, **sweep_speedup(agent, args.env, config, args.sweep_field, args.sweep_points,
                                                 args.seeds[0], units)}


def sweep_speedup(agent, env_id: str, config, field: str, points: int, seeds: int, units: int) -> dict:
    """`points` values of the traced `field` (geometric around config's) as one program of points x seeds lanes
    vs `points` sequential runs of `seeds` seeds; each trains `units` updates (on-policy) or env steps."""
    from experiments.loops.lanes import Lanes

    if isinstance(agent, agents.OnPolicyAgent):
        from experiments.loops.on_policy import OnPolicyLoop

        build = lambda cfg, num_lanes, **kw: OnPolicyLoop(agent, cfg, env_id, num_lanes, 0, **kw)
    else:
        build = lambda cfg, num_lanes, **kw: loops.make(agent, cfg, env_id, num_lanes, 0,
                                                        replay_transitions=4 * units, **kw)
    base = getattr(config, field)
    values = [float(base * 3.0 ** (i - (points - 1) / 2)) for i in range(points)]
    sweep_lanes = Lanes.of_sweep([dataclasses.replace(config, **{field: v}) for v in values], list(range(seeds)))
    one = _timed_run(lambda: build(config, len(sweep_lanes), lanes=sweep_lanes), units)
    sequential = [_timed_run(lambda v=v: build(dataclasses.replace(config, **{field: v}), seeds), units)
                  for v in values]
    seq_total = sum(r["total_s"] for r in sequential)
    seq_steady = sum(r["after_first_chunk_s"] for r in sequential)
    return {"env": env_id, "device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "jax": jax.__version__, "field": field, "values": values, "seeds_per_point": seeds,
            "units": units, "unit": "updates" if isinstance(agent, agents.OnPolicyAgent) else "env steps",
            "one_program": one, "sequential_total_s": seq_total, "sequential_after_first_chunk_s": seq_steady,
            "speedup_total": round(seq_total / one["total_s"], 2),
            "speedup_after_compile": round(seq_steady / max(one["after_first_chunk_s"], 1e-9), 2),
            "what": "wall-clock of an N-point sweep as one vmapped program vs N sequential runs (each building its "
                    "loop, compiling, training the same number of steps); 'after compile' leaves out each "
                    "program's first chunk"}


def main_off_policy(agent, args: BenchArgs) -> dict:
    config = agent.Config()
    steps = args.steps or getattr(config, "target_update_freq", 250)
    results = [measure(agent, config, args.env, n, steps, capacity) for capacity in args.capacity for n in args.seeds]
    base = results[0]["seconds"]
    for r in results:
        r["time_ratio_vs_first"] = round(r["seconds"] / base, 2)
    what = ("training steps (act + env step + store + update, encoder burst amortized) after warm-up"
            if not agent.multitask else
            "loop steps (one env step of every task per seed: act + step + store + the updates due at utd) "
            "after one seeding episode per env and one compiling update")
    return {"agent": args.agent, "env": args.env, "device": str(jax.devices()[0]),
            "backend": jax.default_backend(), "jax": jax.__version__, "what": what, "results": results}


def measure_startup(run_flags: list[str], work_dir: Path) -> dict:
    """`experiments/run.py *run_flags` twice, each a new process, with the compile cache in `work_dir`/cache (new,
    so the first run finds it empty) and run directories `work_dir`/cold and /warm: the wall-clock seconds of
    each run (interpreter start to exit), cold over warm, the cache's entries after each, and the machine's
    1-minute load average before each run (other work on the machine slows both)."""
    cache = Path(work_dir) / "cache"
    if cache.exists():
        raise ValueError(f"{cache} exists: the cold run needs a new, empty cache directory")
    entries, seconds, load = {}, {}, {}
    for name in ("cold", "warm"):
        command = [sys.executable, str(RUN_PY), *run_flags, "--no-progress", "--compile-cache-dir", str(cache),
                   "--run-dir", str(Path(work_dir) / name)]
        load[name] = round(os.getloadavg()[0], 2)
        began = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=RUN_PY.parent.parent)
        seconds[name] = time.perf_counter() - began
        if result.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} failed (exit {result.returncode}): {result.stderr[-2000:]}")
        entries[name] = {p.name for p in cache.iterdir()}
    return {"cold_s": round(seconds["cold"], 2), "warm_s": round(seconds["warm"], 2),
            "cold_over_warm": round(seconds["cold"] / seconds["warm"], 2),
            "cache_entries_after_cold": len(entries["cold"]),
            "cache_entries_added_by_warm": len(entries["warm"] - entries["cold"]),
            "cache_mb": round(sum(p.stat().st_size for p in cache.iterdir()) / 2**20, 2),
            "load_average_1min_before": load}


def main_startup(args: BenchArgs) -> dict:
    """`measure_startup` of each agent's STARTUP_RUNS run, --startup-repeats times (a new cache each time)."""
    unknown = [name for name in args.startup if name not in STARTUP_RUNS]
    if unknown:
        raise SystemExit(f"error: --startup {' '.join(unknown)}: no short run defined; valid: "
                         f"{', '.join(STARTUP_RUNS)}")
    if args.startup_repeats < 1:
        raise SystemExit(f"error: --startup-repeats must be >= 1, got {args.startup_repeats}")
    results = {}
    for name in args.startup:
        flags = [*STARTUP_RUNS[name], "--matmul-precision", args.matmul_precision]
        repeats = []
        for _ in range(args.startup_repeats):
            with tempfile.TemporaryDirectory(prefix=f"startup_{name}_") as work_dir:
                repeats.append(measure_startup(flags, Path(work_dir)))
            print(json.dumps({name: repeats[-1]}), file=sys.stderr, flush=True)
        cold, warm = (round(float(np.median([r[k] for r in repeats])), 2) for k in ("cold_s", "warm_s"))
        results[name] = {"command": shlex.join(["python", "experiments/run.py", *flags, "--no-progress",
                                                "--compile-cache-dir", "<new dir>", "--run-dir", "<new dir>"]),
                         "cold_s": cold, "warm_s": warm, "cold_over_warm": round(cold / warm, 2),
                         "repeats": repeats}
    command = ["python", "experiments/bench.py", "--startup", *args.startup, "--startup-repeats",
               str(args.startup_repeats), *(["--matmul-precision", args.matmul_precision]
                                            if args.matmul_precision != "float32" else []),
               *(["--note", args.note] if args.note else []), *(["--out", args.out] if args.out else [])]
    return {"command": shlex.join(command), "device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "jax": jax.__version__, "cpu_count": os.cpu_count(),
            "what": "wall-clock seconds of a short run.py run (python start to exit: imports, env, compilation, "
                    "training, one evaluation, checkpoints), first with an empty compile cache (cold: compiles "
                    "and writes every program), then again with the same cache (warm: loads them), each in a new "
                    "process; cold_s and warm_s are medians over the repeats, each repeat with a new cache",
            "results": results}


def main(args: BenchArgs) -> dict:
    try:
        settings = jax_setup.configure_jax(args)
    except jax_setup.JaxSetupError as error:
        raise SystemExit(f"error: {error}") from None
    if args.startup:
        report = main_startup(args)
    else:
        agent = agents.get(args.agent)
        if args.sweep_points > 0:
            report = measure_sweep(agent, args)
        elif isinstance(agent, agents.OnPolicyAgent):
            report = main_on_policy(agent, args)
        else:
            report = main_off_policy(agent, args)
    report["jax_settings"] = settings
    if args.note:
        report["note"] = args.note
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


def command(argv: list[str] | None = None) -> int:
    """`python experiments/bench.py` and `ctrlrl-bench`: the flags (a bad one is one `error:` line, exit 2),
    then main."""
    from experiments.run import parse_or_exit

    main(parse_or_exit(BenchArgs, "Throughput and start-up benchmarks, as JSON (see the module's docstring).",
                       argv))
    return 0


if __name__ == "__main__":
    sys.exit(command())
