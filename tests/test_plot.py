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
from tests.cli_utils import ROOT, run_main

STEPS = (100, 200, 300)
# Per (agent, env): returns [seed][evaluation] at STEPS, 3 seeds.
RETURNS = {
    ("mrq", "dmc:e1"): [[10, 20, 30], [12, 22, 36], [14, 24, 33]],
    ("mrq", "dmc:e2"): [[0, 50, 100], [0, 40, 80], [0, 60, 90]],
    ("sac", "dmc:e1"): [[5, 6, 7], [5, 6, 9], [5, 6, 8]],
    ("sac", "dmc:e2"): [[1, 2, 3], [1, 2, 4], [1, 2, 5]],
}


def write_run(path, agent, env, rows, extra_columns=(), sweep=None, agent_config=None, dataset=None):
    """A run directory as experiments/train.py writes it: config.json and eval.csv (rows are dicts)."""
    path.mkdir(parents=True)
    config = {"run": {"agent": agent, "env": env, "num_seeds": 3, "dataset": dataset},
              "agent_config": agent_config or {}}
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
    # Normalised finals: e1 / 100, e2 / 200. mrq: .30 .36 .33 | .50 .40 .45 -> sorted .30 .33 .36 .40 .45 .50, the
    # IQM drops floor(6 / 4) = 1 per side: mean(.33, .36, .40, .45); sac: .07 .09 .08 | .015 .02 .025 -> mean(.02,
    # .025, .07, .08). The mean is over the envs' means: mrq (.33 + .45) / 2, sac (.08 + .02) / 2.
    assert float(aggregate["mrq"]["iqm"]) == pytest.approx((0.33 + 0.36 + 0.40 + 0.45) / 4)
    assert float(aggregate["sac"]["iqm"]) == pytest.approx((0.02 + 0.025 + 0.07 + 0.08) / 4)
    assert float(aggregate["mrq"]["mean"]) == pytest.approx((0.33 + 0.45) / 2)
    assert float(aggregate["sac"]["mean"]) == pytest.approx((0.08 + 0.02) / 2)
    for row in aggregate.values():
        assert (row["envs"], row["runs"], row["runs_per_env"], row["score"]) == ("2", "6", "3", "normalised score")
        for name in ("iqm", "mean"):
            assert float(row[f"{name}_low"]) <= float(row[name]) <= float(row[f"{name}_high"])
    # Every run of mrq beats every run of sac on both envs: P(mrq > sac) = 1 in every resample.
    (improvement,) = read_csv(out / "probability_of_improvement.csv")
    assert (improvement["x"], improvement["y"]) == ("mrq", "sac")
    assert [float(improvement[k]) for k in ("probability", "low", "high")] == [1.0, 1.0, 1.0]
    profile = read_csv(out / "performance_profile.csv")
    assert {r["method"] for r in profile} == {"mrq", "sac"} and len(profile) == 2 * 101
    for stem in ("performance_profile", "probability_of_improvement"):
        assert_figure(out, stem)


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
    comparison = plot.compare_scores(curves, {"dmc:e1": (0, 100), "dmc:e2": (0, 200)})
    (row,) = plot.aggregate(comparison, num_resamples=200)
    assert (row["envs"], row["runs"], row["env_ids"]) == (2, 6, "dmc:e1 dmc:e2")
    assert row["iqm"] == pytest.approx((0.33 + 0.36 + 0.40 + 0.45) / 4)   # as mrq in the two-env comparison
    out = tmp_path / "plots"
    result = run_plot(path, "--out", out, "--num-resamples", "200")
    assert result.returncode == 0, result.stderr
    assert_figure(out, "mt")
    assert {r["env"] for r in read_csv(out / "summary.csv")} == {"dmc:e1", "dmc:e2", "dmc:mt2"}


# ------------------------------------------------------------------------------------------- what --compare pools


