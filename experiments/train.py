"""The outer training loop: validate, set up the run directory, train in chunks,
evaluate, log, checkpoint, resume. Nothing algorithmic lives here.

`train(run_args, agent_config)` is what `experiments/run.py` calls; notebooks
and tests can call it directly.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import platform
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np

import agents
from experiments.checkpoint import Checkpointer, CheckpointError
from experiments.logger import RunLogger


class RunError(ValueError):
    """A bad input from the user: the message names it and the valid choices."""


class DivergenceError(RuntimeError):
    """A loss or metric became NaN / inf during training."""


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """What to train, for how long, and where to write it."""

    agent: str = "mrq"
    """Agent name (see agents/__init__.py)."""
    env: str = "dmc"
    """Environment id: dmc, dmc:<domain>-<task>, gym:<id>, mjx:<PlaygroundName>, jax:PointMass."""
    seed: int = 0
    """First seed; seed i of the run uses seed + i."""
    num_seeds: int = 1
    """Seeds trained at once by one vmapped program."""
    total_steps: int = 500_000
    """Agent (environment) steps per seed; frames = steps x action repeat."""
    eval_every: int = 5_000
    """Agent steps between evaluations (a checkpoint is written at each)."""
    eval_episodes: int = 10
    """Deterministic evaluation episodes per seed."""
    log_every: int = 1_000
    """Agent steps between rows of train.csv."""
    run_dir: str | None = None
    """Output directory (default runs/<agent>/<env>/<time>)."""
    resume: bool = False
    """Continue the run in --run-dir from its latest checkpoint."""
    overwrite: bool = False
    """Delete what --run-dir holds and start again."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb extra)."""
    wandb_project: str = "ctrlrl"
    """W&B project name."""
    progress: bool = True
    """Show a progress bar."""
    distributed: bool = False
    """Call jax.distributed.initialize() first (multi-host: every host runs the same command)."""
    dataset: str | None = None
    """Offline agents (ravl, neubay, bc): the dataset, an HDF5 file made by experiments/collect.py."""
    preset: str | None = None
    """Named preset of the agent's flags, applied before the flags given (PPO: playground, cpu; default
    for PPO: cpu on a CPU backend, playground on GPU/TPU)."""

    def validate(self) -> None:
        for name in ("num_seeds", "total_steps", "eval_every", "eval_episodes", "log_every"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise RunError(f"--seed must be >= 0, got {self.seed}")
        if self.resume and self.overwrite:
            raise RunError("--resume and --overwrite exclude each other: continue the run or start it again")
        if self.resume and self.run_dir is None:
            raise RunError("--resume needs --run-dir naming the run to continue")


def default_run_dir(args: RunArgs) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / args.agent / args.env.replace(":", "_") / stamp


def _versions() -> dict:
    import flax
    import mujoco
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "mujoco": mujoco.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}


def is_main_process() -> bool:
    """With several hosts (after `jax.distributed.initialize()`), only process 0 writes files."""
    return jax.process_index() == 0


def _write_json(path: Path, data: dict) -> None:
    if not is_main_process():
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def _status(run_dir: Path) -> dict | None:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.exists() else None


def _prepare_run_dir(args: RunArgs, run_dir: Path) -> None:
    """Refuse to clobber an existing run unless --resume or --overwrite says what to do."""
    if args.resume:
        if not (run_dir / "config.json").exists():
            raise RunError(f"--resume: {run_dir} holds no run (no config.json); start it without --resume")
        if not (run_dir / "checkpoints").exists() or Checkpointer(run_dir / "checkpoints").latest_step() is None:
            raise RunError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; start the run again with --overwrite")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if args.overwrite and not (run_dir / "config.json").exists():
            raise RunError(f"--overwrite deletes only run directories (with a config.json); {run_dir} holds "
                           "other files: choose another --run-dir")
        if not args.overwrite:
            status = _status(run_dir)
            what = "a finished run" if status and status.get("finished") else "an unfinished run"
            raise RunError(f"{run_dir} already holds {what}; pass --resume to continue it or --overwrite to start again")


def _check_resume_config(saved: dict, args: RunArgs, config: Any) -> None:
    """A resumed run must be the same experiment; only its length and logging may change."""
    mutable = {"total_steps", "resume", "overwrite", "progress", "wandb", "wandb_project", "run_dir", "distributed"}
    differences = [f"--{k.replace('_', '-')} {saved['run'].get(k)!r} -> {v!r}"
                   for k, v in dataclasses.asdict(args).items() if k not in mutable and saved["run"].get(k) != v]
    differences += [f"--{k.replace('_', '-')} {saved['agent_config'].get(k)!r} -> {v!r}"
                    for k, v in dataclasses.asdict(config).items() if saved["agent_config"].get(k) != v]
    if differences:
        raise RunError("--resume with a different configuration than the saved run: " + "; ".join(differences)
                       + " (start a new run, or resume with the saved flags)")


