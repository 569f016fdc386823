"""Bad input to run.py: a one-line error naming the problem and the choices, exit 2, nothing written."""

import csv
import json
import os
import shutil

import pytest

from experiments import evaluate, run
from experiments.train import _check_resume_config, read_saved_run
from tests.cli_utils import TINY_MRQ, assert_evaluate_reproduces, run_cli, run_inprocess, run_main


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.stderr[-2000:]
    return lines[-1]


@pytest.mark.parametrize("args, expected", [
    (["--agent", "dqn"], "unknown agent 'dqn'; valid agents: bc, gtr, least, mrq, mrq_multitask, mrq_sigreg, neubay, ppo, ravl, regrama, sac, sac_sigreg, sigreg, td3"),
    (["--env", "dmc:cartpole-balancee"], "dmc:cartpole-swingup"),
    (["--env", "atari:Pong"], "dmc:<domain>-<task>"),
    (["--env", "mjx:NotAnEnv"], "CartpoleBalance"),
    (["--total-steps", "-5"], "--total-steps must be >= 1, got -5"),
    (["--num-seeds", "0"], "--num-seeds must be >= 1, got 0"),
    (["--discount", "1.5"], "--discount must be in [0, 1], got 1.5"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--resume"], "--resume needs --run-dir"),
    (["--agent", "sac", "--env", "jax:PointMass", "--total-steps", "3000"],
     "--total-steps 3000 ends within sac's random warm-up (--learning-starts 5000): its first update follows "
     "step 5000, so nothing would be trained; pass --total-steps above 5000 or a smaller --learning-starts"),
])
def test_bad_input_fails_cleanly(tmp_path, args, expected):
    run_dir = tmp_path / "run"
    result = run_inprocess(*args, "--run-dir", str(run_dir)) if "--resume" not in args else run_inprocess(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in _error_line(result)
    assert not run_dir.exists()


def test_wrong_type_is_rejected_by_the_parser(tmp_path):
    result = run_inprocess("--batch-size", "many", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "--batch-size" in result.stderr and "many" in result.stderr
    assert not (tmp_path / "run").exists()


def test_help_lists_agent_hyperparameters():
    result = run_inprocess("--agent", "mrq", "--help")
    assert result.returncode == 0
    for flag in ("--enc-lr", "--target-update-freq", "--num-seeds", "--eval-episodes", "--resume"):
        assert flag in result.stdout


def test_help_without_an_agent_lists_the_agents():
    import agents

    result = run_inprocess("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())           # the help's lines are wrapped to the terminal
    assert "--agent{" + ",".join(agents.names()) + "}" in "".join(result.stdout.split())     # its choices
    assert "`--agent NAME --help` lists NAME's hyperparameters" in text
    assert "--total-steps" in text and "--enc-lr" not in text          # the run's flags, no agent's


def test_sweep_help_names_the_agent_the_preset_and_the_sweep_flag():
    from experiments import sweep
    from tests.cli_utils import run_main

    result = run_main(sweep.main, "--agent", "ppo", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Sweep ppo (agents.ppo)." in text and "Train mrq" not in text
    assert "The defaults shown are those of --preset cpu, the default for ppo on this cpu backend" in text
    assert "--sweep STR A field of the agent's config and its values, NAME=V1,V2,..." in text
    assert "(default: mjx:CartpoleBalance)" in text      # PPO's default env is a JAX env


def test_default_env_is_the_agents():
    """PPO (and GTR, SIGReg) train on JAX envs only: their default env is one (RUN_DEFAULTS); MR.Q's is dmc."""
    assert run.parse(["--agent", "ppo"])[0].env == "mjx:CartpoleBalance"
    assert run.parse(["--agent", "gtr"])[0].env == "mjx:CartpoleBalance"
    assert run.parse(["--agent", "mrq"])[0].env == "dmc"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("--env", "dmc:cartpole-balance", "--total-steps", "200", "--eval-every", "100",
                     "--eval-episodes", "1", "--log-every", "100", "--run-dir", str(run_dir), *TINY_MRQ)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_finished_run_outputs(finished_run):
    status = json.loads((finished_run / "status.json").read_text())
    assert (status["finished"], status["step"], status["schema"], status["kind"]) == (True, 200, "ctrlrl.run/1", "run")
    config = json.loads((finished_run / "config.json").read_text())
    assert config["agent_config"]["batch_size"] == 32 and config["run"]["env"] == "dmc:cartpole-balance"
    # JAX's settings as the run used them: full float32 matmuls, the compile cache tests/conftest.py points to.
    assert config["jax"] == {"matmul_precision": "float32", "compile_cache_dir": os.environ["CTRLRL_CACHE_DIR"]}
    rows = (finished_run / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,seed,return") and len(rows) == 3
    assert (finished_run / "train.csv").exists() and any((finished_run / "tensorboard").iterdir())
    with open(finished_run / "train.csv") as f:
        train = list(csv.DictReader(f))
    # Before the first update (--random-steps 100) the agent's metrics do not exist: empty, not 0.
    assert [(r["step"], r["value/loss"]) for r in train][0] == ("100", "")
    assert float(train[1]["value/loss"]) > 0 and train[0]["episodes"] == "0"
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir() if p.name.isdigit()) == ["100", "200"]


def test_evaluate_reproduces_the_runs_eval_rows_and_draws_it_on_dmc_and_mjx(finished_run, tmp_path):
    """experiments/evaluate.py on MR.Q's export gives eval.csv's rows of both checkpoints; --video draws its
    episode on dm_control (500 agent steps, one frame each) and on MJX (mjx:CartpoleBalance has dm_control
    cartpole's widths; 1000 steps)."""
    from tests.test_evaluate import VIDEO, frames

    for step in (100, 200):
        assert_evaluate_reproduces(finished_run, tmp_path / f"{step}.csv", step)
    assert_evaluate_reproduces(finished_run, tmp_path / "video.csv", 200, "--video", *VIDEO, "--video-dir",
                               str(tmp_path / "dmc"))
    assert frames(tmp_path / "dmc" / "seed0_episode0.mp4") == (500, (48, 64, 3))
    result = run_main(evaluate.main, "--run-dir", str(finished_run), "--env", "mjx:CartpoleBalance", "--video", *VIDEO,
                      "--video-dir", str(tmp_path / "mjx"), "--out", str(tmp_path / "mjx.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert frames(tmp_path / "mjx" / "seed0_episode0.mp4") == (1000, (48, 64, 3))
    rows = json.loads((tmp_path / "mjx.json").read_text())["rows"]
    assert [(r["env"], r["policy"], r["step"]) for r in rows] == [("mjx:CartpoleBalance", "deterministic", 200)]


def test_refuses_to_overwrite_a_finished_run(finished_run):
    before = (finished_run / "eval.csv").read_text()
    result = run_inprocess("--env", "dmc:cartpole-balance", "--total-steps", "200", "--run-dir", str(finished_run),
                           *TINY_MRQ)
    assert result.returncode == 2
    assert "already holds a finished run; pass --resume" in _error_line(result)
    assert (finished_run / "eval.csv").read_text() == before


def test_resume_with_another_config_is_refused(finished_run):
    result = run_inprocess("--total-steps", "300", "--run-dir", str(finished_run), "--resume", "--random-steps", "7")
    assert result.returncode == 2
    assert "--random-steps 100 -> 7" in _error_line(result)


def test_resume_keeps_the_matmul_precision_and_may_change_the_compile_cache(finished_run, tmp_path):
    result = run_inprocess("--total-steps", "300", "--run-dir", str(finished_run), "--resume",
                           "--matmul-precision", "bfloat16")
    assert result.returncode == 2
    assert "--matmul-precision 'float32' -> 'bfloat16'" in _error_line(result)
    args, config = run.parse(["--run-dir", str(finished_run), "--resume", "--compile-cache-dir", str(tmp_path)])
    assert (args.matmul_precision, args.compile_cache_dir) == ("float32", str(tmp_path))
    _check_resume_config(read_saved_run(finished_run), args, config)          # no refusal
    # A run saved before --matmul-precision existed ran at JAX's default precision, and resumes at it (and one
    # saved before --env-module imported no module).
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    saved = json.loads((finished_run / "config.json").read_text())
    del saved["run"]["matmul_precision"], saved["run"]["env_module"]
    (legacy / "config.json").write_text(json.dumps(saved))
    args, config = run.parse(["--run-dir", str(legacy), "--resume"])
    assert args.matmul_precision == "default"
    _check_resume_config(read_saved_run(legacy), args, config)


def test_resume_without_checkpoint(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(finished_run / "config.json", run_dir / "config.json")
    result = run_inprocess("--run-dir", str(run_dir), "--resume")
    assert result.returncode == 2
    assert "no checkpoint" in _error_line(result)


def test_resume_with_a_corrupt_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{not json")
    result = run_inprocess("--run-dir", str(run_dir), "--resume")
    assert result.returncode == 2
    assert "config.json is corrupt" in _error_line(result)


def test_resume_of_an_empty_directory(tmp_path):
    result = run_inprocess("--run-dir", str(tmp_path), "--resume")
    assert result.returncode == 2
    assert "holds no run" in _error_line(result)


def test_resume_from_a_corrupt_checkpoint(finished_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    for path in (run_dir / "checkpoints" / "200").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "meta" not in str(path):
            path.write_bytes(b"\0garbage" * 4)
    result = run_inprocess("--total-steps", "300", "--run-dir", str(run_dir), "--resume")
    assert result.returncode == 2
    assert "is corrupt or does not match this run" in _error_line(result)
    assert (run_dir / "eval.csv").read_text() == (finished_run / "eval.csv").read_text()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    result = run_inprocess("--run-dir", str(tmp_path), "--overwrite")
    assert result.returncode == 2
    assert "--overwrite deletes only run directories" in _error_line(result)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_warmup_warnings_name_the_numbers(capsys):
    """Every off-policy agent declares its warm-up in its record; a run of exactly the warm-up, or one that trains
    for fewer steps than it acted at random, is warned about (a shorter one is refused, above)."""
    from types import SimpleNamespace

    import agents
    from agents import mrq, mrq_multitask, sac
    from experiments.train import RunError, check_warmup

    for name in agents.names():
        agent = agents.get(name)
        if isinstance(agent, agents.OffPolicyAgent):
            assert agent.warmup is not None and agent.warmup_flag in agent.Config.__dataclass_fields__, name
    check_warmup(agents.get("sac"), sac.Config(), None, 5000)
    assert "sac trains nothing in this run: its 5000 steps are all random warm-up (--learning-starts 5000)" in \
        capsys.readouterr().err
    check_warmup(agents.get("mrq"), mrq.Config(), None, 15_000)
    assert ("mrq trains for only 5000 of its 15000 steps per seed; the first 10000 act at random "
            "(--random-steps 10000)") in capsys.readouterr().err
    check_warmup(agents.get("mrq"), mrq.Config(), None, 20_000)
    assert capsys.readouterr().err == ""
    spec = SimpleNamespace(max_episode_steps=100)        # seeding episodes count whole episodes of every task
    with pytest.raises(RunError, match=r"\(--seeding-episodes 5 = 500 steps\)"):
        check_warmup(agents.get("mrq_multitask"), mrq_multitask.Config(), spec, 499)


def test_ppo_evaluates_about_20_times_per_run_unless_told():
    """PPO's RUN_DEFAULTS evaluate and log every 1M steps: a shorter run shrinks both to about 1/20 of the run
    in whole updates (the cpu preset's update is 30720 steps); a flag given is kept, and so is the 60M default."""
    args, _ = run.parse(["--agent", "ppo", "--total-steps", "200000"])
    assert (args.eval_every, args.log_every) == (30720, 30720)
    args, _ = run.parse(["--agent", "ppo", "--total-steps", "3000000", "--eval-every", "500000"])
    assert (args.eval_every, args.log_every) == (500000, 153600)
    args, _ = run.parse(["--agent", "ppo"])
    assert (args.eval_every, args.log_every) == (1_000_000, 1_000_000)
    args, _ = run.parse(["--agent", "sac", "--total-steps", "20000"])        # only agents that declare it
    assert (args.eval_every, args.log_every) == (5000, 1000)