def write_runs(root, returns_by_run, **kwargs):
    """Runs under `root`: {(agent, env): [seed][evaluation] returns at STEPS}."""
    for (agent, env), returns in returns_by_run.items():
        write_run(root / agent / re.sub(r"[^A-Za-z0-9]+", "_", env), agent, env, rows_of(returns), **kwargs)
    return root


def compare(*args):
    """plot.py in this process (no new interpreter): its exit code, stdout and stderr."""
    return run_main(plot.main, *map(str, args))


def svg_text(path):
    """The text an SVG the command wrote shows (kept as text: svg.fonttype none), wrapped lines joined by spaces."""
    import html

    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", path.read_text())).split())


# Two envs of very different scales, neither with a normalised score: the example (0-3000 and 0-10).
UNNORMALISED = {("mrq", "gym:Hopper-v5"): [[0, 1000, 2000], [0, 1500, 3000], [0, 1200, 2500]],
                ("mrq", "jax:PointMass"): [[0, 5, 9], [0, 4, 8], [0, 6, 10]],
                ("sac", "gym:Hopper-v5"): [[0, 900, 1800], [0, 1000, 2100], [0, 1100, 1900]],
                ("sac", "jax:PointMass"): [[0, 7, 10], [0, 8, 10], [0, 9, 10]]}


def test_compare_refuses_to_pool_returns_without_a_normalised_score(tmp_path):
    runs = write_runs(tmp_path / "runs", UNNORMALISED)
    out = tmp_path / "plots"
    refused = compare(runs, "--compare", "--out", out, "--num-resamples", "100")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "gym:Hopper-v5, jax:PointMass have no normalised score" in refused.stderr
    assert "--normalize ENV=RANDOM,EXPERT" in refused.stderr and "--aggregate raw" in refused.stderr
    assert not out.exists()

    # --aggregate raw pools them anyway, and every figure and the CSV say the values are raw.
    raw = compare(runs, "--compare", "--aggregate", "raw", "--out", out, "--num-resamples", "100")
    assert raw.returncode == 0, raw.stderr
    label = "raw return (not normalised; pooled across tasks)"
    assert {r["score"] for r in read_csv(out / "aggregate.csv")} == {label}
    for stem in ("aggregate", "performance_profile"):
        assert label in svg_text(out / f"{stem}.svg")
    assert "NOT NORMALISED" in svg_text(out / "aggregate.svg")

    # References for both envs normalise them; --aggregate none draws the per-env figures only.
    normalised = compare(runs, "--compare", "--out", tmp_path / "normalised", "--num-resamples", "100",
                         "--normalize", "gym:Hopper-v5=0,3000", "jax:PointMass=0,10")
    assert normalised.returncode == 0, normalised.stderr
    mrq = next(r for r in read_csv(tmp_path / "normalised" / "aggregate.csv") if r["method"] == "mrq")
    # mrq: Hopper 2000 2500 3000 / 3000, PointMass 8 9 10 / 10; the mean of the envs' means: (0.833 + 0.9) / 2.
    assert float(mrq["mean"]) == pytest.approx((2500 / 3000 + 0.9) / 2, rel=1e-5)
    assert mrq["score"] == "normalised score"
    no_aggregate = compare(runs, "--compare", "--aggregate", "none", "--out", tmp_path / "none")
    assert no_aggregate.returncode == 0, no_aggregate.stderr
    assert sorted(p.name for p in (tmp_path / "none").iterdir()) == [
        "gym_Hopper-v5.png", "gym_Hopper-v5.svg", "jax_PointMass.png", "jax_PointMass.svg", "summary.csv"]


