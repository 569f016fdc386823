"""Learning curves with bootstrap confidence intervals, and aggregate scores across tasks, from run directories.

    python experiments/plot.py runs/mrq/dmc_walker-walk/20250101-120000
    python experiments/plot.py runs/sweep_lr --group-by learning_rate
    python experiments/plot.py runs/mrq runs/sac --compare --out plots/mrq_vs_sac
    python experiments/plot.py runs/offline --compare --normalize gym:Hopper-v5=-20.3,3234.3 gym:Walker2d-v5=1.6,4592.3
    python experiments/plot.py runs/mrq runs/sac --compare --size 3.3 2.4 --title "" --ylabel "episode return"

Each RUN_DIR is a run directory (it holds an eval.csv) or a folder searched
recursively for run directories (a sweep folder, `runs/mrq`, ...). Written
into `--out`, every figure as a 300-dpi PNG and an SVG (text kept as text):

* without `--compare`, per run: `<run>.png/.svg` -- the metric over steps:
  the mean over seeds (line) with a percentile-bootstrap confidence interval
  over seeds (band; `--confidence`, `--num-resamples`, RNG seeded with `--seed`,
  so the same data give the same files);
* with `--compare`: `<env>.png/.svg` -- every run and agent on that env in one
  figure (one figure per env), and the aggregate across envs of each method's
  final scores (Agarwal et al., 2021, "Deep RL at the edge of the statistical
  precipice"; experiments/stats.py): `aggregate.png/.svg/.csv` -- the
  interquartile mean (IQM) of all its runs and the mean of its per-env means,
  each with a stratified-bootstrap confidence interval (envs are the strata,
  runs are resampled within each env); `performance_profile.png/.svg/.csv` --
  the fraction of its runs scoring above each threshold, with bands; and
  `probability_of_improvement.png/.svg/.csv` -- for each pair of methods X, Y,
  P(X > Y): the probability that a run of X beats a run of Y on the same env,
  averaged over envs, with its CI;
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
score` plots the normalised score the multitask evaluation writes (DMC: return / 1000).

Final value: per seed, the value at its last evaluation; the curve's final
step is its last evaluation step. Area under the curve: per seed, the mean of
its values over evaluations, then the mean over seeds. Missing values (NaN,
e.g. a diagnostic not computed yet) are left out.

Bands. The legend gives each curve's seeds ("mrq (5 seeds)"). From 3 seeds the
band is the CI; with 2 seeds a percentile-bootstrap "95% CI" is just the range
of the two, so the legend and caption call it "range over 2 seeds"; 1 seed has
no band. The aggregate's caption says so too when an env has fewer than 3 runs.

Labels (`--compare`): a curve is labelled with the method it belongs to: the
agent name from config.json (else the run directory's name) and its sweep
point; where one env has that label from several runs, the fields of their
config.json "agent_config" that differ are added, on every env ("least
base=sac"), and runs that still share a label on an env are told apart by
their directory. The env comes from config.json (else "unknown env").

What the aggregate pools. A method's tasks are the envs it ran on. Only envs
that every method ran on are aggregated: where the methods' env sets differ,
the others are left out and a note says which, on stdout and on the aggregate
figures; methods that share no env are refused. The last evaluation step of
each method is noted where it differs (final values at different budgets).
The final values of several envs are pooled only as normalised scores,
(value - zero) / (one - zero), per env from the first rule that applies:

* (1) `--normalize RANDOM,EXPERT` (every env) or `--normalize ENV=RANDOM,EXPERT
  ...` (those envs): zero = a random policy's return, one = an expert's
  (D4RL's normalised score / 100);
* (2) `--metric score`: the multitask evaluation's normalised score, as it is;
* (3) `--metric return`: reference returns in config.json (keys `ref_min_score`
  and `ref_max_score` anywhere in it, D4RL's names, or a `reference_returns`
  entry `{"random": R, "expert": E}`), else the project's maximum return of
  the env (envs.multitask.normalized_score: every DMC task and Playground's
  DMC ports in `mjx:mt4`, return / 1000).

Where an aggregated env has none (gym and JAX envs without references, a
diagnostic metric), `--compare` exits with an error naming those envs: raw
returns of envs scaled 0-3000 and 0-10 would pool into a number the first
decides. `--aggregate raw` pools the raw values anyway, every aggregate figure
labelled "raw return (not normalised; pooled across tasks)"; `--aggregate
none` skips the aggregate. One env alone needs no normalisation (its own
units).

Figures: `--title` (every figure; "{env}" in it becomes the figure's env, ""
removes titles), `--xlabel` and `--ylabel` (the learning curves' axes; defaults
"env steps per seed", or "gradient updates" for offline runs, and the metric:
"return", "normalised score"), `--size W H` (inches, every figure).

Library use (notebooks): `load_run`, `find_runs`, `run_curves`, `plot_runs`,
`plot_curves`, `summarize`, `compare_scores`, `aggregate`, `profile_rows`,
`improvement_rows`; the statistics are in experiments/stats.py (`bootstrap_ci`,
`iqm`, `stratified_bootstrap_iqm` also importable from here). Bad input exits
with `error: ...` and code 2, writing nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

if __package__ in (None, ""):          # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import tyro

# The statistics live in experiments/stats.py; these names stay importable from here (scripts and notebooks use them).
from experiments.stats import (NUM_RESAMPLES, Estimate, bootstrap_ci, iqm,  # noqa: F401
                               performance_profile, probability_of_improvement, stratified_bootstrap_iqm,
                               stratified_bootstrap_mean)

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


@dataclasses.dataclass(frozen=True)
class Normalization:
    """An env's normalised score: (value - zero) / (one - zero), 0 at `zero` and 1 at `one`."""

    zero: float
    """The value that scores 0: a random policy's return (D4RL's reference), or 0 for a maximum-return scale."""
    one: float
    """The value that scores 1: an expert's return, or the largest return the env can give."""
    source: str
    """Where the pair comes from, as the figures say it (e.g. "return / 1000")."""

    def __call__(self, values):
        return (np.asarray(values, np.float64) - self.zero) / (self.one - self.zero)


