"""The training loops: resume equals an uninterrupted run, vmapped seeds equal separate runs, NaN stops a run."""

import csv
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.cli_utils import ROOT, TIMING_COLUMNS, TINY_MRQ, run_cli


def _rows(path, drop=TIMING_COLUMNS):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


@pytest.mark.long   # kill -9 and exact resume are also checked in test_robustness.py (signals, disk full)
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    """Kill a dm_control run right after its first checkpoint, resume it: same eval.csv and train.csv."""
    args = ["--env", "dmc:cartpole-balance", "--num-seeds", "2", "--total-steps", "900", "--eval-every", "300",
            "--log-every", "150", "--eval-episodes", "2", *TINY_MRQ]
    reference = tmp_path / "uninterrupted"
    assert run_cli(*args, "--run-dir", str(reference)).returncode == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "run.py"), "--no-progress", *args,
                                "--run-dir", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=ROOT)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "300").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoints" / "300").exists()
    assert '"finished": false' in (killed / "status.json").read_text()   # it really was cut short

    resumed = run_cli("--run-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(killed / "eval.csv") == _rows(reference / "eval.csv")
    assert len(_rows(reference / "eval.csv")) == 2 * 3
    assert _rows(killed / "train.csv") == _rows(reference / "train.csv")


def _eval_returns(run_dir):
    return {(int(r["step"]), int(r["seed"])): float(r["return"]) for r in _rows(run_dir / "eval.csv")}


TINY_TD3 = ["--agent", "td3", "--learning-starts", "100", "--batch-size", "16", "--critic-hidden", "16", "16",
            "--actor-hidden", "16", "16"]


@pytest.mark.parametrize("agent_flags", [
    pytest.param(TINY_TD3, id="td3"),
    pytest.param([*TINY_TD3, "--num-envs", "4"], id="td3-4-envs-per-seed"),
    pytest.param(TINY_MRQ, id="mrq", marks=pytest.mark.long),    # MR.Q compiles for minutes; the loop is the same
])
def test_vmapped_seeds_equal_separate_runs_device_loop(tmp_path, agent_flags):
    """Seed i of one vmapped run == a run with --seed (base + i) alone (same keys, same env seeds)."""
    args = ["--env", "jax:PointMass", "--total-steps", "400", "--eval-every", "200", "--log-every", "200",
            "--eval-episodes", "2", *agent_flags]
    together = run_cli(*args, "--seed", "3", "--num-seeds", "2", "--run-dir", str(tmp_path / "together"))
    assert together.returncode == 0, together.stderr[-3000:]
    joint = _eval_returns(tmp_path / "together")
    # The second seed alone (seed 4): its keys and env seeds must be offset exactly as in the vmapped run.
    # (Seed 0 of the vmapped run is the plain single-seed case, checked the same way on the host loop below.)
    alone = run_cli(*args, "--seed", "4", "--num-seeds", "1", "--run-dir", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    single = _eval_returns(tmp_path / "alone")
    for step in (200, 400):
        # equal up to float reassociation in batched matmuls (observed: 3e-4 relative after 300 updates)
        np.testing.assert_allclose(joint[(step, 1)], single[(step, 0)], rtol=1e-3)
    assert joint[(400, 0)] != joint[(400, 1)]     # the seeds really differ


def test_resume_with_four_envs_per_seed_equals_uninterrupted_run(tmp_path):
    """Tiny TD3 with 4 envs per seed (--num-envs 4: 4 replay streams, 4 env states per seed): a copy of a finished
    run resumed from its checkpoint at env step 400 rewrites exactly the rows the run wrote after it."""
    import shutil

    args = ["--env", "jax:PointMass", "--num-seeds", "2", "--num-envs", "4", "--total-steps", "800",
            "--eval-every", "400", "--log-every", "200", "--eval-episodes", "2", *TINY_TD3]
    reference = tmp_path / "uninterrupted"
    result = run_cli(*args, "--run-dir", str(reference))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    result = run_cli("--run-dir", str(resumed), "--resume", "--resume-from", "400")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_rows(reference / "eval.csv")) == 2 * 2 and len(_rows(reference / "train.csv")) == 2 * 4
    assert _rows(resumed / "eval.csv") == _rows(reference / "eval.csv")
    assert _rows(resumed / "train.csv") == _rows(reference / "train.csv")
    steps = sorted({int(r["step"]) for r in _rows(resumed / "train.csv")})
    assert steps == [200, 400, 600, 800]


def _tiny_host_agent(name):
    """(agent module, config, the policy parameters of its state) for the host-loop seed test."""
    from agents import mrq, td3

    if name == "td3":
        config = td3.Config(batch_size=32, learning_starts=100, critic_hidden=(32, 32), actor_hidden=(32, 32))
        return td3, config, lambda agent: agent.actor.params
    config = mrq.Config(batch_size=32, zs_dim=32, za_dim=16, zsa_dim=32, enc_hidden_dim=32, value_hidden_dim=32,
                        policy_hidden_dim=32, random_steps=100, target_update_freq=50)
    return mrq, config, lambda agent: agent.policy.params


@pytest.mark.parametrize("name", ["td3", pytest.param("mrq", marks=pytest.mark.long)])   # MR.Q: minutes to compile
def test_vmapped_seeds_equal_separate_runs_host_loop(name):
    """Same on dm_control: after 100 random steps and 150 updates, the parameters of a seed trained
    alongside another equal those of the seed trained alone (up to float reassociation in batched matmuls;
    returns are not compared because cartpole amplifies 1e-7 action differences)."""
    import jax

    from experiments.loops.off_policy import HostLoop

    agent_module, config, policy_params = _tiny_host_agent(name)

    def train(seed, num_seeds):
        loop = HostLoop(agent_module, config, "dmc:cartpole-balance", num_seeds, seed, replay_transitions=500)
        state, _ = loop.run(loop.init(), 0, 250)
        loop.close()
        return state["agent"]

    joint = train(seed=5, num_seeds=2)
    for i in range(2):
        alone = train(seed=5 + i, num_seeds=1)
        for a, b in zip(jax.tree.leaves(policy_params(joint)), jax.tree.leaves(policy_params(alone))):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b[0]), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(np.asarray(joint.replay.obs[i]), np.asarray(alone.replay.obs[0]), atol=1e-3)
    first = jax.tree.leaves(policy_params(joint))[0]
    assert not np.allclose(first[0], first[1])


