"""Learning curves with bootstrap confidence intervals, and aggregate scores across tasks, from run directories.

    python experiments/plot.py runs/mrq/dmc_walker-walk/20250101-120000
    python experiments/plot.py runs/sweep_lr --group-by learning_rate
    python experiments/plot.py runs/mrq runs/sac --compare --out plots/mrq_vs_sac
    python experiments/plot.py runs/offline --compare --normalize "d4rl:hopper=-20.3,3234.3" "d4rl:walker=1.6,4592.3"

Each RUN_DIR is a run directory (it holds an eval.csv) or a folder searched
recursively for run directories (a sweep folder, `runs/mrq`, ...). Written
into `--out`:

* without `--compare`, per run: `<run>.png` and `<run>.svg` -- the metric over
  steps, the mean over seeds with a percentile-bootstrap confidence interval
  over seeds (`--confidence`, `--num-resamples`, RNG seeded with `--seed`, so
  the same data give the same plot);
* with `--compare`: `<env>.png/.svg` -- every run and agent on that env in one
  figure (one figure per env), and `aggregate.png/.svg` -- per method, the
  interquartile mean (IQM) across tasks of the final scores with a stratified
  bootstrap confidence interval (Agarwal et al., 2021, "Deep RL at the edge of
  the statistical precipice"), and `aggregate.csv` with those numbers;
* always `summary.csv` -- per curve: final value (mean over seeds, CI low and
  high), area under the curve (mean over evaluations), IQM over seeds of the
  final value.

Curves. An eval.csv row is one seed at one evaluation. A curve is one set of
rows: by default one per run directory. Columns that identify a sweep point
(e.g. `learning_rate`, written by a sweep as a column of eval.csv) split a run
into one curve per sweep point: `--group-by learning_rate,tau` names them;
`--group-by auto` (the default) takes the columns named by config.json's
"sweep" entry (a list of names, or a mapping whose keys are the names) that
eval.csv has, and none if there is no such entry; `--group-by none` never
splits. Two rows of one curve with the same step and seed are refused (say
which columns tell them apart with `--group-by`).

Multitask runs (an eval.csv with a `task` column, as `--env dmc:mt4` writes it): one curve per task, whose env
is the task, plus the "all" curve (the mean over tasks, under the suite's env id). The per-run figure has a
panel per task and one for "all"; with `--compare`, each task is an env of its own (a multitask run's task
sits beside single-task runs on it), and the aggregate counts the tasks, not the "all" rows. `--metric
score` plots the normalized score the multitask evaluation writes (DMC: return / 1000).

Final value: per seed, the value at its last evaluation; the curve's final
step is its last evaluation step. Area under the curve: per seed, the mean of
its values over evaluations, then the mean over seeds. Missing values (NaN,
e.g. a diagnostic not computed yet) are left out.

Labels (`--compare`): a curve is labelled with the agent name from
config.json (else the run directory's name) and its sweep point; runs of the
same label on the same env are told apart by their directory. The env comes
from config.json (else "unknown env"). A method of the aggregate is a label;
its tasks are the envs it ran on.

Normalized scores (aggregate only): 100 * (R - random) / (expert - random),
D4RL's convention (as replay.datasets.normalized_score): 0 = a random policy,
100 = an expert. `--normalize RANDOM,EXPERT` sets the references for every
env, `--normalize ENV=RANDOM,EXPERT ...` per env (every env then needs one).
Without the flag, references are found in config.json (keys `ref_min_score`
and `ref_max_score` anywhere in it, D4RL's names, or a `reference_returns`
entry `{"random": R, "expert": E}`); if every env has them the aggregate is
normalized, otherwise it is over raw returns.

Library use (notebooks): `load_run`, `find_runs`, `run_curves`, `bootstrap_ci`,
`iqm`, `stratified_bootstrap_iqm`, `plot_runs`, `plot_curves`, `summarize`,
`aggregate`. Bad input exits with `error: ...` and code 2, writing nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Mapping, Sequence

if __package__ in (None, ""):          # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import tyro

# The statistics live in experiments/stats.py; these names stay importable from here (scripts and notebooks use them).
from experiments.stats import (NUM_RESAMPLES, Estimate, bootstrap_ci, iqm,  # noqa: F401
                               stratified_bootstrap_iqm)

STANDARD_COLUMNS = ("step", "seed", "return", "return_std", "task", "score")
UNKNOWN_ENV = "unknown env"
TASK_COLUMN = "task"                    # a multitask run's eval.csv: one row per seed, evaluation and task
ALL_TASKS = "all"                       # ... and its aggregate row


class PlotError(ValueError):
    """A bad input: the message names the path and what is wrong with it."""


# ---------------------------------------------------------------------------------------------------------------
# Loading runs
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One run directory: its eval.csv as columns and what config.json says about it."""

    path: Path
    columns: dict[str, np.ndarray]
    """eval.csv, one array per column: float64 where every cell is a number (empty = NaN), else str."""
    config: dict
    """config.json ({} if the run has none)."""
    name: str = ""
    """How the run is named in file names and titles (default: the directory's name)."""

    def __post_init__(self):
        self.name = self.name or self.path.name

    @property
    def agent(self) -> str | None:
        return _config_value(self.config, "agent")

    @property
    def env(self) -> str | None:
        return _config_value(self.config, "env")

    @property
    def sweep_columns(self) -> tuple[str, ...]:
        """Columns of eval.csv named by config.json's "sweep" entry (what `group_by="auto"` splits by)."""
        sweep = self.config.get("sweep")
        if isinstance(sweep, str):
            names = [s.strip() for s in sweep.split(",")]
        elif isinstance(sweep, Mapping):
            names = list(sweep)
        elif isinstance(sweep, (list, tuple)):
            names = [s for s in sweep if isinstance(s, str)]
        else:
            names = []
        return tuple(n for n in names if n in self.columns and n not in STANDARD_COLUMNS)

    @property
    def tasks(self) -> tuple[str, ...]:
        """A multitask run's tasks in eval.csv order ("all", the aggregate row, last); () for one task."""
        column = self.columns.get(TASK_COLUMN)
        if column is None or column.dtype.kind == "f":
            return ()
        tasks = [str(t) for t in dict.fromkeys(column.tolist())]
        return tuple(t for t in tasks if t != ALL_TASKS) + ((ALL_TASKS,) if ALL_TASKS in tasks else ())

    def __len__(self) -> int:
        return len(self.columns["step"])


