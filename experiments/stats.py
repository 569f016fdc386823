"""Statistics for RL results: bootstrap confidence intervals over seeds, and the aggregate statistics of Agarwal et
al. (2021), "Deep RL at the edge of the statistical precipice" (rliable), over tasks and runs.

    from experiments.stats import bootstrap_ci, stratified_bootstrap_iqm, performance_profile
    bootstrap_ci([812.0, 790.5, 845.1])                      # mean over seeds, 95% percentile-bootstrap CI
    scores = {"dmc:cartpole-balance": [0.83, 0.82], "dmc:finger-spin": [0.41, 0.05, 0.12]}
    stratified_bootstrap_iqm(scores)                         # IQM over tasks and runs, stratified-bootstrap CI
    stratified_bootstrap_mean(scores)                        # mean of the per-task means, the same CI
    performance_profile(scores, taus=[0.25, 0.5, 0.75])      # fraction of runs above each tau, with CI bands
    probability_of_improvement(scores_x, scores_y)           # P(X > Y) averaged over tasks, with its CI

Every interval is a percentile bootstrap (the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the
statistic over `num_resamples` resamples, linear interpolation). The scores of several tasks are resampled
stratified by task, as rliable does: every resample keeps every task and draws, for each task separately, as many
runs as it has, with replacement. So the interval says how the statistic would move with other seeds on the same
tasks, not with other tasks.

`scores` for the aggregate statistics: an array [runs, tasks] (NaN marks a missing run; a 1-D array is one task),
or a mapping {task: [runs]} when tasks have different numbers of runs. The IQM pools the runs of all tasks; the
mean, the performance profile and the probability of improvement weigh every task equally (per-task values, then
their mean): with the same number of runs on every task both readings agree, and agree with rliable's.

Randomness: `seed` is an int (`np.random.default_rng(seed)`: the same data and seed give the same interval), a
`np.random.Generator`, or a `np.random.RandomState`. With `np.random.RandomState(s)` and the same number of runs on
every task, the resamples are exactly those rliable 1.2 draws after `np.random.seed(s)` (it draws from numpy's
global RNG), so its intervals are reproduced to rounding (tests/test_stats.py).

With 2 seeds, a percentile-bootstrap "95% CI" of their mean is the range of the two values (each resample is one
of them or their mean): report it as a range. With 1 seed it has zero width.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

NUM_RESAMPLES = 10_000
Seed = int | np.random.Generator | np.random.RandomState


class Estimate(NamedTuple):
    """A point estimate and its confidence interval (floats, or arrays over trailing axes)."""

    value: Any
    low: Any
    high: Any


# ---------------------------------------------------------------------------------------------------------------
# Resampling: the one place where runs are drawn with replacement
# ---------------------------------------------------------------------------------------------------------------


def _check(num_resamples: int, confidence: float) -> None:
    if num_resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need num_resamples >= 1 and 0 < confidence < 1, got {num_resamples}, {confidence}")


def _rng(seed: Seed):
    if isinstance(seed, (np.random.Generator, np.random.RandomState)):
        return seed
    return np.random.default_rng(seed)


def _draw(rng, high: int, size: tuple[int, ...]) -> np.ndarray:
    """Integers in [0, high). A RandomState draws as `np.random.choice(high, size)` does (rliable's draw); one call
    of size (k, *size) draws what k calls of `size` would, in order, for both kinds of generator."""
    if isinstance(rng, np.random.RandomState):
        return rng.randint(0, high, size=size)
    return rng.integers(0, high, size=size)


def resample_runs(runs: np.ndarray, counts: np.ndarray, num_resamples: int, rng) -> np.ndarray:
    """[num_resamples, max runs, tasks]: for each resample and task, `counts[task]` of that task's runs drawn with
    replacement (the first `counts[task]` rows of `runs`, [max runs, tasks]); NaN below a task's count.

    With the same count on every task the draw is one call of shape [resamples, runs, tasks] (rliable's order:
    per resample, a [runs, tasks] matrix of run indices), else one call per task."""
    max_runs, num_tasks = runs.shape
    if (counts == max_runs).all():
        index = _draw(rng, max_runs, (num_resamples, max_runs, num_tasks))
        return runs[index, np.arange(num_tasks)]
    resampled = np.full((num_resamples, max_runs, num_tasks), np.nan)
    for task, count in enumerate(counts):
        resampled[:, :count, task] = runs[_draw(rng, count, (num_resamples, count)), task]
    return resampled


def percentile_interval(resampled_statistics, confidence: float):
    """The (1 - confidence) / 2 and (1 + confidence) / 2 quantiles over the first axis (resamples)."""
    return np.quantile(resampled_statistics, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0], axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Over seeds: the mean with a percentile-bootstrap CI
# ---------------------------------------------------------------------------------------------------------------


def bootstrap_ci(values, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean over the first axis (seeds) with a percentile-bootstrap confidence interval.

    `values` is [seeds] or [seeds, ...] (e.g. [seeds, evaluations]); the seeds are resampled with replacement
    `num_resamples` times, the mean of each resample computed, and the interval is the (1 - confidence) / 2 and
    (1 + confidence) / 2 quantiles of those means. NaN entries are left out (per trailing index); an index with no
    finite value gives NaN. One seed gives a zero-width interval; 2 seeds give their range. The RNG is
    `np.random.default_rng(seed)`: the same inputs give the same interval.
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError(f"bootstrap_ci needs values of shape [seeds, ...] with at least one seed, got {values.shape}")
    _check(num_resamples, confidence)
    flat = values.reshape(values.shape[0], -1)
    n, m = flat.shape
    mean, low, high = (np.full(m, np.nan) for _ in range(3))
    rng = np.random.default_rng(seed)
    complete = np.flatnonzero(np.isfinite(flat).all(axis=0))
    if complete.size:
        # The seeds are resampled together for every column (one task, n runs). A resample is then a vector of
        # counts, and its mean for every column at once is counts @ values / n.
        index = _draw(rng, n, (num_resamples, n))
        counts = np.bincount((np.arange(num_resamples)[:, None] * n + index).ravel(),
                             minlength=num_resamples * n).reshape(num_resamples, n).astype(np.float64)
        for start in range(0, complete.size, 256):          # bounded memory: [resamples, 256] at a time
            columns = complete[start:start + 256]
            means = counts @ flat[:, columns] / n
            low[columns], high[columns] = percentile_interval(means, confidence)
            mean[columns] = flat[:, columns].mean(axis=0)
    for j in np.flatnonzero(~np.isfinite(flat).all(axis=0)):
        column = flat[np.isfinite(flat[:, j]), j]
        if column.size == 0:
            continue
        means = resample_runs(column[:, None], np.array([column.size]), num_resamples, rng)[..., 0].mean(axis=1)
        low[j], high[j] = percentile_interval(means, confidence)
        mean[j] = column.mean()
    # A resampled mean lies within [min, max] of the data; clipping removes rounding (constant data: zero width).
    with np.errstate(invalid="ignore"):
        finite_min = np.where(np.isfinite(flat), flat, np.inf).min(axis=0)
        finite_max = np.where(np.isfinite(flat), flat, -np.inf).max(axis=0)
        low, high = np.clip(low, finite_min, finite_max), np.clip(high, finite_min, finite_max)
    shape = values.shape[1:]
    if not shape:
        return Estimate(float(mean[0]), float(low[0]), float(high[0]))
    return Estimate(mean.reshape(shape), low.reshape(shape), high.reshape(shape))


def iqm(values, axis: int | None = None):
    """Interquartile mean: the mean of the middle 50% of the values.

    The lowest and the highest floor(n / 4) values are dropped and the rest averaged (a 25% trimmed mean, as
    rliable computes it with scipy.stats.trim_mean): iqm([1, ..., 8]) = mean(3, 4, 5, 6) = 4.5. With axis=None all
    values are pooled and NaNs left out (NaN if none is left); with an axis, that axis is reduced and the values
    must be finite.
    """
    values = np.asarray(values, np.float64)
    if axis is None:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return float("nan")
        axis = 0
    values = np.sort(values, axis=axis)
    n = values.shape[axis]
    cut = int(0.25 * n)
    middle = np.take(values, np.arange(cut, n - cut), axis=axis)
    result = middle.mean(axis=axis)
    return float(result) if np.ndim(result) == 0 else result


# ---------------------------------------------------------------------------------------------------------------
# Over tasks and runs: stratified bootstrap
# ---------------------------------------------------------------------------------------------------------------


class TaskScores(NamedTuple):
    """Scores of one method, per task: `runs` [max runs, tasks] with NaN below each task's `counts[task]` runs."""

    runs: np.ndarray
    counts: np.ndarray
    tasks: tuple


def task_scores(scores) -> TaskScores:
    """`scores` ([runs, tasks] with NaN for a missing run, [runs] for one task, or {task: [runs]}) as TaskScores:
    each task's finite runs first; a task without any finite run is refused."""
    if isinstance(scores, TaskScores):
        return scores
    if isinstance(scores, Mapping):
        tasks = tuple(scores)
        columns = [np.asarray(v, np.float64).ravel() for v in scores.values()]
    else:
        array = np.asarray(scores, np.float64)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise ValueError(f"scores must be [runs, tasks] (NaN for a missing run) or {{task: [runs]}}, "
                             f"got shape {array.shape}")
        tasks = tuple(range(array.shape[1]))
        columns = [array[:, t] for t in range(array.shape[1])]
    columns = [c[np.isfinite(c)] for c in columns]
    if not columns:
        raise ValueError("scores hold no task")
    empty = [str(t) for t, c in zip(tasks, columns) if c.size == 0]
    if empty:
        raise ValueError(f"every task needs at least one finite score; none for task {', '.join(empty)}")
    counts = np.array([c.size for c in columns])
    runs = np.full((counts.max(), len(columns)), np.nan)
    for t, column in enumerate(columns):
        runs[:column.size, t] = column
    return TaskScores(runs, counts, tasks)


def aggregate_iqm(runs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[resamples, max runs, tasks] -> [resamples]: the IQM of each resample's pooled runs."""
    present = (np.arange(runs.shape[1])[:, None] < counts[None, :]).ravel()
    return iqm(runs.reshape(runs.shape[0], -1)[:, present], axis=1)


def aggregate_mean(runs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[resamples, max runs, tasks] -> [resamples]: the mean over tasks of each task's mean over its runs."""
    return (np.nansum(runs, axis=1) / counts).mean(axis=-1)


def stratified_bootstrap(scores, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                         num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95, seed: Seed = 0,
                         chunk: int = 1000) -> Estimate:
    """`statistic` of `scores` with a stratified-bootstrap percentile interval (see the module docstring).

    `statistic(runs, counts)` maps runs [resamples, max runs, tasks] (NaN below each task's `counts`) to
    [resamples] or [resamples, k]; it is applied to the scores themselves for the point estimate, and to the
    resamples, `chunk` at a time (bounded memory; the draws do not depend on `chunk`)."""
    _check(num_resamples, confidence)
    scores = task_scores(scores)
    rng = _rng(seed)
    value = np.asarray(statistic(scores.runs[None], scores.counts))[0]
    resampled = np.concatenate([statistic(resample_runs(scores.runs, scores.counts, min(chunk, num_resamples - i),
                                                        rng), scores.counts)
                                for i in range(0, num_resamples, chunk)])
    low, high = percentile_interval(resampled, confidence)
    if np.ndim(value) == 0:
        return Estimate(float(value), float(low), float(high))
    return Estimate(value, low, high)


def stratified_bootstrap_iqm(scores, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                             seed: Seed = 0) -> Estimate:
    """IQM of the pooled scores of all runs on all tasks (`iqm`), with a stratified-bootstrap percentile interval.

    `scores`: [runs, tasks] (NaN marks a missing run; 1-D: one task) or {task: [runs]}."""
    return stratified_bootstrap(scores, aggregate_iqm, num_resamples, confidence, seed)


def stratified_bootstrap_mean(scores, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                              seed: Seed = 0) -> Estimate:
    """Mean over tasks of each task's mean score (`aggregate_mean`), with a stratified-bootstrap interval."""
    return stratified_bootstrap(scores, aggregate_mean, num_resamples, confidence, seed)


def performance_profile(scores, taus: Sequence[float], num_resamples: int = NUM_RESAMPLES,
                        confidence: float = 0.95, seed: Seed = 0) -> Estimate:
    """The score distribution: for each tau, the fraction of runs whose score is above tau (strictly), per task
    and then averaged over tasks; arrays over `taus` with stratified-bootstrap bands (rliable's
    `create_performance_profile` with its default, `use_score_distribution=True`)."""
    taus = np.asarray(taus, np.float64).ravel()

    def fraction_above(runs, counts):
        # NaN > tau is False, so a missing run is never counted; dividing by the task's count leaves it out.
        return np.stack([((runs > tau).sum(axis=1) / counts).mean(axis=-1) for tau in taus], axis=-1)

    return stratified_bootstrap(scores, fraction_above, num_resamples, confidence, seed)


def _improvement(x_runs, x_counts, y_runs, y_counts) -> np.ndarray:
    """[resamples]: P(X > Y) per task (pairs with X > Y, ties counted 1/2, over all pairs: the Mann-Whitney U of X
    over nx * ny), averaged over tasks."""
    out = []
    pairs = x_counts * y_counts
    step = max(1, 4_000_000 // (x_runs.shape[1] * y_runs.shape[1] * x_runs.shape[2]))   # bounded memory
    for start in range(0, x_runs.shape[0], step):
        x = x_runs[start:start + step, :, None, :]                     # [r, nx, 1, tasks]
        y = y_runs[start:start + step, None, :, :]                     # [r, 1, ny, tasks]
        wins = (x > y).sum(axis=(1, 2)) + 0.5 * (x == y).sum(axis=(1, 2))   # NaN compares False: left out
        out.append((wins / pairs).mean(axis=-1))
    return np.concatenate(out)


def probability_of_improvement(scores_x, scores_y, num_resamples: int = NUM_RESAMPLES, confidence: float = 0.95,
                               seed: Seed = 0) -> Estimate:
    """P(X > Y): the probability that a run of X on a task scores above a run of Y on that task (ties count 1/2),
    averaged over tasks, with a stratified-bootstrap interval that resamples X's and Y's runs independently
    (rliable's `probability_of_improvement` with `StratifiedIndependentBootstrap`). 0.5 = no difference.

    X and Y need the same tasks: mappings with the same keys (in any order), or arrays with as many columns."""
    _check(num_resamples, confidence)
    x, y = task_scores(scores_x), task_scores(scores_y)
    if isinstance(scores_x, Mapping) and isinstance(scores_y, Mapping):
        if set(x.tasks) != set(y.tasks):
            raise ValueError(f"X and Y need the same tasks; X has {sorted(map(str, x.tasks))}, "
                             f"Y {sorted(map(str, y.tasks))}")
        y = task_scores({task: np.asarray(scores_y[task], np.float64) for task in x.tasks})
    elif len(x.tasks) != len(y.tasks):
        raise ValueError(f"X and Y need the same tasks; X has {len(x.tasks)}, Y {len(y.tasks)}")
    rng = _rng(seed)
    value = float(_improvement(x.runs[None], x.counts, y.runs[None], y.counts)[0])
    # rliable's order: per resample, X's runs, then Y's.
    x_resampled, y_resampled = [], []
    for _ in range(num_resamples):
        x_resampled.append(resample_runs(x.runs, x.counts, 1, rng))
        y_resampled.append(resample_runs(y.runs, y.counts, 1, rng))
    resampled = _improvement(np.concatenate(x_resampled), x.counts, np.concatenate(y_resampled), y.counts)
    low, high = percentile_interval(resampled, confidence)
    return Estimate(value, float(low), float(high))