def test_compare_normalises_dmc_returns_and_names_only_the_envs_without_one(tmp_path):
    """DMC returns become return / 1000 (envs.multitask.normalized_score) without any flag; beside a gym env
    without references, the refusal names the gym env only. One env needs no normalisation to be aggregated."""
    dmc = {("mrq", "dmc:cartpole-balance"): [[0, 500, 900], [0, 500, 800], [0, 500, 700]],
           ("mrq", "dmc:walker-walk"): [[0, 100, 200], [0, 100, 300], [0, 100, 400]]}
    runs = write_runs(tmp_path / "dmc", dmc)
    result = compare(runs, "--compare", "--out", tmp_path / "plots", "--num-resamples", "100")
    assert result.returncode == 0, result.stderr
    (row,) = read_csv(tmp_path / "plots" / "aggregate.csv")
    assert float(row["mean"]) == pytest.approx((0.8 + 0.3) / 2) and row["score"] == "normalised score"
    assert "normalised score: return / 1000 (2 envs)" in svg_text(tmp_path / "plots" / "aggregate.svg")

    write_runs(tmp_path / "mixed", {**dmc, ("mrq", "gym:Hopper-v5"): UNNORMALISED[("mrq", "gym:Hopper-v5")]})
    refused = compare(tmp_path / "mixed", "--compare", "--out", tmp_path / "mixed_plots")
    assert refused.returncode == 2 and "but gym:Hopper-v5 has no normalised score" in refused.stderr, refused.stderr

    alone = write_runs(tmp_path / "alone", {("mrq", "gym:Hopper-v5"): UNNORMALISED[("mrq", "gym:Hopper-v5")]})
    result = compare(alone, "--compare", "--out", tmp_path / "alone_plots", "--num-resamples", "100")
    assert result.returncode == 0, result.stderr
    (row,) = read_csv(tmp_path / "alone_plots" / "aggregate.csv")
    assert row["score"] == "return on gym:Hopper-v5" and float(row["mean"]) == pytest.approx(2500.0)


def test_compare_of_methods_on_different_envs_aggregates_the_shared_envs_and_says_so(tmp_path):
    runs = write_runs(tmp_path / "runs", {key: RETURNS[key] for key in
                                          [("mrq", "dmc:e1"), ("mrq", "dmc:e2"), ("sac", "dmc:e1")]})
    out = tmp_path / "plots"
    result = compare(runs, "--compare", "--out", out, "--num-resamples", "100")
    assert result.returncode == 0, result.stderr
    note = ("note: the methods ran on different envs: the aggregate is over the 1 env every method ran on "
            "(dmc:e1); left out: mrq: dmc:e2")
    assert result.stdout.splitlines()[0] == note
    rows = {r["method"]: r for r in read_csv(out / "aggregate.csv")}
    assert {m: (r["env_ids"], r["left_out"]) for m, r in rows.items()} == {"mrq": ("dmc:e1", "dmc:e2"),
                                                                           "sac": ("dmc:e1", "")}
    assert float(rows["mrq"]["mean"]) == pytest.approx((30 + 36 + 33) / 3 / 1000)   # dmc:e1 only
    for stem in AGGREGATE_STEMS:
        assert "left out: mrq: dmc:e2" in svg_text(out / f"{stem}.svg"), stem
    assert_figure(out, "dmc_e2")                          # its per-env figure is still drawn

    disjoint = write_runs(tmp_path / "disjoint", {key: RETURNS[key] for key in [("mrq", "dmc:e1"), ("sac", "dmc:e2")]})
    refused = compare(disjoint, "--compare", "--out", tmp_path / "disjoint_plots")
    assert refused.returncode == 2, refused.stderr
    assert "no env is shared by every method" in refused.stderr and "mrq: dmc:e1; sac: dmc:e2" in refused.stderr


AGGREGATE_STEMS = ("aggregate", "performance_profile", "probability_of_improvement")


