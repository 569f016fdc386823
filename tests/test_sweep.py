"""Sweeps: a traced learning-rate sweep sharded over four devices equals one device (tests/test_sweep_every_agent.py:
every agent's lanes equal its separate runs); traced and static fields through the CLI; the summary's CIs by
hand; bad --sweep input; a stopped sweep (signal between chunks or between programs, or interrupted with rows past
its checkpoint) resumed to the uninterrupted sweep's files, and resumes that are refused."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from agents import ppo
from experiments import sweep as sweep_lib
from experiments.checkpoint import checkpoint_steps
from tests.cli_utils import ROOT, run_main
from tests.test_ppo import TINY, TINY_FLAGS

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
    (["--sweep", "learning_rate=1e-4", "--video-every", "1"], "--video-every is for runs"),
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


# ------------------------------------------------------------------------------------------------
# Resumable sweeps
# ------------------------------------------------------------------------------------------------

# 2 programs (num_epochs 1, 2: static) x 2 learning rates (traced) x 2 seeds; 4 updates, an evaluation and a
# train.csv row after each, a checkpoint every 2 updates: 4 eval rows per program and evaluation.
UPDATE = ppo.layout(ppo.Config(**TINY)).steps_per_update
RESUMABLE = ["--agent", "ppo", "--env", "jax:PointMass", *TINY_FLAGS, "--total-steps", str(4 * UPDATE),
             "--eval-every", str(UPDATE), "--log-every", str(UPDATE), "--checkpoint-every", str(2 * UPDATE),
             "--eval-episodes", "2", "--num-seeds", "2", "--sweep", "learning_rate=3e-4,1e-3",
             "--sweep", "num_epochs=1,2"]


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _lines(path) -> int:
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sweep") / "uninterrupted"
    result = _sweep_cli(*RESUMABLE, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _stop_once(eval_csv, rows: int, raise_=None):
    """A stand-in for train._GracefulStop that has caught SIGTERM (or, with `raise_`, raises it where the loop
    looks, as a second Ctrl-C does) once `eval_csv` holds `rows` rows: deterministic, where a real signal's
    arrival is not."""
    class Stop:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        @property
        def signal(self):
            if _lines(eval_csv) < rows:
                return None
            if raise_ is not None:
                raise raise_
            return signal.SIGTERM

    return Stop


@pytest.mark.parametrize("rows, raise_, code, message, checkpoints", [
    (8, None, 128 + signal.SIGTERM, f"stopped by SIGTERM at step {2 * UPDATE} of program 1 of 2 (num_epochs=1): "
                                    "checkpoint written; continue with --resume --run-dir", [[2 * UPDATE]]),
    (16, None, 128 + signal.SIGTERM, "stopped by SIGTERM after program 1 of 2 (num_epochs=1) finished",
     [[2 * UPDATE, 4 * UPDATE]]),
    # Program 2 interrupted after its third evaluation: its rows at 3 updates are past its checkpoint (2 updates)
    (28, KeyboardInterrupt, 130, "interrupted; the rows and checkpoints written are kept",
     [[2 * UPDATE, 4 * UPDATE], [2 * UPDATE]]),
])
def test_a_stopped_sweep_resumes_to_the_uninterrupted_files(uninterrupted, tmp_path, monkeypatch, rows, raise_, code,
                                                            message, checkpoints):
    run_dir = tmp_path / "sweep"
    with monkeypatch.context() as patch:
        patch.setattr("experiments.train._GracefulStop", _stop_once(run_dir / "eval.csv", rows, raise_))
        stopped = _sweep_cli(*RESUMABLE, "--run-dir", str(run_dir))
    assert stopped.returncode == code, stopped.stderr[-3000:]
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], stopped.stderr[-3000:]
    # What had finished is on disk: the rows as they came, each program's checkpoints.
    assert _lines(run_dir / "eval.csv") == rows
    assert _lines(run_dir / "train.csv") == rows
    assert not (run_dir / "summary.csv").exists()
    for program, steps in enumerate(checkpoints):
        assert checkpoint_steps(run_dir / "checkpoints" / str(program)) == steps
    assert checkpoint_steps(run_dir / "checkpoints" / str(len(checkpoints))) == []
    assert json.loads((run_dir / "status.json").read_text())["finished"] is False

    resumed = _sweep_cli("--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("eval.csv", "train.csv", "summary.csv"):
        assert _csv(run_dir / name) == _csv(uninterrupted / name), name
    assert len(_csv(run_dir / "eval.csv")) == 2 * 4 * 4 and len(_csv(run_dir / "summary.csv")) == 4
    config = json.loads((run_dir / "config.json").read_text())
    assert len(config["commands"]) == 2 and config["command"] == config["commands"][0]["command"]   # start, resume
    assert json.loads((run_dir / "status.json").read_text())["finished"] is True


def test_resuming_a_finished_sweep_changes_nothing(uninterrupted, tmp_path):
    run_dir = tmp_path / "sweep"
    shutil.copytree(uninterrupted, run_dir)
    result = _sweep_cli("--run-dir", str(run_dir), "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("eval.csv", "train.csv", "summary.csv"):
        assert (run_dir / name).read_text() == (uninterrupted / name).read_text(), name


@pytest.mark.parametrize("flags, message", [
    (["--entropy-cost", "0.5"], "--resume with a different configuration than the saved sweep: --entropy-cost"),
    (["--eval-every", str(2 * UPDATE)], f"--eval-every {UPDATE} -> {2 * UPDATE}"),
    (["--sweep", "learning_rate=3e-4"], "--resume with another grid than the saved sweep's (--sweep "
                                        "learning_rate=0.0003,0.001 --sweep num_epochs=1,2)"),
    (["--total-steps", str(2 * UPDATE)], f"--total-steps {2 * UPDATE} is below the saved sweep's {4 * UPDATE}"),
    (["--resume-from", str(UPDATE)], "--resume-from is for runs"),
])
def test_a_resume_that_is_not_the_same_sweep_is_refused_and_changes_nothing(uninterrupted, tmp_path, flags, message):
    run_dir = tmp_path / "sweep"
    shutil.copytree(uninterrupted, run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "run.lock"}
    result = _sweep_cli("--run-dir", str(run_dir), "--resume", *flags)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "run.lock"} == before


def test_resume_of_a_directory_that_holds_no_sweep_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text(json.dumps({"schema": "ctrlrl.run/1", "kind": "run", "run_id": "x",
                                                               "finished": True, "step": 0}))
    (tmp_path / "run" / "config.json").write_text(json.dumps({"run": {"agent": "ppo"}, "agent_config": {}}))
    result = _sweep_cli("--run-dir", str(tmp_path / "run"), "--resume")
    assert result.returncode == 2
    assert "holds no sweep (no status.json of a sweep); start one without --resume" in result.stderr
    missing = _sweep_cli(*RESUMABLE, "--run-dir", str(tmp_path / "nothing"), "--resume")
    assert missing.returncode == 2 and "holds no sweep" in missing.stderr
    assert not (tmp_path / "nothing").exists()
