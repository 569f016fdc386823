import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Tests run on the CPU with a fixed number of host threads; no GPU preallocation games.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Most tests run tiny programs a few times: their time goes into compiling them. XLA compiles about twice as fast
# with most of its optimizations off (tests/test_mrq_multitask.py: 177 s -> 90 s on the 2-core CPU), and the
# programs compute the same functions. So the tests compile that way -- this process and every run it starts, set
# here before JAX is imported, so that a fixture's reference run and the test's own run compile alike -- except
# those marked `optimized` (optimized_when_marked below): learning tests, whose time goes into running many steps
# (twice as slow unoptimized: PPO on PointMass 106 s -> 250 s); they compile as users' runs do.
FAST_COMPILE_XLA_FLAG = "--xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if FAST_COMPILE_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE_XLA_FLAG}".strip()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# JAX's compile cache (experiments/jax_setup.py). The tests never use the user's (~/.cache/ctrlrl/jax): they get a
# new one per session, made here in the controller and inherited by the xdist workers and by the CLI runs the
# tests start; CTRLRL_TEST_CACHE_DIR names one to keep across sessions instead (e.g. a CI cache). Shared, it lets a
# program that several tests (or both workers) build compile once: a CLI-heavy subset of the suite took 609 s
# instead of 874 s, a unit-test subset 421 s instead of 543 s (2-core CPU, loaded).
if not os.environ.get("CTRLRL_TEST_CACHE_DIR"):
    os.environ["CTRLRL_TEST_CACHE_DIR"] = tempfile.mkdtemp(prefix="ctrlrl_test_jax_cache_")
    atexit.register(shutil.rmtree, os.environ["CTRLRL_TEST_CACHE_DIR"], ignore_errors=True)
os.environ["CTRLRL_CACHE_DIR"] = os.environ["CTRLRL_TEST_CACHE_DIR"]

# Videos (experiments/video.py) are drawn headless with EGL where the machine has libEGL (Mesa's renders on the
# CPU), as evaluate.py --video sets it up. MuJoCo chooses its GL backend when first imported, so it is set here,
# before any test imports it.
import ctypes.util  # noqa: E402

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY") and ctypes.util.find_library("EGL"):
    os.environ["MUJOCO_GL"] = "egl"

# This process too, as run.py sets up its own: the same cache and float32 matmuls from the first test on, whichever
# test comes first (a test that calls train() in this process would otherwise switch them midway).
import jax  # noqa: E402

from experiments.jax_setup import JaxFlags, configure_jax  # noqa: E402

configure_jax(JaxFlags())


# CI's 25-minute budget: these run with `pytest -m long`. Each is covered in the default run by a cheaper
# sibling, named after it.
LONG_IN_CI = {
    "tests/test_sharding.py::test_four_devices_equal_one_device[sac_device_loop]":      # SAC at 4 envs per seed
    "test_sharding's SAC with 4 envs per seed on 4 devices",
    "tests/test_bench.py::test_multitask_bench_reports_steps_per_task_per_seed_and_replay_bytes":
    "test_gpu_suite's dry run (multitask bench on jax:PointMass)",
    "tests/test_sac_td3.py::test_agents_train_vmapped_in_the_device_loop_with_diagnostics":
    "test_training's vmapped = separate device-loop tests",
    "tests/test_compare.py::test_comparison_runs_end_to_end": "test_compare's unit tests",
    "tests/test_notebooks.py::test_notebook_executes[bring_your_own_env]": "tests/test_byo_env.py",
    "tests/test_mrq_multitask.py::test_a_multitask_run_on_jax_tasks_in_the_device_loop_resumes_exactly_and_logs_"
    "every_task": "the host-loop multitask resume test",
    "tests/test_byo_env.py::test_run_py_trains_a_registered_jax_env[sac]": "the same test with PPO",
    "tests/test_sweep_every_agent.py::test_sweep_lanes_equal_separate_runs[sac]": "the same test with PPO and BC",
    "tests/test_training.py::test_vmapped_seeds_equal_separate_runs_device_loop[td3]":
    "the same test with 4 envs per seed",
}


@pytest.fixture(autouse=True)
def optimized_when_marked(request, monkeypatch):
    """A test marked `optimized` compiles with XLA's optimizations, in this process and in the runs it starts (this
    process keeps its fusion flag: XLA reads it once)."""
    if not request.node.get_closest_marker("optimized"):
        yield
        return
    monkeypatch.delenv("JAX_DISABLE_MOST_OPTIMIZATIONS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", os.environ["XLA_FLAGS"].replace(FAST_COMPILE_XLA_FLAG, "").strip())
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in LONG_IN_CI:
            item.add_marker(pytest.mark.long)