def test_normalisation_rules_in_order(tmp_path):
    """--normalize, then a multitask run's score column, then config.json's references, then the env's known
    maximum return; none for a gym env without references or for a diagnostic."""
    hopper = write_run(tmp_path / "hopper", "bc", "gym:Hopper-v5", rows_of(UNNORMALISED[("mrq", "gym:Hopper-v5")]),
                       extra_columns=["critic/srank"])
    config = json.loads((hopper / "config.json").read_text())
    (hopper / "config.json").write_text(json.dumps({**config, "dataset_meta": {"ref_min_score": -20.0,
                                                                               "ref_max_score": 3000.0}}))
    bare = write_run(tmp_path / "bare", "sac", "gym:Walker2d-v5", rows_of(RETURNS[("sac", "dmc:e1")]))
    dmc = write_run(tmp_path / "dmc", "sac", "dmc:cheetah-run", rows_of(RETURNS[("sac", "dmc:e1")]))
    curves = [c for path in (hopper, bare, dmc) for c in plot.run_curves(plot.load_run(path))]
    found = plot.env_normalizations(curves)
    assert found["gym:Hopper-v5"] == plot.Normalization(-20.0, 3000.0,
                                                        "(return - random) / (expert - random), config.json")
    assert found["gym:Walker2d-v5"] is None
    assert found["dmc:cheetah-run"] == plot.Normalization(0.0, 1000.0, "return / 1000")
    assert found["dmc:cheetah-run"](np.array([250.0, 1000.0])).tolist() == [0.25, 1.0]
    given = plot.env_normalizations(curves, {None: (10.0, 20.0)})
    assert {(n.zero, n.one) for n in given.values()} == {(10.0, 20.0)}
    srank = plot.run_curves(plot.load_run(hopper), metric="critic/srank")
    assert plot.env_normalizations(srank) == {"gym:Hopper-v5": None}
    # A multitask run's score column is already normalised.
    rows = [{"step": step, "seed": seed, "task": task, "return": 500.0, "score": 0.5, "return_std": 0.0}
            for step in STEPS for seed in range(2) for task in ("gym:Hopper-v5", "dmc:cheetah-run", "all")]
    multitask = write_run(tmp_path / "mt", "mrq_multitask", "dmc:mix", rows, ["task", "score"])
    scores = plot.run_curves(plot.load_run(multitask), metric="score")
    assert set(plot.env_normalizations(scores).values()) == {plot.SCORE_COLUMN}
    comparison = plot.compare_scores(scores)
    assert comparison.unit == "normalised score" and comparison.envs == ["gym:Hopper-v5", "dmc:cheetah-run"]


def test_final_values_at_different_budgets_are_noted(tmp_path):
    short = [row for row in rows_of(RETURNS[("sac", "dmc:e1")]) if row["step"] < 300]
    write_run(tmp_path / "runs" / "mrq", "mrq", "dmc:e1", rows_of(RETURNS[("mrq", "dmc:e1")]))
    write_run(tmp_path / "runs" / "sac", "sac", "dmc:e1", short)
    curves = [c for run in plot.load_runs([tmp_path / "runs"]) for c in plot.run_curves(run)]
    plot.label_for_comparison(curves)
    assert plot.compare_scores(curves).notes() == [
        "final values are taken at different budgets (last evaluation step, every env): mrq 300, sac 200"]


def test_methods_are_told_apart_by_their_config_on_every_env(tmp_path):
    """Two runs of one agent on an env differ in config.json: the differing fields name the methods, the same on
    every env, so the aggregate counts one configuration as one method."""
    for name, env, base, returns in (("sac_e1", "dmc:e1", "sac", RETURNS[("mrq", "dmc:e1")]),
                                     ("td3_e1", "dmc:e1", "td3", RETURNS[("sac", "dmc:e1")]),
                                     ("td3_e2", "dmc:e2", "td3", RETURNS[("sac", "dmc:e2")]),
                                     ("sac_e2", "dmc:e2", "sac", RETURNS[("mrq", "dmc:e2")])):
        write_run(tmp_path / "runs" / name, "least", env, rows_of(returns),
                  agent_config={"base": base, "tau": 0.005})
    curves = [c for run in plot.load_runs([tmp_path / "runs"]) for c in plot.run_curves(run)]
    plot.label_for_comparison(curves)
    assert sorted({(c.env, c.label) for c in curves}) == [
        ("dmc:e1", "least base=sac"), ("dmc:e1", "least base=td3"),
        ("dmc:e2", "least base=sac"), ("dmc:e2", "least base=td3")]
    comparison = plot.compare_scores(curves, {None: (0.0, 100.0)})
    assert comparison.methods == ["least base=sac", "least base=td3"] and comparison.envs == ["dmc:e1", "dmc:e2"]