def _config_value(config: dict, key: str) -> str | None:
    for where in (config.get("run"), config):
        if isinstance(where, Mapping) and isinstance(where.get(key), str):
            return where[key]
    return None


def find_runs(path: str | Path) -> list[Path]:
    """The run directories at `path`: itself if it holds an eval.csv, else every folder below it that does
    (sorted; the `process_<i>` copies a multi-host run writes beside its own eval.csv are skipped)."""
    path = Path(path)
    if not path.exists():
        raise PlotError(f"{path} does not exist")
    if path.is_file():
        if path.name == "eval.csv":
            return [path.parent]
        raise PlotError(f"{path} is a file; give a run directory (one holding an eval.csv) or a folder of them")
    if (path / "eval.csv").is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob("eval.csv") if p.is_file())
    found = [p for p in found
             if not (re.fullmatch(r"process_\d+", p.name) and (p.parent / "eval.csv").is_file())]
    if not found:
        raise PlotError(f"no eval.csv in {path} or in any folder below it (searched recursively); "
                        "a run directory holds one once its first evaluation is written")
    return found


def _read_columns(csv_path: Path) -> dict[str, np.ndarray]:
    with csv_path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise PlotError(f"{csv_path} is empty (no header, no evaluation rows)")
    header, body = rows[0], rows[1:]
    if body and len(body[-1]) < len(header):       # a run killed while writing its last row
        print(f"note: {csv_path}: ignoring its incomplete last row", file=sys.stderr)
        body = body[:-1]
    if not body:
        raise PlotError(f"{csv_path} is empty: it has a header ({', '.join(header)}) but no evaluation rows")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise PlotError(f"{csv_path}, row {line}: {len(row)} cells for {len(header)} columns")
    if len(set(header)) != len(header):
        raise PlotError(f"{csv_path}: repeated column names in its header ({', '.join(header)})")
    columns = {}
    for i, name in enumerate(header):
        cells = [row[i].strip() for row in body]
        try:
            columns[name] = np.array([float(c) if c else np.nan for c in cells], np.float64)
        except ValueError:
            columns[name] = np.array(cells, dtype=str)
    for name in ("step", "seed"):
        if name not in columns:
            raise PlotError(f"{csv_path} has no {name!r} column; its columns: {', '.join(header)}")
        if columns[name].dtype.kind != "f" or not np.isfinite(columns[name]).all():
            raise PlotError(f"{csv_path}: the {name!r} column must hold numbers in every row")
    return columns