def _check_finite(step: int, per_seed: dict) -> None:
    for name, values in per_seed.items():
        if name in ("episode_return",):      # NaN before the first episode ends, by design
            continue
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, np.float64)))
        if bad.size:
            raise DivergenceError(f"{name} is {values[bad[0]]} at step {step} (seed index {bad[0]})")


def train(args: RunArgs, config: Any) -> Path:
    """Train `args.agent` with `config` on `args.env`; returns the run directory."""
    args.validate()
    agent = agents.get(args.agent)          # UnknownAgentError names the valid agents
    try:
        config.validate()
    except ValueError as error:
        raise RunError(str(error)) from None
    if agent.LOOP == "offline" and not args.dataset:
        raise RunError(f"agent {args.agent!r} learns from a dataset: pass --dataset PATH "
                       "(make one with experiments/collect.py)")
    if agent.LOOP != "offline" and args.dataset:
        raise RunError(f"--dataset is for the offline agents; {args.agent!r} learns online")
    if agent.LOOP not in ("off_policy", "on_policy", "offline"):
        raise RunError(f"agent {args.agent!r} uses loop {agent.LOOP!r}, which run.py does not drive yet")
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args)
    _prepare_run_dir(args, run_dir)

    saved = json.loads((run_dir / "config.json").read_text()) if args.resume else None
    if saved is not None:
        _check_resume_config(saved, args, config)
    replay_transitions = (saved["replay_transitions"] if saved is not None
                          else min(args.total_steps, getattr(config, "buffer_size", args.total_steps)))

    # Building the env validates the id (UnknownEnvError lists the valid ones) before anything is written.
    loop = make_loop(agent, config, args, replay_transitions, run_dir)
    try:
        return _train(args, config, loop, run_dir, saved, replay_transitions)
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error) or not hasattr(loop, "memory_error"):
            raise
        raise RunError(f"out of device memory: {loop.memory_error()}") from None
    finally:
        loop.close()


def make_loop(agent, config: Any, args: RunArgs, replay_transitions: int, run_dir: Path | None = None):
    """The loop of `agent.LOOP` for `args.env`; configurations it cannot run raise RunError."""
    if agent.LOOP == "offline":
        from experiments.offline import OfflineLoop
        from replay.datasets import DatasetError

        try:
            return OfflineLoop(agent, config, args.env, args.num_seeds, args.seed, args.dataset,
                               (run_dir or Path(".")) / "world")
        except (DatasetError, ValueError, FileNotFoundError) as error:
            raise RunError(str(error)) from None
    if agent.LOOP == "on_policy":
        from experiments.on_policy import LoopError, OnPolicyLoop

        try:
            loop = OnPolicyLoop(agent, config, args.env, args.num_seeds, args.seed)
            loop.check_memory()      # before anything is allocated or written
            return loop
        except LoopError as error:
            raise RunError(str(error)) from None
    from experiments.off_policy import make_loop as make_off_policy_loop

    return make_off_policy_loop(agent, config, args.env, args.num_seeds, args.seed, replay_transitions)


def make_loop_for_lanes(agent, config: Any, args: RunArgs, lane_hparams: dict | None, lane_seeds: list[int]):
    """A loop whose lanes are a sweep's (point, seed) pairs (experiments/sweep.py): each lane uses its seed's
    keys and, when given, its own traced hyperparameters."""
    lanes = len(lane_seeds)
    kwargs = {"lane_hparams": lane_hparams, "lane_seeds": np.asarray(lane_seeds)}
    if agent.LOOP == "on_policy":
        from experiments.on_policy import LoopError, OnPolicyLoop

        try:
            return OnPolicyLoop(agent, config, args.env, lanes, args.seed, **kwargs)
        except LoopError as error:
            raise RunError(str(error)) from None
    if agent.LOOP == "offline":
        import tempfile

        from experiments.offline import OfflineLoop

        if not args.dataset:
            raise RunError(f"agent {args.agent!r} learns from a dataset: pass --dataset PATH")
        return OfflineLoop(agent, config, args.env, lanes, args.seed, args.dataset,
                           Path(tempfile.mkdtemp(prefix="sweep_world_")), **kwargs)
    from experiments.off_policy import DeviceLoop, HostLoop

    import envs as envs_lib

    loop_cls = DeviceLoop if envs_lib.is_jax_env(args.env) else HostLoop
    replay = min(args.total_steps, getattr(config, "buffer_size", args.total_steps))
    return loop_cls(agent, config, args.env, lanes, args.seed, replay, **kwargs)


