"""The outer training loop: validate, set up the run directory, train in chunks,
evaluate, log, checkpoint, resume. Nothing algorithmic lives here.

`train(run_args, agent_config)` is what `experiments/run.py` calls; notebooks
and tests can call it directly.

Order of a start, so that a bad input writes nothing: the flags (every number
finite and in its declared range, agents/config.py), the run directory's path,
a resumed run's saved configuration and checkpoint, JAX's settings (the compile
cache's directory and the matmul precision, experiments/jax_setup.py: set
before anything compiles), the env and the loop, the memory estimate
(experiments/memory.py); only then the directory is locked
(experiments/rundir.py: one process per run directory) and written. A start
that fails before its first chunk of training removes what it wrote.

While training, SIGTERM (a cluster's preemption) or SIGINT (Ctrl-C) lets the
current chunk finish, writes a checkpoint at its step, says so in one line and
exits with 128 + the signal number; `--resume` then continues exactly, with no
step trained twice. A second SIGINT stops at once (the last checkpoint stays).
A resumed run must be the same experiment: only its length, how it is shown
(progress bar, W&B), its checkpoints and its compile cache may change.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import platform
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np

import agents
import envs
from agents.config import INT32_MAX, check_fields, field
from experiments import jax_setup, memory
from experiments.checkpoint import Checkpointer, CheckpointError, checkpoint_steps
from experiments.logger import RunLogger
from experiments.loops.driver import crossed, drive, round_up
from experiments.progress import ProgressBar
from experiments.rundir import RunDir, RunDirError, write_json


class RunError(ValueError):
    """A bad input from the user: the message names it and the valid choices."""


class DivergenceError(RuntimeError):
    """A loss or metric became NaN / inf during training."""


class RunIOError(RuntimeError):
    """Writing the run's files failed (disk full, permissions); the message names the file and the step."""


class Stopped(RuntimeError):
    """The run stopped on a signal after writing a checkpoint; `code` is the exit code (128 + signal)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class RunArgs(jax_setup.JaxFlags):
    """What to train, for how long, where to write it, and how JAX compiles it (experiments/jax_setup.py)."""

    agent: str = "mrq"
    """Agent name (see agents/__init__.py)."""
    env: str = "dmc"
    """Environment id: dmc, dmc:<domain>-<task>, gym:<id>, mjx:<PlaygroundName>, jax:PointMass, or one registered
    with envs.register (see --env-module); options follow a '?': dmc:walker-walk?action_repeat=4&episode_length=250
    (envs/options.py). Default: the agent's (dmc = dmc:cheetah-run; for PPO, GTR and SIGReg mjx:CartpoleBalance)."""
    env_module: tuple[str, ...] = ()
    """Modules to import before the env is made, e.g. mypackage.envs: their envs.register calls make your own
    env ids valid (the current directory is on the path). Saved in config.json: --resume imports them again."""
    seed: int = field(0, ">= 0")
    """First seed; seed i of the run uses seed + i."""
    num_seeds: int = field(1, ">= 1")
    """Seeds trained at once by one vmapped program."""
    total_steps: int = field(500_000, ">= 1")
    """Agent (environment) steps per seed, summed over the seed's envs (--num-envs); frames = steps x action
    repeat."""
    eval_every: int = field(5_000, ">= 1")
    """Agent steps between evaluations (a checkpoint is written at each, unless --checkpoint-every is given).
    PPO, GTR, SIGReg without this flag: at most --total-steps / 20, in whole updates."""
    eval_episodes: int = field(10, ">= 1")
    """Deterministic evaluation episodes per seed."""
    log_every: int = field(1_000, ">= 1")
    """Agent steps between rows of train.csv (PPO, GTR, SIGReg without this flag: as --eval-every)."""
    checkpoint_every: int | None = field(None, ">= 1")
    """Agent steps between checkpoints (each is written at the end of the first chunk past a multiple of it; a
    chunk ends at every --log-every and --eval-every); default: at every evaluation. The final step is always
    checkpointed."""
    keep_checkpoints: int = field(2, ">= 1")
    """Checkpoints kept (the latest ones; an older one is deleted only once a newer one is complete)."""
    run_dir: str | None = None
    """Output directory (default runs/<agent>/<env>/<time>)."""
    resume: bool = False
    """Continue the run in --run-dir from its latest checkpoint."""
    resume_from: int | None = field(None, ">= 1")
    """With --resume: continue from this checkpoint step instead of the latest (e.g. when the latest is
    corrupt); the checkpoints and rows after it are deleted."""
    overwrite: bool = False
    """Delete what an earlier run wrote in --run-dir and start again (only a run directory's own files)."""
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
    video_every: int | None = field(None, ">= 1")
    """Every N evaluations, also write MP4s of seed 0's first --video-episodes evaluation episodes to
    <run-dir>/videos/<step>/ (off by default; needs the video extra, experiments/video.py)."""
    video_episodes: int = field(1, ">= 1")
    """Episodes drawn at each --video-every evaluation."""

    def validate(self) -> None:
        try:
            check_fields(self)
        except ValueError as error:
            raise RunError(str(error)) from None
        if self.seed + self.num_seeds - 1 > INT32_MAX:
            raise RunError(f"--seed + --num-seeds must stay below {INT32_MAX} (seeds are int32), got "
                           f"{self.seed} + {self.num_seeds}")
        if self.resume and self.overwrite:
            raise RunError("--resume and --overwrite exclude each other: continue the run or start it again")
        if self.resume and self.run_dir is None:
            raise RunError("--resume needs --run-dir naming the run to continue")
        if self.resume_from is not None and not self.resume:
            raise RunError("--resume-from needs --resume")


