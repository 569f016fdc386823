"""PPO's co-scaling recipe (arXiv 2603.06009) against the "wrong" scaling, at equal env steps.

    python experiments/coscaling.py --env jax:PointMass --num-envs 64 256 1024 4096 --wrong 1024 4096 \
        --run-dir experiments/results/ppo_coscaling_pointmass

Arms, all with one unroll per env per update, the same seeds, budget in env steps, evaluation and networks:

* recipe_N<N>: `--scale-envs` from the reference layout (`--reference-num-envs` envs, minibatches of
  `--batch-size` trajectories, `--learning-rate`): N / reference minibatches of the same size, same lr;
* wrong_N<N>:  one minibatch of batch_size x N / reference trajectories and lr x sqrt(N / reference),
  the minibatch-scaling rule the paper finds degrades.

Each arm is a run.py run in `--run-dir/<arm>` (eval.csv, train.csv with `policy/update_kl` every update).
Arms already finished are kept, so a stopped study resumes by running the same command. Then
`summary.csv`: per arm, the return at the end (mean of each seed's last `--last` evaluations) and over
the run (mean of all evaluations), the outer step's KL (`policy/update_kl`, median over updates per
seed: the mean is dominated by late updates where the policy's std nears its floor and any change of
its mean is a huge KL) and the policy's std (median over updates), each as the mean over seeds with a
95% bootstrap CI.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class CoscalingArgs:
    run_dir: str = "runs/ppo_coscaling"
    """Where each arm's run and summary.csv go."""
    env: str = "jax:PointMass"
    """A JAX env id (mjx:<name>, jax:PointMass)."""
    num_envs: tuple[int, ...] = (64, 256, 1024, 4096)
    """N of the recipe arms."""
    wrong: tuple[int, ...] = (1024, 4096)
    """N of the minibatch-scaling arms."""
    reference_num_envs: int = 64
    """The layout the recipe scales from: this many envs, one minibatch of --batch-size trajectories."""
    batch_size: int = 64
    """Trajectories per minibatch at the reference."""
    learning_rate: float = 1e-3
    """Adam step size at the reference."""
    num_seeds: int = 5
    total_steps: int = 819_200
    """Env steps per seed, the same for every arm."""
    eval_every: int = 81_920
    eval_episodes: int = 5
    unroll_length: int = 10
    num_epochs: int = 4
    preset: str = "cpu"
    last: int = 2
    """Evaluations per seed averaged into the final return."""


def arms(args: CoscalingArgs) -> dict[str, list[str]]:
    """{arm name: its run.py flags beyond the shared ones}."""
    out = {}
    for n in args.num_envs:
        out[f"recipe_N{n}"] = ["--num-envs", str(n), "--batch-size", str(args.batch_size), "--num-minibatches", "1",
                               "--scale-envs", "--reference-num-envs", str(args.reference_num_envs),
                               "--learning-rate", repr(args.learning_rate)]
    for n in args.wrong:
        ratio = n / args.reference_num_envs
        out[f"wrong_N{n}"] = ["--num-envs", str(n), "--batch-size", str(int(args.batch_size * ratio)),
                              "--num-minibatches", "1", "--learning-rate", repr(args.learning_rate * ratio**0.5)]
    return out


def shared_flags(args: CoscalingArgs) -> list[str]:
    return ["--agent", "ppo", "--env", args.env, "--preset", args.preset, "--num-seeds", str(args.num_seeds),
            "--total-steps", str(args.total_steps), "--eval-every", str(args.eval_every),
            "--eval-episodes", str(args.eval_episodes), "--unroll-length", str(args.unroll_length),
            "--num-epochs", str(args.num_epochs), "--no-progress"]


def _finished(run_dir: Path) -> bool:
    status = run_dir / "status.json"
    return status.exists() and bool(json.loads(status.read_text()).get("finished"))


def summarize(run_dir: Path, names: list[str], last: int) -> list[dict]:
    from experiments.stats import bootstrap_ci

    rows = []
    for name in names:
        with open(run_dir / name / "eval.csv") as f:
            evals = list(csv.DictReader(f))
        with open(run_dir / name / "train.csv") as f:
            train = list(csv.DictReader(f))
        seeds = sorted({int(r["seed"]) for r in evals})
        curve = {s: [float(r["return"]) for r in evals if int(r["seed"]) == s] for s in seeds}
        kl = {s: [float(r["policy/update_kl"]) for r in train if int(r["seed"]) == s] for s in seeds}
        std = {s: [float(r["policy/std"]) for r in train if int(r["seed"]) == s] for s in seeds}
        row = {"arm": name, "seeds": len(seeds), "updates": len(kl[seeds[0]])}
        for metric, values in (("final_return", [np.mean(curve[s][-last:]) for s in seeds]),
                               ("mean_return", [np.mean(curve[s]) for s in seeds]),
                               ("update_kl", [np.median(kl[s]) for s in seeds]),
                               ("policy_std", [np.median(std[s]) for s in seeds])):
            estimate = bootstrap_ci(np.asarray(values))
            row.update({metric: estimate.value, f"{metric}_ci_low": estimate.low, f"{metric}_ci_high": estimate.high})
        rows.append(row)
    return rows


def main(args: CoscalingArgs) -> list[dict]:
    run_dir = Path(args.run_dir)
    runs = arms(args)
    for name, flags in runs.items():
        if _finished(run_dir / name):
            print(f"{name}: finished, kept")
            continue
        steps_per_update = int(flags[1]) * args.unroll_length
        command = [sys.executable, str(Path(__file__).parent / "run.py"), *shared_flags(args), *flags,
                   "--log-every", str(steps_per_update), "--run-dir", str(run_dir / name)]
        if (run_dir / name).exists():
            command.append("--resume")
        print(" ".join(command), flush=True)
        if subprocess.run(command).returncode != 0:
            raise SystemExit(f"error: arm {name} failed (its run directory {run_dir / name} says why)")
    rows = summarize(run_dir, list(runs), args.last)
    with open(run_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(f"{r['arm']:>14}  final {r['final_return']:8.1f} [{r['final_return_ci_low']:.1f}, "
              f"{r['final_return_ci_high']:.1f}]  update_kl {r['update_kl']:.4f} [{r['update_kl_ci_low']:.4f}, "
              f"{r['update_kl_ci_high']:.4f}]  std {r['policy_std']:.3f}  updates {r['updates']}")
    return rows


if __name__ == "__main__":
    main(tyro.cli(CoscalingArgs))
