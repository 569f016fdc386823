"""A careless or hostile user's inputs and faults: nothing that is not ours is deleted, one process per run
directory, signals and full disks keep what was finished, memory is checked first, OS errors are one line.

The runs here are a tiny PPO on jax:PointMass (TINY_PPO: 16 envs, 8-wide networks, one epoch), so that a
training run compiles and trains in seconds.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cli_utils import ROOT, TIMING_COLUMNS, TINY_MRQ, run_inprocess, run_main

TINY_PPO = ["--agent", "ppo", "--env", "jax:PointMass", "--num-envs", "16", "--batch-size", "16",
            "--num-minibatches", "1", "--unroll-length", "10", "--num-epochs", "1", "--policy-hidden", "8", "8",
            "--value-hidden", "8", "8", "--eval-episodes", "2", "--no-progress"]
# 12 chunks of 160 steps (one update each), an evaluation and checkpoint every 4 chunks.
SCHEDULE = ["--total-steps", "1920", "--log-every", "160", "--eval-every", "640"]


def _error_line(result) -> str:
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _rows(path, drop=TIMING_COLUMNS):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def _start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "run.py"), *args], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run that the killed, stopped and resumed runs must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_inprocess(*TINY_PPO, *SCHEDULE, "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# ------------------------------------------------------------------------------------------------
# 1. --overwrite deletes only what a run wrote
# ------------------------------------------------------------------------------------------------


def test_overwrite_refuses_a_directory_with_an_unrelated_config_json(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('app')")
    (tmp_path / "config.json").write_text('{"name": "app"}')
    result = run_inprocess(*TINY_PPO, "--overwrite", "--run-dir", str(tmp_path))
    assert result.returncode == 2
    assert "--overwrite deletes only run directories" in _error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "src"]      # no lock file left either
    assert (tmp_path / "src" / "main.py").read_text() == "print('app')"


def test_sweep_overwrite_refuses_a_directory_that_is_not_a_sweep(tmp_path):
    from experiments import sweep

    (tmp_path / "thesis").mkdir()
    (tmp_path / "precious.txt").write_text("hi")
    result = run_main(sweep.main, *TINY_PPO, "--sweep", "learning_rate=3e-4", "--overwrite", "--run-dir",
                      str(tmp_path))
    assert result.returncode == 2
    assert "--overwrite deletes only run and sweep directories" in _error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "thesis"]


def test_a_directory_of_other_files_is_not_called_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_inprocess(*TINY_PPO, "--run-dir", str(tmp_path))
    assert result.returncode == 2
    assert "holds files that are not a run (notes.txt): choose a new or empty --run-dir" in _error_line(result)


def test_overwrite_of_a_run_keeps_a_users_file_beside_it(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "notes.txt").write_text("mine")
    result = run_inprocess(*TINY_PPO, "--total-steps", "320", "--log-every", "160", "--eval-every", "320",
                           "--overwrite", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "notes.txt").read_text() == "mine"
    assert [r["step"] for r in _rows(run_dir / "eval.csv")] == ["320"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["schema"] == "ctrlrl.run/1" and status["finished"] and len(status["run_id"]) == 32


# ------------------------------------------------------------------------------------------------
# 2. One process per run directory
# ------------------------------------------------------------------------------------------------


def test_second_process_is_refused_and_kill_9_leaves_no_stale_lock(reference, tmp_path):
    run_dir = tmp_path / "run"
    holder = _start(*TINY_PPO, *SCHEDULE, "--run-dir", str(run_dir))
    _wait_for(lambda: (run_dir / "checkpoints" / "640").exists(), holder)
    holder.send_signal(signal.SIGSTOP)              # frozen while holding the lock
    try:
        second = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), *TINY_PPO, *SCHEDULE,
                                 "--run-dir", str(run_dir)], capture_output=True, text=True, cwd=ROOT)
        assert second.returncode == 2
        assert f"is in use by another run (pid {holder.pid} on" in _error_line(second)
        resumed_early = run_inprocess("--run-dir", str(run_dir), "--resume")        # a requeued job
        assert resumed_early.returncode == 2
        assert f"pid {holder.pid}" in _error_line(resumed_early)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert '"finished": false' in (run_dir / "status.json").read_text()
    resumed = run_inprocess("--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(run_dir / "eval.csv") == _rows(reference / "eval.csv")
    assert _rows(run_dir / "train.csv") == _rows(reference / "train.csv")


# ------------------------------------------------------------------------------------------------
# 8. Signals: finish the chunk, checkpoint, say so, exit 128 + signal; resume exactly
# ------------------------------------------------------------------------------------------------


def test_signal_writes_a_checkpoint_and_resume_is_exact(reference, tmp_path, sig=signal.SIGTERM):
    run_dir = tmp_path / "run"
    process = _start(*TINY_PPO, *SCHEDULE, "--run-dir", str(run_dir))
    # After the first evaluation (step 640), stop it in the middle of the next evaluation interval.
    _wait_for(lambda: (run_dir / "train.csv").exists() and len(_rows(run_dir / "train.csv")) >= 5, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + sig, stderr[-3000:]
    line = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in stderr and len(line) == 1, stderr[-3000:]
    stopped_at = int(line[0].split(" at step ")[1].split(":")[0])
    assert f"stopped by {signal.Signals(sig).name} at step {stopped_at}: checkpoint written" in line[0]
    # The checkpoint is at the step the run had reached: nothing trained was lost, nothing will be redone.
    checkpoints = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints[-1] == stopped_at == max(int(r["step"]) for r in _rows(run_dir / "train.csv"))
    assert 640 < stopped_at < 1920 and stopped_at % 160 == 0

    resumed = run_inprocess("--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(run_dir / "eval.csv") == _rows(reference / "eval.csv")
    assert _rows(run_dir / "train.csv") == _rows(reference / "train.csv")


def test_sigint_asks_once_and_stops_at_once_the_second_time(capsys):
    """Ctrl-C takes the same path as SIGTERM (the flag the loop checks after each chunk); a second Ctrl-C
    raises KeyboardInterrupt at once (run.py: one line, exit 130)."""
    from experiments.train import _GracefulStop

    with _GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler       # restored
    assert "SIGINT: stopping after the current chunk" in capsys.readouterr().err


def test_keyboard_interrupt_is_one_line(monkeypatch, tmp_path):
    from experiments import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "train", interrupted)
    result = run_inprocess(*TINY_PPO, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 130
    assert "interrupted; the last checkpoint written is kept" in _error_line(result)


# ------------------------------------------------------------------------------------------------
# 3. --resume with tuple flags at their saved values
# ------------------------------------------------------------------------------------------------


def test_resume_accepts_tuple_flags_at_their_saved_values(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    result = run_inprocess("--run-dir", str(run_dir), "--resume", "--value-hidden", "8", "8", "--policy-hidden",
                           "8", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "default has type list" not in result.stderr
    changed = run_inprocess("--run-dir", str(run_dir), "--resume", "--value-hidden", "8", "16")
    assert changed.returncode == 2
    assert "--value-hidden [8, 8] -> [8, 16]" in _error_line(changed)


def test_resume_of_sac_rebuilds_tuple_widths(tmp_path):
    """config.json stores tuples as lists; resuming SAC with --critic-hidden at its saved value must give the
    same Config (tuples), which the critic network accepts (a list + tuple once raised TypeError)."""
    import dataclasses

    from agents import sac
    from experiments.run import parse
    from experiments.train import RunArgs, _check_resume_config, as_saved

    config = sac.Config(critic_hidden=(16, 16), actor_hidden=(16, 16))
    saved = {"run": as_saved(dataclasses.asdict(RunArgs(agent="sac", env="jax:PointMass"))),
             "agent_config": as_saved(dataclasses.asdict(config))}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    args, resumed = parse(["--run-dir", str(tmp_path), "--resume", "--critic-hidden", "16", "16"])
    assert resumed == config and isinstance(resumed.actor_hidden, tuple)
    _check_resume_config(saved, args, resumed)
    sac.critic_network(resumed)                    # builds with tuples
    _, other = parse(["--run-dir", str(tmp_path), "--resume", "--critic-hidden", "32", "16"])
    with pytest.raises(ValueError, match=r"--critic-hidden \[16, 16\] -> \[32, 16\]"):
        _check_resume_config(saved, args, other)


def test_resume_with_fewer_total_steps_is_refused_and_changes_nothing(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = (run_dir / "config.json").read_text()
    result = run_inprocess("--run-dir", str(run_dir), "--resume", "--total-steps", "640")
    assert result.returncode == 2
    assert "--total-steps 640 is below the 1920 steps the run" in _error_line(result)
    assert (run_dir / "config.json").read_text() == before


def test_a_corrupt_latest_checkpoint_names_the_intact_one(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for path in (run_dir / "checkpoints" / "1920").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "meta" not in str(path):
            path.write_bytes(b"\0garbage" * 4)
    result = run_inprocess("--run-dir", str(run_dir), "--resume", "--total-steps", "2560")
    assert result.returncode == 2
    assert "checkpoint 1280 is intact: --resume --resume-from 1280 continues from it" in _error_line(result)
    again = run_inprocess("--run-dir", str(run_dir), "--resume", "--resume-from", "1280")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _rows(run_dir / "eval.csv") == _rows(reference / "eval.csv")


# ------------------------------------------------------------------------------------------------
# 5. Memory: refused before anything is written, and out-of-memory during training is one line
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--agent", "sac", "--env", "jax:PointMass", "--total-steps", "2000", "--num-seeds", "100000"],
     "--num-seeds"),
    (TINY_PPO + ["--unroll-length", "5000000"], "shorten --unroll-length"),
    (TINY_PPO + ["--num-envs", "1048576", "--num-minibatches", "65536", "--unroll-length", "1000"],
     "fits (52.9 KiB per env"),
    (["--agent", "mrq", "--env", "dmc:cartpole-balance", "--num-seeds", "20000", "--total-steps", "100000"],
     "--num-seeds"),
])
def test_a_run_that_cannot_fit_is_refused_before_writing(tmp_path, args, message):
    run_dir = tmp_path / "run"
    result = run_inprocess(*args, "--run-dir", str(run_dir))
    assert result.returncode == 2
    line = _error_line(result)
    assert "out of memory: the run needs about" in line and message in line
    assert not run_dir.exists()


def test_a_sweep_that_cannot_fit_is_refused(tmp_path):
    from experiments import sweep

    result = run_main(sweep.main, "--agent", "sac", "--env", "jax:PointMass", "--total-steps", "2000",
                      "--num-seeds", "50000", "--sweep", "tau=0.005,0.01", "--run-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "the run needs about" in _error_line(result)
    assert not (tmp_path / "s").exists()


def test_out_of_memory_while_training_is_one_line(tmp_path, monkeypatch):
    import jax

    from experiments.loops import on_policy

    def exhausted(self, state, start_step, num_steps):
        raise jax.errors.JaxRuntimeError("INTERNAL: Failed to allocate 2199023255552 bytes: Out of memory")

    monkeypatch.setattr(on_policy.OnPolicyLoop, "run", exhausted)
    result = run_inprocess(*TINY_PPO, *SCHEDULE, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "out of device memory while training: the run needs about" in _error_line(result)


# ------------------------------------------------------------------------------------------------
# 6. OS errors: one line, earlier checkpoints intact, resume exact
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, message", [
    ("afile", "is a file: choose a directory"),
    ("afile/run", "which is a file"),
    ("/proc/ctrlrl-no-such-place/run", "cannot create --run-dir /proc/ctrlrl-no-such-place/run"),
])
def test_a_run_dir_that_cannot_be_a_directory(tmp_path, path, message):
    (tmp_path / "afile").write_text("x")
    result = run_inprocess(*TINY_PPO, "--run-dir", str(tmp_path / path))
    assert result.returncode == 2
    assert message in _error_line(result)


def test_disk_full_keeps_the_last_checkpoint_and_resume_is_exact(reference, tmp_path, monkeypatch):
    import shutil

    from experiments import checkpoint

    real = shutil.disk_usage
    run_dir = tmp_path / "run"

    def filling_up(path):      # the disk fills after the checkpoint at step 1280
        usage = real(path)
        full = (run_dir / "checkpoints" / "1280").exists()
        return usage._replace(free=0) if full else usage

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", filling_up)
    result = run_inprocess(*TINY_PPO, *SCHEDULE, "--run-dir", str(run_dir))
    assert result.returncode == 1
    line = _error_line(result)
    assert "No space left on device" in line and "checkpoints/1920" in line
    assert "the last complete checkpoint (step 1280) is kept" in line
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)
    resumed = run_inprocess("--run-dir", str(run_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(run_dir / "eval.csv") == _rows(reference / "eval.csv")


# ------------------------------------------------------------------------------------------------
# Smaller things
# ------------------------------------------------------------------------------------------------


def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    import jax.numpy as jnp

    from agents import mrq
    from experiments.train import DivergenceError, RunArgs, train

    original = mrq.update_value_and_policy

    def poisoned(state, key):
        state, metrics = original(state, key)
        return state, {**metrics, "value/loss": jnp.nan * metrics["value/loss"]}

    monkeypatch.setattr(mrq, "update_value_and_policy", poisoned)
    config = mrq.Config(batch_size=16, zs_dim=16, za_dim=8, zsa_dim=16, enc_hidden_dim=16, value_hidden_dim=16,
                        policy_hidden_dim=16, random_steps=100, target_update_freq=20)
    args = RunArgs(env="jax:PointMass", total_steps=400, eval_every=400, log_every=200, eval_episodes=1,
                   run_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(DivergenceError, match=r"value/loss is nan at step 200.*; no checkpoint was written"):
        train(args, config)


@pytest.mark.parametrize("env_id, message", [
    ("jax:PointMass?switch=obs_permutation", "every (env steps per seed between switches) is required"),
    ("jax:PointMass?switch=obs_permutation&every=100&every=200", "option 'every' is given twice"),
    ("mjx:CartpoleBalance?switch=gravity&every=100&scale=inf", "scale must be a finite number > 0, got inf"),
    ("jax:PointMass?switch=obs_permutation&every=ten", "every must be an integer, got 'ten'"),
])
def test_nonstationary_options_are_checked(env_id, message):
    from envs import EnvOptionError, nonstationary

    # NonStationaryError is an EnvOptionError; a malformed query is an EnvOptionError of any id (envs/options.py).
    with pytest.raises(EnvOptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nonstationary.split_env_id(env_id)


def test_a_repeated_sweep_point_is_refused(tmp_path):
    from experiments import sweep

    result = run_main(sweep.main, *TINY_PPO, "--sweep", "learning_rate=3e-4,0.0003", "--run-dir", str(tmp_path / "s"))
    assert result.returncode == 2
    assert "0.0003 given more than once" in _error_line(result)


def test_dataset_actions_outside_the_bounds_are_reported(capsys):
    import numpy as np

    from replay import datasets

    n = 20
    arrays = {"observations": np.zeros((n, 3), np.float32), "actions": np.full((n, 1), 2.5, np.float32),
              "rewards": np.zeros(n, np.float32), "next_observations": np.zeros((n, 3), np.float32),
              "terminals": np.zeros(n, bool), "timeouts": np.r_[np.zeros(n - 1, bool), True]}
    datasets.from_arrays(arrays)
    err = capsys.readouterr().err
    assert "warning: <memory>: 20 of 20 actions lie outside [-1, 1] (largest |a| = 2.5)" in err


def test_tiny_mrq_flags_are_still_valid():
    """The reduced MR.Q of the CLI tests passes the declared ranges (it is used across the suite)."""
    from agents import mrq
    from experiments.run import parse

    _, config = parse(["--agent", "mrq", *TINY_MRQ])
    assert isinstance(config, mrq.Config)
    config.validate()


# ------------------------------------------------------------------------------------------------
# Logging, checkpoints and the progress bar (issue 23's rough edges)
# ------------------------------------------------------------------------------------------------


def _events(directory):
    """The events of a TensorBoard run directory, in file order (TFRecords of tensorboardX's Event protos)."""
    import struct

    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            events.append(event)
            i += 12 + length + 4
    return events


def _scalars(directory, tag):
    return {e.step: v.simple_value for e in _events(directory) for v in e.summary.value if v.tag == tag}


def test_run_records_time_versions_and_per_seed_scalars(reference):
    with open(reference / "train.csv") as f:
        train = list(csv.DictReader(f))
    with open(reference / "eval.csv") as f:
        evals = list(csv.DictReader(f))
    # The first chunk compiled (this loop reports progress only at chunk ends here): its sps is left empty.
    assert train[0]["training/sps"] == "" and float(train[1]["training/sps"]) > 0
    for rows in (train, evals):
        clock = [float(r["wall_clock_s"]) for r in rows]
        assert clock == sorted(clock) and clock[0] > 0
    config = json.loads((reference / "config.json").read_text())
    for package in ("jax", "flax", "mujoco", "gymnasium", "dm_control", "playground"):
        assert config["versions"][package], package
    assert config["git"] is None or (len(config["git"]["commit"]) == 40 and isinstance(config["git"]["dirty"], bool))
    assert [c["from_step"] for c in config["commands"]] == [0] and config["command"] == config["commands"][0]["command"]
    # TensorBoard: the mean over seeds and each seed under the same tags, as runs of one chart.
    assert sorted(p.name for p in (reference / "tensorboard").iterdir()) == ["mean", "seed_0"]
    per_seed = _scalars(reference / "tensorboard" / "seed_0", "eval/episode_reward")
    assert per_seed == pytest.approx({int(r["step"]): float(r["return"]) for r in evals}, rel=1e-4)
    assert _scalars(reference / "tensorboard" / "mean", "eval/episode_reward").keys() == per_seed.keys()


class _FakeWandb:
    """Stands in for the wandb package: records what a run passes to init and log."""

    def __init__(self):
        self.inits, self.logged = [], []

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        pass


def _exports(run_dir) -> dict[int, int]:
    """{checkpoint step: the step its policy export holds} for every export under checkpoints/ (and no temporary
    file left there)."""
    from experiments.policy import read_export

    assert not list((run_dir / "checkpoints").rglob("*.tmp"))
    exports = (run_dir / "checkpoints").glob("*/policy.msgpack")
    return {int(path.parent.name): read_export(path).step for path in exports}


def test_resume_writes_the_export_a_killed_run_had_not_written(reference, tmp_path):
    """A run killed between its checkpoint and the export beside it: --resume writes that export first (the same
    bytes as the one written in the run), so that every checkpoint has one."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    export = run_dir / "checkpoints" / "1920" / "policy.msgpack"
    written = export.read_bytes()
    export.unlink()
    result = run_inprocess("--run-dir", str(run_dir), "--resume", "--total-steps", "2560")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _exports(run_dir) == {1920: 1920, 2560: 2560}
    assert export.read_bytes() == written


def test_checkpoint_interval_retention_wandb_id_and_resume_history(reference, tmp_path, monkeypatch):
    """--checkpoint-every puts checkpoints at the first chunk end past each multiple (480 -> 480, 960, 1440, and
    the final 1920), --keep-checkpoints keeps the latest; where they lie changes no result, and a resume from one
    that is not an evaluation step (1440) is exact. The resume keeps W&B's run id, purges TensorBoard's events
    after its step, and adds its command to config.json's history."""
    wandb = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    run_dir = tmp_path / "run"
    result = run_inprocess(*TINY_PPO, *SCHEDULE, "--checkpoint-every", "480", "--keep-checkpoints", "3", "--wandb",
                           "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [960, 1440, 1920]
    # Each kept checkpoint has its policy export (also 1440, not an evaluation step); the deleted ones took theirs.
    assert _exports(run_dir) == {960: 960, 1440: 1440, 1920: 1920}
    assert _rows(run_dir / "eval.csv") == _rows(reference / "eval.csv")
    run_id = json.loads((run_dir / "status.json").read_text())["run_id"]
    assert wandb.inits[0]["id"] == run_id and wandb.inits[0]["resume"] == "allow"
    assert any("seed_0/eval/episode_reward" in values and "eval/episode_reward" in values
               for _, values in wandb.logged)

    resumed = run_inprocess("--run-dir", str(run_dir), "--resume", "--resume-from", "1440", "--keep-checkpoints",
                            "1", "--wandb")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _rows(run_dir / "eval.csv") == _rows(reference / "eval.csv")
    assert _rows(run_dir / "train.csv") == _rows(reference / "train.csv")
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [1920]
    assert _exports(run_dir) == {1920: 1920}
    assert wandb.inits[1]["id"] == run_id
    # TensorBoard drops the first run's events after 1440 when it reads the resumed writer's start.
    starts = [e.step for e in _events(run_dir / "tensorboard" / "mean") if e.WhichOneof("what") == "session_log"]
    assert starts == [1441]
    config = json.loads((run_dir / "config.json").read_text())
    assert [c["from_step"] for c in config["commands"]] == [0, 1440]
    assert config["command"] == config["commands"][0]["command"]
    with open(run_dir / "eval.csv") as f:     # the clock goes on from the checkpoint's
        clock = [float(r["wall_clock_s"]) for r in csv.DictReader(f)]
    assert clock == sorted(clock)


def test_ppo_progress_moves_per_update_up_to_the_steps_it_trains(tmp_path, monkeypatch):
    """The bar's total is --total-steps rounded up to whole updates (600 -> 640), and PPO reports each finished
    update inside a chunk (one chunk of four updates here)."""
    from experiments import progress

    totals, reports = [], []
    original_init, original_advance = progress.ProgressBar.__init__, progress.ProgressBar.advance

    def init(self, total, *args, **kwargs):
        totals.append(total)
        original_init(self, total, *args, **kwargs)

    def advance(self, step):
        reports.append(step)
        original_advance(self, step)

    monkeypatch.setattr(progress.ProgressBar, "__init__", init)
    monkeypatch.setattr(progress.ProgressBar, "advance", advance)
    result = run_inprocess(*TINY_PPO, "--total-steps", "600", "--log-every", "640", "--eval-every", "640",
                           "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert totals == [640] and reports == [160, 320, 480, 640]


def test_eta_comes_from_the_training_phase_alone():
    """A warm-up at 1000 steps/s and training at 10 steps/s, with a compiling first interval: the ETA uses each
    phase's own rate; the first interval, one across the warm-up's end and a skipped one count for neither."""
    from experiments.progress import ProgressBar

    now = [0.0]
    bar = ProgressBar(total=10_000, initial=0, warmup=1000, enabled=False, clock=lambda: now[0])

    def at(step, seconds):
        now[0] += seconds
        bar.advance(step)

    at(100, 60.0)                        # compilation: the first report only starts the clock
    assert bar.eta() == "?"
    at(600, 0.5)                         # warm-up: 1000 steps/s
    assert bar.rate("warmup") == pytest.approx(1000) and bar.eta() == "?"      # training not measured yet
    at(1100, 7.0)                        # across the warm-up's end: neither phase
    at(1200, 10.0)                       # training: 10 steps/s
    assert bar.rate("training") == pytest.approx(10) and bar.remaining_seconds() == pytest.approx(880)
    bar.skip_interval()
    at(1300, 500.0)                      # e.g. the first evaluation, which compiles
    at(1400, 10.0)
    assert bar.rate("training") == pytest.approx(10) and bar.eta() == "14:20"      # 8600 steps at 10/s
    bar.close()
