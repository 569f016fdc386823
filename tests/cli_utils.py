"""Helpers for tests that run experiments/run.py as a user would."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Columns of train.csv and eval.csv that measure time, which differ between two runs of the same experiment.
TIMING_COLUMNS = ("training/sps", "training/sps_all_seeds", "wall_clock_s")

# A reduced MR.Q (small widths, short schedule) so CLI tests take seconds; stated here once.
TINY_MRQ = ["--batch-size", "32", "--enc-hidden-dim", "32", "--zs-dim", "32", "--zsa-dim", "32", "--za-dim", "16",
            "--value-hidden-dim", "32", "--policy-hidden-dim", "32", "--target-update-freq", "20",
            "--random-steps", "100"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(main, *args: str) -> Result:
    """Call a CLI's `main(argv)` in this process (fast: no new interpreter, no re-import of JAX), capturing its
    output and exit code -- for bad-input tests, which fail before any compilation."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def run_inprocess(*args: str) -> Result:
    """experiments/run.py's main in this process."""
    from experiments import run

    return run_main(run.main, "--no-progress", *args)


def eval_rows(path, step: int) -> dict:
    """{seed: (return, return_std)} of an eval.csv-like file's rows of `step`, as the file holds them (text)."""
    import csv

    with open(path) as f:
        return {row["seed"]: (row["return"], row["return_std"]) for row in csv.DictReader(f)
                if int(row["step"]) == step}


def assert_evaluate_reproduces(run_dir, out, step: int, *args: str) -> dict:
    """experiments/evaluate.py on the run's policy export of checkpoint `step` (its own evaluator, keys and env
    seeds; never the training state) writes to `out` the run's eval.csv rows of that step, exactly; returns them."""
    from experiments import evaluate

    result = run_main(evaluate.main, "--run-dir", str(run_dir), "--step", str(step), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = eval_rows(Path(run_dir) / "eval.csv", step)
    assert eval_rows(out, step) == expected and expected
    return expected