def load_run(path: str | Path) -> Run:
    """Read one run directory (eval.csv and, if present, config.json)."""
    path = Path(path)
    if not path.exists():
        raise PlotError(f"{path} does not exist")
    csv_path = path / "eval.csv"
    if not csv_path.is_file():
        raise PlotError(f"{path} holds no eval.csv")
    config = {}
    config_path = path / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except ValueError as error:
            raise PlotError(f"{config_path} is not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise PlotError(f"{config_path} does not hold a JSON object")
    return Run(path=path, columns=_read_columns(csv_path), config=config)


# ---------------------------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Curve:
    """One curve: the values of a metric of one run (one sweep point of it) at every evaluation, per seed."""

    run: Run
    metric: str
    group: dict[str, Any]
    """The sweep point: {column: value} ({} if the run is not split)."""
    steps: np.ndarray
    """[evaluations], increasing."""
    seeds: np.ndarray
    """[seeds]"""
    values: np.ndarray
    """[seeds, evaluations]; NaN where a seed has no value at a step."""
    label: str = ""
    task: str = ""
    """A multitask run's task (eval.csv's `task` column): an env id, or "all" for the aggregate; "" otherwise."""

    def __post_init__(self):
        self.label = self.label or _group_label(self.group) or self.run.name

    @property
    def agent(self) -> str:
        return self.run.agent or self.run.name

    @property
    def env(self) -> str:
        """The env of the curve: a multitask run's task, or the run's env (its suite for the "all" rows)."""
        if self.task and self.task != ALL_TASKS:
            return self.task
        return self.run.env or UNKNOWN_ENV

    def final_values(self) -> np.ndarray:
        """[seeds]: each seed's value at its last evaluation (NaN for a seed without any value)."""
        finite = np.isfinite(self.values)
        last = np.where(finite.any(axis=1), self.values.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
        return np.where(finite.any(axis=1), self.values[np.arange(len(self.seeds)), last], np.nan)

    def auc_values(self) -> np.ndarray:
        """[seeds]: each seed's mean value over its evaluations (the area under its curve per step of x)."""
        finite = np.isfinite(self.values)
        total = np.where(finite, self.values, 0.0).sum(axis=1)
        count = finite.sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _group_value(value):
    value = value.item()
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def _group_label(group: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_format_value(v)}" for k, v in group.items())


def _columns_text(run: Run) -> str:
    return ", ".join(run.columns)


def resolve_group_by(run: Run, group_by: str | Sequence[str] | None = "auto") -> tuple[str, ...]:
    """The columns a run is split by: "auto" (or None) -> config.json's sweep columns; "none" or () -> none;
    a comma-separated string or a sequence -> those columns (each must be in eval.csv)."""
    if group_by is None or group_by == "auto":
        return run.sweep_columns
    if isinstance(group_by, str):
        group_by = () if group_by.strip() in ("", "none") else [g.strip() for g in group_by.split(",") if g.strip()]
    for name in group_by:
        if name not in run.columns:
            raise PlotError(f"{run.path / 'eval.csv'} has no column {name!r} to group by; "
                            f"its columns: {_columns_text(run)}")
        if name in ("step", "seed"):
            raise PlotError(f"cannot group by {name!r}: curves are over steps and seeds")
    return tuple(group_by)


def run_curves(run: Run, metric: str = "return", group_by: str | Sequence[str] | None = "auto") -> list[Curve]:
    """The curves of `metric` in `run`: one, or one per sweep point (see `resolve_group_by`)."""
    csv_path = run.path / "eval.csv"
    if metric not in run.columns:
        raise PlotError(f"{csv_path} has no column {metric!r} (--metric); its columns: {_columns_text(run)}")
    values = run.columns[metric]
    if values.dtype.kind != "f":
        raise PlotError(f"{csv_path}: column {metric!r} holds text, not numbers (e.g. {values[0]!r})")
    group_columns = resolve_group_by(run, group_by)
    tasks = run.columns[TASK_COLUMN] if run.tasks else np.full(len(run), "")
    index: dict[tuple, int] = {}                      # (task, sweep point) -> curve, in first-seen order
    point = np.array([index.setdefault((str(tasks[i]),) + tuple(_group_value(run.columns[c][i])
                                                               for c in group_columns), len(index))
                      for i in range(len(run))])
    curves = []
    for (task, *key), number in index.items():
        rows = point == number
        steps, step_index = np.unique(run.columns["step"][rows], return_inverse=True)
        seeds, seed_index = np.unique(run.columns["seed"][rows], return_inverse=True)
        matrix = np.full((len(seeds), len(steps)), np.nan)
        pairs = list(zip(seed_index.tolist(), step_index.tolist()))
        if len(set(pairs)) < len(pairs):
            seen: set = set()
            duplicate = next(p for p in pairs if p in seen or seen.add(p))
            others = [c for c in run.columns if c not in STANDARD_COLUMNS and c not in group_columns]
            hint = (f"pass --group-by with the columns that tell them apart (candidates: {', '.join(others)})"
                    if others else "the file holds the same evaluation twice")
            where = f" at {_group_label(dict(zip(group_columns, key)))}" if group_columns else ""
            where += f" for task {task}" if task else ""
            raise PlotError(f"{csv_path} has several rows for step {steps[duplicate[1]]:g} and seed "
                            f"{seeds[duplicate[0]]:g}{where}; {hint}")
        matrix[seed_index, step_index] = values[rows]
        curves.append(Curve(run=run, metric=metric, group=dict(zip(group_columns, key)), steps=steps,
                            seeds=seeds, values=matrix, task=task))
    return curves


# ---------------------------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------------------------


def summarize(curves: Sequence[Curve], num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
              seed: int = 0) -> list[dict]:
    """One row per curve: final value (mean over seeds and its bootstrap CI), area under the curve (mean over
    evaluations, then over seeds), and the IQM over seeds of the final value."""
    rows = []
    for curve in curves:
        final = curve.final_values()
        final = final[np.isfinite(final)]
        auc = curve.auc_values()
        estimate = bootstrap_ci(final, num_resamples, confidence, seed) if final.size else Estimate(*[math.nan] * 3)
        rows.append({"env": curve.env, "agent": curve.agent, "label": curve.label,
                     "group": _group_label(curve.group), "run": str(curve.run.path), "metric": curve.metric,
                     "seeds": int(final.size), "final_step": float(curve.steps[-1]),
                     "final_mean": estimate.value, "final_ci_low": estimate.low, "final_ci_high": estimate.high,
                     "auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else math.nan,
                     "iqm": iqm(final)})
    return rows


def parse_references(specs: Sequence[str]) -> dict[str | None, tuple[float, float]]:
    """`--normalize` values: "RANDOM,EXPERT" (every env; key None) or "ENV=RANDOM,EXPERT" (that env)."""
    references = {}
    for spec in specs:
        env, _, pair = spec.rpartition("=")
        parts = pair.split(",")
        try:
            random, expert = (float(p) for p in parts)
        except ValueError:
            raise PlotError(f"--normalize {spec!r}: expected RANDOM,EXPERT or ENV=RANDOM,EXPERT "
                            "(two numbers: the returns of a random and of an expert policy)") from None
        if random == expert:
            raise PlotError(f"--normalize {spec!r}: the random and expert returns are equal; the score is undefined")
        references[env or None] = (random, expert)
    return references


def found_references(run: Run) -> tuple[float, float] | None:
    """(random, expert) returns recorded in config.json, or None (see the module docstring)."""
    found = {}

    def visit(node):
        if isinstance(node, Mapping):
            reference = node.get("reference_returns")
            if isinstance(reference, Mapping) and {"random", "expert"} <= set(reference):
                found.setdefault("random", reference["random"])
                found.setdefault("expert", reference["expert"])
            for key in ("ref_min_score", "ref_max_score"):
                if isinstance(node.get(key), (int, float)) and not isinstance(node.get(key), bool):
                    found.setdefault({"ref_min_score": "random", "ref_max_score": "expert"}[key], node[key])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(run.config)
    try:
        random, expert = float(found["random"]), float(found["expert"])
    except (KeyError, TypeError, ValueError):
        return None
    return (random, expert) if random != expert else None


def normalized(returns, reference: tuple[float, float]):
    """100 * (R - random) / (expert - random) (D4RL's normalized score)."""
    random, expert = reference
    return 100.0 * (np.asarray(returns, np.float64) - random) / (expert - random)


def method_key(curve: Curve) -> str:
    """How a curve is named across envs in a comparison: its agent and its sweep point."""
    return " ".join(s for s in (curve.agent, _group_label(curve.group)) if s)


def label_for_comparison(curves: Sequence[Curve]) -> None:
    """Set each curve's label to its method key, told apart by its run's name where one env has it twice."""
    for curve in curves:
        curve.label = method_key(curve)
    seen: dict[tuple[str, str], int] = {}
    for curve in curves:
        seen[(curve.env, curve.label)] = seen.get((curve.env, curve.label), 0) + 1
    for curve in curves:
        if seen[(curve.env, method_key(curve))] > 1:
            curve.label = f"{method_key(curve)} ({curve.run.name})"


def resolve_references(curves: Sequence[Curve], given: Mapping[str | None, tuple[float, float]]
                       ) -> dict[str, tuple[float, float]] | None:
    """Per env (random, expert) references: from `given` (every env must have one), else from config.json if every
    env has them, else None (the aggregate uses raw values)."""
    envs = list(dict.fromkeys(c.env for c in curves))
    if given:
        missing = [e for e in envs if e not in given and None not in given]
        if missing:
            raise PlotError(f"--normalize gives no references for env {', '.join(map(repr, missing))}; "
                            "add ENV=RANDOM,EXPERT for it, or one RANDOM,EXPERT for every env")
        return {e: given.get(e, given.get(None)) for e in envs}
    references: dict[str, tuple[float, float]] = {}
    for curve in curves:
        reference = found_references(curve.run)
        if reference is not None:
            references.setdefault(curve.env, reference)
    if references and len(references) < len(envs):
        missing = [e for e in envs if e not in references]
        print(f"note: config.json has no reference returns for {', '.join(missing)}; the aggregate is over raw "
              "values (pass --normalize to normalize)", file=sys.stderr)
    return references if len(references) == len(envs) else None


def aggregate(curves: Sequence[Curve], references: Mapping[str, tuple[float, float]] | None = None,
              num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per method (`Curve.label` without its env): the IQM over its tasks (envs) and runs (seeds) of the final
    value, normalized per env when `references` are given, with a stratified-bootstrap CI (tasks are strata)."""
    by_method: dict[str, dict[str, list[np.ndarray]]] = {}
    for curve in curves:
        if curve.task == ALL_TASKS:            # a multitask run's own aggregate: its tasks are counted instead
            continue
        final = curve.final_values()
        final = final[np.isfinite(final)]
        if references is not None:
            final = normalized(final, references[curve.env])
        by_method.setdefault(curve.label, {}).setdefault(curve.env, []).append(final)
    rows = []
    for method, tasks in by_method.items():
        scores = {env: np.concatenate(parts) for env, parts in tasks.items()}
        scores = {env: s for env, s in scores.items() if s.size}
        if not scores:
            continue
        estimate = stratified_bootstrap_iqm(scores, num_resamples, confidence, seed)
        rows.append({"method": method, "tasks": len(scores), "runs": int(sum(s.size for s in scores.values())),
                     "score": "normalized " + curves[0].metric if references is not None else curves[0].metric,
                     "iqm": estimate.value, "ci_low": estimate.low, "ci_high": estimate.high,
                     "envs": " ".join(scores)})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: Sequence[Curve], ax=None, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                seed: int = 0, legend: bool = True):
    """Each curve's mean over seeds with its percentile-bootstrap CI over seeds (shaded); returns the axes."""
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(7, 4))
    colors = None
    if len(curves) > 10:
        import matplotlib

        colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.95, len(curves)))
    for i, curve in enumerate(curves):
        estimate = bootstrap_ci(curve.values, num_resamples, confidence, seed)
        color = colors[i] if colors is not None else None
        (line,) = ax.plot(curve.steps, estimate.value, label=f"{curve.label} ({len(curve.seeds)} seeds)",
                          color=color, marker="o" if len(curve.steps) == 1 else None)
        ax.fill_between(curve.steps, estimate.low, estimate.high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("steps per seed")
    ax.set_ylabel(curves[0].metric if curves else "")
    ax.grid(alpha=0.3)
    if legend and curves:
        ax.legend(fontsize=8)
    return ax


def plot_runs(runs: Run | str | Path | Sequence[Run | str | Path], ax=None, metric: str = "return",
              group_by: str | Sequence[str] | None = "auto", num_resamples: int = NUM_RESAMPLES,
              confidence: float = 0.95, seed: int = 0, legend: bool = True):
    """`plot_curves` for runs (Run objects or run directories); one curve per run, or per sweep point."""
    if isinstance(runs, (Run, str, Path)):
        runs = [runs]
    runs = [r if isinstance(r, Run) else load_run(r) for r in runs]
    curves = [c for run in runs for c in run_curves(run, metric, group_by)]
    return plot_curves(curves, ax, num_resamples, confidence, seed, legend)


def _ci_caption(num_resamples: int, confidence: float, num_seeds: Sequence[int]) -> str:
    seeds = f"{min(num_seeds)}" if min(num_seeds) == max(num_seeds) else f"{min(num_seeds)}-{max(num_seeds)}"
    return (f"mean over {seeds} seeds, {confidence:.0%} CI: percentile bootstrap over seeds, "
            f"{num_resamples} resamples")


def _aggregate_figure(rows: list[dict], num_resamples: int, confidence: float):
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * len(rows)))
    y = np.arange(len(rows))[::-1]
    values = np.array([r["iqm"] for r in rows])
    errors = np.array([[r["iqm"] - r["ci_low"] for r in rows], [r["ci_high"] - r["iqm"] for r in rows]])
    ax.errorbar(values, y, xerr=np.maximum(errors, 0.0), fmt="o", capsize=4)
    ax.set_yticks(y, [f"{r['method']} ({r['tasks']} tasks)" for r in rows])
    ax.set_xlabel(f"IQM of final {rows[0]['score']}" + (" (0 = random, 100 = expert)"
                                                         if rows[0]["score"].startswith("normalized") else ""))
    ax.set_title(f"{confidence:.0%} CI: stratified bootstrap over runs per task, {num_resamples} resamples",
                 fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    figure.tight_layout()
    return figure


def _tasks_figure(run: Run, curves: Sequence[Curve], title: str, stats: dict):
    """A multitask run: one panel per task and a last one for the aggregate over tasks ("all")."""
    plt = _pyplot()
    columns = min(len(run.tasks), 3)
    rows = math.ceil(len(run.tasks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows + 0.6), squeeze=False)
    for ax, task in zip(axes.ravel(), run.tasks):
        plot_curves([c for c in curves if c.task == task], ax, legend=len(curves) > len(run.tasks), **stats)
        name = f"all tasks ({run.env or 'mean over tasks'})" if task == ALL_TASKS else task
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(run.tasks):]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=9)
    return figure


