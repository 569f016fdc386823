"""experiments/stats.py: bootstrap CIs over seeds, IQM, mean, performance profiles and probability of improvement
with stratified-bootstrap intervals, on hand-computable data and against rliable's numbers."""

import numpy as np
import pytest

from experiments import stats

# ------------------------------------------------------------------------------------------------ over seeds


def test_bootstrap_ci_constant_values_have_zero_width():
    estimate = stats.bootstrap_ci([5.3, 5.3, 5.3, 5.3], num_resamples=500)
    assert estimate == (5.3, 5.3, 5.3)
    one_seed = stats.bootstrap_ci([[1.0, 2.0]], num_resamples=100)       # [1 seed, 2 evaluations]
    np.testing.assert_array_equal(one_seed.low, one_seed.high)


def test_bootstrap_ci_of_two_seeds_is_their_range():
    """Each resample of 2 values is one of them (twice) or both: means a, (a + b) / 2, b with probabilities
    1/4, 1/2, 1/4, so the 2.5% and 97.5% quantiles are a and b."""
    assert stats.bootstrap_ci([3.0, 7.0], num_resamples=2000) == (5.0, 3.0, 7.0)
    assert stats.stratified_bootstrap_iqm({"a": [3.0, 7.0]}, num_resamples=2000) == (5.0, 3.0, 7.0)


def test_bootstrap_ci_contains_mean_and_is_reproducible():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=20)
    estimate = stats.bootstrap_ci(values, num_resamples=2000, seed=3)
    assert estimate.value == pytest.approx(values.mean())
    assert estimate.low < values.mean() < estimate.high
    # The percentile bootstrap of the mean is close to mean +- 1.96 standard errors on Gaussian data.
    half_width = 1.96 * values.std() / np.sqrt(values.size)
    assert estimate.high - estimate.low == pytest.approx(2 * half_width, rel=0.2)
    assert stats.bootstrap_ci(values, num_resamples=2000, seed=3) == estimate
    narrower = stats.bootstrap_ci(values, num_resamples=2000, confidence=0.5, seed=3)
    assert estimate.low < narrower.low < narrower.high < estimate.high


def test_bootstrap_ci_over_evaluations_skips_missing_seeds():
    values = np.array([[1.0, 10.0, 4.0], [3.0, 10.0, np.nan], [2.0, 10.0, np.nan]])   # [seeds, evaluations]
    estimate = stats.bootstrap_ci(values, num_resamples=1000)
    np.testing.assert_allclose(estimate.value, [2.0, 10.0, 4.0])
    np.testing.assert_allclose(estimate.low[1:], [10.0, 4.0])
    np.testing.assert_allclose(estimate.high[1:], [10.0, 4.0])
    assert 1.0 <= estimate.low[0] < 2.0 < estimate.high[0] <= 3.0


def test_bootstrap_ci_is_the_one_in_plot():
    """plot.py, claims.py, compare.py, sweep.py and coscaling.py use this implementation (plot re-exports it for
    the scripts and notebooks that import it from there)."""
    from experiments import plot

    assert plot.bootstrap_ci is stats.bootstrap_ci and plot.iqm is stats.iqm
    assert plot.stratified_bootstrap_iqm is stats.stratified_bootstrap_iqm


# ----------------------------------------------------------------------------------------- over tasks and runs


def test_iqm_by_hand():
    assert stats.iqm(np.arange(1, 9)) == 4.5                            # mean of 3, 4, 5, 6
    assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5                   # order does not matter
    assert stats.iqm([1, 2, 3]) == 2.0                                  # fewer than 4: nothing trimmed
    assert stats.iqm([1, 2, 3, 4, 100]) == 3.0                          # floor(5 / 4) = 1 trimmed per side
    assert stats.iqm([1, 2, np.nan, 3]) == 2.0                          # NaN left out
    np.testing.assert_allclose(stats.iqm(np.array([np.arange(1, 9), np.arange(2, 10)]), axis=1), [4.5, 5.5])


