"""Wall-clock to a return threshold of the runs in this folder (SAC / TD3 with N envs per seed, run.sh).

    python experiments/results/offpolicy_num_envs/summarize.py [--thresholds 700 500 900]   # summary.csv, .json

For every run directory `<agent>_n<N>` beside this file: the training wall-clock (train.csv's `training/sps`
intervals summed: compilation and the random phase included, evaluations and checkpoints left out, since their
cost depends on how often one evaluates) up to the first evaluation whose mean return over the seeds reaches the
threshold, and the env steps per seed and updates per seed there; a run that never reaches it is reported as
"not reached within" its training time and steps. `wall_s` is the whole run as run.sh timed it (start to end,
evaluations included), where run.sh recorded it, with the machine's 1-minute load average at its start and end.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def read_csv(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def interval_seconds(train_rows: list[dict]) -> list[tuple[int, float]]:
    """[(log step, seconds of the interval ending there)]: the interval's env steps per seed over its steps/s.
    train.py leaves steps/s empty for a device loop's first chunk (it cannot tell compilation from training
    there); such an interval counts its wall-clock instead (`wall_clock_s` since the previous row: start-up and
    compilation included, as the runs logged before that change counted them)."""
    rows = sorted({int(r["step"]): r for r in train_rows}.items())
    out, previous_step, previous_clock = [], 0, 0.0
    for step, row in rows:
        sps = float(row["training/sps"] or "nan")
        clock = float(row.get("wall_clock_s") or "nan")
        out.append((step, (step - previous_step) / sps if math.isfinite(sps) else clock - previous_clock))
        previous_step, previous_clock = step, clock
    return out


def training_seconds(train_rows: list[dict]) -> dict[int, float]:
    """{log step: training seconds up to it}: the intervals' seconds, summed."""
    elapsed, out = 0.0, {}
    for step, seconds in interval_seconds(train_rows):
        elapsed += seconds
        out[step] = elapsed
    return out


def compile_estimate(train_rows: list[dict]) -> float:
    """Seconds of the first log interval beyond what its steps cost at the second interval's rate: mostly the
    compilation of the training chunk (an estimate; at N = 16 the first interval is partly random steps, which
    are cheaper, so it is an underestimate there)."""
    intervals = interval_seconds(train_rows)
    if len(intervals) < 2:
        return float("nan")
    (s1, t1), (s2, t2) = intervals[:2]
    return max(t1 - s1 * t2 / (s2 - s1), 0.0)


def summarize(run_dir: pathlib.Path, threshold: float, wall: dict) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    agent_config, run = config["agent_config"], config["run"]
    num_envs, ratio = agent_config["num_envs"], agent_config["updates_per_step"]
    train_rows = read_csv(run_dir / "train.csv")
    seconds = training_seconds(train_rows)
    evals: dict[int, list[float]] = {}
    for row in read_csv(run_dir / "eval.csv"):
        evals.setdefault(int(row["step"]), []).append(float(row["return"]))
    updates = lambda step: math.floor(max(step - agent_config["learning_starts"], 0) * ratio)
    reached = next((step for step in sorted(evals) if sum(evals[step]) / len(evals[step]) >= threshold), None)
    last = max(evals)
    per_seed = [next((s for s in sorted(evals) if evals[s][i] >= threshold), None) for i in range(len(evals[last]))]
    at = reached if reached is not None else max(seconds)
    return {
        "agent": run["agent"], "num_envs": num_envs, "seeds": run["num_seeds"],
        "batch_size": agent_config["batch_size"], "updates_per_env_step": ratio,
        "updates_per_loop_step": ratio * num_envs, "learning_starts": agent_config["learning_starts"],
        "hidden": "x".join(map(str, agent_config["critic_hidden"])), "threshold": threshold,
        "reached": reached is not None,
        "train_s_to_threshold": round(seconds[at], 1), "compile_s_estimate": round(compile_estimate(train_rows), 1),
        "env_steps_to_threshold": at, "updates_to_threshold": updates(at),
        "seed_steps_to_threshold": per_seed,
        "final_step": last, "final_return": round(sum(evals[last]) / len(evals[last]), 1),
        "best_return": round(max(sum(v) / len(v) for v in evals.values()), 1),
        "train_s_total": round(max(seconds.values()), 1), **wall.get(run_dir.name, {"wall_s": None}),
        "command": config.get("command", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[700.0, 500.0, 900.0],
                        help="returns to time (the first is printed)")
    args = parser.parse_args()
    wall = {}
    if (HERE / "wall_seconds.csv").exists():
        wall = {r.pop("run"): {k: float(v) for k, v in r.items()} for r in read_csv(HERE / "wall_seconds.csv")}
    runs = sorted((p for p in HERE.iterdir() if (p / "eval.csv").exists() and (p / "train.csv").exists()),
                  key=lambda p: (p.name.split("_n")[0], int(p.name.split("_n")[1])))
    rows = [summarize(p, threshold, wall) for threshold in args.thresholds for p in runs]
    columns = [k for k in rows[0] if k != "command"] if rows else []
    with open(HERE / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (HERE / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows[:len(runs)]:
        when = (f"{r['train_s_to_threshold']:8.1f} s at {r['env_steps_to_threshold']} env steps"
                if r["reached"] else f"not reached within {r['train_s_to_threshold']:.1f} s "
                                      f"({r['env_steps_to_threshold']} env steps; best {r['best_return']})")
        print(f"{r['agent']:4s} N={r['num_envs']:5d}, return >= {r['threshold']:.0f}: {when}")


if __name__ == "__main__":
    main()