def test_nan_in_a_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """A tiny TD3 (it compiles in seconds) whose critic loss turns NaN after step 250: the run stops at the next
    log (300) naming the metric, and the checkpoint at 200 stays."""
    import jax.numpy as jnp

    from agents import td3
    from experiments.train import DivergenceError, RunArgs, train

    original = td3.update_once

    def poisoned(state, key, index):
        state, metrics = original(state, key, index)
        broken = jnp.where(state.env_steps > 250, jnp.nan, metrics["critic/loss"])
        return state, {**metrics, "critic/loss": broken}

    monkeypatch.setattr(td3, "update_once", poisoned)
    config = td3.Config(batch_size=16, learning_starts=100, critic_hidden=(16, 16), actor_hidden=(16, 16))
    args = RunArgs(agent="td3", env="jax:PointMass", total_steps=400, eval_every=200, log_every=100,
                   eval_episodes=1, run_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(DivergenceError, match=r"critic/loss is nan at step 300"):
        train(args, config)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints == ["200"]


def test_checkpoint_round_trip_keeps_zero_size_arrays(tmp_path):
    """MJX states hold zero-size arrays, which orbax refuses to save; the checkpointer stores placeholders."""
    import jax.numpy as jnp

    from experiments.checkpoint import Checkpointer

    tree = {"agent": {"w": jnp.arange(3.0), "act": jnp.zeros((2, 0))}, "env": {"n": jnp.ones((), jnp.int32)}}
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(7, tree, {"step": 7})
    restored, meta, step = checkpointer.restore(tree)
    checkpointer.close()
    assert step == 7 and meta == {"step": 7}
    assert restored["agent"]["act"].shape == (2, 0)
    np.testing.assert_array_equal(restored["agent"]["w"], [0.0, 1.0, 2.0])