def default_run_dir(args: RunArgs) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / args.agent / args.env.replace(":", "_") / stamp


# The packages whose versions can change a run's numbers, as config.json records them.
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "mujoco", "mujoco-mjx",
                      "dm_control", "playground", "gymnasium", "brax")


def _versions() -> dict:
    """Python, the packages above (None where one is not installed), the backend and its devices."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: version(name) for name in VERSIONED_PACKAGES},
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}


def git_state(directory: Path = Path(__file__).resolve().parent.parent) -> dict | None:
    """The code's git commit and whether tracked files differ from it ({"commit", "dirty"}), or None outside a
    git checkout (e.g. an installed package) or without git."""
    import subprocess

    def git(*command: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *command], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def is_main_process() -> bool:
    """With several hosts (after `jax.distributed.initialize()`), only process 0 writes files."""
    return jax.process_index() == 0


def _write_json(path: Path, data: dict) -> None:
    if is_main_process():
        write_json(path, data)


def as_saved(values: Any) -> Any:
    """`values` as config.json holds them (tuples become lists), for comparing a run with its saved flags."""
    return json.loads(json.dumps(values, default=str))


def from_saved(cls: type, values: dict) -> Any:
    """`cls(**values)` from config.json: lists back to tuples, keys `cls` no longer has left out."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields})


def read_saved_run(run_dir: Path) -> dict:
    """A resumable run's config.json (RunError if there is none or it is corrupt)."""
    path = run_dir / "config.json"
    if not path.exists():
        raise RunError(f"--resume: {run_dir} holds no run (no config.json); start it without --resume")
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved.get("run"), dict) or not isinstance(saved.get("agent_config"), dict):
            raise KeyError("run / agent_config")
        # A run saved before --matmul-precision existed ran at JAX's default precision.
        saved["run"].setdefault("matmul_precision", "default")
        saved["run"].setdefault("env_module", [])           # ... and before --env-module, imported nothing
        return saved
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunError(f"{path} is corrupt ({error}); cannot resume this run") from None


