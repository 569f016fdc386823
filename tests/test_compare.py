"""experiments/compare.py: the recovery measures on hand-made curves, the method list (SIGReg always beside its
lambda = 0 twin), overrides, and a tiny comparison end to end."""

import json

import numpy as np
import pytest

from experiments import compare


def test_recovery_measures_on_a_hand_made_curve():
    # Evaluations every 10 steps, switch at 40: before it 8 and 10 (pre-switch return 9), the switch drops the
    # return to 0 at 40, it climbs back 5 at 50 and 8.5 at 60 (>= 0 + 0.9 x 9 = 8.1): recovered 20 steps after.
    steps = [10, 20, 30, 40, 50, 60, 70]
    returns = np.array([[1.0, 8.0, 10.0, 0.0, 5.0, 8.5, 9.0],
                        [1.0, 8.0, 10.0, 0.0, 1.0, 2.0, 3.0]])       # seed 1 never comes back
    kls = np.array([[np.nan, np.nan, np.nan, 0.0, 0.5, 0.75, 1.0]] * 2)
    rows = compare.recovery(steps, returns, kls, switches=[40], window=30, seed=7)
    assert [r["seed"] for r in rows] == [7, 8]
    assert rows[0]["pre_switch_return"] == 9.0 and rows[0]["floor_return"] == 0.0
    assert rows[0]["steps_to_recover"] == 20.0 and np.isnan(rows[1]["steps_to_recover"])
    assert rows[0]["window_return"] == pytest.approx((0 + 5 + 8.5 + 9) / 4)
    assert rows[0]["kl_from_pre_switch"] == 1.0
    table = compare.recovery_ci(rows)
    assert table[0]["seeds"] == 2 and table[0]["recovered_seeds"] == 1
    assert table[0]["steps_to_recover_mean"] == 20.0
    assert table[0]["window_return_ci_low"] <= table[0]["window_return_mean"] <= table[0]["window_return_ci_high"]
    # A switch that costs nothing is recovered at once.
    flat = compare.recovery(steps, np.full((1, 7), 5.0), kls[:1], switches=[40], window=30)
    assert flat[0]["steps_to_recover"] == 0.0


def test_sigreg_always_comes_with_its_lambda_zero_twin():
    assert compare.methods_to_run(("ppo", "sigreg")) == ["ppo", "sigreg", "sigreg_off"]
    assert compare.methods_to_run(("sigreg_off", "sigreg")) == ["sigreg_off", "sigreg"]
    args = compare.CompareArgs(num_envs=32, sigreg_network="separate", sigreg_coef=0.5,
                               override=("sigreg.sigreg_directions=8", "all.learning_rate=1e-3"))
    _, on = compare.method_config("sigreg", args)
    _, off = compare.method_config("sigreg_off", args)
    _, plain = compare.method_config("ppo", args)
    assert (on.sigreg_coef, off.sigreg_coef) == (0.5, 0.0)
    assert on.network == off.network == "separate" and on.sigreg_directions == off.sigreg_directions == 8
    assert on.learning_rate == off.learning_rate == plain.learning_rate == 1e-3
    assert on.value_hidden == plain.value_hidden and on.num_envs == plain.num_envs == 32


@pytest.mark.parametrize("override, message", [
    (("gtr.sigma",), "expected METHOD.FIELD=VALUE"),
    (("sac.tau=1",), "METHOD one of"),
    (("ppo.no_such_field=1",), "has no field"),
    (("gtr.sigma=-1",), "--sigma must be > 0"),
])
def test_bad_overrides_are_refused_before_training(tmp_path, override, message):
    args = compare.CompareArgs(run_dir=str(tmp_path / "cmp"), num_envs=32, methods=("ppo", "gtr"), override=override)
    with pytest.raises(SystemExit, match=message):
        compare.main(args)
    assert not (tmp_path / "cmp").exists()


def test_comparison_runs_end_to_end(tmp_path):
    """Tiny setting (stated here): jax:PointMass with observation permutations every 5760 env steps, 32 envs,
    2 seeds, 9600 steps, evaluations every 1920; PPO and GTR."""
    args = compare.CompareArgs(run_dir=str(tmp_path / "cmp"), envs=("jax:PointMass?switch=obs_permutation&every=5760",),
                               num_seeds=2, total_steps=9600, eval_every=1920, eval_episodes=2, window=3840,
                               num_envs=32, methods=("ppo", "gtr"))
    summary = compare.main(args)
    assert [r["switch_step"] for r in summary["recovery"] if r["method"] == "gtr"] == [5760]   # an evaluation episode spans 3200 steps: the pre-switch one is at 1920
    assert all(np.isfinite(r["window_return_mean"]) for r in summary["recovery"])
    assert all(r["kl_from_pre_switch_mean"] > 0 for r in summary["recovery"])
    assert len(list((tmp_path / "cmp").glob("*.png"))) == 1
    rows = (tmp_path / "cmp" / "returns.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 5 * 2           # header + methods x evaluations x seeds
    assert rows[0] == "env,method,step,seed,return,kl_from_pre_switch"
    assert (tmp_path / "cmp" / "diagnostics.csv").read_text().startswith("env,method,step,seed,")
    assert json.loads((tmp_path / "cmp" / "summary.json").read_text())["methods"] == ["ppo", "gtr"]
    assert summary["jax"]["matmul_precision"] == "float32"
    with pytest.raises(SystemExit, match="already holds a comparison"):
        compare.main(args)