SCORE_COLUMN = Normalization(0.0, 1.0, "eval.csv's normalised score")


def known_normalization(env: str) -> Normalization | None:
    """The project's normalised score of `env`'s return (envs.multitask.normalized_score: the return divided by
    the largest return of the env's family or task, e.g. 1000 for every DMC task and Playground's ports of
    them), or None where the project knows none (gym, jax:PointMass, other mjx tasks)."""
    from envs.multitask import normalized_score          # imports JAX: only where a return needs a scale

    per_unit_return = float(normalized_score(env, 1.0))
    if not math.isfinite(per_unit_return) or per_unit_return <= 0.0:
        return None
    top = 1.0 / per_unit_return
    return Normalization(0.0, top, f"return / {top:g}")


def env_normalizations(curves: Sequence[Curve], given: Mapping[str | None, tuple[float, float]] | None = None
                       ) -> dict[str, Normalization | None]:
    """Per env of `curves`, how its values become a normalised score, first rule that applies:

    1. `given` (`--normalize`): {env: (random, expert)}, or {None: (random, expert)} for every env;
    2. metric `score`: the multitask evaluation's own normalised score, as it is;
    3. metric `return`: reference returns in a run's config.json (`found_references`), else the project's
       maximum return of the env (`known_normalization`: DMC and Playground's DMC ports, return / 1000);
    4. otherwise none (None): a gym or JAX env without references, or a diagnostic metric.
    """
    given = given or {}
    out: dict[str, Normalization | None] = {}
    for curve in curves:
        env = curve.env
        if env in out:
            continue
        if env in given or None in given:
            random, expert = given.get(env, given.get(None))
            out[env] = Normalization(random, expert, "(return - random) / (expert - random), --normalize")
        elif curve.metric == "score":
            out[env] = SCORE_COLUMN
        elif curve.metric == "return":
            references = [r for r in (found_references(c.run) for c in curves if c.env == env) if r is not None]
            if references:
                random, expert = references[0]
                out[env] = Normalization(random, expert, "(return - random) / (expert - random), config.json")
            else:
                out[env] = known_normalization(env)
        else:
            out[env] = None
    return out


