"""Summarise the multitask MR.Q runs of this folder: per task and aggregate normalised score (return / 1000), mean
and 95% percentile-bootstrap CI over seeds, next to a uniform-random policy on the same envs and evaluation seeds.

    python experiments/results/mrq_multitask/summarize.py            # writes summary.csv beside this file
    python experiments/results/mrq_multitask/summarize.py --reacher-alone   # reacher_alone.csv (the diagnostic)

With 2 seeds a bootstrap "95% CI" is just the range of the two seeds' values: read it as a range.
"""

import csv
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import envs  # noqa: E402
from envs.multitask import action_masks, task_ids  # noqa: E402
from experiments.loops.evaluation import Evaluation, evaluate_host  # noqa: E402
from experiments.plot import bootstrap_ci  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RUNS = {"S": "mt4_size_S", "B": "mt4_size_B",                        # 4k steps per task, utd 0.25
        "S_utd0.5": "mt4_S_utd05", "B_utd0.5": "mt4_B_utd05",           # 12k (S) and 6k (B) steps, utd 0.5
        "S_utd0.5_long": "mt4_S_utd05_long"}                               # S again, stopped at 16k of 40k
RANDOM_AT = (4000, 6000, 12000, 16000)          # the evaluation steps whose envs and seeds the random policy replays
EPISODES, SEEDS = 5, 2


def random_scores(env_id: str = "dmc:mt4", seed: int = 0, step: int = 4000) -> dict[str, np.ndarray]:
    """[seeds] normalised score per task ("all": over the tasks; a single-task env has only "all") of uniform
    actions in each task's own dims (padding zero), on the envs and seeds of the runs' evaluation at `step` (the
    shared evaluator, `evaluate_host`)."""
    spec = envs.make(env_id, num_envs=1).spec
    masks = np.asarray(action_masks(spec)) if spec.tasks else np.ones((1, spec.action_dim))
    rng = np.random.default_rng(0)

    def act(obs, prev_reward, first):
        task = np.asarray(task_ids(spec, obs)) if spec.tasks else np.zeros(obs.shape[:-1], int)
        return rng.uniform(-1.0, 1.0, (*obs.shape[:-1], spec.action_dim)) * masks[task]

    returns = evaluate_host(act, env_id, SEEDS, seed, step, EPISODES)[0]
    evaluation = Evaluation.of(returns, spec)
    out = {task: evaluation.per_task[:, :, t].mean(-1) / 1000.0 for t, task in enumerate(evaluation.tasks)}
    out["all"] = evaluation.returns.mean(-1) / 1000.0
    return out


def run_scores(run: str) -> dict[int, dict[str, np.ndarray]]:
    """{step: {task: [seeds] score}} from a run's eval.csv."""
    with open(HERE / run / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    out: dict[int, dict[str, list]] = {}
    for row in rows:
        out.setdefault(int(row["step"]), {}).setdefault(row["task"], []).append(float(row["score"]))
    return {step: {task: np.asarray(v) for task, v in tasks.items()} for step, tasks in out.items()}


def main() -> None:
    table = []
    for step in RANDOM_AT:
        for task, scores in random_scores(step=step).items():
            est = bootstrap_ci(scores)
            table.append(("random", step, task, est.value, est.low, est.high))
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


# The diagnostic of reacher-easy (the one task of dmc:mt4 not above random at 16k steps per task): the same agent
# and settings on reacher-easy alone, and single-task MR.Q on it (its defaults but 1,000 random steps, as the
# multitask run's one seeding episode), 16k steps, 2 seeds each; against uniform random actions on the same envs.
ALONE = {"mrq_multitask_S_alone": "reacher_easy_S_utd05", "mrq_alone": "reacher_easy_mrq"}


def reacher_alone() -> None:
    """reacher_alone.csv: normalised score (return / 1000) per arm and step, mean and range over the 2 seeds."""
    table = []
    for arm, run in ALONE.items():
        if not (HERE / run / "eval.csv").exists():
            continue
        with open(HERE / run / "eval.csv") as f:
            per_step: dict[int, list] = {}
            for row in csv.DictReader(f):
                per_step.setdefault(int(row["step"]), []).append(float(row["return"]) / 1000.0)
        table += [(arm, step, np.asarray(v)) for step, v in sorted(per_step.items())]
    table += [("random", step, random_scores("dmc:reacher-easy", step=step)["all"])
              for step in range(2000, 16001, 2000)]
    table += [("mt4_S_utd0.5_long (reacher-easy of 4 tasks)", step, tasks["dmc:reacher-easy"])
              for step, tasks in sorted(run_scores(RUNS["S_utd0.5_long"]).items())]
    with open(HERE / "reacher_alone.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "step", "score_mean", "seed_min", "seed_max"])
        writer.writerows((a, s, f"{v.mean():.4f}", f"{v.min():.4f}", f"{v.max():.4f}") for a, s, v in table)
    for a, s, v in table:
        print(f"{a:>44} {s:>6} {v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]")


if __name__ == "__main__":
    reacher_alone() if sys.argv[1:] == ["--reacher-alone"] else main()
