"""experiments/coscaling.py: the arms' flags and the summary, on made-up runs."""

import csv

import numpy as np
import pytest

from experiments import coscaling


def test_recipe_keeps_minibatch_and_lr_and_the_wrong_arm_scales_both():
    args = coscaling.CoscalingArgs(num_envs=(64, 256), wrong=(256,), reference_num_envs=64, batch_size=32,
                                   learning_rate=1e-3)
    arms = coscaling.arms(args)
    assert list(arms) == ["recipe_N64", "recipe_N256", "wrong_N256"]
    recipe = dict(zip(arms["recipe_N256"][::2], arms["recipe_N256"][1::2]))
    assert "--scale-envs" in arms["recipe_N256"] and recipe["--batch-size"] == "32"
    assert float(arms["recipe_N256"][arms["recipe_N256"].index("--learning-rate") + 1]) == 1e-3
    wrong = arms["wrong_N256"]
    assert wrong[wrong.index("--batch-size") + 1] == "128" and "--scale-envs" not in wrong
    assert float(wrong[wrong.index("--learning-rate") + 1]) == pytest.approx(2e-3)     # x sqrt(256 / 64)


def test_summary_is_per_seed_then_over_seeds(tmp_path):
    run = tmp_path / "recipe_N64"
    run.mkdir()
    with open(run / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seed", "return"])
        for seed in (0, 1):
            for step, value in ((10, -9.0), (20, -5.0), (30, -3.0)):
                w.writerow([step, seed, value + seed])
    with open(run / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seed", "policy/update_kl", "policy/std"])
        for seed in (0, 1):
            for step, kl in ((10, 0.1), (20, 0.2), (30, 100.0)):
                w.writerow([step, seed, kl * (1 + seed), 0.5])
    (row,) = coscaling.summarize(tmp_path, ["recipe_N64"], last=2)
    assert row["final_return"] == pytest.approx(-4.0 + 0.5)           # mean(-5, -3) + seed, over seeds
    assert row["mean_return"] == pytest.approx(np.mean([-9, -5, -3]) + 0.5)
    assert row["update_kl"] == pytest.approx((0.2 + 0.4) / 2)          # the median resists the late blow-up
    assert row["updates"] == 3 and row["seeds"] == 2 and row["policy_std"] == pytest.approx(0.5)