def _save(figure, out: Path, stem: str) -> list[Path]:
    plt = _pyplot()
    paths = []
    with plt.rc_context({"svg.hashsalt": "ctrlrl"}):         # stable SVG ids: same data, same file
        for suffix, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
            path = out / f"{stem}.{suffix}"
            figure.savefig(path, dpi=120, metadata=metadata)
            paths.append(path)
    plt.close(figure)
    return paths


def _file_stems(names: Sequence[str]) -> list[str]:
    stems, used = [], set()
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "run"
        candidate, i = stem, 1
        while candidate in used:
            i += 1
            candidate = f"{stem}_{i}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _name_runs(paths: Sequence[Path]) -> list[str]:
    """Short distinct names: the path relative to the runs' common folder (the directory name for one run)."""
    resolved = [p.resolve() for p in paths]
    if len(resolved) == 1:
        return [resolved[0].name]
    prefix = itertools.takewhile(lambda parts: len(set(parts)) == 1, zip(*(p.parts for p in resolved)))
    common = Path(*[parts[0] for parts in prefix])
    names = []
    for p in resolved:
        relative = p.relative_to(common) if common.parts else p
        names.append(str(relative) if relative.parts else p.name)
    return names


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Learning curves with bootstrap confidence intervals, and aggregate scores, from run directories."""

    run_dirs: tyro.conf.Positional[Annotated[tuple[str, ...], tyro.conf.arg(metavar="RUN_DIR")]] = ()
    """Run directories (each holds an eval.csv), or folders searched recursively for them."""
    out: str = "plots"
    """Folder for the figures (PNG and SVG) and CSVs (created; files of the same name are replaced)."""
    metric: str = "return"
    """eval.csv column to plot (return, or a diagnostic column)."""
    group_by: str = "auto"
    """eval.csv columns (comma-separated) naming a sweep point, one curve each; auto: config.json's "sweep"; none."""
    compare: bool = False
    """One figure per env with every run on it, plus the IQM across envs per method (aggregate.png/csv)."""
    normalize: tuple[str, ...] = ()
    """Aggregate references: RANDOM,EXPERT (every env) or ENV=RANDOM,EXPERT ... (default: from config.json)."""
    num_resamples: int = NUM_RESAMPLES
    """Bootstrap resamples for every confidence interval."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    seed: int = 0
    """Seed of the bootstrap RNG (the same data and seed give the same plot)."""


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run found at `paths` (see `find_runs`), each once, named by `_name_runs`."""
    found = list(dict.fromkeys(p.resolve() for path in paths for p in find_runs(path)))
    runs = [load_run(p) for p in found]
    for run, name in zip(runs, _name_runs(found)):
        run.name = name
    return runs


