"""Sweeps: a traced learning-rate sweep sharded over four devices equals one device (tests/test_sweep_every_agent.py:
every agent's lanes equal its separate runs); traced and static fields through the CLI; the summary's CIs by
hand; bad --sweep input."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from experiments import sweep as sweep_lib
from tests.cli_utils import ROOT, run_main
from tests.test_ppo import TINY_FLAGS

SHARDED = textwrap.dedent("""
    import os, sys, json
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from agents import ppo
    from experiments.loops.lanes import Lanes
    from experiments.loops.on_policy import OnPolicyLoop
    from tests.test_ppo import TINY
    assert len(jax.devices()) == {devices}
    loop = OnPolicyLoop(ppo, ppo.Config(**TINY), "jax:PointMass", 4, 0,
                        lanes=Lanes.of_sweep([ppo.Config(**TINY, learning_rate=lr) for lr in (1e-4, 1e-3)], [0, 1]))
    state = loop.init()
    state, _ = loop.run(state, 0, 2 * loop.granularity)
    print(json.dumps([np.asarray(x).tolist() for x in jax.tree.leaves(state["agent"].params)[:2]]))
""")


def test_sweep_sharded_over_four_devices_equals_one_device():
    outputs = []
    for devices in (1, 4):
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        result = subprocess.run([sys.executable, "-c", SHARDED.format(root=str(ROOT), devices=devices)],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    for a, b in zip(*outputs):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_summary_matches_hand_computation():
    rows = [{"step": step, "seed": seed, "lr": lr, "return": value}
            for lr, curves in ((0.1, {0: [1.0, 3.0], 1: [2.0, 5.0], 2: [0.0, 4.0]}), (0.2, {0: [7.0, 7.0]}))
            for seed, curve in curves.items() for step, value in zip((10, 20), curve)]
    table = {r["lr"]: r for r in sweep_lib.summarize(rows, ["lr"])}
    finals, aucs = np.array([3.0, 5.0, 4.0]), np.array([2.0, 3.5, 2.0])
    assert table[0.1]["final_mean"] == pytest.approx(4.0) and table[0.1]["auc_mean"] == pytest.approx(2.5)
    # The percentile bootstrap by hand: the same resampling (numpy's default_rng(0), 10000 draws of 3 seeds).
    index = np.random.default_rng(0).integers(0, 3, size=(10_000, 3))
    low, high = np.quantile(finals[index].mean(axis=1), [0.025, 0.975])
    assert table[0.1]["final_ci_low"] == pytest.approx(low) and table[0.1]["final_ci_high"] == pytest.approx(high)
    assert aucs.mean() == pytest.approx(table[0.1]["auc_mean"])
    assert table[0.2]["final_ci_low"] == table[0.2]["final_ci_high"] == 7.0        # one seed: zero width


def _sweep_cli(*args, timeout=900):
    """experiments/sweep.py's main, in this process."""
    return run_main(sweep_lib.main, "--no-progress", *args)


def test_sweep_cli_traced_and_static_fields(tmp_path):
    """--sweep learning_rate (traced) x num_epochs (static: one program per value): 4 points x 2 seeds."""
    run_dir = tmp_path / "sweep"
    result = _sweep_cli("--agent", "ppo", "--env", "jax:PointMass", *TINY_FLAGS, "--total-steps", "512",
                        "--eval-every", "256", "--eval-episodes", "2", "--num-seeds", "2",
                        "--sweep", "learning_rate=3e-4,1e-3", "--sweep", "num_epochs=1,2", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "traced (one program): learning_rate; static (one program per value): num_epochs" in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["traced"] == ["learning_rate"] and config["static"] == ["num_epochs"]
    assert config["jax"]["matmul_precision"] == "float32" and config["jax"]["compile_cache_dir"]
    with open(run_dir / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2 * 2                      # evaluations x lr x epochs x seeds
    assert {(r["learning_rate"], r["num_epochs"]) for r in rows} == {("0.0003", "1"), ("0.0003", "2"),
                                                                     ("0.001", "1"), ("0.001", "2")}
    with open(run_dir / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.parametrize("args, expected", [
    (["--sweep", "learning_rat=1e-4"], "not a field of Config; valid:"),
    (["--sweep", "learning_rate"], "expected name=value1,value2"),
    (["--sweep", "learning_rate=1e-4,,3e-4"], "empty value"),
    (["--sweep", "num_epochs=1.5"], "'1.5' is not a valid int"),
    (["--sweep", "learning_rate=fast"], "'fast' is not a valid float"),
    ([], "give at least one --sweep"),
])
def test_bad_sweep_input(tmp_path, args, expected):
    run_dir = tmp_path / "sweep"
    result = _sweep_cli("--agent", "ppo", "--env", "jax:PointMass", *TINY_FLAGS, *args, "--run-dir", str(run_dir),
                        timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr, result.stderr[-2000:]
    assert not run_dir.exists()


def test_grid_larger_than_memory_is_refused(tmp_path):
    run_dir = tmp_path / "sweep"
    result = _sweep_cli("--agent", "sac", "--env", "jax:PointMass", "--total-steps", "2000000000",
                        "--buffer-size", "2000000000", "--num-seeds", "2", "--sweep", "critic_lr=1e-4,1e-3",
                        "--run-dir", str(run_dir), timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    # 4 lanes (2 points x 2 seeds) of a 2e9-slot replay: the shared estimate of experiments/memory.py
    assert "the run needs about" in result.stderr and "GiB per seed" in result.stderr
