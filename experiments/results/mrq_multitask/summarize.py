"""Summarise the multitask MR.Q runs of this folder: per task and aggregate normalised score (return / 1000), mean
and 95% percentile-bootstrap CI over seeds, next to a uniform-random policy on the same envs and evaluation seeds.

    python experiments/results/mrq_multitask/summarize.py            # writes summary.csv beside this file

With 2 seeds a bootstrap "95% CI" is just the range of the two seeds' values: read it as a range.
"""

import csv
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import envs  # noqa: E402
from envs.multitask import action_masks  # noqa: E402
from experiments.plot import bootstrap_ci  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RUNS = {"S": "mt4_size_S", "B": "mt4_size_B"}
EPISODES, SEEDS = 5, 2


def random_scores(env_id: str = "dmc:mt4") -> dict[str, np.ndarray]:
    """[seeds] mean normalised score per task of uniform actions in the task's own dims (padding zero)."""
    env = envs.make(env_id, num_envs=SEEDS, seed=12345)
    spec, masks = env.spec, np.asarray(action_masks(env.spec))
    rng = np.random.default_rng(0)
    num_tasks = spec.num_tasks
    totals = np.zeros((SEEDS, num_tasks, EPISODES))
    for episode in range(EPISODES):
        env.reset()
        running = np.zeros(SEEDS * num_tasks)
        done = np.zeros(SEEDS * num_tasks, bool)
        while not done.all():
            action = rng.uniform(-1, 1, (SEEDS * num_tasks, spec.action_dim)) * np.tile(masks, (SEEDS, 1))
            result = env.step(action.astype(np.float32))
            running += np.where(done, 0.0, result.reward)
            done |= result.terminated | result.truncated
        totals[:, :, episode] = running.reshape(SEEDS, num_tasks)
    env.close()
    scores = totals.mean(-1) / 1000.0
    out = {task.env_id: scores[:, t] for t, task in enumerate(spec.tasks)}
    out["all"] = scores.mean(-1)
    return out


def run_scores(run: str) -> dict[int, dict[str, np.ndarray]]:
    """{step: {task: [seeds] score}} from a run's eval.csv."""
    rows = list(csv.DictReader(open(HERE / run / "eval.csv")))
    out: dict[int, dict[str, list]] = {}
    for row in rows:
        out.setdefault(int(row["step"]), {}).setdefault(row["task"], []).append(float(row["score"]))
    return {step: {task: np.asarray(v) for task, v in tasks.items()} for step, tasks in out.items()}


def main() -> None:
    table = []
    for task, scores in random_scores().items():
        est = bootstrap_ci(scores)
        table.append(("random", 0, task, est.value, est.low, est.high))
    for arm, run in RUNS.items():
        if not (HERE / run / "eval.csv").exists():
            continue
        for step, tasks in sorted(run_scores(run).items()):
            for task, scores in tasks.items():
                est = bootstrap_ci(scores)
                table.append((arm, step, task, est.value, est.low, est.high))
    with open(HERE / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "step", "task", "score_mean", "ci_low", "ci_high"])
        writer.writerows((a, s, t, f"{m:.4f}", f"{lo:.4f}", f"{hi:.4f}") for a, s, t, m, lo, hi in table)
    for row in table:
        print(f"{row[0]:>8} {row[1]:>6} {row[2]:>24} {row[3]:.3f} [{row[4]:.3f}, {row[5]:.3f}]")


if __name__ == "__main__":
    main()