def test_stratified_bootstrap_iqm_is_deterministic_and_stratified():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 3)) + np.array([0.0, 10.0, 20.0])    # [runs, tasks]
    first = stats.stratified_bootstrap_iqm(scores, num_resamples=1000, seed=7)
    assert first == stats.stratified_bootstrap_iqm(scores, num_resamples=1000, seed=7)
    assert first != stats.stratified_bootstrap_iqm(scores, num_resamples=1000, seed=8)
    assert first.value == pytest.approx(stats.iqm(scores))
    assert first.low < first.value < first.high
    # Every resample keeps 5 runs of each task, so the IQM stays near the middle task (not a pooled resample,
    # which could draw all runs from one task).
    assert 5.0 < first.low and first.high < 15.0
    # A mapping {task: runs} allows different numbers of runs per task; NaN in the array marks a missing run.
    ragged = {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0]}
    padded = np.array([[1.0, 4.0], [2.0, 5.0], [3.0, np.nan]])
    assert stats.stratified_bootstrap_iqm(ragged, 500, seed=1) == stats.stratified_bootstrap_iqm(padded, 500, seed=1)
    constant = stats.stratified_bootstrap_iqm(np.full((4, 2), 3.0), num_resamples=100)
    assert constant == (3.0, 3.0, 3.0)
    # The draws do not depend on how many resamples are computed at a time.
    assert stats.stratified_bootstrap(scores, stats.aggregate_iqm, 1000, seed=7, chunk=64) == first
    with pytest.raises(ValueError, match="none for task b"):
        stats.stratified_bootstrap_iqm({"a": [1.0], "b": [np.nan]})


def test_stratified_mean_weighs_tasks_equally():
    # Task means 2 and 10: their mean is 6 (pooling the 4 runs would give 4).
    scores = {"a": [1.0, 2.0, 3.0], "b": [10.0]}
    estimate = stats.stratified_bootstrap_mean(scores, num_resamples=2000)
    assert estimate.value == 6.0
    # b is fixed at 10; a's resampled mean ranges over [1, 3], so the mean over tasks over [5.5, 6.5].
    assert 5.5 <= estimate.low < 6.0 < estimate.high <= 6.5
    np.testing.assert_allclose(stats.aggregate_mean(np.array([[[1.0, 10.0], [2.0, np.nan], [3.0, np.nan]]]),
                                                    np.array([3, 1])), [6.0])


