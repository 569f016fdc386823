"""Sweep hyperparameters x seeds, as one compiled program where the swept fields can be traced.

    python experiments/sweep.py --agent ppo --env mjx:CartpoleBalance --sweep learning_rate=1e-4,3e-4,1e-3 \
        --sweep entropy_cost=0,0.01 --num-seeds 5 --total-steps 3000000 --run-dir runs/sweep_ppo

Every other flag is run.py's (the agent's hyperparameters, --total-steps, --eval-every, ...).

How. The grid's points x seeds become the lanes of the training loop, which
vmaps over lanes as it does over seeds: one compiled program trains them all.
A swept field that is a leaf of the agent's config -- a float the agent only
uses in arithmetic (learning rates, coefficients, discounts: the agent
rebuilds its optax optimizer from the config inside every update) -- is
TRACED per lane: each lane's state holds its own config (agents/config.py,
experiments/loops/lanes.py). Every other field (widths, batch sizes, numbers of
envs or epochs, and the floats an agent declares static because it branches
on them) is STATIC, and the sweep runs one program per combination of its
values; it says which fields went which way. Lane (point p, seed s) uses
seed s's keys, so its results equal a separate run with --seed s and the
point's values.

Writes into --run-dir: config.json (the base run, the agent config, the grid,
which fields were traced, the matmul precision and compile cache directory:
experiments/jax_setup.py), eval.csv (step, seed, one column per swept field,
return, and the agent's diagnostics), and summary.csv: per point, the final
return and the area under the curve (mean return over evaluations), each
with its mean and 95% percentile-bootstrap CI over seeds. Sweeps are not
resumable; a multi-device machine runs them with the loops' own sharding
over a Mesh of all devices (experiments/loops/sharding.py: on-policy, the
envs; off-policy and offline, the lanes, so each device trains its own
(point, seed) pairs).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Annotated

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import numpy as np
import tyro

from agents.config import traced_fields
from experiments import jax_setup, memory
from experiments.rundir import RunDir, RunDirError


class SweepError(ValueError):
    """A bad --sweep: the message names it and the valid choices."""


@dataclasses.dataclass(frozen=True)
class SweepFlags:
    """What to sweep (the other flags are run.py's)."""

    sweep: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """A field of the agent's config and its values, NAME=V1,V2,... (e.g. learning_rate=1e-4,3e-4); repeat the
    flag for a grid of every combination."""


def parse_sweeps(specs: list[str], config) -> dict[str, list]:
    """{field: [values]} from "name=v1,v2,..." specs, each value parsed as the field's type."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    grid: dict[str, list] = {}
    for spec in specs:
        if "=" not in spec:
            raise SweepError(f"--sweep {spec!r}: expected name=value1,value2,... (e.g. learning_rate=1e-4,3e-4)")
        name, _, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        if name not in fields:
            raise SweepError(f"--sweep {name!r}: not a field of {type(config).__name__}; valid: "
                             f"{', '.join(sorted(fields))}")
        if name in grid:
            raise SweepError(f"--sweep {name!r} given twice")
        items = [t.strip() for t in text.split(",")]
        if not items or any(not t for t in items):
            raise SweepError(f"--sweep {spec!r}: empty value in the list")
        current = getattr(config, name)
        values = [_parse_value(name, t, current) for t in items]
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise SweepError(f"--sweep {spec!r}: {', '.join(repeated)} given more than once (each point is run "
                             "once; use --num-seeds for repeats)")
        grid[name] = values
    return grid


def _parse_value(name: str, text: str, current):
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float) or current is None:
            return float(text)
        if isinstance(current, tuple):
            return tuple(int(x) for x in text.split("x"))
        return text
    except ValueError:
        kind = type(current).__name__
        hint = " (tuples as 256x256)" if isinstance(current, tuple) else ""
        raise SweepError(f"--sweep {name}: {text!r} is not a valid {kind}{hint}") from None


def split_fields(grid: dict[str, list], config) -> tuple[list[str], list[str]]:
    """(traced, static): the config's pytree leaves (its float fields not declared static, agents/config.py)
    are traced in one program; every other field shapes the program."""
    leaves = set(traced_fields(config))
    traced = [n for n in grid if n in leaves]
    return traced, [n for n in grid if n not in traced]


def run_program(agent, config, run_args, traced_points: list[dict], seeds: list[int], on_row) -> None:
    """Train len(traced_points) x len(seeds) lanes in one program; `on_row(step, point, seed, return, diag)`."""
    from experiments.loops.driver import drive
    from experiments.loops.lanes import Lanes
    from experiments.train import check_warmup, make_loop, replay_transitions_of

    lanes = Lanes.of_sweep([dataclasses.replace(config, **point) for point in traced_points], seeds)
    points = [p for p in range(len(traced_points)) for _ in seeds]
    loop = make_loop(agent, config, run_args, replay_transitions_of(agent, config, run_args.total_steps),
                     lanes=lanes)

    def on_eval(step, state, evaluation, diagnostics):
        returns = evaluation.returns.mean(axis=1)
        for lane, (p, s) in enumerate(zip(points, lanes.seeds)):
            on_row(step, p, s, float(returns[lane]), {k: float(v[lane]) for k, v in diagnostics.items()})
        print(f"  step {step}: " + ", ".join(f"{r:.1f}" for r in returns), file=sys.stderr, flush=True)

    try:
        memory.check(loop)        # the grid's agent states (replay buffers included), env states, rollouts
        for point in traced_points:      # a point that would train nothing is refused (experiments/train.py)
            check_warmup(agent, dataclasses.replace(config, **point), loop.spec, run_args.total_steps)
        drive(loop, loop.init(), 0, run_args.total_steps, eval_every=run_args.eval_every,
              eval_episodes=run_args.eval_episodes, on_eval=on_eval)
    except jax.errors.JaxRuntimeError as error:
        if not memory.is_out_of_memory(error):
            raise
        raise SweepError(f"out of device memory while training: {memory.describe(loop)}") from None
    finally:
        loop.close()


def summarize(rows: list[dict], names: list[str]) -> list[dict]:
    """Per point: final return and AUC (mean over evaluations), mean and 95% bootstrap CI over seeds."""
    from experiments.stats import bootstrap_ci

    points: dict[tuple, dict[int, list]] = {}
    for r in rows:
        points.setdefault(tuple(r[n] for n in names), {}).setdefault(r["seed"], []).append((r["step"], r["return"]))
    table = []
    for point, per_seed in points.items():
        curves = [np.array([v for _, v in sorted(c)]) for c in per_seed.values()]
        final = np.array([c[-1] for c in curves])
        auc = np.array([c.mean() for c in curves])
        f, a = bootstrap_ci(final), bootstrap_ci(auc)
        table.append({**dict(zip(names, point)), "seeds": len(curves),
                      "final_mean": f.value, "final_ci_low": f.low, "final_ci_high": f.high,
                      "auc_mean": a.value, "auc_ci_low": a.low, "auc_ci_high": a.high})
    return table


def main(argv: list[str] | None = None) -> int:
    from envs import UnknownEnvError

    import agents
    from experiments import run as run_cli
    from experiments.train import RunError

    argv = sys.argv[1:] if argv is None else argv
    try:
        run_args, config, known = run_cli.parse_command(argv, "Sweep", SweepFlags)
        if not known.sweep:
            raise SweepError("give at least one --sweep name=v1,v2,... (e.g. --sweep learning_rate=1e-4,3e-4)")
        run_args.validate()
        if run_args.resume:
            raise SweepError("sweeps are not resumable: start it again in a new --run-dir")
        agent = agents.get(run_args.agent)
        grid = parse_sweeps(known.sweep, config)
        traced, static = split_fields(grid, config)
        for point in itertools.product(*grid.values()):
            dataclasses.replace(config, **dict(zip(grid, point))).validate()
        path = run_args.run_dir or f"runs/sweep/{run_args.agent}"
        jax_setup.configure_jax(run_args)     # before anything compiles; a JaxSetupError is a ValueError, caught below
        summary = sweep(agent, config, run_args, grid, traced, static, path)
    except (SweepError, RunError, UnknownEnvError, agents.UnknownAgentError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; sweeps write their results at the end, so nothing was kept", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=1))
    return 0


def claim(run_dir: RunDir, overwrite: bool) -> None:
    """Lock the sweep directory; it must be new, empty, or (with --overwrite) an earlier run or sweep of ours,
    whose files are then deleted. Refusals raise SweepError naming the directory."""
    try:
        run_dir.check_path()
        run_dir.lock()
    except RunDirError as error:
        raise SweepError(str(error)) from None
    except OSError as error:
        raise SweepError(f"cannot create --run-dir {run_dir.path}: {error.strerror or error}") from None
    try:
        entries = run_dir.entries()
        if entries and run_dir.status() is None:
            listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise SweepError((f"--overwrite deletes only run and sweep directories (with the status.json they "
                              f"write); {run_dir.path} holds other files ({listed})" if overwrite else
                              f"{run_dir.path} holds files that are not a run or a sweep ({listed})")
                             + ": choose another --run-dir")
        if entries and not overwrite:
            raise SweepError(f"{run_dir.path} is not empty; pass --overwrite or choose another --run-dir")
        run_dir.clear()
        run_dir.mark()
    except BaseException:
        run_dir.release_foreign()
        raise


def sweep(agent, config, run_args, grid, traced, static, path) -> list[dict]:
    """Train every point x seed (traced points in one program per static combination); write eval.csv,
    summary.csv and config.json into the directory `path`, which `claim` locks and marks (`run_args.overwrite`
    lets it replace an earlier run or sweep). A sweep writes its results at the end: a failed one leaves
    nothing."""
    run_dir = RunDir(path, kind="sweep")
    claim(run_dir, run_args.overwrite)
    try:
        return _sweep(agent, config, run_args, grid, traced, static, run_dir)
    except BaseException:
        run_dir.discard()
        raise
    finally:
        run_dir.unlock()


def _sweep(agent, config, run_args, grid, traced, static, run_dir: RunDir) -> list[dict]:
    seeds = [run_args.seed + i for i in range(run_args.num_seeds)]
    names = list(grid)
    rows: list[dict] = []
    programs = list(itertools.product(*(grid[n] for n in static))) or [()]
    traced_grid = [dict(zip(traced, p)) for p in itertools.product(*(grid[n] for n in traced))] or [{}]
    print(f"sweep: {len(programs) * len(traced_grid)} points x {len(seeds)} seeds; traced (one program): "
          f"{', '.join(traced) or 'none'}; static (one program per value): {', '.join(static) or 'none'}",
          flush=True)
    for static_values in programs:
        base = dataclasses.replace(config, **dict(zip(static, static_values)))

        fixed = dict(zip(static, static_values))

        def recorder(points):
            """on_row for a program whose lanes' traced points are `points` (p indexes them)."""
            return lambda step, p, s, ret, diag: rows.append(
                {"step": step, "seed": s, **fixed, **points[p], "return": ret, **diag})

        run_program(agent, base, run_args, traced_grid, seeds, recorder(traced_grid))
    columns = ["step", "seed", *names, "return"] + sorted({k for r in rows for k in r} - {"step", "seed", "return",
                                                                                          *names})
    path = run_dir.path
    with open(path / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    table = summarize(rows, names)
    with open(path / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    run_dir.mark(finished=True, run_id=(run_dir.status() or {}).get("run_id"))
    (path / "config.json").write_text(json.dumps({
        "run": dataclasses.asdict(run_args), "agent_config": dataclasses.asdict(config),
        "sweep": names, "grid": {k: list(v) for k, v in grid.items()},
        "traced": traced, "static": static, "jax": jax_setup.settings()}, indent=2, default=str))
    return table


if __name__ == "__main__":
    sys.exit(main())
