"""experiments/jax_setup.py: the compile cache's directory and flags, the matmul precision, and that a second
identical run loads every program from the cache instead of compiling it."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import agents
from experiments import bench, collect, compare, jax_setup, run, sweep
from experiments.jax_setup import JaxFlags, JaxSetupError
from tests.cli_utils import run_main

# A tiny PPO (tests/test_robustness.py's TINY_PPO, one update): its cold start is mostly compilation.
TINY_PPO_RUN = ["--agent", "ppo", "--env", "jax:PointMass", "--num-envs", "16", "--batch-size", "16",
                "--num-minibatches", "1", "--unroll-length", "10", "--num-epochs", "1", "--policy-hidden", "8", "8",
                "--value-hidden", "8", "8", "--total-steps", "160", "--eval-every", "160", "--log-every", "160",
                "--eval-episodes", "1"]


@pytest.fixture
def restore_jax_settings():
    """The tests below change this process's JAX settings; put back the session's (conftest.py's cache)."""
    yield
    jax_setup.configure_jax(JaxFlags())


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_default_cache_dir_follows_the_environment(tmp_path):
    assert jax_setup.default_cache_dir({"CTRLRL_CACHE_DIR": str(tmp_path / "mine")}) == tmp_path / "mine"
    assert jax_setup.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ctrlrl" / "jax"
    assert jax_setup.default_cache_dir({}) == Path("~/.cache/ctrlrl/jax").expanduser()


def test_flags_parse_into_run_args():
    args, _ = run.parse(["--agent", "sac"])
    assert (args.compile_cache, args.compile_cache_dir, args.matmul_precision) == (True, None, "float32")
    args, _ = run.parse(["--agent", "sac", "--no-compile-cache", "--compile-cache-dir", "/somewhere",
                         "--matmul-precision", "tensorfloat32"])
    assert (args.compile_cache, args.compile_cache_dir, args.matmul_precision) == (False, "/somewhere",
                                                                                  "tensorfloat32")


def test_configure_jax_sets_the_cache_and_precision_in_this_process(tmp_path, restore_jax_settings):
    """Programs compiled after configure_jax land in its directory; --no-compile-cache writes nothing; switching
    directories within one process works (JAX opens its cache once, at the first compilation)."""
    first, second = tmp_path / "first", tmp_path / "second"
    settings = jax_setup.configure_jax(JaxFlags(compile_cache_dir=str(first), matmul_precision="bfloat16"))
    assert settings == {"matmul_precision": "bfloat16", "compile_cache_dir": str(first)}
    assert jax.config.jax_default_matmul_precision == "bfloat16"
    jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(7)).block_until_ready()     # a program no other test builds
    written = set(os.listdir(first))
    assert written

    args, _ = run.parse(["--agent", "sac", "--no-compile-cache", "--compile-cache-dir", str(first)])
    assert jax_setup.configure_jax(args) == {"matmul_precision": "float32", "compile_cache_dir": None}
    jax.jit(lambda x: jnp.cos(x) * 5.0)(jnp.ones(9)).block_until_ready()
    assert set(os.listdir(first)) == written

    jax_setup.configure_jax(JaxFlags(compile_cache_dir=str(second), matmul_precision="default"))
    assert jax_setup.settings() == {"matmul_precision": "default", "compile_cache_dir": str(second)}
    jax.jit(lambda x: jnp.tan(x) * 7.0)(jnp.ones(11)).block_until_ready()
    assert os.listdir(second) and set(os.listdir(first)) == written


def test_a_cache_directory_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(JaxSetupError, match="--compile-cache-dir .*a_file/jax: cannot write there"):
        jax_setup.cache_directory(JaxFlags(compile_cache_dir=str(blocker / "jax")))
    with pytest.raises(JaxSetupError, match=r"\$CTRLRL_CACHE_DIR .*a_file/jax: cannot write there"):
        jax_setup.cache_directory(JaxFlags(), {"CTRLRL_CACHE_DIR": str(blocker / "jax")})
    # The default location (no directory named) falls back to no cache, with a warning.
    assert jax_setup.cache_directory(JaxFlags(), {"XDG_CACHE_HOME": str(blocker)}) is None
    assert "warning: compile cache off: cannot write to" in capsys.readouterr().err


@pytest.mark.parametrize("main, flags", [
    (run.main, ["--agent", "sac", "--env", "jax:PointMass", "--run-dir"]),
    (sweep.main, ["--agent", "sac", "--env", "jax:PointMass", "--sweep", "critic_lr=1e-3,1e-2", "--run-dir"]),
    (collect.main, ["--env", "gym:InvertedPendulum-v5", "--policy", "random", "--out"]),
], ids=["run", "sweep", "collect"])
def test_an_unwritable_cache_dir_is_one_error_line_and_nothing_is_written(tmp_path, main, flags):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run_main(main, "--compile-cache-dir", str(blocker / "jax"), *flags, str(tmp_path / "out"))
    assert result.returncode == 2
    assert "cannot write there (Not a directory); choose a writable directory" in _error_line(result.stderr)
    assert not (tmp_path / "out").exists()


def _bench(argv):
    return bench.main(run.parse_or_exit(bench.BenchArgs, "bench", argv))


def _compare(argv):
    return compare.main(run.parse_or_exit(compare.CompareArgs, "compare", argv))


@pytest.mark.parametrize("main, run_dir_flag", [(run.main, "--run-dir"), (_bench, "--out"), (_compare, "--run-dir")],
                         ids=["run", "bench", "compare"])
def test_unknown_precision_is_one_error_line(tmp_path, capsys, main, run_dir_flag):
    try:
        code = main(["--matmul-precision", "tf32", run_dir_flag, str(tmp_path / "out")])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert ("invalid choice 'tf32' for argument '--matmul-precision'. Expected one of ('float32', 'tensorfloat32', "
            "'bfloat16', 'default')") in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_startup_runs_are_valid_and_as_small_as_described():
    """bench.py --startup's runs parse; MR.Q and SAC stop at the end of their warm-up, PPO after one update."""
    parsed = {name: run.parse(flags) for name, flags in bench.STARTUP_RUNS.items()}
    assert all(args.agent == name and args.eval_episodes == 1 for name, (args, _) in parsed.items())
    assert parsed["mrq"][0].total_steps == parsed["mrq"][1].random_steps
    assert parsed["sac"][0].total_steps == parsed["sac"][1].learning_starts
    assert parsed["ppo"][0].total_steps == agents.get("ppo").layout(parsed["ppo"][1]).steps_per_update


def test_second_identical_run_loads_every_program_from_the_cache(tmp_path):
    """Two tiny runs in new processes, the first with an empty cache: it writes the programs, the second finds
    every one of them (it adds no entry); config.json records the directory and the precision."""
    result = bench.measure_startup(TINY_PPO_RUN, tmp_path)
    assert result["cache_entries_after_cold"] > 0
    assert result["cache_entries_added_by_warm"] == 0
    for name in ("cold", "warm"):
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["jax"] == {"matmul_precision": "float32", "compile_cache_dir": str(tmp_path / "cache")}
        assert config["run"]["compile_cache"] is True
