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

Writes into --run-dir: config.json first (the base run, the agent config, the
grid, which fields were traced, the matmul precision and compile cache
directory: experiments/jax_setup.py, and the commands that started and resumed
it), then as the rows come eval.csv (step, seed, one column per swept field,
return, and the agent's diagnostics) and train.csv (step, seed, the swept
fields, the training metrics every --log-every; a metric that does not exist
yet is an empty cell), checkpoints/<i>/ for the i-th program (as a run's
checkpoints: every evaluation or --checkpoint-every, --keep-checkpoints), and at
the end summary.csv: per point, the final return and the area under the curve
(mean return over evaluations), each with its mean and 95% percentile-bootstrap
CI over seeds.

A stopped sweep loses nothing finished: SIGTERM or Ctrl-C checkpoints at the
end of the chunk and exits with 128 + the signal, and a killed one keeps its
rows and checkpoints. `--resume --run-dir DIR` continues it as run.py's
--resume continues a run: the finished programs are skipped, the others
continue from their latest checkpoint, the rows after it are dropped, and the
files end equal to an uninterrupted sweep's. A resumed sweep must be the same
experiment (the same grid, and only --total-steps may grow, as for a run).

A multi-device machine runs sweeps with the loops' own sharding over a Mesh of
all devices (experiments/loops/sharding.py: on-policy, the envs; off-policy
and offline, the lanes, so each device trains its own (point, seed) pairs).
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