def _check_resume_config(saved: dict, args: RunArgs, config: Any) -> None:
    """A resumed run must be the same experiment; only its length, how it is shown (videos included), its
    checkpoints and its compile cache may change (the matmul precision may not: it changes the numbers on a
    GPU)."""
    mutable = {"total_steps", "resume", "resume_from", "overwrite", "progress", "wandb", "wandb_project", "run_dir",
               "distributed", "compile_cache", "compile_cache_dir", "checkpoint_every", "keep_checkpoints",
               "video_every", "video_episodes"}
    run, agent_config = as_saved(dataclasses.asdict(args)), as_saved(dataclasses.asdict(config))
    differences = [f"--{k.replace('_', '-')} {saved['run'].get(k)!r} -> {v!r}"
                   for k, v in run.items() if k not in mutable and saved["run"].get(k) != v]
    differences += [f"--{k.replace('_', '-')} {saved['agent_config'].get(k)!r} -> {v!r}"
                    for k, v in agent_config.items() if saved["agent_config"].get(k) != v]
    if differences:
        raise RunError("--resume with a different configuration than the saved run: " + "; ".join(differences)
                       + " (start a new run, or resume with the saved flags)")


def _check_finite(step: int, per_seed: dict) -> None:
    for name, values in per_seed.items():
        if name == "episode_return" or name.startswith("episode_return/"):  # NaN before an episode ends, by design
            continue
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, np.float64)))
        if bad.size:
            raise DivergenceError(f"{name} is {values[bad[0]]} at step {step} (seed index {bad[0]})")


def validate(args: RunArgs, config: Any):
    """Every check that needs no env and no file: RunError naming the first bad flag. Returns the agent."""
    args.validate()
    agent = agents.get(args.agent)          # UnknownAgentError names the valid agents
    try:
        config.validate()
    except ValueError as error:
        raise RunError(str(error)) from None
    offline = isinstance(agent, agents.OfflineAgent)
    if offline and not args.dataset:
        raise RunError(f"agent {args.agent!r} learns from a dataset: pass --dataset PATH "
                       "(make one with experiments/collect.py)")
    if not offline and args.dataset:
        raise RunError(f"--dataset is for the offline agents; {args.agent!r} learns online")
    return agent


def train(args: RunArgs, config: Any) -> Path:
    """Train `args.agent` with `config` on `args.env`; returns the run directory. Sets this process's JAX compile
    cache and matmul precision from `args` first (experiments/jax_setup.py)."""
    agent = validate(args, config)
    run_dir = RunDir(args.run_dir if args.run_dir else default_run_dir(args))
    try:
        run_dir.check_path()
    except RunDirError as error:
        raise RunError(str(error)) from None
    saved = None
    if args.resume:
        saved = read_saved_run(run_dir.path)
        _check_resume_config(saved, args, config)
    replay_transitions = (saved["replay_transitions"] if saved is not None
                          else replay_transitions_of(agent, config, args.total_steps))
    try:
        jax_setup.configure_jax(args)       # before anything compiles (building the loop may)
    except jax_setup.JaxSetupError as error:
        raise RunError(str(error)) from None

    # Building the env validates the id (UnknownEnvError lists the valid ones) before anything is written.
    loop = make_loop(agent, config, args, replay_transitions, run_dir.path)
    try:
        if args.video_every is not None:
            _check_video(args, loop)
        memory.check(loop)
        check_warmup(agent, config, loop.spec, args.total_steps)
        if is_main_process():
            _claim(run_dir, args)
        try:
            return _train(args, config, loop, run_dir, saved, replay_transitions)
        finally:
            run_dir.unlock()
    except memory.OutOfMemory as error:
        raise RunError(str(error)) from None
    except jax.errors.JaxRuntimeError as error:
        if not memory.is_out_of_memory(error):
            raise
        raise RunError(f"out of device memory while training: {memory.describe(loop)}") from None
    finally:
        loop.close()