def make_plots(args: PlotArgs) -> list[Path]:
    """Everything the command writes; inputs are all read and checked before the first file is written."""
    if not args.run_dirs:
        raise PlotError("give at least one run directory (or a folder of them)")
    if args.num_resamples < 1:
        raise PlotError(f"--num-resamples must be >= 1, got {args.num_resamples}")
    if not 0.0 < args.confidence < 1.0:
        raise PlotError(f"--confidence must be in (0, 1), got {args.confidence}")
    given = parse_references(args.normalize)
    if given and not args.compare:
        raise PlotError("--normalize applies to the aggregate of --compare; add --compare")
    runs = load_runs(args.run_dirs)
    per_run = [run_curves(run, args.metric, args.group_by) for run in runs]
    curves = [c for cs in per_run for c in cs]
    stats = dict(num_resamples=args.num_resamples, confidence=args.confidence, seed=args.seed)
    if args.compare:
        label_for_comparison(curves)
        references = resolve_references(curves, given)
        aggregate_rows = aggregate(curves, references, **stats)
    summary_rows = summarize(curves, **stats)

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PlotError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plt = _pyplot()
    if not args.compare:
        for run, run_curves_, stem in zip(runs, per_run, _file_stems([r.name for r in runs])):
            title = " on ".join(s for s in (run.agent, run.env) if s)
            title = f"{title}\n{run.name}" if title else run.name
            if run.tasks:
                figure = _tasks_figure(run, run_curves_, title, stats)
            else:
                figure, ax = plt.subplots(figsize=(7, 4))
                plot_curves(run_curves_, ax, **stats)
                ax.set_title(title, fontsize=9)
            figure.text(0.985, 0.01, _ci_caption(args.num_resamples, args.confidence,
                                                [len(c.seeds) for c in run_curves_]),
                        ha="right", va="bottom", fontsize=6, color="grey")
            figure.tight_layout(rect=(0, 0.03, 1, 1))
            written += _save(figure, out, stem)
    else:
        envs = list(dict.fromkeys(c.env for c in curves))
        for env, stem in zip(envs, _file_stems(envs)):
            on_env = [c for c in curves if c.env == env]
            figure, ax = plt.subplots(figsize=(7, 4))
            plot_curves(on_env, ax, **stats)
            ax.set_title(env, fontsize=9)
            figure.text(0.985, 0.01, _ci_caption(args.num_resamples, args.confidence, [len(c.seeds) for c in on_env]),
                        ha="right", va="bottom", fontsize=6, color="grey")
            figure.tight_layout(rect=(0, 0.03, 1, 1))
            written += _save(figure, out, stem if stem != "aggregate" else "aggregate_env")
        if aggregate_rows:
            written += _save(_aggregate_figure(aggregate_rows, args.num_resamples, args.confidence), out,
                             "aggregate")
            _write_csv(out / "aggregate.csv", aggregate_rows)
            written.append(out / "aggregate.csv")
    _write_csv(out / "summary.csv", summary_rows)
    written.append(out / "summary.csv")
    return written


def _help_text(doc: str) -> str:
    """The module docstring with its wrapped paragraphs and bullets unwrapped (the help reflows them)."""
    blocks = []
    for block in doc.strip().split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith("    ") for line in lines):       # command examples: keep as they are
            blocks.append(block)
            continue
        items: list[str] = []
        for line in lines:
            if line.startswith("* ") or not items:
                items.append(line.strip())
            else:
                items[-1] += " " + line.strip()
        blocks.append("\n".join(items))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(PlotArgs, args=sys.argv[1:] if argv is None else argv, description=_help_text(__doc__))
    try:
        written = make_plots(args)
    except PlotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