def run_program(agent, config, run_args, traced_points: list[dict], seeds: list[int], on_row, on_log=None, *,
                run_dir: Path | None = None, program: int = 0, stop=None, check_configs: list | None = None,
                label: str = "the program") -> None:
    """Train len(traced_points) x len(seeds) lanes in one program. At every evaluation `on_row(step, lanes)`
    with one (point, seed, return, diagnostics) per lane, and at every --log-every `on_log(step, lanes)` with
    one (point, seed, metrics) per lane (point indexes `traced_points`; a metric that does not exist yet is NaN,
    as in a run's train.csv).

    `run_dir`: the sweep's directory, where the program (the `program`-th) checkpoints its state into
    checkpoints/<program> as a run does (at every evaluation, or every --checkpoint-every steps; always at the
    end) and continues from the latest checkpoint there (an offline agent's world is kept in world/<program>);
    None: no checkpoints. `stop` (train._GracefulStop): once it has caught a signal, the program checkpoints at
    the end of the chunk and raises train.Stopped, naming `label` and `run_dir` (what --resume continues).
    `check_configs`: configs to refuse before training if they would train nothing (train.check_warmup), for a
    whole grid at once."""
    import base64
    import signal

    from agents import OffPolicyAgent
    from experiments.checkpoint import Checkpointer, CheckpointError
    from experiments.loops.driver import crossed, drive
    from experiments.loops.lanes import Lanes
    from experiments.train import Stopped, check_warmup, make_loop, metrics_that_exist, replay_transitions_of

    lanes = Lanes.of_sweep([dataclasses.replace(config, **point) for point in traced_points], seeds)
    points = [p for p in range(len(traced_points)) for _ in seeds]
    loop = make_loop(agent, config, run_args, replay_transitions_of(agent, config, run_args.total_steps),
                     lanes=lanes, world_dir=None if run_dir is None else run_dir / "world" / str(program))
    # Warm-up lengths are ints, hence static: every lane of the program has the base config's.
    warmup = agent.warmup_steps(config, loop.spec) if isinstance(agent, OffPolicyAgent) else 0
    checkpointer = None
    previous = {"step": 0}

    def save(step, state):
        if checkpointer is not None and checkpointer.latest_step() != step:
            checkpointer.save(step, state, {"step": step, "host_state": base64.b64encode(loop.host_state()).decode()})

    def log(step, per_lane):
        per_lane = metrics_that_exist(step, warmup, per_lane)
        on_log(step, [(p, s, {k: float(v[lane]) for k, v in per_lane.items()})
                      for lane, (p, s) in enumerate(zip(points, lanes.seeds))])

    def on_eval(step, state, evaluation, diagnostics):
        returns = evaluation.returns.mean(axis=1)
        on_row(step, [(p, s, float(returns[lane]), {k: float(v[lane]) for k, v in diagnostics.items()})
                      for lane, (p, s) in enumerate(zip(points, lanes.seeds))])
        print(f"  step {step}: " + ", ".join(f"{r:.1f}" for r in returns), file=sys.stderr, flush=True)
        if run_args.checkpoint_every is None:
            save(step, state)

    def on_chunk(step, state, finished):
        last, previous["step"] = previous["step"], step
        if run_args.checkpoint_every is not None and (finished or crossed(last, step, run_args.checkpoint_every)):
            save(step, state)
        caught = None if stop is None else stop.signal
        if caught is not None and not finished:
            save(step, state)
            raise Stopped(f"stopped by {signal.Signals(caught).name} at step {step} of {label}: checkpoint "
                          f"written; continue with --resume --run-dir {run_dir}", 128 + caught)

    try:
        memory.check(loop)        # the grid's agent states (replay buffers included), env states, rollouts
        for checked in check_configs or [dataclasses.replace(config, **point) for point in traced_points]:
            check_warmup(agent, checked, loop.spec, run_args.total_steps)   # a point that would train nothing
        state, start = loop.init(), 0
        if run_dir is not None:
            checkpointer = Checkpointer(run_dir / "checkpoints" / str(program), keep=run_args.keep_checkpoints)
        if checkpointer is not None and checkpointer.latest_step() is not None:
            try:
                state, meta, start = checkpointer.restore(state)
                loop.set_host_state(base64.b64decode(meta["host_state"]))
            except (CheckpointError, KeyError, ValueError) as error:
                earlier = [s for s in checkpointer.all_steps() if s < checkpointer.latest_step()]
                raise SweepError(f"{label}: {error}; delete {checkpointer.directory / str(checkpointer.latest_step())}"
                                 f" and --resume continues it from {earlier[-1] if earlier else 'the start'}, or "
                                 "start the sweep again with --overwrite") from None
        previous["step"] = start
        # Chunks end where a run's do (every --log-every and --eval-every): a signal stops at the next one.
        drive(loop, state, start, run_args.total_steps, log_every=run_args.log_every,
              eval_every=run_args.eval_every, eval_episodes=run_args.eval_episodes, on_eval=on_eval,
              on_log=log if on_log is not None else None, on_chunk=on_chunk)
    except jax.errors.JaxRuntimeError as error:
        if not memory.is_out_of_memory(error):
            raise
        raise SweepError(f"out of device memory while training: {memory.describe(loop)}") from None
    finally:
        loop.close()
        if checkpointer is not None:
            checkpointer.close()


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
    from experiments.checkpoint import CheckpointError
    from experiments.train import RunError, Stopped

    argv = sys.argv[1:] if argv is None else argv
    try:
        run_args, config, known = run_cli.parse_command(argv, "Sweep", SweepFlags)
        run_args.validate()
        if run_args.resume_from is not None:
            raise SweepError("--resume-from is for runs: a sweep resumes each of its programs from that program's "
                             "latest checkpoint (delete a later checkpoint to continue from an earlier one)")
        if run_args.video_every is not None:
            raise SweepError("--video-every is for runs: a sweep writes no policy exports or videos (evaluate a "
                             "point by running it with run.py, then experiments/evaluate.py --video)")
        agent = agents.get(run_args.agent)
        path = Path(run_args.run_dir or f"runs/sweep/{run_args.agent}")
        if run_args.resume:
            grid = resumed_grid(path, known.sweep, run_args, config)
        elif not known.sweep:
            raise SweepError("give at least one --sweep name=v1,v2,... (e.g. --sweep learning_rate=1e-4,3e-4)")
        else:
            grid = parse_sweeps(known.sweep, config)
        traced, static = split_fields(grid, config)
        for point in itertools.product(*grid.values()):
            dataclasses.replace(config, **dict(zip(grid, point))).validate()
        jax_setup.configure_jax(run_args)     # before anything compiles; a JaxSetupError is a ValueError, caught below
        summary = sweep(agent, config, run_args, grid, traced, static, path)
    except (SweepError, RunError, UnknownEnvError, agents.UnknownAgentError, ValueError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Stopped as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return stopped.code
    except OSError as error:             # a full disk, a file made unwritable: what was written stays
        where = f" writing {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}; the rows and checkpoints written are kept: fix the cause, "
              f"then --resume --run-dir {path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the rows and checkpoints written are kept (--resume continues from them)",
              file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=1))
    return 0