def _check_video(args: RunArgs, loop) -> None:
    """RunError unless this machine can draw the run's env (experiments/video.py)."""
    from experiments import video

    try:
        video.check_available()
        video.check_env(args.env, loop.env)
    except video.VideoError as error:
        raise RunError(f"--video-every: {error}") from None


def _claim(run_dir: RunDir, args: RunArgs) -> None:
    """Lock the run directory and make sure it is ours to write: a resumable run for --resume; otherwise new,
    empty, or (with --overwrite) a run of ours, whose files are then deleted. Refusals raise RunError."""
    try:
        run_dir.lock()
    except RunDirError as error:
        raise RunError(str(error)) from None
    except OSError as error:
        raise RunError(f"cannot create --run-dir {run_dir.path}: {error.strerror or error}") from None
    try:
        if args.resume:
            if not checkpoint_steps(run_dir.path / "checkpoints"):
                raise RunError(f"--resume: no checkpoint in {run_dir.path / 'checkpoints'}; start the run again "
                               "with --overwrite")
            return
        entries, status = run_dir.entries(), run_dir.status()
        if entries and status is None:
            listed = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            if args.overwrite:
                raise RunError(f"--overwrite deletes only run directories (with the status.json a run writes); "
                               f"{run_dir.path} holds other files ({listed}): choose another --run-dir")
            raise RunError(f"{run_dir.path} holds files that are not a run ({listed}): choose a new or empty "
                           "--run-dir")
        if entries and not args.overwrite:
            what = "a finished run" if status.get("finished") else "an unfinished run"
            raise RunError(f"{run_dir.path} already holds {what}; pass --resume to continue it or --overwrite to "
                           "start again")
        if entries:
            run_dir.clear()        # only what a run wrote; a user's own files beside it stay
        run_dir.mark()
    except BaseException:
        run_dir.release_foreign()
        raise


def make_loop(agent, config: Any, args: RunArgs, replay_transitions: int, run_dir: Path | None = None,
              lanes=None, world_dir: Path | None = None):
    """The loop of the agent's family for `args.env` (experiments/loops); configurations it cannot run raise
    RunError. `lanes` (experiments/loops/lanes.py) replaces the run's seeds for a sweep: (point, seed) pairs,
    each with its config. An offline agent keeps its world in `world_dir` (default: <run_dir>/world, or a
    temporary directory without either), from where a resume reloads it."""
    from experiments import loops
    from experiments.loops.on_policy import LoopError
    from replay.datasets import DatasetError

    agent = agents.record(agent)
    try:
        envs.import_modules(args.env_module)      # a user's envs.register calls, before the env is made
    except envs.EnvModuleError as error:
        raise RunError(str(error)) from None
    num_seeds = args.num_seeds if lanes is None else len(lanes)
    if isinstance(agent, agents.OfflineAgent):
        if not args.dataset:
            raise RunError(f"agent {args.agent!r} learns from a dataset: pass --dataset PATH "
                           "(make one with experiments/collect.py)")
        if world_dir is None and run_dir is None:        # nothing to resume: kept nowhere in particular
            import tempfile

            run_dir = Path(tempfile.mkdtemp(prefix="ctrlrl_world_"))
        world_dir = run_dir / "world" if world_dir is None else world_dir
    else:
        world_dir = None
    try:
        return loops.make(agent, config, args.env, num_seeds, args.seed, replay_transitions=replay_transitions,
                          dataset=args.dataset, world_dir=world_dir, lanes=lanes)
    except (LoopError, DatasetError) as error:
        raise RunError(str(error)) from None
    except (ValueError, FileNotFoundError) as error:
        if not isinstance(agent, agents.OfflineAgent):
            raise
        raise RunError(str(error)) from None