def test_figures_at_300_dpi_with_size_title_and_labels(tmp_path):
    path = write_run(tmp_path / "run", "mrq", "dmc:e1", rows_of(RETURNS[("mrq", "dmc:e1")]))
    out = tmp_path / "plots"
    result = compare(path, "--out", out, "--num-resamples", "100", "--size", "4", "3",
                     "--title", "MR.Q on {env}", "--xlabel", "agent steps", "--ylabel", "episode return")
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(out / "run.png") as image:
        assert image.size == (4 * 300, 3 * 300)
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    svg = svg_text(out / "run.svg")
    assert 'width="288pt" height="216pt"' in (out / "run.svg").read_text()       # 4 x 3 inches
    for text in ("MR.Q on dmc:e1", "agent steps", "episode return", "run (3 seeds)"):
        assert text in svg, text
    # Without the flags: the automatic labels, with units.
    assert compare(path, "--out", tmp_path / "auto", "--num-resamples", "100").returncode == 0
    svg = svg_text(tmp_path / "auto" / "run.svg")
    assert "env steps per seed" in svg and " return " in svg
    assert "band: 95% CI, percentile bootstrap over seeds (100 resamples)" in svg
    bad = compare(path, "--out", tmp_path / "bad", "--size", "0", "3")
    assert bad.returncode == 2 and "--size takes a width and a height in inches, both > 0" in bad.stderr


def test_two_seeds_are_a_range_and_one_seed_has_no_band(tmp_path):
    two = write_run(tmp_path / "two", "mrq", "dmc:e1", rows_of(RETURNS[("mrq", "dmc:e1")][:2]))
    one = write_run(tmp_path / "one", "sac", "dmc:e1", rows_of(RETURNS[("sac", "dmc:e1")][:1]))
    out = tmp_path / "plots"
    assert compare(two, one, "--compare", "--out", out, "--num-resamples", "100").returncode == 0
    svg = svg_text(out / "dmc_e1.svg")
    assert "mrq (range over 2 seeds)" in svg and "sac (1 seed)" in svg and "band: 95% CI" not in svg
    assert "band: range over 2 seeds (too few seeds for a 95% CI)" in svg
    assert "1 run on an env they are close to a range, not a 95% CI" in svg_text(out / "aggregate.svg")
    assert [plot.band_label(n) for n in (1, 2, 3)] == ["1 seed, no band", "range over 2 seeds", "95% CI"]
    assert [plot.curve_legend("td3", n) for n in (1, 2, 5)] == ["td3 (1 seed)", "td3 (range over 2 seeds)",
                                                                "td3 (5 seeds)"]


def test_axis_labels_say_what_steps_and_metric_are(tmp_path):
    online = plot.run_curves(plot.load_run(write_run(tmp_path / "online", "sac", "gym:Hopper-v5",
                                                     rows_of(RETURNS[("sac", "dmc:e1")]))))
    offline = plot.run_curves(plot.load_run(write_run(tmp_path / "offline", "bc", "gym:Hopper-v5",
                                                      rows_of(RETURNS[("sac", "dmc:e1")]), dataset="d.hdf5")))
    assert plot.steps_label(online) == "env steps per seed"
    assert plot.steps_label(offline) == "gradient updates"
    assert plot.steps_label(online + offline) == "env steps per seed (offline runs: gradient updates)"
    assert [plot.metric_label(m) for m in ("return", "score", "critic/srank")] == [
        "return", "normalised score", "critic/srank"]


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


def test_step_ticks_are_short():
    """Step counts on a subplot's x axis read 16k / 2.5M, so neighbouring ticks do not run together."""
    from experiments.plot import step_tick_label

    assert [step_tick_label(x) for x in (0, 500, 12000, 16000, 2_500_000, 1e9)] == ["0", "500", "12k", "16k",
                                                                                    "2.5M", "1G"]
