"""Helpers for tests that run experiments/run.py as a user would."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A reduced MR.Q (small widths, short schedule) so CLI tests take seconds; stated here once.
TINY_MRQ = ["--batch-size", "32", "--enc-hidden-dim", "32", "--zs-dim", "32", "--zsa-dim", "32", "--za-dim", "16",
            "--value-hidden-dim", "32", "--policy-hidden-dim", "32", "--target-update-freq", "20",
            "--random-steps", "100"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