def check_warmup(agent, config: Any, spec, total_steps: int) -> None:
    """An off-policy agent acts at random for its warm-up (e.g. SAC's --learning-starts) and updates only after
    it. A run shorter than the warm-up is a mistake (it would report an untrained policy's return): RunError
    with the numbers. A run of exactly the warm-up (bench.py --startup times one) and one that trains for fewer
    steps than it acted at random get a warning."""
    if not isinstance(agent, agents.OffPolicyAgent) or agent.warmup is None:
        return
    warmup = agent.warmup_steps(config, spec)
    flag = "--" + agent.warmup_flag.replace("_", "-")
    setting = f"{flag} {getattr(config, agent.warmup_flag)}"
    if getattr(config, agent.warmup_flag) != warmup:
        setting += f" = {warmup} steps"
    if total_steps < warmup:
        raise RunError(f"--total-steps {total_steps} ends within {agent.name}'s random warm-up ({setting}): its "
                       f"first update follows step {warmup}, so nothing would be trained; pass --total-steps above "
                       f"{warmup} or a smaller {flag}")
    if total_steps == warmup:
        print(f"warning: {agent.name} trains nothing in this run: its {total_steps} steps are all random warm-up "
              f"({setting})", file=sys.stderr, flush=True)
    elif total_steps - warmup < warmup:
        print(f"warning: {agent.name} trains for only {total_steps - warmup} of its {total_steps} steps per seed; "
              f"the first {warmup} act at random ({setting})", file=sys.stderr, flush=True)


def replay_transitions_of(agent, config: Any, total_steps: int) -> int:
    """The transitions an off-policy agent's replay keeps (0 for the other loops: they keep none)."""
    return agent.replay_transitions(config, total_steps) if isinstance(agent, agents.OffPolicyAgent) else 0


def derived_settings(agent, config: Any) -> dict:
    """Values the agent derives from its flags (e.g. PPO's batch layout), as saved in config.json."""
    return agent.layout(config)._asdict() if isinstance(agent, agents.OnPolicyAgent) else {}