def resumed_grid(path: Path, specs: tuple[str, ...], run_args, config) -> dict[str, list]:
    """The grid of the sweep saved in `path`, for --resume. It must be a sweep (a finished one with checkpoints,
    which sweeps made before --resume did not write); --sweep, if given, must name its grid again; every other
    flag must be the saved one (as for a run: only --total-steps may grow, and how the sweep is shown, its
    checkpoints and its compile cache may change). SweepError otherwise, naming the difference."""
    from experiments.train import RunError, _check_resume_config, read_saved_run

    if (RunDir(path).status() or {}).get("kind") != "sweep":
        raise SweepError(f"--resume: {path} holds no sweep (no status.json of a sweep); start one without --resume")
    if (path / "summary.csv").exists() and not (path / "checkpoints").is_dir():
        raise SweepError(f"--resume: the sweep in {path} has no checkpoints (it was made before sweeps were "
                         "resumable); start it again with --overwrite")
    saved = read_saved_run(path)
    fields = {f.name for f in dataclasses.fields(config)}
    try:
        grid = {name: [tuple(v) if isinstance(getattr(config, name), tuple) else v for v in values]
                for name, values in saved["grid"].items()}
        if not grid or set(grid) - fields:
            raise KeyError("grid")
    except (KeyError, AttributeError, TypeError):
        raise SweepError(f"{path / 'config.json'} holds no sweep grid of {type(config).__name__}; cannot resume "
                         "it") from None
    if specs and parse_sweeps(list(specs), config) != grid:
        raise SweepError(f"--resume with another grid than the saved sweep's ({_describe(grid)}): leave --sweep "
                         "out, or start a new sweep")
    try:
        _check_resume_config(saved, run_args, config)
    except RunError as error:
        raise SweepError(str(error).replace("saved run", "saved sweep")) from None
    if run_args.total_steps < saved["run"]["total_steps"]:
        raise SweepError(f"--total-steps {run_args.total_steps} is below the saved sweep's "
                         f"{saved['run']['total_steps']}: a sweep resumes to the same or more steps")
    return grid


def _describe(grid: dict[str, list]) -> str:
    return " ".join(f"--sweep {name}={','.join(map(str, values))}" for name, values in grid.items())


def claim(run_dir: RunDir, overwrite: bool, resume: bool = False) -> None:
    """Lock the sweep directory; it must be new, empty, or (with --overwrite) an earlier run or sweep of ours,
    whose files are then deleted, or (with --resume) a sweep. Refusals raise SweepError naming the directory."""
    try:
        run_dir.check_path()
        run_dir.lock()
    except RunDirError as error:
        raise SweepError(str(error)) from None
    except OSError as error:
        raise SweepError(f"cannot create --run-dir {run_dir.path}: {error.strerror or error}") from None
    try:
        if resume:
            return               # resumed_grid has checked that it holds a sweep
        entries = run_dir.entries()
        if entries and run_dir.status() is None:
            listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise SweepError((f"--overwrite deletes only run and sweep directories (with their status.json); "
                              f"{run_dir.path} holds other files ({listed})" if overwrite else
                              f"{run_dir.path} holds files that are not a run or a sweep ({listed})")
                             + ": choose another --run-dir")
        if entries and not overwrite:
            raise SweepError(f"{run_dir.path} is not empty; pass --overwrite (start again) or --resume (continue "
                             "it), or choose another --run-dir")
        run_dir.clear()
        run_dir.mark()
    except BaseException:
        run_dir.release_foreign()
        raise


def sweep(agent, config, run_args, grid, traced, static, path) -> list[dict]:
    """Train every point x seed (traced points in one program per static combination) into the directory
    `path`, which `claim` locks and marks (`run_args.overwrite` lets it replace an earlier run or sweep;
    `run_args.resume` continues the sweep there). Writes config.json first, eval.csv and train.csv as the rows
    come, checkpoints per program, and summary.csv at the end; returns the summary's rows. A fresh sweep that
    fails before its first row leaves nothing; after it, what was written stays for --resume. SIGTERM and SIGINT
    stop it at the end of a chunk with a checkpoint (train.Stopped), as they stop a run."""
    from experiments.train import _GracefulStop

    run_dir = RunDir(path, kind="sweep")
    claim(run_dir, run_args.overwrite, run_args.resume)
    written = {"rows": False}
    try:
        with _GracefulStop() as stop:
            return _sweep(agent, config, run_args, grid, traced, static, run_dir, stop, written)
    except BaseException:
        if not run_args.resume and not written["rows"]:
            run_dir.discard()
        raise
    finally:
        run_dir.unlock()


