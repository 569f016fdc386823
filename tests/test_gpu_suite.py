"""experiments/gpu_suite.py: the dry run of every measurement (what CI checks before a GPU is at hand), the
deadline that skips what does not fit, and the goals read from the results."""

import json
import os
import subprocess
import sys

import pytest

from experiments import gpu_suite
from replay import streams
from tests.cli_utils import ROOT

# The dry run in two processes, so that CI's two workers share it, compiled fast as every test is
# (tests/conftest.py; its numbers mean nothing): 122 s instead of 255 s for the whole dry run on the 2-core CPU,
# PPO vs Brax vs physics on MJX 52 s of it.
PARTS = {"ppo": ("ppo",), "off_policy_sweep_multitask": ("mrq_seeds", "sac_envs", "sweep", "mrq_multitask")}


def test_the_parts_cover_every_measurement_of_the_dry_run():
    names = [m.name for m in gpu_suite.measurements(dry_run=True)]
    assert {name.split("/")[0] for name in names} == {"ppo", "mrq_seeds", "sac_envs", "sweep", "mrq_multitask"}
    assert sorted(names) == sorted(n for n in names for prefixes in PARTS.values() if n.startswith(prefixes))


@pytest.mark.parametrize("part", list(PARTS))
def test_the_dry_run_measures_every_kind_of_measurement_without_error(tmp_path, part):
    """`gpu_suite.py --dry-run --only ...` as CI's command line runs it, one part of the suite per test."""
    out = tmp_path / "suite.json"
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_suite.py"), "--dry-run", "--out",
                             str(out), "--only", *PARTS[part]], capture_output=True, text=True, timeout=900,
                            cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [m.name for m in gpu_suite.measurements(dry_run=True) if m.name.startswith(PARTS[part])]
    assert list(report["results"]) == names and not report["skipped"]
    for name, measured in report["results"].items():
        assert "error" not in measured, (name, measured.get("error"))
    assert report["environment"]["backend"] == "cpu"
    if part == "ppo":
        ppo = report["results"]["ppo/mjx:CartpoleBalance/16"]
        assert ppo["num_envs"] == 16 and ppo["ours_sps"] > 0 and ppo["brax_sps"] > 0 and ppo["physics_sps"] > 0
        return
    assert report["results"]["mrq_seeds/2"]["num_seeds"] == 2
    sac = report["results"]["sac_envs/4"]
    # 4 envs per seed, 2 updates per loop step, 4 timed loop steps (16 env steps); the replay: 4 streams sharing
    # 4 x 16 transitions (jax:PointMass's episodes: 100 steps)
    assert (sac["num_envs"], sac["updates_per_loop_step"], sac["timed_steps"]) == (4, 2.0, 4)
    assert sac["replay_slots"] == 4 * streams.capacity_for(64, 4, 100) and sac["agent_steps_per_s_per_seed"] > 0
    assert report["results"]["sweep/ppo_learning_rate"]["values"][1] == gpu_suite.ppo_config(16, True).learning_rate
    assert report["goals"]["10_mrq_seeds_under_3x_one_seed"]["verdict"] == "not measured"   # 10 seeds: not in a dry run


def test_a_measurement_that_would_pass_the_deadline_is_skipped_and_recorded(tmp_path):
    out = tmp_path / "suite.json"
    report = gpu_suite.main(gpu_suite.SuiteArgs(out=str(out), deadline_s=1.0, only=("mrq_seeds", "sweep")))
    assert report["results"] == {}
    assert set(report["skipped"]) == {"mrq_seeds/1", "mrq_seeds/10", "mrq_seeds/4", "sweep/ppo_learning_rate"}
    saved = json.loads(out.read_text())
    assert saved["goals"]["10_mrq_seeds_under_3x_one_seed"]["verdict"] == "not measured"


def test_goals_read_met_missed_and_not_measured_from_results():
    results = {"ppo/mjx:CartpoleBalance/65536": {"num_envs": 2**16, "ours_over_brax": 1.7},
               "ppo/mjx:CheetahRun/65536": {"num_envs": 2**16, "ours_over_brax": 1.2},
               "ppo/mjx:CartpoleBalance/4096": {"num_envs": 2**12, "ours_over_brax": 0.9},
               "ppo/mjx:CartpoleBalance/1048576": {"error": "RESOURCE_EXHAUSTED: out of memory"},
               "mrq_seeds/1": {"seconds": 10.0}, "mrq_seeds/10": {"seconds": 25.0}}
    goals = gpu_suite.goals(results)
    assert goals["ours_over_brax_at_least_1.5_from_2^16_envs"] == {"verdict": "missed", "values": [1.7, 1.2]}
    assert goals["2^20_envs_fit"]["verdict"] == "missed"
    assert goals["10_mrq_seeds_under_3x_one_seed"] == {"verdict": "met", "ratio": 2.5}
    assert gpu_suite.goals({})["2^20_envs_fit"]["verdict"] == "not measured"