class _GracefulStop:
    """While active, SIGTERM and SIGINT only ask the loop to stop after its chunk (`self.signal` is set);
    a second SIGINT raises KeyboardInterrupt at once. Outside the main thread it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: stopping after the current chunk to write a checkpoint "
              "(Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _train(args, config, loop, run_dir: RunDir, saved: dict | None, replay_transitions: int) -> Path:
    """Set up (restore or start fresh), then train in chunks; a fresh start that fails before its first
    chunk removes what it wrote."""
    try:
        state, start_step, clock, checkpointer, logger = _setup(args, config, loop, run_dir, saved,
                                                                replay_transitions)
    except BaseException:
        if saved is None and is_main_process():
            run_dir.discard()
        raise
    try:
        with _GracefulStop() as stop:
            step = _loop(args, config, loop, state, start_step, clock, checkpointer, logger, run_dir, stop)
    except OSError as error:
        raise RunIOError(_io_failure(error, checkpointer)) from None
    finally:
        logger.close()
        checkpointer.close()
    _write_json(run_dir.path / "status.json", {**(run_dir.status() or {}), "finished": True, "step": step})
    return run_dir.path


def _io_failure(error: OSError, checkpointer: Checkpointer) -> str:
    where = f" writing {error.filename}" if error.filename else ""
    last = checkpointer.latest_step()
    then = (f"the last complete checkpoint (step {last}) is kept: fix the cause (e.g. free disk space), then "
            "--resume" if last is not None else "no checkpoint was written: fix the cause (e.g. free disk space), "
            "then start again with --overwrite")
    return f"{error.strerror or error}{where}; {then}"


def _setup(args, config, loop, run_dir: RunDir, saved: dict | None, replay_transitions: int):
    """The state to train from (fresh, or restored), its step, the run's wall clock (WallClock), the
    checkpointer and the logger; config.json and status.json written."""
    path = run_dir.path
    checkpointer = Checkpointer(path / "checkpoints", keep=args.keep_checkpoints)
    state, start_step, meta = loop.init(), 0, {}
    if saved is not None:
        if args.resume_from is not None:
            _drop_checkpoints_after(checkpointer, args.resume_from)
        state, meta, start_step = _restore(checkpointer, state, args.resume_from)
        try:
            loop.set_host_state(base64.b64decode(meta["host_state"]))
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"checkpoint {checkpointer.directory / str(start_step)}: {error}") from None
        reached = round_up(start_step, loop)
        if round_up(args.total_steps, loop) < start_step:
            raise RunError(f"--total-steps {args.total_steps} is below the {reached} steps the run in {path} "
                           f"has reached; give --total-steps >= {reached} (or leave it out)")

    derived = derived_settings(loop.agent, config)
    if derived and saved is None:
        print("derived: " + ", ".join(f"{k}={v}" for k, v in derived.items()), flush=True)
    status = run_dir.status() or {}
    resolved = {"run": dataclasses.asdict(args), "agent_config": dataclasses.asdict(config), "derived": derived,
                "env_spec": dataclasses.asdict(loop.spec), "replay_transitions": replay_transitions,
                "replay_capacity": loop.capacity, "jax": jax_setup.settings(), **_history(saved, start_step)}
    _write_json(path / "config.json", resolved)
    run_id = status.get("run_id")
    if is_main_process():
        run_id = run_dir.mark(finished=False, step=start_step, run_id=run_id)
    resume_step = start_step if saved is not None else None
    logger = (RunLogger(path, args.wandb, args.wandb_project, resolved, resume_step, run_id) if is_main_process()
              else RunLogger(path / f"process_{jax.process_index()}", False, resume_step=resume_step))
    return state, start_step, WallClock(meta.get("wall_clock_s", 0.0)), checkpointer, logger


def _history(saved: dict | None, start_step: int) -> dict:
    """config.json's record of how the run was made: `commands`, every start and resume in order (the command,
    the time, the step it started from, the code's git commit and the package versions); `command`, `git` and
    `versions` are the first start's, which a resume keeps."""
    entry = {"command": " ".join(sys.argv), "started": datetime.now().isoformat(timespec="seconds"),
             "from_step": start_step, "git": git_state(), "versions": _versions()}
    earlier = [] if saved is None else saved.get("commands") or [
        {"command": saved.get("command"), "from_step": 0, "git": saved.get("git"), "versions": saved.get("versions")}]
    first = (earlier or [entry])[0]
    return {"command": first["command"], "git": first["git"], "versions": first["versions"],
            "commands": [*earlier, entry]}


class WallClock:
    """Seconds since the run started, accumulated over resumes (a resumed run continues from the value saved
    in its checkpoint; the time between that checkpoint and the stop is not counted, as its rows are dropped)."""

    def __init__(self, offset: float = 0.0):
        self._offset, self._start = float(offset), time.perf_counter()

    def __call__(self) -> float:
        return round(self._offset + time.perf_counter() - self._start, 3)


def _restore(checkpointer: Checkpointer, state, step: int | None):
    """Restore checkpoint `step` (the latest if None); a corrupt one names an earlier one that restores."""
    step = checkpointer.latest_step() if step is None else step
    try:
        return checkpointer.restore(state, step)
    except CheckpointError as error:
        earlier = [s for s in checkpointer.all_steps() if s < step]
        for candidate in reversed(earlier):
            try:
                checkpointer.restore(state, candidate)
            except CheckpointError:
                continue
            raise CheckpointError(f"{error}; checkpoint {candidate} is intact: --resume --resume-from {candidate} "
                                  "continues from it") from None
        raise


def _drop_checkpoints_after(checkpointer: Checkpointer, step: int) -> None:
    steps = checkpointer.all_steps()
    if step not in steps:
        raise RunError(f"--resume-from {step}: no such checkpoint in {checkpointer.directory}; it holds "
                       f"{', '.join(map(str, steps)) or 'none'}")
    later = [s for s in steps if s > step]
    if later:
        print(f"--resume-from {step}: deleting the later checkpoint(s) {', '.join(map(str, later))}", flush=True)
        checkpointer.delete(later)


