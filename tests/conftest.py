import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Tests run on the CPU with a fixed number of host threads; no GPU preallocation games.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
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
from experiments.jax_setup import JaxFlags, configure_jax  # noqa: E402

configure_jax(JaxFlags())