def _flat(config: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def method_key(curve: Curve) -> str:
    """How a curve is named across envs in a comparison: its agent and its sweep point."""
    return " ".join(s for s in (curve.agent, _group_label(curve.group)) if s)


def label_for_comparison(curves: Sequence[Curve]) -> None:
    """Set each curve's label to the method it belongs to across envs.

    The method is the agent and its sweep point (`method_key`). Where one env holds that key from several runs,
    the fields of config.json's "agent_config" that differ between those runs are added to the key, for every run
    of that key on every env ("least base=sac critic_lr=0.001"), so that one configuration is one method wherever
    it ran and the label says what tells the methods apart. Runs that still share a label on an env (the same
    configuration twice) are told apart by their directory.
    """
    runs_of: dict[tuple[str, str], dict[Path, Run]] = {}
    for curve in curves:
        runs_of.setdefault((method_key(curve), curve.env), {})[curve.run.path] = curve.run
    differing: dict[str, list[str]] = {}
    for (key, _), runs in runs_of.items():
        if len(runs) < 2:
            continue
        configs = [_flat(run.config.get("agent_config") or {}) for run in runs.values()]
        names = differing.setdefault(key, [])
        for name in dict.fromkeys(n for config in configs for n in config):
            if len({repr(config.get(name)) for config in configs}) > 1 and name not in names:
                names.append(name)
    for curve in curves:
        key = method_key(curve)
        config = _flat(curve.run.config.get("agent_config") or {})
        fields = " ".join(f"{name}={_format_value(config.get(name))}" for name in differing.get(key, ()))
        curve.label = f"{key} {fields}" if fields else key
    seen: dict[tuple[str, str], set[Path]] = {}
    for curve in curves:
        seen.setdefault((curve.env, curve.label), set()).add(curve.run.path)
    for curve in curves:
        if len(seen[(curve.env, curve.label)]) > 1:
            curve.label = f"{curve.label} ({curve.run.name})"


AGGREGATE_MODES = ("normalized", "raw", "none")


@dataclasses.dataclass
class Comparison:
    """What the aggregate of `--compare` pools: per method, the final value of each of its runs on each env that
    every method ran on (normalised unless `normalized` is False)."""

    scores: dict[str, dict[str, np.ndarray]]
    """{method: {env: [runs]}}, the same envs for every method."""
    envs: list[str]
    """The envs aggregated: those every method ran on."""
    left_out: dict[str, list[str]]
    """{method: the envs it ran on that some other method did not} (only methods with such envs)."""
    unit: str
    """What the scores are, for axis labels: "normalised score", "raw return (not normalised; ...)", ..."""
    normalized: bool
    normalizations: dict[str, Normalization]
    """{env: Normalization} of the aggregated envs ({} when not normalised)."""
    last_steps: dict[str, dict[str, float]]
    """{method: {env: the step of its last evaluation}}: the budget at which its final values were taken."""

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def runs_per_env(self) -> tuple[int, int]:
        """The fewest and the most runs any method has on any aggregated env."""
        counts = [s.size for tasks in self.scores.values() for s in tasks.values()]
        return min(counts), max(counts)

    def notes(self) -> list[str]:
        """What a reader of the aggregate must know: envs left out, budgets that differ between methods."""
        notes = []
        if self.left_out:
            left = "; ".join(f"{m}: {', '.join(envs)}" for m, envs in self.left_out.items())
            notes.append(f"the methods ran on different envs: the aggregate is over the "
                         f"{_count(len(self.envs), 'env')} every method ran on ({', '.join(self.envs)}); "
                         f"left out: {left}")
        differ = [env for env in self.envs if len({self.last_steps[m][env] for m in self.methods}) > 1]
        if differ and all(len(set(self.last_steps[m].values())) == 1 for m in self.methods):
            steps = ", ".join(f"{m} {self.last_steps[m][differ[0]]:g}" for m in self.methods)
            notes.append(f"final values are taken at different budgets (last evaluation step, every env): {steps}")
        elif differ:
            steps = "; ".join(f"{env}: " + ", ".join(f"{m} {self.last_steps[m][env]:g}" for m in self.methods)
                              for env in differ)
            notes.append(f"final values are taken at different budgets (last evaluation step): {steps}")
        return notes


def _count(n: int, noun: str) -> str:
    """"1 seed", "5 seeds"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def compare_scores(curves: Sequence[Curve], given: Mapping[str | None, tuple[float, float]] | None = None,
                   mode: str = "normalized") -> Comparison:
    """The final values the aggregate pools, per method (`Curve.label`) and env, under the rules of the module
    docstring: only the envs every method ran on; normalised per env, or refused (PlotError) when more than one
    env is pooled and one has no normalisation, unless `mode` is "raw" (raw values, labelled as such)."""
    if mode not in ("normalized", "raw"):
        raise PlotError(f"--aggregate must be one of {', '.join(AGGREGATE_MODES)}, got {mode!r}")
    finals: dict[str, dict[str, list[np.ndarray]]] = {}
    last_steps: dict[str, dict[str, float]] = {}
    for curve in curves:
        if curve.task == ALL_TASKS:            # a multitask run's own aggregate: its tasks are counted instead
            continue
        final = curve.final_values()
        final = final[np.isfinite(final)]
        if not final.size:
            continue
        finals.setdefault(curve.label, {}).setdefault(curve.env, []).append(final)
        steps = last_steps.setdefault(curve.label, {})
        steps[curve.env] = max(steps.get(curve.env, -math.inf), float(curve.steps[-1]))
    if not finals:
        raise PlotError(f"no run has a finite final {curves[0].metric if curves else 'value'}: nothing to aggregate")
    env_order = list(dict.fromkeys(env for tasks in finals.values() for env in tasks))
    common = [env for env in env_order if all(env in tasks for tasks in finals.values())]
    if not common:
        ran = "; ".join(f"{method}: {', '.join(tasks)}" for method, tasks in finals.items())
        raise PlotError(f"--compare: no env is shared by every method, so no aggregate compares them ({ran}); "
                        "give runs of the same envs, or --aggregate none for the per-env figures only")
    left_out = {method: [env for env in tasks if env not in common] for method, tasks in finals.items()}
    left_out = {method: envs for method, envs in left_out.items() if envs}
    metric = curves[0].metric
    normalizations = env_normalizations([c for c in curves if c.env in common], given)
    missing = [env for env in common if normalizations.get(env) is None]
    if mode == "raw" or (missing and len(common) == 1):
        normalized, normalizations = False, {}
        unit = (f"raw {metric} (not normalised; pooled across tasks)" if len(common) > 1
                else f"{metric} on {common[0]}")
    elif missing:
        noun = "has" if len(missing) == 1 else "have"
        raise PlotError(
            f"--compare pools the final {metric} of {len(common)} envs, but {', '.join(missing)} {noun} no "
            f"normalised score (no --normalize reference, no reference returns in config.json, no known maximum "
            f"return), and raw values of different scales cannot be pooled; pass --normalize ENV=RANDOM,EXPERT for "
            f"{'it' if len(missing) == 1 else 'each'}, or --aggregate raw to pool raw values (labelled as not "
            f"normalised), or --aggregate none")
    else:
        normalized = True
        normalizations = {env: normalizations[env] for env in common}
        unit = "normalised score" if metric in ("return", "score") else f"normalised {metric}"
    scores = {}
    for method, tasks in finals.items():
        scores[method] = {}
        for env in common:
            values = np.concatenate(tasks[env])
            scores[method][env] = normalizations[env](values) if normalized else values
    return Comparison(scores=scores, envs=common, left_out=left_out, unit=unit, normalized=normalized,
                      normalizations=normalizations,
                      last_steps={m: {e: last_steps[m][e] for e in common} for m in scores})


def aggregate(comparison: Comparison, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
              seed: int = 0) -> list[dict]:
    """Per method: the IQM over its runs on every env (pooled) and the mean over envs of its mean per env, each
    with a stratified-bootstrap confidence interval (envs are the strata; experiments/stats.py)."""
    rows = []
    for method, tasks in comparison.scores.items():
        iqm_ = stratified_bootstrap_iqm(tasks, num_resamples, confidence, seed)
        mean_ = stratified_bootstrap_mean(tasks, num_resamples, confidence, seed)
        counts = [s.size for s in tasks.values()]
        rows.append({"method": method, "envs": len(tasks), "runs": int(sum(counts)),
                     "runs_per_env": f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}",
                     "score": comparison.unit,
                     "iqm": iqm_.value, "iqm_low": iqm_.low, "iqm_high": iqm_.high,
                     "mean": mean_.value, "mean_low": mean_.low, "mean_high": mean_.high,
                     "env_ids": " ".join(tasks), "left_out": " ".join(comparison.left_out.get(method, []))})
    return rows


def profile_thresholds(comparison: Comparison, num: int = 101) -> np.ndarray:
    """`num` thresholds from the lowest to the highest score of any run (a unit range where they are equal)."""
    values = np.concatenate([s for tasks in comparison.scores.values() for s in tasks.values()])
    low, high = float(values.min()), float(values.max())
    if high == low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, num)


def profile_rows(comparison: Comparison, taus=None, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                 seed: int = 0) -> list[dict]:
    """Per method and threshold tau: the fraction of its runs scoring above tau (per env, then averaged over
    envs) with a stratified-bootstrap band: the performance profile of Agarwal et al. (2021)."""
    taus = profile_thresholds(comparison) if taus is None else np.asarray(taus, np.float64)
    rows = []
    for method, tasks in comparison.scores.items():
        profile = performance_profile(tasks, taus, num_resamples, confidence, seed)
        rows += [{"method": method, "tau": float(t), "fraction": float(v), "low": float(lo), "high": float(hi)}
                 for t, v, lo, hi in zip(taus, *profile)]
    return rows


def improvement_rows(comparison: Comparison, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                     seed: int = 0) -> list[dict]:
    """For every pair of methods (X before Y in the comparison's order): P(X > Y), the probability that a run of X
    scores above a run of Y on the same env (ties 1/2), averaged over envs, with its stratified-bootstrap CI.
    P(Y > X) = 1 - P(X > Y)."""
    rows = []
    for x, y in itertools.combinations(comparison.methods, 2):
        estimate = probability_of_improvement(comparison.scores[x], comparison.scores[y], num_resamples,
                                              confidence, seed)
        rows.append({"x": x, "y": y, "probability": estimate.value, "low": estimate.low, "high": estimate.high})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------

DPI = 300


@dataclasses.dataclass(frozen=True)
class Style:
    """What the command line sets on every figure: title (None: automatic; "{env}" in it is replaced by the
    figure's env), axis labels of the learning curves (None: automatic), size in inches (None: per figure)."""

    title: str | None = None
    xlabel: str | None = None
    ylabel: str | None = None
    size: tuple[float, float] | None = None

    def figure_title(self, automatic: str, env: str = "") -> str:
        return automatic if self.title is None else self.title.replace("{env}", env)

    def figsize(self, automatic: tuple[float, float]) -> tuple[float, float]:
        return tuple(self.size) if self.size is not None else automatic


def _pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def band_label(num_seeds: int, confidence: float = 0.95) -> str:
    """What the shaded band around a mean over seeds is: a CI from 3 seeds on; with 2 seeds the percentile
    bootstrap gives their range, so it is called that; with 1 seed there is none."""
    if num_seeds >= 3:
        return f"{confidence:.0%} CI"
    if num_seeds == 2:
        return "range over 2 seeds"
    return "1 seed, no band"


def curve_legend(label: str, num_seeds: int, confidence: float = 0.95) -> str:
    """"mrq (5 seeds)", "mrq (range over 2 seeds)", "mrq (1 seed)"."""
    if num_seeds == 2:
        return f"{label} ({band_label(2, confidence)})"
    return f"{label} ({_count(num_seeds, 'seed')})"


def metric_label(metric: str) -> str:
    """The y axis of learning curves: "return", "normalised score" (the multitask `score`), or the column's name."""
    return {"score": "normalised score"}.get(metric, metric)


def steps_label(curves: Sequence[Curve]) -> str:
    """The x axis: eval.csv's step counts env steps per seed (agent steps, each `action repeat` frames), or
    gradient updates for offline runs (config.json's run has a dataset)."""
    offline = {bool(_config_value(c.run.config, "dataset")) for c in curves}
    if offline == {True}:
        return "gradient updates"
    if offline == {False, True}:
        return "env steps per seed (offline runs: gradient updates)"
    return "env steps per seed"


def step_tick_label(step: float) -> str:
    """16000 -> "16k", 2500000 -> "2.5M": step counts short enough that a subplot's ticks do not run together."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(step) >= scale:
            return f"{step / scale:.4g}{suffix}"
    return f"{step:.4g}"


def _step_ticks(ax) -> None:
    from matplotlib import ticker

    ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda step, _: step_tick_label(step)))


def plot_curves(curves: Sequence[Curve], ax=None, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                seed: int = 0, legend: bool = True, style: Style = Style()):
    """Each curve's mean over seeds (line) with its percentile-bootstrap CI over seeds (band; with 2 seeds their
    range, with 1 seed none; the legend says which); returns the axes."""
    if ax is None:
        _, ax = _pyplot().subplots(figsize=style.figsize((7, 4)))
    colors = None
    if len(curves) > 10:
        import matplotlib

        colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.95, len(curves)))
    for i, curve in enumerate(curves):
        estimate = bootstrap_ci(curve.values, num_resamples, confidence, seed)
        color = colors[i] if colors is not None else None
        (line,) = ax.plot(curve.steps, estimate.value, label=curve_legend(curve.label, len(curve.seeds), confidence),
                          color=color, marker="o" if len(curve.steps) == 1 else None)
        if len(curve.seeds) > 1:
            ax.fill_between(curve.steps, estimate.low, estimate.high, color=line.get_color(), alpha=0.2,
                            linewidth=0)
    ax.set_xlabel(style.xlabel if style.xlabel is not None else steps_label(curves))
    ax.set_ylabel(style.ylabel if style.ylabel is not None else metric_label(curves[0].metric) if curves else "")
    _step_ticks(ax)
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


def curves_caption(num_seeds: Sequence[int], num_resamples: int, confidence: float) -> str:
    """What the line and the band of learning curves are, for seed counts `num_seeds` (one per curve)."""
    parts = ["line: mean over seeds"]
    if max(num_seeds) >= 3:
        parts.append(f"band: {confidence:.0%} CI, percentile bootstrap over seeds ({num_resamples} resamples)")
    if 2 in num_seeds:
        parts.append(("band: " if max(num_seeds) < 3 else "with 2 seeds: ")
                     + f"range over 2 seeds (too few seeds for a {confidence:.0%} CI)")
    return "; ".join(parts)


def _interval_text(comparison: Comparison, confidence: float, num_resamples: int) -> str:
    fewest, most = comparison.runs_per_env()
    runs = f"{fewest}" if fewest == most else f"{fewest}-{most}"
    text = (f"intervals: {confidence:.0%} stratified bootstrap over the runs of each env ({num_resamples} "
            f"resamples), {runs} runs per env")
    if fewest < 3:
        text += f"; with {_count(fewest, 'run')} on an env they are close to a range, not a {confidence:.0%} CI"
    return text


def _normalization_text(comparison: Comparison) -> str:
    if not comparison.normalized:
        return ("NOT NORMALISED: raw values of every env pooled; an env of larger scale dominates"
                if len(comparison.envs) > 1 else f"one env ({comparison.envs[0]}), its raw values")
    by_source: dict[str, list[str]] = {}
    for env, normalization in comparison.normalizations.items():
        by_source.setdefault(normalization.source, []).append(env)
    return "normalised score: " + "; ".join(f"{source} ({_count(len(envs), 'env')})"
                                            for source, envs in by_source.items())


def _captioned(figure, lines: Sequence[str]):
    """Grey caption lines under the axes, wrapped to the figure's width, and the layout around them."""
    width = max(40, int(figure.get_figwidth() * 17))          # characters of 7-point text per line
    wrapped = [part for line in lines for part in textwrap.wrap(line, width)]
    figure.text(0.01, 0.01, "\n".join(wrapped), ha="left", va="bottom", fontsize=7, color="dimgrey")
    inches = 0.12 * len(wrapped) + 0.08
    figure.tight_layout(rect=(0, min(0.45, inches / figure.get_figheight()), 1, 1))
    return figure


def _labels_width(labels: Sequence[str], plot_width: float) -> float:
    """A figure width (inches) that leaves `plot_width` for the axes beside tick labels this long (10 pt)."""
    return plot_width + 0.085 * max((len(label) for label in labels), default=0)


def _aggregate_figure(rows: list[dict], comparison: Comparison, num_resamples: int, confidence: float,
                      style: Style):
    """IQM and mean per method with their intervals (rliable's interval-estimates figure)."""
    plt = _pyplot()
    width = _labels_width([r["method"] for r in rows], 6.0)
    figure, axes = plt.subplots(1, 2, sharey=True, figsize=style.figsize((width, 2.2 + 0.4 * len(rows))))
    y = np.arange(len(rows))[::-1]
    for ax, name, title in zip(axes, ("iqm", "mean"), ("IQM", "Mean")):
        values = np.array([r[name] for r in rows])
        errors = np.array([[r[name] - r[f"{name}_low"] for r in rows], [r[f"{name}_high"] - r[name] for r in rows]])
        ax.errorbar(values, y, xerr=np.maximum(errors, 0.0), fmt="o", capsize=4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(comparison.unit)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [r["method"] for r in rows])
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    envs = _count(len(comparison.envs), "env")
    figure.suptitle(style.figure_title(f"Final {comparison.unit}, aggregated over {envs}", envs), fontsize=9)
    return _captioned(figure, [_interval_text(comparison, confidence, num_resamples),
                               _normalization_text(comparison), *comparison.notes()])


def _profile_figure(rows: list[dict], comparison: Comparison, num_resamples: int, confidence: float, style: Style):
    """The performance profile: per method, the fraction of runs above each threshold, with its band."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=style.figsize((6, 4)))
    for method in comparison.methods:
        mine = [r for r in rows if r["method"] == method]
        taus = [r["tau"] for r in mine]
        (line,) = ax.plot(taus, [r["fraction"] for r in mine], label=method)
        ax.fill_between(taus, [r["low"] for r in mine], [r["high"] for r in mine], color=line.get_color(),
                        alpha=0.2, linewidth=0)
    ax.set_xlabel(f"threshold \N{GREEK SMALL LETTER TAU} ({comparison.unit})")
    ax.set_ylabel(f"fraction of runs with score > \N{GREEK SMALL LETTER TAU}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    envs = _count(len(comparison.envs), "env")
    ax.set_title(style.figure_title(f"Performance profile over {envs}", envs), fontsize=9)
    return _captioned(figure, ["fraction: per env, then averaged over envs; "
                               + _interval_text(comparison, confidence, num_resamples).replace("intervals", "bands"),
                               _normalization_text(comparison), *comparison.notes()])


def _improvement_figure(rows: list[dict], comparison: Comparison, num_resamples: int, confidence: float,
                        style: Style):
    """P(X > Y) per pair of methods with its interval; 0.5 (no difference) marked."""
    plt = _pyplot()
    labels = [f"P({r['x']} > {r['y']})" for r in rows]
    figure, ax = plt.subplots(figsize=style.figsize((_labels_width(labels, 4.0), 2.2 + 0.4 * len(rows))))
    y = np.arange(len(rows))[::-1]
    values = np.array([r["probability"] for r in rows])
    errors = np.array([[r["probability"] - r["low"] for r in rows], [r["high"] - r["probability"] for r in rows]])
    ax.errorbar(values, y, xerr=np.maximum(errors, 0.0), fmt="o", capsize=4)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("probability of improvement")
    ax.grid(axis="x", alpha=0.3)
    envs = _count(len(comparison.envs), "env")
    ax.set_title(style.figure_title(f"Probability of improvement over {envs}", envs), fontsize=9)
    return _captioned(figure, ["P(X > Y): the probability that a run of X scores above a run of Y on the same env "
                               "(ties count 1/2), averaged over envs; 0.5: no difference",
                               _interval_text(comparison, confidence, num_resamples), *comparison.notes()])


def _tasks_figure(run: Run, curves: Sequence[Curve], title: str, stats: dict, style: Style):
    """A multitask run: one panel per task and a last one for the aggregate over tasks ("all")."""
    plt = _pyplot()
    columns = min(len(run.tasks), 3)
    rows = math.ceil(len(run.tasks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=style.figsize((4.2 * columns, 3.0 * rows + 0.6)),
                                squeeze=False)
    for ax, task in zip(axes.ravel(), run.tasks):
        plot_curves([c for c in curves if c.task == task], ax, legend=len(curves) > len(run.tasks), style=style,
                    **stats)
        name = f"all tasks ({run.env or 'mean over tasks'})" if task == ALL_TASKS else task
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(run.tasks):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def _save(figure, out: Path, stem: str) -> list[Path]:
    """`<stem>.png` at 300 dpi and `<stem>.svg` (text kept as text, editable), both reproducible byte for byte."""
    plt = _pyplot()
    paths = []
    with plt.rc_context({"svg.hashsalt": "ctrlrl", "svg.fonttype": "none"}):
        for suffix, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
            path = out / f"{stem}.{suffix}"
            figure.savefig(path, dpi=DPI, metadata=metadata)
            paths.append(path)
    plt.close(figure)
    return paths


def _file_stems(names: Sequence[str], reserved: Sequence[str] = ()) -> list[str]:
    """File stems for `names`, distinct from each other and from `reserved` (the stems of other figures)."""
    stems, used = [], set(reserved)
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

AGGREGATE_FIGURES = ("aggregate", "performance_profile", "probability_of_improvement")


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Learning curves with bootstrap confidence intervals, and aggregate scores, from run directories."""

    run_dirs: tyro.conf.Positional[Annotated[tuple[str, ...], tyro.conf.arg(metavar="RUN_DIR")]] = ()
    """Run directories (each holds an eval.csv), or folders searched recursively for them."""
    out: str = "plots"
    """Folder for the figures (PNG and SVG) and CSVs (created; files of the same name are replaced)."""
    metric: str = "return"
    """eval.csv column to plot (return, score: a multitask run's normalised score, or a diagnostic column)."""
    group_by: str = "auto"
    """eval.csv columns (comma-separated) naming a sweep point, one curve each; auto: config.json's "sweep"; none."""
    compare: bool = False
    """One figure per env with every run on it, plus the aggregate across envs per method (IQM, mean, profile)."""
    aggregate: Literal["normalized", "raw", "none"] = "normalized"
    """--compare's aggregate: normalized (refused where an env has no normalised score), raw (pooled raw values,
    labelled so), none (per-env figures only)."""
    normalize: tuple[str, ...] = ()
    """Aggregate references: RANDOM,EXPERT (every env) or ENV=RANDOM,EXPERT ... (default: config.json, DMC's 1000)."""
    num_resamples: int = NUM_RESAMPLES
    """Bootstrap resamples for every confidence interval."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    seed: int = 0
    """Seed of the bootstrap RNG (the same data and seed give the same plot)."""
    title: str | None = None
    """Title of every figure ("{env}" is replaced by the figure's env; "" for none); default: automatic."""
    xlabel: str | None = None
    """x-axis label of the learning curves (default: "env steps per seed", or "gradient updates" offline)."""
    ylabel: str | None = None
    """y-axis label of the learning curves (default: the metric: "return", "normalised score", ...)."""
    size: tuple[float, float] | None = None
    """Size of every figure, W H in inches (PNG: W x H x 300 pixels); default: per figure."""


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run found at `paths` (see `find_runs`), each once, named by `_name_runs`."""
    found = list(dict.fromkeys(p.resolve() for path in paths for p in find_runs(path)))
    runs = [load_run(p) for p in found]
    for run, name in zip(runs, _name_runs(found)):
        run.name = name
    return runs


def make_plots(args: PlotArgs) -> list[Path]:
    """Everything the command writes; inputs are all read and checked before the first file is written. Notes
    about the aggregate (envs left out, different budgets) are printed first, on stdout."""
    if not args.run_dirs:
        raise PlotError("give at least one run directory (or a folder of them)")
    if args.num_resamples < 1:
        raise PlotError(f"--num-resamples must be >= 1, got {args.num_resamples}")
    if not 0.0 < args.confidence < 1.0:
        raise PlotError(f"--confidence must be in (0, 1), got {args.confidence}")
    if args.size is not None and not all(math.isfinite(s) and s > 0 for s in args.size):
        raise PlotError(f"--size takes a width and a height in inches, both > 0, got {args.size[0]:g} {args.size[1]:g}")
    given = parse_references(args.normalize)
    if given and not args.compare:
        raise PlotError("--normalize applies to the aggregate of --compare; add --compare")
    if args.aggregate != "normalized" and not args.compare:
        raise PlotError(f"--aggregate {args.aggregate} applies to --compare; add --compare")
    style = Style(args.title, args.xlabel, args.ylabel, args.size)
    runs = load_runs(args.run_dirs)
    per_run = [run_curves(run, args.metric, args.group_by) for run in runs]
    curves = [c for cs in per_run for c in cs]
    stats = dict(num_resamples=args.num_resamples, confidence=args.confidence, seed=args.seed)
    comparison = None
    if args.compare:
        label_for_comparison(curves)
        if args.aggregate != "none":
            comparison = compare_scores(curves, given, args.aggregate)
            aggregate_rows = aggregate(comparison, **stats)
            profile = profile_rows(comparison, **stats)
            improvement = improvement_rows(comparison, **stats)
    summary_rows = summarize(curves, **stats)

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PlotError(f"--out {out} is a file; give a folder")
    for note in comparison.notes() if comparison else ():
        print(f"note: {note}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plt = _pyplot()
    if not args.compare:
        for run, run_curves_, stem in zip(runs, per_run, _file_stems([r.name for r in runs])):
            title = " on ".join(s for s in (run.agent, run.env) if s)
            title = style.figure_title(f"{title}\n{run.name}" if title else run.name, run.env or "")
            if run.tasks:
                figure = _tasks_figure(run, run_curves_, title, stats, style)
            else:
                figure, ax = plt.subplots(figsize=style.figsize((7, 4)))
                plot_curves(run_curves_, ax, style=style, **stats)
                ax.set_title(title, fontsize=9)
            written += _save(_captioned(figure, [curves_caption([len(c.seeds) for c in run_curves_], args.num_resamples,
                                                                   args.confidence)]),
                             out, stem)
    else:
        envs = list(dict.fromkeys(c.env for c in curves))
        for env, stem in zip(envs, _file_stems(envs, reserved=AGGREGATE_FIGURES)):
            on_env = [c for c in curves if c.env == env]
            figure, ax = plt.subplots(figsize=style.figsize((7, 4)))
            plot_curves(on_env, ax, style=style, **stats)
            ax.set_title(style.figure_title(env, env), fontsize=9)
            written += _save(_captioned(figure, [curves_caption([len(c.seeds) for c in on_env], args.num_resamples,
                                                                   args.confidence)]),
                             out, stem)
        if comparison is not None:
            figures = [("aggregate", _aggregate_figure, aggregate_rows),
                       ("performance_profile", _profile_figure, profile)]
            if improvement:
                figures.append(("probability_of_improvement", _improvement_figure, improvement))
            for stem, draw, rows in figures:
                written += _save(draw(rows, comparison, args.num_resamples, args.confidence, style), out, stem)
                _write_csv(out / f"{stem}.csv", rows)
                written.append(out / f"{stem}.csv")
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