class _PolicyExports:
    """The policy export written beside every checkpoint (experiments/policy.py), and the videos drawn from it
    every --video-every evaluations (experiments/video.py). An agent that cannot be exported is said once, and
    the run goes on without exports."""

    def __init__(self, args: RunArgs, loop, run_dir: Path):
        from experiments.policy import Exporter

        self.args, self.run_dir = args, run_dir
        self.exporter = Exporter(loop, args.eval_episodes, args.matmul_precision)
        self.failed = False
        self.last = None                 # the latest export (host arrays), for the videos
        self.evaluations = 0
        self._video_evaluator = None

    @staticmethod
    def written(checkpoint_dir: Path) -> bool:
        from experiments.policy import FILE

        return (checkpoint_dir / FILE).is_file()

    def write(self, checkpoint_dir: Path, state, step: int) -> None:
        from experiments.policy import FILE, ExportError

        if self.failed:
            return
        try:
            # Every process takes part (a sharded state is gathered), the main one writes.
            self.last = self.exporter.write(checkpoint_dir / FILE, state["agent"], step, write=is_main_process())
        except ExportError as error:
            self.failed = True
            print(f"warning: no policy exports for this run: {error}", file=sys.stderr, flush=True)

    def video(self, step: int, state) -> None:
        """At every --video-every-th evaluation: seed 0's first --video-episodes evaluation episodes, evaluated
        again from the export with the same keys and env seeds, drawn to videos/<step>/. The export is this
        step's: the one written with its checkpoint, or (no checkpoint at this evaluation: --checkpoint-every)
        one made for the video and not written."""
        self.evaluations += 1
        every = self.args.video_every
        if every is None or self.evaluations % every or self.failed or not is_main_process():
            return
        if self.last is None or self.last.step != step:
            from experiments.policy import ExportError

            try:
                self.last = self.exporter.export(state["agent"], step)
            except ExportError as error:
                self.failed = True
                print(f"warning: no policy exports for this run: {error}", file=sys.stderr, flush=True)
                return
        import envs as envs_lib
        from experiments import video
        from experiments.policy import ExportEvaluator

        if self._video_evaluator is None:
            self._video_evaluator = ExportEvaluator(self.last)
        recorder = video.Recorder([0], self.args.video_episodes, 320, 240)
        # Host envs: seed 0's k-th episode has the same env instance whatever the number of episodes, so only the
        # drawn ones are run; JAX envs draw their episodes' keys from the count, so all of them run.
        jax_env = envs_lib.is_jax_env(self.args.env)
        episodes = self.args.eval_episodes if jax_env else min(self.args.video_episodes, self.args.eval_episodes)
        self._video_evaluator(self.last, [0], episodes, recorder=recorder)
        recorder.write(self.run_dir / "videos" / str(step))


