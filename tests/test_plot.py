"""experiments/plot.py: figures and summary.csv from fake run directories (its statistics: tests/test_stats.py); bad
input gives `error: ...`, exit 2 and no output."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments import plot
from tests.cli_utils import ROOT

STEPS = (100, 200, 300)
# Per (agent, env): returns [seed][evaluation] at STEPS, 3 seeds.
RETURNS = {
    ("mrq", "dmc:e1"): [[10, 20, 30], [12, 22, 36], [14, 24, 33]],
    ("mrq", "dmc:e2"): [[0, 50, 100], [0, 40, 80], [0, 60, 90]],
    ("sac", "dmc:e1"): [[5, 6, 7], [5, 6, 9], [5, 6, 8]],
    ("sac", "dmc:e2"): [[1, 2, 3], [1, 2, 4], [1, 2, 5]],
}


def write_run(path, agent, env, rows, extra_columns=(), sweep=None):
    """A run directory as experiments/train.py writes it: config.json and eval.csv (rows are dicts)."""
    path.mkdir(parents=True)
    config = {"run": {"agent": agent, "env": env, "num_seeds": 3}, "agent_config": {}}
    if sweep is not None:
        config["sweep"] = sweep
    (path / "config.json").write_text(json.dumps(config))
    with (path / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "seed", "return", "return_std", *extra_columns])
        writer.writeheader()
        writer.writerows(rows)
    return path


def rows_of(returns, **extra):
    return [{"step": step, "seed": seed, "return": returns[seed][i], "return_std": 1.0, **extra}
            for i, step in enumerate(STEPS) for seed in range(len(returns))]


def run_plot(*args, timeout=120):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "plot.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_figure(out, stem):
    for suffix in ("png", "svg"):
        assert (out / f"{stem}.{suffix}").stat().st_size > 0, f"{stem}.{suffix} is empty"


# ------------------------------------------------------------------------------------------------------------- runs


def test_load_run_and_curves(tmp_path):
    path = write_run(tmp_path / "run", "mrq", "dmc:e1", rows_of(RETURNS[("mrq", "dmc:e1")]))
    run = plot.load_run(path)
    assert (run.agent, run.env, len(run)) == ("mrq", "dmc:e1", 9)
    assert set(run.columns) == {"step", "seed", "return", "return_std"}
    (curve,) = plot.run_curves(run)
    np.testing.assert_array_equal(curve.steps, STEPS)
    np.testing.assert_array_equal(curve.values, RETURNS[("mrq", "dmc:e1")])
    np.testing.assert_array_equal(curve.final_values(), [30, 36, 33])
    np.testing.assert_allclose(curve.auc_values(), [20.0, 70 / 3, 71 / 3])


# ------------------------------------------------------------------------------------------------------------- CLI


def test_single_run_writes_png_svg_and_summary(tmp_path):
    path = write_run(tmp_path / "runs" / "mrq_e1", "mrq", "dmc:e1", rows_of(RETURNS[("mrq", "dmc:e1")]))
    out = tmp_path / "plots"
    result = run_plot(path, "--out", out, "--num-resamples", "500")
    assert result.returncode == 0, result.stderr
    assert_figure(out, "mrq_e1")
    (row,) = read_csv(out / "summary.csv")
    assert float(row["final_mean"]) == pytest.approx((30 + 36 + 33) / 3)
    assert 30 <= float(row["final_ci_low"]) < 33 < float(row["final_ci_high"]) <= 36
    assert float(row["auc"]) == pytest.approx((10 + 20 + 30 + 12 + 22 + 36 + 14 + 24 + 33) / 9, rel=1e-5)
    assert float(row["iqm"]) == pytest.approx(33.0)            # 3 seeds: nothing trimmed
    # Same data, same seed: the same files.
    again = run_plot(path, "--out", tmp_path / "again", "--num-resamples", "500")
    assert again.returncode == 0, again.stderr
    for name in ("mrq_e1.png", "mrq_e1.svg", "summary.csv"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_sweep_folder_one_curve_per_group(tmp_path):
    sweep = tmp_path / "sweep"
    low, high = [[1, 2, 3]] * 3, [[10, 20, 30], [10, 20, 31], [10, 20, 32]]
    rows = rows_of(low, learning_rate=0.001) + rows_of(high, learning_rate=0.01)
    # Automatic: config.json's "sweep" names learning_rate; found recursively below the sweep folder.
    write_run(sweep / "points", "sac", "dmc:e1", rows, ["learning_rate"], sweep={"learning_rate": [0.001, 0.01]})
    # Explicit: no "sweep" entry, --group-by names the column (and rejects a column that is not there).
    write_run(tmp_path / "plain", "sac", "dmc:e1", rows, ["learning_rate"])
    out = tmp_path / "plots"
    result = run_plot(tmp_path / "sweep", "--out", out, "--num-resamples", "200")
    assert result.returncode == 0, result.stderr
    assert_figure(out, "points")
    summary = read_csv(out / "summary.csv")
    assert [r["group"] for r in summary] == ["learning_rate=0.001", "learning_rate=0.01"]
    assert [float(r["final_mean"]) for r in summary] == pytest.approx([3.0, 31.0])

    run = plot.load_run(tmp_path / "plain")
    assert [c.group for c in plot.run_curves(run, group_by="learning_rate")] == [
        {"learning_rate": 0.001}, {"learning_rate": 0.01}]
    with pytest.raises(plot.PlotError, match="several rows for step 100 and seed 0.*--group-by.*learning_rate"):
        plot.run_curves(run)                     # no sweep entry: one curve, and it has each (step, seed) twice
    with pytest.raises(plot.PlotError, match="no column 'tau' to group by; its columns: step, seed, return"):
        plot.run_curves(run, group_by="tau")


def test_compare_two_agents_on_two_envs(tmp_path):
    for (agent, env), returns in RETURNS.items():
        write_run(tmp_path / "runs" / agent / env.replace(":", "_"), agent, env, rows_of(returns))
    out = tmp_path / "plots"
    result = run_plot(tmp_path / "runs", "--compare", "--out", out, "--num-resamples", "500",
                      "--normalize", "dmc:e1=0,100", "dmc:e2=0,200")
    assert result.returncode == 0, result.stderr
    for stem in ("dmc_e1", "dmc_e2", "aggregate"):
        assert_figure(out, stem)
    summary = {(r["agent"], r["env"]): r for r in read_csv(out / "summary.csv")}
    assert set(summary) == set(RETURNS)
    for key, finals, auc in ((("mrq", "dmc:e1"), [30, 36, 33], (60 + 70 + 71) / 9),
                             (("mrq", "dmc:e2"), [100, 80, 90], (150 + 120 + 150) / 9),
                             (("sac", "dmc:e1"), [7, 9, 8], (18 + 20 + 19) / 9),
                             (("sac", "dmc:e2"), [3, 4, 5], (6 + 7 + 8) / 9)):
        row = summary[key]
        assert row["label"] == key[0]
        assert float(row["final_mean"]) == pytest.approx(sum(finals) / 3, rel=1e-5)
        assert min(finals) <= float(row["final_ci_low"]) <= float(row["final_mean"]) <= float(row["final_ci_high"])
        assert float(row["final_ci_high"]) <= max(finals)
        assert float(row["auc"]) == pytest.approx(auc, rel=1e-5)
        assert float(row["iqm"]) == pytest.approx(sum(finals) / 3, rel=1e-5)
    aggregate = {r["method"]: r for r in read_csv(out / "aggregate.csv")}
    assert set(aggregate) == {"mrq", "sac"}
    # Normalized finals: e1 / 100 * 100, e2 / 200 * 100. mrq: 30 36 33 | 50 40 45 -> sorted 30 33 36 40 45 50,
    # IQM drops floor(6 / 4) = 1 per side: mean(33, 36, 40, 45). sac: 7 9 8 | 1.5 2 2.5 -> mean(2, 2.5, 7, 8).
    assert float(aggregate["mrq"]["iqm"]) == pytest.approx((33 + 36 + 40 + 45) / 4)
    assert float(aggregate["sac"]["iqm"]) == pytest.approx((2 + 2.5 + 7 + 8) / 4)
    for row in aggregate.values():
        assert (row["tasks"], row["runs"], row["score"]) == ("2", "6", "normalized return")
        assert float(row["ci_low"]) <= float(row["iqm"]) <= float(row["ci_high"])


def test_multitask_run_curves_per_task_and_aggregate(tmp_path):
    """A multitask eval.csv (a `task` column, an "all" row per seed and step): one curve per task, each with its
    own env; the "all" curve keeps the suite's env and is left out of the cross-task aggregate (its tasks are
    counted instead); the per-run figure is drawn."""
    tasks = {"dmc:e1": RETURNS[("mrq", "dmc:e1")], "dmc:e2": RETURNS[("mrq", "dmc:e2")]}
    rows = []
    for i, step in enumerate(STEPS):
        for seed in range(3):
            per_task = {task: returns[seed][i] for task, returns in tasks.items()}
            rows += [{"step": step, "seed": seed, "task": task, "return": r, "return_std": 0.0}
                     for task, r in per_task.items()]
            rows.append({"step": step, "seed": seed, "task": "all", "return": sum(per_task.values()) / 2,
                         "return_std": 0.0})
    path = write_run(tmp_path / "mt", "mrq_multitask", "dmc:mt2", rows, ["task"])
    run = plot.load_run(path)
    assert run.tasks == ("dmc:e1", "dmc:e2", "all")
    curves = plot.run_curves(run)
    assert [(c.task, c.env) for c in curves] == [("dmc:e1", "dmc:e1"), ("dmc:e2", "dmc:e2"), ("all", "dmc:mt2")]
    np.testing.assert_array_equal(curves[1].values, RETURNS[("mrq", "dmc:e2")])
    np.testing.assert_allclose(curves[2].final_values(), [(30 + 100) / 2, (36 + 80) / 2, (33 + 90) / 2])
    (row,) = plot.aggregate(curves, {"dmc:e1": (0, 100), "dmc:e2": (0, 200)}, num_resamples=200)
    assert (row["tasks"], row["runs"], row["envs"]) == (2, 6, "dmc:e1 dmc:e2")
    assert row["iqm"] == pytest.approx((33 + 36 + 40 + 45) / 4)          # as mrq in the two-env comparison
    out = tmp_path / "plots"
    result = run_plot(path, "--out", out, "--num-resamples", "200")
    assert result.returncode == 0, result.stderr
    assert_figure(out, "mt")
    assert {r["env"] for r in read_csv(out / "summary.csv")} == {"dmc:e1", "dmc:e2", "dmc:mt2"}


# ------------------------------------------------------------------------------------------------------- bad input


def bad_inputs(tmp_path):
    good = write_run(tmp_path / "good", "mrq", "dmc:e1", rows_of(RETURNS[("mrq", "dmc:e1")]))
    (tmp_path / "no_runs" / "sub").mkdir(parents=True)
    (tmp_path / "no_runs" / "sub" / "notes.txt").write_text("nothing here")
    write_run(tmp_path / "empty", "mrq", "dmc:e1", [])                 # a header, no rows
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "eval.csv").write_text("")                   # not even a header
    return {
        "missing": ([tmp_path / "nope"], r"error: .*nope does not exist"),
        "no eval.csv": ([tmp_path / "no_runs"], r"error: no eval.csv in .*no_runs or in any folder below it"),
        "no metric": ([good, "--metric", "q_loss"],
                      r"error: .*eval.csv has no column 'q_loss' \(--metric\); its columns: step, seed, return, "
                      r"return_std"),
        "header only": ([tmp_path / "empty"], r"error: .*empty.*eval.csv is empty: it has a header"),
        "empty file": ([tmp_path / "blank"], r"error: .*blank.*eval.csv is empty"),
    }


@pytest.mark.parametrize("case", ["missing", "no eval.csv", "no metric", "header only", "empty file"])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, case):
    args, message = bad_inputs(tmp_path)[case]
    out = tmp_path / "plots"
    result = run_plot(*args, "--out", out)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not out.exists()
