"""Run outputs: eval.csv and train.csv (one row per seed), TensorBoard, optional W&B.

CSV rows are appended and flushed as they come, so a killed run keeps every
finished row; a resumed run drops the rows past its checkpoint (`truncate_after`)
so that its files equal an uninterrupted run's. A metric that does not exist yet
(NaN: no episode finished, no update before an off-policy agent's warm-up ends)
is an empty cell.

TensorBoard: `tensorboard/mean` holds the mean over seeds and `tensorboard/seed_<k>`
each seed's own values under the same tags, so TensorBoard draws them as runs in one
chart. A resumed run purges the events past its checkpoint (tensorboardX's
`purge_step`). W&B (`--wandb`): one W&B run per run directory, with the mean and
`seed_<k>/...` keys; its id is the run's id (status.json), so a resume continues it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np


class CsvLog:
    """A CSV file with a fixed header (set by the first row written)."""

    def __init__(self, path: Path):
        self.path = path
        self._columns: list[str] | None = None
        if path.exists() and path.stat().st_size > 0:
            with path.open() as f:
                self._columns = next(csv.reader(f))

    def write(self, rows: Sequence[Mapping[str, float]]) -> None:
        if not rows:
            return
        new_file = self._columns is None
        if new_file:
            self._columns = list(rows[0].keys())
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows([{k: _plain(v) for k, v in row.items()} for row in rows])

    def truncate_after(self, step: int) -> None:
        """Drop rows whose `step` is greater than `step` (used when resuming)."""
        self.keep_rows(lambda row: _step_of(row["step"]) <= step)

    def keep_rows(self, keep: Callable[[dict[str, str]], bool]) -> None:
        """Keep only the rows (as {column: text}) for which `keep` is true, rewriting the file atomically (a
        resumed sweep keeps each program's rows up to its own checkpoint)."""
        if not self.path.exists():
            return
        with self.path.open() as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        header = rows[0]
        # A row cut short by a failed write (disk full) has fewer columns: it is dropped with the later ones.
        kept = [header] + [r for r in rows[1:] if len(r) == len(header) and keep(dict(zip(header, r)))]
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(kept)
        tmp.replace(self.path)


def _step_of(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def _value_or_empty(value) -> float | None:
    """A per-seed value for a CSV cell: None (an empty cell) for NaN, which means "does not exist yet"."""
    value = float(value)
    return None if math.isnan(value) else value


def _mean_over_seeds(values: np.ndarray) -> float:
    """Mean over the seeds that have a value (NaN = e.g. no episode finished yet); NaN if none has."""
    values = np.asarray(values, np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def eval_rows(step: int, returns: np.ndarray, per_seed: Mapping[str, np.ndarray] | None = None,
              per_task: np.ndarray | None = None, tasks: Sequence[str] = (), seeds: Sequence[int] | None = None
              ) -> tuple[list[dict], dict]:
    """eval.csv's rows for `returns` [num_seeds, episodes] (one per seed: its mean return and the std over its
    episodes, and its `per_seed` values) and the multitask scalars; `seeds`: the seed indices of the rows
    (default 0 .. num_seeds - 1). experiments/evaluate.py writes its rows with it too.

    A multitask run also gives `per_task` [num_seeds, episodes, T] and the `tasks`' ids: the rows then have a
    `task` column and a `score` column (the return normalised per task, envs/multitask.py); each seed's row
    with task `all` holds the mean over the tasks (its score is the aggregate normalised score), and one row per
    seed and task follows it."""
    per_seed = per_seed or {}
    seeds = list(range(len(returns))) if seeds is None else list(seeds)
    rows = [{"step": step, "seed": seeds[i], "return": float(np.mean(r)), "return_std": float(np.std(r)),
             **{k: float(v[i]) for k, v in per_seed.items()}} for i, r in enumerate(returns)]
    scalars = {}
    if per_task is not None:
        from envs.multitask import normalized_score

        score = np.stack([normalized_score(task, per_task[..., t]) for t, task in enumerate(tasks)], -1)
        task_rows = []
        for i, row in enumerate(rows):
            rows[i] = {"step": step, "seed": seeds[i], "task": "all", "score": float(score[i].mean()), **{
                k: v for k, v in row.items() if k not in ("step", "seed")}}
            task_rows += [{"step": step, "seed": seeds[i], "task": task, "score": float(score[i, :, t].mean()),
                           "return": float(per_task[i, :, t].mean()),
                           "return_std": float(per_task[i, :, t].std())} for t, task in enumerate(tasks)]
        rows = [r for i in range(len(rows)) for r in [rows[i]] + task_rows[i * len(tasks):(i + 1) * len(tasks)]]
        scalars["eval/normalized_score"] = float(score.mean())
        scalars.update({f"eval/{task}/episode_reward": float(per_task[..., t].mean())
                        for t, task in enumerate(tasks)})
    return rows, scalars


class RunLogger:
    """eval.csv, train.csv, TensorBoard events and (optionally) Weights & Biases."""

    def __init__(self, run_dir: Path, use_wandb: bool = False, wandb_project: str = "ctrlrl",
                 config: dict | None = None, resume_step: int | None = None, run_id: str | None = None):
        """`resume_step`: a resumed run's checkpoint step (rows and events after it are dropped); `run_id`: the
        run's id, which W&B uses as its run id."""
        self.eval_csv = CsvLog(run_dir / "eval.csv")
        self.train_csv = CsvLog(run_dir / "train.csv")
        if resume_step is not None:
            self.truncate_after(resume_step)
        self._tb_dir = run_dir / "tensorboard"
        # TensorBoard drops a directory's events at or after `purge_step` once it reads this writer's start.
        self._purge_step = None if resume_step is None else resume_step + 1
        self._tb = self._writer("mean")
        self._seed_tb: dict[int, object] = {}
        self._wandb = None
        if use_wandb:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("--wandb needs the wandb package: pip install -e '.[wandb]'") from None
            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config, name=run_dir.name,
                                     id=run_id, resume="allow")

    def _writer(self, name: str):
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(self._tb_dir / name), purge_step=self._purge_step)

    def truncate_after(self, step: int) -> None:
        self.eval_csv.truncate_after(step)
        self.train_csv.truncate_after(step)

    def log_eval(self, step: int, returns: np.ndarray, per_seed: Mapping[str, np.ndarray] | None = None,
                 per_task: np.ndarray | None = None, tasks: Sequence[str] = (),
                 shared: Mapping[str, float] | None = None) -> None:
        """`returns` is [num_seeds, episodes]; one row per seed (`eval_rows`), with the agent's diagnostics
        ([num_seeds] each). `shared` adds columns of one value to every row (wall_clock_s)."""
        per_seed = per_seed or {}
        rows, scalars = eval_rows(step, returns, per_seed, per_task, tasks)
        seed_scalars = {"eval/episode_reward": np.mean(returns, axis=1)}
        if per_task is not None:          # each seed's aggregate normalised score: its row of task `all`
            seed_scalars["eval/normalized_score"] = np.array([r["score"] for r in rows if r["task"] == "all"])
        rows = [{**row, **(shared or {})} for row in rows]
        self.eval_csv.write(rows)
        self._scalars(step, {"eval/episode_reward": float(np.mean(returns)),
                             "eval/episode_reward_std_over_seeds": float(np.std(np.mean(returns, axis=1))),
                             **scalars, **{f"eval/{k}": _mean_over_seeds(v) for k, v in per_seed.items()}},
                      {**seed_scalars, **{f"eval/{k}": v for k, v in per_seed.items()}})

    def log_train(self, step: int, per_seed: Mapping[str, np.ndarray], shared: Mapping[str, float]) -> None:
        """`per_seed` maps a metric to [num_seeds] values; `shared` to one value (e.g. training/sps). NaN means it
        does not exist yet: an empty cell."""
        num_seeds = len(next(iter(per_seed.values()))) if per_seed else 1
        shared_cells = {k: _value_or_empty(v) for k, v in shared.items()}
        rows = [{"step": step, "seed": s, **shared_cells, **{k: _value_or_empty(v[s]) for k, v in per_seed.items()}}
                for s in range(num_seeds)]
        self.train_csv.write(rows)
        self._scalars(step, {**shared, **{f"training/{k}": _mean_over_seeds(v) for k, v in per_seed.items()}},
                      {f"training/{k}": v for k, v in per_seed.items()})

    def _scalars(self, step: int, scalars: Mapping[str, float], per_seed: Mapping[str, np.ndarray]) -> None:
        """The mean (`scalars`) to tensorboard/mean and W&B; each seed's values ([num_seeds] each) to
        tensorboard/seed_<k> under the same tags and to W&B as seed_<k>/<tag>. Non-finite values (no episode
        finished yet) are left out."""
        scalars = {k: v for k, v in scalars.items() if math.isfinite(v)}
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()
        by_seed: dict[str, float] = {}
        for name, values in per_seed.items():
            for seed, value in enumerate(np.asarray(values, np.float64)):
                if math.isfinite(value):
                    by_seed[f"seed_{seed}/{name}"] = float(value)
        for key, value in by_seed.items():
            seed, _, name = key.partition("/")
            index = int(seed.removeprefix("seed_"))
            if index not in self._seed_tb:
                self._seed_tb[index] = self._writer(seed)
            self._seed_tb[index].add_scalar(name, value, step)
        for writer in self._seed_tb.values():
            writer.flush()
        if self._wandb is not None:
            self._wandb.log({**scalars, **by_seed}, step=step)

    def close(self) -> None:
        self._tb.close()
        for writer in self._seed_tb.values():
            writer.close()
        if self._wandb is not None:
            self._wandb.finish()