def _loop(args, config, loop, state, start_step: int, clock: WallClock, checkpointer, logger, run_dir: RunDir,
          stop: _GracefulStop) -> int:
    """The driver's chunks (experiments/loops/driver.py) with a progress bar, train.csv rows, evaluations,
    checkpoints (at every evaluation, or every --checkpoint-every steps, and at the end), and a checkpoint before
    stopping on a signal; returns the final step."""
    agent = loop.agent
    warmup = agent.warmup_steps(config, loop.spec) if isinstance(agent, agents.OffPolicyAgent) else 0
    bar = ProgressBar(round_up(args.total_steps, loop), start_step, warmup, args.progress and is_main_process(),
                      f"{args.agent} {args.env} x{args.num_seeds}")
    # training/sps: steps over training time. The interval starts at the first progress report (the programs
    # are compiled by then) or, for loops that report only at chunk ends, after the first logged chunk (whose
    # sps is then left empty); evaluation time is left out.
    interval = {"start": None, "step": start_step}
    chunk = {"previous": start_step, "evaluated": False}

    def progress(step: int) -> None:
        if interval["start"] is None:
            interval.update(start=time.perf_counter(), step=step)
        bar.advance(step)

    loop.on_progress = progress

    exports = _PolicyExports(args, loop, run_dir.path)
    if start_step and not exports.written(checkpointer.directory / str(start_step)):
        # A run killed between writing its checkpoint and the export beside it: every checkpoint has one.
        exports.write(checkpointer.directory / str(start_step), state, start_step)

    def save(step: int, state) -> None:
        checkpointer.save(step, state, {"step": step, "host_state": base64.b64encode(loop.host_state()).decode(),
                                        "wall_clock_s": clock()})
        exports.write(checkpointer.directory / str(step), state, step)
        _write_json(run_dir.path / "status.json", {**(run_dir.status() or {}), "finished": False, "step": step})

    def on_log(step: int, per_seed: dict) -> None:
        sps = float("nan")
        if interval["start"] is not None:
            sps = (step - interval["step"]) / max(time.perf_counter() - interval["start"], 1e-9)
        per_seed = metrics_that_exist(step, warmup, per_seed)
        logger.log_train(step, per_seed, {"training/sps": sps, "training/sps_all_seeds": sps * args.num_seeds,
                                          "wall_clock_s": clock()})
        interval.update(start=time.perf_counter(), step=step)
        if np.isfinite(sps):
            bar.show(sps=f"{sps:.1f}")

    def on_eval(step: int, state, evaluation, diagnostics: dict) -> None:
        logger.log_eval(step, evaluation.returns, diagnostics, evaluation.per_task, evaluation.tasks,
                        shared={"wall_clock_s": clock()})
        if args.checkpoint_every is None:
            save(step, state)
        exports.video(step, state)
        if not chunk["evaluated"]:
            bar.skip_interval()            # the first evaluation compiles its program: not the rate of training
            chunk["evaluated"] = True
        bar.show(eval_return=f"{float(np.mean(evaluation.returns)):.1f}")
        if interval["start"] is not None:
            interval["start"] = time.perf_counter()    # evaluation time is not training time

    def on_chunk(step: int, state, finished: bool) -> None:
        previous, chunk["previous"] = chunk["previous"], step
        progress(step)
        due = finished or crossed(previous, step, args.checkpoint_every)
        if args.checkpoint_every is not None and due and checkpointer.latest_step() != step:
            save(step, state)
        if stop.signal is not None and not finished:
            if checkpointer.latest_step() != step:
                save(step, state)
            name = signal.Signals(stop.signal).name
            raise Stopped(f"stopped by {name} at step {step}: checkpoint written; continue with "
                          f"--resume --run-dir {run_dir.path}", 128 + stop.signal)

    try:
        _, step = drive(loop, state, start_step, args.total_steps, log_every=args.log_every,
                        eval_every=args.eval_every, eval_episodes=args.eval_episodes, check=_check_finite,
                        on_log=on_log, on_eval=on_eval, on_chunk=on_chunk)
    except DivergenceError as error:
        last = checkpointer.latest_step()
        kept = f"the last good checkpoint (step {last}) is kept" if last is not None else "no checkpoint was written"
        raise DivergenceError(f"{error}; {kept}") from None
    finally:
        loop.on_progress = None
        bar.close()
    return step


def metrics_that_exist(step: int, warmup: int, per_seed: dict) -> dict:
    """`per_seed` with the agent's update metrics NaN (an empty cell: they do not exist) up to the end of an
    off-policy agent's random warm-up (`warmup` steps; its loop reports zeros there); the loops' episode
    statistics are kept."""
    if step > warmup:
        return per_seed
    return {k: v if _is_episode_metric(k) else np.full(np.shape(v), np.nan) for k, v in per_seed.items()}


def _is_episode_metric(name: str) -> bool:
    """The loops' own episode statistics, which exist from the first step (unlike the agent's update metrics)."""
    return name in ("episode_return", "episodes", "nan_resets") or name.startswith("episode_return/")