def _sweep(agent, config, run_args, grid, traced, static, run_dir: RunDir, stop, written: dict) -> list[dict]:
    import signal

    from experiments.checkpoint import checkpoint_steps
    from experiments.logger import CsvLog, _plain, _step_of, _value_or_empty
    from experiments.rundir import write_json
    from experiments.train import Stopped, _history, read_saved_run

    seeds = [run_args.seed + i for i in range(run_args.num_seeds)]
    names = list(grid)
    programs = list(itertools.product(*(grid[n] for n in static))) or [()]
    traced_grid = [dict(zip(traced, p)) for p in itertools.product(*(grid[n] for n in traced))] or [{}]
    every_point = [dataclasses.replace(config, **dict(zip(grid, point))) for point in itertools.product(*grid.values())]
    print(f"sweep: {len(programs) * len(traced_grid)} points x {len(seeds)} seeds; traced (one program): "
          f"{', '.join(traced) or 'none'}; static (one program per value): {', '.join(static) or 'none'}",
          flush=True)
    path = run_dir.path
    # Program i (the i-th combination of static values) checkpoints into checkpoints/<i>. A resumed sweep keeps
    # each program's rows up to that program's latest checkpoint (0: none), from which it continues.
    reached = [max(checkpoint_steps(path / "checkpoints" / str(i)), default=0) for i in range(len(programs))]
    saved = read_saved_run(path) if run_args.resume else None
    write_json(path / "config.json", {
        "run": dataclasses.asdict(run_args), "agent_config": dataclasses.asdict(config),
        "sweep": names, "grid": {k: list(v) for k, v in grid.items()}, "traced": traced, "static": static,
        # The history's from_step: the least step a program continues from.
        "jax": jax_setup.settings(), **_history(saved, min(reached))})
    eval_csv, train_csv = CsvLog(path / "eval.csv"), CsvLog(path / "train.csv")
    if run_args.resume:
        run_dir.mark(finished=False, run_id=(run_dir.status() or {}).get("run_id"))
        program_of = {tuple(str(_plain(v)) for v in values): i for i, values in enumerate(programs)}

        def up_to_checkpoint(row: dict) -> bool:
            program = program_of.get(tuple(row.get(n) for n in static))
            return program is not None and _step_of(row["step"]) <= reached[program]

        eval_csv.keep_rows(up_to_checkpoint)
        train_csv.keep_rows(up_to_checkpoint)
        if any(r < run_args.total_steps for r in reached):
            (path / "summary.csv").unlink(missing_ok=True)     # rewritten at the end, with the rows to come

    checked = False
    for index, static_values in enumerate(programs):
        if reached[index] >= run_args.total_steps:    # finished before the sweep stopped
            continue
        fixed = dict(zip(static, static_values))

        def columns(p: int, fixed=fixed) -> dict:
            return {n: {**fixed, **traced_grid[p]}[n] for n in names}

        def write_eval(step, lanes, columns=columns):
            written["rows"] = True
            eval_csv.write([{"step": step, "seed": s, **columns(p), "return": ret,
                             **{k: diagnostics[k] for k in sorted(diagnostics)}} for p, s, ret, diagnostics in lanes])

        def write_train(step, lanes, columns=columns):
            written["rows"] = True
            train_csv.write([{"step": step, "seed": s, **columns(p),
                              **{k: _value_or_empty(metrics[k]) for k in sorted(metrics)}} for p, s, metrics in lanes])

        label = f"program {index + 1} of {len(programs)}" + (
            f" ({', '.join(f'{k}={v}' for k, v in fixed.items())})" if fixed else "")
        run_program(agent, dataclasses.replace(config, **fixed), run_args, traced_grid, seeds, write_eval,
                    write_train, run_dir=path, program=index, stop=stop,
                    check_configs=None if checked else every_point, label=label)
        checked = True
        caught = stop.signal
        if caught is not None and index + 1 < len(programs):
            raise Stopped(f"stopped by {signal.Signals(caught).name} after {label} finished: checkpoint "
                          f"written; continue with --resume --run-dir {path}", 128 + caught)

    table = summarize(_read_rows(path / "eval.csv", grid), names)
    tmp = path / "summary.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    tmp.replace(path / "summary.csv")
    run_dir.mark(finished=True, run_id=(run_dir.status() or {}).get("run_id"))
    return table


def _read_rows(path: Path, grid: dict[str, list]) -> list[dict]:
    """eval.csv's rows with step, seed and return as numbers and each swept field as its grid value."""
    from experiments.logger import _plain

    values = {name: {str(_plain(v)): v for v in grid[name]} for name in grid}
    with path.open() as f:
        return [{**row, "step": int(row["step"]), "seed": int(row["seed"]), "return": float(row["return"]),
                 **{name: values[name][row[name]] for name in grid}} for row in csv.DictReader(f)]


if __name__ == "__main__":
    sys.exit(main())
