"""ONE prepared command for a lent GPU: every speed figure the project promises, as JSON, inside a deadline.

    python experiments/gpu_suite.py --out experiments/results/gpu_suite_h100.json     # on the GPU (< 9 min)
    python experiments/gpu_suite.py --dry-run --out /tmp/gpu_suite_dry.json           # every part, toy sizes, CPU

A GPU is lent rarely and briefly, so nothing is decided at the GPU: the measurements are listed below in the
order they run, the most important first. Before each one the suite checks the time left against the
measurement's own estimate and records it as skipped when it would not fit; the JSON file is rewritten after
every measurement, so a run that is killed keeps all it measured. A measurement that fails (e.g. out of
memory at 2^20 envs) is recorded with its error and the suite goes on.

    ppo           PPO (ours) vs Brax's PPO at equal hyperparameters vs the raw physics, env steps/s and peak
                  device memory, at 2^12 .. 2^20 envs on mjx:CartpoleBalance and mjx:CheetahRun (Playground's
                  DMC config with one unroll per env per update, minibatches co-scaled with the envs)
    mrq_seeds     MR.Q at 1 / 4 / 10 seeds on mjx:CartpoleBalance (device loop): ms per step, time vs 1 seed
    sac_envs      SAC with 1024 envs per seed on mjx:CartpoleBalance (FastTD3's regime, the settings of
                  experiments/results/offpolicy_num_envs: 2 updates of 256 per loop step, 128x128 networks):
                  env steps/s per seed and ms per loop step
    sweep         a 3-point PPO learning-rate sweep as one program vs 3 sequential runs
    mrq_multitask multitask MR.Q on mjx:mt4 at sizes S and B: agent steps/s per task per seed

The goals it checks (issue 22): ours/brax >= 1.5 at 2^16 envs and above, 2^20 envs fit, 10 MR.Q seeds in
less than 3x the time of one; `goals` in the JSON says which were met, missed or not measured.

`--dry-run` runs every kind of measurement once at toy sizes (tiny networks, 16 envs (SAC: 4), a few steps; PPO vs
Brax vs physics on mjx:CartpoleBalance, the others on pure-JAX envs, since each Playground compilation costs
the CPU tens of seconds) with no deadline: CI runs it, so the suite is known to work before a GPU is at hand.
Its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax

import agents
from experiments import bench, jax_setup


@dataclasses.dataclass(frozen=True)
class SuiteArgs(jax_setup.JaxFlags):
    out: str = "gpu_suite.json"
    """The JSON file, rewritten after every measurement."""
    dry_run: bool = False
    """Every measurement at toy sizes, no deadline (CI runs this on the CPU)."""
    deadline_s: float = 510.0
    """Seconds the suite may run; a measurement whose estimate does not fit in what is left is skipped."""
    only: tuple[str, ...] = ()
    """Run only the measurements whose name starts with one of these (e.g. ppo mrq_seeds)."""


@dataclasses.dataclass(frozen=True)
class Measurement:
    name: str
    estimate_s: float          # on one H100, cold compilation included (a guess until a first run measures it)
    run: Callable[[], dict]


def peak_memory() -> dict:
    """Peak and current device memory (bytes) so far, where the backend reports it (GPUs; not the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return {k: stats[k] for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in stats}


def ppo_config(num_envs: int, dry_run: bool):
    """Playground's DMC PPO config, one unroll per env per update, minibatches scaled with the envs (the
    `one_unroll` preset at `num_envs`); toy widths and one epoch in a dry run."""
    ppo = agents.get("ppo")
    config = bench.on_policy_config(ppo, "one_unroll", num_envs)
    if dry_run:
        config = dataclasses.replace(config, batch_size=8, reference_num_envs=16, num_minibatches=2, num_epochs=1,
                                     unroll_length=4, policy_hidden=(8,), value_hidden=(8,))
    return config


def ppo_measurement(env_id: str, num_envs: int, dry_run: bool) -> dict:
    result = bench.measure_on_policy(agents.get("ppo"), env_id, ppo_config(num_envs, dry_run), updates=2)
    return {**result, "memory": peak_memory()}


def mrq_config(dry_run: bool):
    mrq = agents.get("mrq")
    if not dry_run:
        return mrq.Config()
    return mrq.Config(batch_size=16, zs_dim=16, za_dim=8, zsa_dim=16, enc_hidden_dim=16, value_hidden_dim=16,
                      policy_hidden_dim=16, target_update_freq=4)


def mrq_seeds_measurement(num_seeds: int, dry_run: bool) -> dict:
    config = mrq_config(dry_run)
    env_id = "jax:PointMass" if dry_run else "mjx:CartpoleBalance"      # the same device loop, cheaper to compile
    return bench.measure(agents.get("mrq"), config, env_id, num_seeds, config.target_update_freq)


def sac_envs_config(num_envs: int, dry_run: bool):
    """SAC with `num_envs` envs per seed as experiments/results/offpolicy_num_envs/run.sh runs it: 2 updates per
    loop step (the ratio counts env steps), batch 256, 128x128 networks; toy widths and batch in a dry run."""
    sac = agents.get("sac")
    hidden, batch = ((16, 16), 16) if dry_run else ((128, 128), 256)
    return sac.Config(num_envs=num_envs, updates_per_step=2 / num_envs, batch_size=batch, critic_hidden=hidden,
                      actor_hidden=hidden)


def sac_envs_measurement(num_envs: int, dry_run: bool) -> dict:
    """Loop steps of one seed, timed after a warm-up of as many (bench.measure): 100, or 4 in a dry run."""
    env_id = "jax:PointMass" if dry_run else "mjx:CartpoleBalance"       # the same device loop, cheaper to compile
    result = bench.measure(agents.get("sac"), sac_envs_config(num_envs, dry_run), env_id, 1, 4 if dry_run else 100)
    return {**result, "memory": peak_memory()}


def sweep_measurement(dry_run: bool) -> dict:
    ppo = agents.get("ppo")
    # The dry run sweeps on jax:PointMass: four programs (one sweep, three runs) of MJX would dominate CI's time.
    env_id, num_envs = ("jax:PointMass", 16) if dry_run else ("mjx:CartpoleBalance", 4096)
    return bench.sweep_speedup(ppo, env_id, ppo_config(num_envs, dry_run), "learning_rate", 3, seeds=1, units=3)


def multitask_measurement(size: str, dry_run: bool) -> dict:
    mt = agents.get("mrq_multitask")
    if dry_run:
        config = mt.Config(size=size, enc_dim=16, mlp_dim=16, latent_dim=16, num_q=3, za_dim=8, batch_size=16,
                           utd=0.5)
        return bench.measure_multitask(mt, config, "jax:PointMass,PointMass1D", 1, steps=4, seeding_episodes=0)
    return bench.measure_multitask(mt, mt.Config(size=size), "mjx:mt4", 1, steps=200, seeding_episodes=1)


def measurements(dry_run: bool) -> list[Measurement]:
    """What the suite measures, most important first (see the module docstring)."""
    ppo = lambda env, n: Measurement(f"ppo/{env}/{n}", 45.0 if n < 2**20 else 70.0,
                                     lambda: ppo_measurement(env, n, dry_run))
    seeds = lambda n: Measurement(f"mrq_seeds/{n}", 40.0 + 4.0 * n, lambda: mrq_seeds_measurement(n, dry_run))
    sac_envs = lambda n: Measurement(f"sac_envs/{n}", 60.0, lambda: sac_envs_measurement(n, dry_run))
    sweep = Measurement("sweep/ppo_learning_rate", 90.0, lambda: sweep_measurement(dry_run))
    multitask = [Measurement(f"mrq_multitask/{size}", 120.0 if size == "S" else 150.0,
                             lambda size=size: multitask_measurement(size, dry_run)) for size in ("S", "B")]
    if dry_run:
        # Every kind of measurement once; more sizes and CheetahRun are the same functions with other arguments,
        # and each Playground compile costs the CPU tens of seconds.
        return [ppo("mjx:CartpoleBalance", 16), seeds(1), seeds(2), sac_envs(4), sweep, *multitask]
    cartpole, cheetah = "mjx:CartpoleBalance", "mjx:CheetahRun"
    return [
        ppo(cartpole, 2**16), ppo(cartpole, 2**20), seeds(1), seeds(10), sac_envs(1024), sweep,
        ppo(cheetah, 2**16), ppo(cheetah, 2**20), seeds(4),
        *(ppo(cartpole, n) for n in (2**12, 2**14, 2**18)), *(ppo(cheetah, n) for n in (2**12, 2**14, 2**18)),
        *multitask,
    ]


def goals(results: dict) -> dict:
    """The issue's goals, each met / missed / not measured, from the measurements that ran."""
    ppo = {name: r for name, r in results.items() if name.startswith("ppo/") and "ours_over_brax" in r}
    large = [r["ours_over_brax"] for r in ppo.values() if r["num_envs"] >= 2**16]
    fits = [r for name, r in results.items() if name.startswith("ppo/") and name.endswith(f"/{2**20}")]
    one, ten = results.get("mrq_seeds/1", {}), results.get("mrq_seeds/10", {})

    def verdict(measured: bool, met: bool) -> str:
        return "not measured" if not measured else ("met" if met else "missed")

    return {
        "ours_over_brax_at_least_1.5_from_2^16_envs": {
            "verdict": verdict(bool(large), bool(large) and min(large) >= 1.5), "values": large},
        "2^20_envs_fit": {"verdict": verdict(bool(fits), bool(fits) and all("error" not in r for r in fits)),
                          "errors": [r.get("error") for r in fits if "error" in r]},
        "10_mrq_seeds_under_3x_one_seed": {
            "verdict": verdict("seconds" in one and "seconds" in ten,
                               "seconds" in one and "seconds" in ten and ten["seconds"] < 3 * one["seconds"]),
            "ratio": round(ten["seconds"] / one["seconds"], 2) if "seconds" in one and "seconds" in ten else None},
    }


def environment() -> dict:
    device = jax.devices()[0]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"device": str(device), "device_kind": device.device_kind, "backend": jax.default_backend(),
            "device_count": jax.device_count(), "jax": jax.__version__, "git_commit": commit,
            "matmul_precision": jax.config.jax_default_matmul_precision,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def main(args: SuiteArgs) -> dict:
    began = time.perf_counter()
    try:
        settings = jax_setup.configure_jax(args)      # full float32 matmuls unless asked otherwise (TF32 on GPUs)
    except jax_setup.JaxSetupError as error:
        raise SystemExit(f"error: {error}") from None
    report = {"what": __doc__.split("\n\n")[0].strip(), "dry_run": args.dry_run,
              "environment": {**environment(), "jax_settings": settings},
              "deadline_s": None if args.dry_run else args.deadline_s, "results": {}, "skipped": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write():
        report["elapsed_s"] = round(time.perf_counter() - began, 1)
        report["goals"] = goals(report["results"])
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out)

    for m in measurements(args.dry_run):
        if args.only and not any(m.name.startswith(prefix) for prefix in args.only):
            continue
        left = args.deadline_s - (time.perf_counter() - began)
        if not args.dry_run and left < m.estimate_s:
            report["skipped"][m.name] = f"estimated {m.estimate_s:.0f} s, {left:.0f} s left"
            write()
            continue
        print(f"[gpu_suite] {m.name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            result = m.run()
        except Exception as error:  # an OOM or a failure of one measurement is a result; the suite goes on
            result = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
                      "traceback_tail": traceback.format_exc().strip().splitlines()[-3:]}
        result["wall_s"] = round(time.perf_counter() - start, 1)
        report["results"][m.name] = result
        write()
    write()
    print(json.dumps({"goals": report["goals"], "skipped": list(report["skipped"]),
                      "failed": [n for n, r in report["results"].items() if "error" in r],
                      "elapsed_s": report["elapsed_s"], "out": str(out)}, indent=2))
    return report


if __name__ == "__main__":
    from experiments.run import parse_or_exit

    main(parse_or_exit(SuiteArgs, "Every speed figure for a lent GPU, as JSON, inside a deadline (see the module's "
                                  "docstring)."))
