"""Evaluate a trained agent from its policy export: `python experiments/evaluate.py --run-dir runs/my-run`.

Reads `checkpoints/<step>/policy.msgpack` (experiments/policy.py: the leaves the agent's act reads, written after
every checkpoint), never the checkpoint itself: no replay buffer, optimizer state or critic is loaded. Evaluates
with the loops' own evaluator (experiments/loops/evaluation.py) and keys, so on the run's env, deterministic, it
gives the run's eval.csv rows of that step exactly (tests/test_evaluate.py checks MR.Q, SAC, PPO and RAVL).

    python experiments/evaluate.py --run-dir runs/my-run                     # latest checkpoint, every seed
    python experiments/evaluate.py --run-dir runs/my-run --step 100000 --seeds 0 3 --episodes 50 --stochastic
    python experiments/evaluate.py --run-dir runs/my-run --env mjx:CartpoleBalance --out cartpole.json
    python experiments/evaluate.py --run-dir runs/my-run --video --video-episodes 2   # MP4s (experiments/video.py)

Writes one row per seed, as eval.csv's (`step,seed,return,return_std`, the discounted return for offline agents,
`task,score` rows for a multitask env) plus `env,episodes,policy`, to `--out` (.csv, or .json with every
episode's return), default `<run-dir>/evaluations/<step>_<env>_<policy>.csv`; videos go to `--video-dir`, default
`<run-dir>/videos/evaluate_<step>_<env>_<policy>/seed<i>_episode<e>.mp4`. Files are written under temporary
names and renamed once complete. Bad input (a missing run, checkpoint or export, a corrupt file, an unknown env
or one of other widths, a machine that cannot render) ends with one `error:` line, exit code 2, nothing written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):          # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.config import check_fields, field  # noqa: E402
from experiments import video  # noqa: E402
from experiments.policy import Policy, load_policy  # noqa: E402, F401 (the public loader, importable from here too)


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """What to evaluate, how, and where the results go."""

    run_dir: str
    """The run directory (or an export file itself, e.g. a policy.msgpack copied elsewhere)."""
    step: int | None = field(None, ">= 0")
    """The checkpoint to evaluate (default: the latest)."""
    seeds: tuple[int, ...] | None = None
    """Seed indices to evaluate, as in eval.csv (default: all of the run's)."""
    episodes: int | None = field(None, ">= 1")
    """Episodes per seed (default: the run's --eval-episodes)."""
    stochastic: bool = False
    """Act with the agent's exploring policy (--stochastic) instead of the deterministic one the run's
    evaluations use (--deterministic, the default)."""
    env: str | None = None
    """Environment id to evaluate on (default: the run's); its observation and action widths must be the run's."""
    out: str | None = None
    """Results file, .csv or .json (default: <run-dir>/evaluations/<step>_<env>_<policy>.csv)."""
    video: bool = False
    """Also write MP4s of the first --video-episodes episodes of every evaluated seed (needs the video extra)."""
    video_dir: str | None = None
    """Where the MP4s go (default: <run-dir>/videos/evaluate_<step>_<env>_<policy>/)."""
    video_episodes: int = field(1, ">= 1")
    """Episodes per seed drawn with --video."""
    video_width: int = field(320, ">= 16")
    """Video width in pixels (even)."""
    video_height: int = field(240, ">= 16")
    """Video height in pixels (even)."""
    video_shadows: bool = False
    """Draw shadows and reflections (off by default: on a CPU they cost 20 times the rest of a frame)."""
    compile_cache: bool = True
    """Keep compiled programs on disk (experiments/jax_setup.py); --no-compile-cache turns it off."""
    compile_cache_dir: str | None = None
    """The compile cache's directory (default: as run.py's)."""
    matmul_precision: Literal["float32", "tensorfloat32", "bfloat16", "default"] | None = None
    """Matmul precision (default: the run's, which its exact numbers need on a GPU)."""


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def evaluate(args: EvaluateArgs) -> dict:
    """Evaluate `args.run_dir`'s export as `args` say, write the results (and videos); returns what was written
    and the rows. Bad input raises RunError, ExportError, UnknownEnvError, VideoError or JaxSetupError, before
    anything is written."""
    import numpy as np

    import envs as envs_lib
    from experiments import jax_setup
    from experiments.logger import CsvLog, eval_rows
    from experiments.policy import ExportError, ExportEvaluator, find_export, read_export
    from experiments.train import RunError

    try:
        check_fields(args)
    except ValueError as error:
        raise RunError(str(error)) from None
    if args.out is not None and Path(args.out).suffix not in (".csv", ".json"):
        raise RunError(f"--out {args.out}: give a .csv or a .json file")
    path = find_export(args.run_dir, args.step)
    export = read_export(path)
    lanes = list(range(export.num_lanes)) if args.seeds is None else list(args.seeds)
    wrong = [s for s in lanes if not 0 <= s < export.num_lanes]
    if wrong or len(set(lanes)) != len(lanes):
        raise RunError(f"--seeds {' '.join(map(str, args.seeds))}: give distinct seed indices of the run, 0 .. "
                       f"{export.num_lanes - 1}")
    env_id = args.env or export.env_id
    recorder = None
    if args.video:
        video.check_available()
        recorder = video.Recorder(lanes, args.video_episodes, args.video_width, args.video_height,
                                  args.video_shadows)
    try:
        jax_setup.configure_jax(jax_setup.JaxFlags(args.compile_cache, args.compile_cache_dir,
                                                   args.matmul_precision or export.matmul_precision))
    except jax_setup.JaxSetupError as error:
        raise RunError(str(error)) from None
    try:
        # UnknownEnvError names the valid ids; ExportError an env of other widths.
        evaluator = ExportEvaluator(export, env_id)
    except (envs_lib.UnknownEnvError, ExportError):
        raise
    except ValueError as error:                            # an env option that does not fit, ...
        raise RunError(str(error)) from None
    if args.video:
        video.check_env(env_id, evaluator.env)

    episodes = args.episodes or export.eval_episodes
    evaluation = evaluator(export, lanes, episodes, explore=args.stochastic, recorder=recorder)
    policy = "stochastic" if args.stochastic else "deterministic"
    per_seed = ({} if evaluation.discounted is None
                else {"eval/discounted_return": evaluation.discounted.mean(axis=1)})
    rows, _ = eval_rows(export.step, evaluation.returns, per_seed, evaluation.per_task, evaluation.tasks, lanes)
    rows = [{**row, "env": env_id, "episodes": episodes, "policy": policy} for row in rows]

    base = path.parent.parent.parent if path.parent.parent.name == "checkpoints" else path.parent
    name = f"{export.step}_{_tag(env_id)}_{policy}"
    written = {}
    if recorder is not None:
        video_dir = Path(args.video_dir) if args.video_dir else base / "videos" / f"evaluate_{name}"
        written["videos"] = [str(p) for p in recorder.write(video_dir)]
    out = Path(args.out) if args.out else base / "evaluations" / f"{name}.csv"
    if out.suffix == ".json":
        returns = {str(lane): np.asarray(r, float).tolist() for lane, r in zip(lanes, evaluation.returns)}
        document = {"export": str(path), "agent": export.agent_name, "env": env_id, "step": export.step,
                    "policy": policy, "episodes": episodes, "rows": rows, "returns": returns,
                    "videos": written.get("videos", [])}
        _write_atomic(out, lambda tmp: tmp.write_text(json.dumps(document, indent=2)))
    else:
        _write_atomic(out, lambda tmp: CsvLog(tmp).write(rows))
    return {"out": str(out), "rows": rows, **written}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --deterministic is the default; tyro names a boolean's off switch --no-<flag>.
    argv = ["--no-stochastic" if arg == "--deterministic" else arg for arg in argv]
    if "--video" in argv:
        video.configure_headless()      # before anything imports mujoco, which then keeps its GL backend
    from envs import UnknownEnvError
    from experiments.policy import ExportError
    from experiments.run import cli
    from experiments.train import RunError

    try:
        args = cli(EvaluateArgs, argv, "Evaluate a trained agent from its policy export (experiments/policy.py).")
        result = evaluate(args)
    except (RunError, ExportError, UnknownEnvError, video.VideoError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in result["rows"]:
        task = f" {row['task']}" if "task" in row else ""
        print(f"step {row['step']} seed {row['seed']}{task}: return {row['return']:.2f} +- {row['return_std']:.2f} "
              f"({row['episodes']} {row['policy']} episodes on {row['env']})")
    for path in result.get("videos", []):
        print(f"video: {path}")
    print(f"wrote {result['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