def test_performance_profile_by_hand():
    # Task a: 3 of 4 runs above 0.5, 2 above 1, 1 above 2.5; task b: all 4 above 0.5, none above 1 ("above" is
    # strict) or 2.5. Averaged over tasks: (0.75 + 1) / 2, (0.5 + 0) / 2 and (0.25 + 0) / 2.
    scores = {"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0, 1.0]}
    profile = stats.performance_profile(scores, [0.5, 1.0, 2.5], num_resamples=2000)
    np.testing.assert_allclose(profile.value, [0.875, 0.25, 0.125])
    assert (profile.low <= profile.value).all() and (profile.value <= profile.high).all()
    assert profile.low[1] < profile.high[1]
    # A constant score: the profile steps from 1 to 0 at it, with zero-width bands.
    constant = stats.performance_profile(np.full((3, 2), 0.7), [0.0, 0.7, 1.0], num_resamples=200)
    for array in constant:
        np.testing.assert_array_equal(array, [1.0, 0.0, 0.0])


def test_probability_of_improvement_by_hand():
    # Task a: pairs (1, 0) win, (1, 2) lose, (2, 0) win, (2, 2) tie -> (1 + 0 + 1 + 0.5) / 4 = 0.625.
    # Task b: one pair, a tie -> 0.5. Averaged: 0.5625.
    x, y = {"a": [1.0, 2.0], "b": [5.0]}, {"b": [5.0], "a": [0.0, 2.0]}
    estimate = stats.probability_of_improvement(x, y, num_resamples=2000)
    assert estimate.value == 0.5625
    assert 0.25 <= estimate.low <= 0.5625 <= estimate.high <= 0.75   # b stays 0.5; a's lies in [0, 1]
    # Ties count half, so P(X > Y) + P(Y > X) = 1, and a method against itself is 0.5.
    assert stats.probability_of_improvement(y, x, num_resamples=10).value == 1.0 - 0.5625
    assert stats.probability_of_improvement(x, x, num_resamples=10).value == 0.5
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(x, {"a": [1.0], "c": [1.0]})


# ----------------------------------------------------------------------------------------------- vs rliable

# Scores of two methods, [runs, tasks]: 5 runs of X and 4 of Y on 3 tasks.
X = np.array([[0.19, 0.397, 0.782], [0.361, 0.498, 0.832], [0.194, 0.107, 0.777], [-0.031, 0.568, 0.841],
              [0.344, 0.557, 0.716]])
Y = np.array([[0.125, 0.494, 0.678], [0.131, 0.496, 0.819], [0.129, 0.595, 0.489], [0.031, 0.491, 0.841]])
TAUS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
REPS, SEED = 500, 7
# rliable 1.2.0's numbers for X and Y (500 resamples after np.random.seed(7), 95% percentile intervals), from
# `rliable_numbers()` below with rliable 1.2.0, arch 7.2.0, numpy 2.4 (pip install -e '.[rliable]', then
# python -c "from tests.test_stats import rliable_numbers; print(rliable_numbers())"):
RLIABLE = {
    "iqm": (0.4902222222222222, 0.396575, 0.5481694444444445),
    "mean": (0.47553333333333336, 0.40452000000000005, 0.5343216666666667),
    "probability_of_improvement": (0.625, 0.4166666666666667, 0.8166666666666668),
    "profile": ([0.9333333333333333, 0.7333333333333333, 0.4666666666666667, 0.26666666666666666, 0.0],
                [0.8, 0.5333333333333333, 0.3333333333333333, 0.13333333333333333, 0.0],
                [1.0, 0.9333333333333333, 0.6, 0.3333333333333333, 0.0]),
}


def rliable_numbers() -> dict:
    """RLIABLE, computed by rliable itself (`pip install -e '.[rliable]'`)."""
    from rliable import library, metrics

    def estimate(score_dict, function, **kwargs):
        np.random.seed(SEED)          # rliable draws its resamples from numpy's global RNG
        points, intervals = library.get_interval_estimates(score_dict, function, reps=REPS, **kwargs)
        (key,) = score_dict
        return float(np.squeeze(points[key])), *intervals[key][:, 0].tolist()

    global_state = np.random.get_state()                 # put numpy's global RNG back for other tests
    try:
        numbers = {"iqm": estimate({"X": X}, lambda s: np.array([metrics.aggregate_iqm(s)])),
                   "mean": estimate({"X": X}, lambda s: np.array([metrics.aggregate_mean(s)])),
                   "probability_of_improvement": estimate({"X,Y": [X, Y]}, metrics.probability_of_improvement)}
        np.random.seed(SEED)
        profiles, bands = library.create_performance_profile({"X": X}, TAUS, reps=REPS)
        numbers["profile"] = (profiles["X"].tolist(), bands["X"][0].tolist(), bands["X"][1].tolist())
    finally:
        np.random.set_state(global_state)
    return numbers


def ours() -> dict:
    # np.random.RandomState(SEED) draws what rliable draws after np.random.seed(SEED).
    rng = lambda: np.random.RandomState(SEED)  # noqa: E731
    profile = stats.performance_profile(X, TAUS, REPS, 0.95, rng())
    return {"iqm": tuple(stats.stratified_bootstrap_iqm(X, REPS, 0.95, rng())),
            "mean": tuple(stats.stratified_bootstrap_mean(X, REPS, 0.95, rng())),
            "probability_of_improvement": tuple(stats.probability_of_improvement(X, Y, REPS, 0.95, rng())),
            "profile": tuple(a.tolist() for a in profile)}


def assert_same_numbers(actual: dict, expected: dict):
    """Equal to rounding: the same resamples, so only floating-point summation order may differ."""
    assert set(actual) == set(expected)
    for name in expected:
        np.testing.assert_allclose(np.array(actual[name], dtype=float), np.array(expected[name], dtype=float),
                                   rtol=1e-12, atol=1e-12, err_msg=name)


def test_matches_rliable_recorded_numbers():
    """Our IQM, mean, probability of improvement and performance profile, point estimates and 95% intervals, equal
    rliable's recorded numbers (CI checks this without installing rliable and its dependencies)."""
    assert_same_numbers(ours(), RLIABLE)


def test_matches_rliable_itself():
    """The same comparison against rliable run now, where it is installed (the `rliable` extra)."""
    try:
        import rliable.library  # noqa: F401
    except Exception as error:        # not installed, or installed beside a pandas its arch cannot import
        pytest.skip(f"rliable is not importable ({type(error).__name__}: {error}); "
                    "pip install -e '.[rliable]' to compare with it (test_matches_rliable_recorded_numbers "
                    "checks the numbers it gave)")
    assert_same_numbers(rliable_numbers(), RLIABLE)
    assert_same_numbers(ours(), rliable_numbers())