def derived_settings(agent, config: Any) -> dict:
    """Values the agent derives from its flags (e.g. PPO's batch layout), as saved in config.json."""
    return agent.layout(config)._asdict() if hasattr(agent, "layout") else {}


def _train(args, config, loop, run_dir: Path, saved: dict | None, replay_transitions: int) -> Path:
    checkpointer_dir = run_dir / "checkpoints"
    start_step = 0
    if saved is None:
        # Clear an --overwrite'd directory BEFORE the loop builds its state: offline agents save their world
        # (a trained dynamics model) into the run directory while initializing.
        if args.overwrite and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    state = loop.init()
    if saved is not None:
        checkpointer = Checkpointer(checkpointer_dir)
        restored, meta, start_step = checkpointer.restore(state)
        state = restored
        try:
            loop.set_host_state(base64.b64decode(meta["host_state"]))
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"checkpoint {checkpointer_dir / str(start_step)}: {error}") from None
    else:
        checkpointer = Checkpointer(checkpointer_dir)

    derived = derived_settings(agents.get(args.agent), config)
    if derived and saved is None:
        print("derived: " + ", ".join(f"{k}={v}" for k, v in derived.items()), flush=True)
    resolved = {"run": dataclasses.asdict(args), "agent_config": dataclasses.asdict(config), "derived": derived,
                "env_spec": dataclasses.asdict(loop.spec), "replay_transitions": replay_transitions,
                "replay_capacity": loop.capacity, "versions": _versions(),
                "command": " ".join(sys.argv)}
    _write_json(run_dir / "config.json", resolved)
    _write_json(run_dir / "status.json", {"finished": False, "step": start_step})
    logger = (RunLogger(run_dir, args.wandb, args.wandb_project, resolved) if is_main_process()
              else RunLogger(run_dir / f"process_{jax.process_index()}", False))
    logger.truncate_after(start_step)

    from tqdm import tqdm

    bar = tqdm(total=args.total_steps, initial=start_step, disable=not (args.progress and is_main_process()),
               unit="step",
               dynamic_ncols=True, desc=f"{args.agent} {args.env} x{args.num_seeds}")
    # On-policy loops advance in whole updates: boundaries round up to them (the run may
    # end up to one update past --total-steps).
    granularity = getattr(loop, "granularity", 1)
    round_up = lambda n: -(-n // granularity) * granularity
    total_steps = round_up(args.total_steps)
    step, postfix = start_step, {"sps": "-", "eval_return": "-"}
    interval_start, interval_step = time.perf_counter(), start_step
    try:
        while step < total_steps:
            next_log = (step // args.log_every + 1) * args.log_every
            next_eval = (step // args.eval_every + 1) * args.eval_every
            target = min(round_up(min(next_log, next_eval)), total_steps)
            state, per_seed = loop.run(state, step, target - step)
            previous, step = step, target
            bar.update(min(step, bar.total) - bar.n)
            finished = step >= total_steps
            if step // args.log_every > previous // args.log_every or finished:
                _check_finite(step, per_seed)
                elapsed = time.perf_counter() - interval_start
                sps = (step - interval_step) / max(elapsed, 1e-9)
                logger.log_train(step, per_seed, {"training/sps": sps,
                                                  "training/sps_all_seeds": sps * args.num_seeds})
                interval_start, interval_step = time.perf_counter(), step
                postfix["sps"] = f"{sps:.1f}"
                bar.set_postfix(postfix)
            if step // args.eval_every > previous // args.eval_every or finished:
                _check_finite(step, per_seed)
                returns = loop.evaluate(state, step, args.eval_episodes)
                logger.log_eval(step, returns, loop.diagnostics(state, step))
                checkpointer.save(step, state, {"step": step,
                                                "host_state": base64.b64encode(loop.host_state()).decode()})
                _write_json(run_dir / "status.json", {"finished": False, "step": step})
                postfix["eval_return"] = f"{float(np.mean(returns)):.1f}"
                bar.set_postfix(postfix)
                interval_start = time.perf_counter()    # evaluation time is not training time
    finally:
        bar.close()
        logger.close()
        checkpointer.close()
    _write_json(run_dir / "status.json", {"finished": True, "step": step})
    return run_dir
