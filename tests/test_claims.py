"""experiments/claims.py: per-phase returns and paired differences, by hand on a made-up comparison."""

import csv
import json

import numpy as np
import pytest

from experiments import claims


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_phase_means_and_paired_differences(tmp_path):
    env = "jax:PointMass?switch=obs_permutation&every=1000"     # 1 env: switches at 1000, 2000; episodes of 100
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"num_envs": 1, "total_steps": 2000}}))
    rows, diag = [], []
    for method, offset in (("a", 0.0), ("b", 5.0)):
        for seed in (0, 1, 2):
            for step in (500, 850, 950, 1000, 1500, 2000, 2050):
                value = step / 100 + seed + offset * (step >= 1000)
                rows.append({"env": env, "method": method, "step": step, "seed": seed, "return": value})
                diag.append({"env": env, "method": method, "step": step, "seed": seed, "value/srank": step + seed})
    _write(tmp_path / "returns.csv", rows)
    _write(tmp_path / "diagnostics.csv", diag)
    out = claims.main(claims.ClaimsArgs(str(tmp_path), reference="a", last=2))
    by = {(r["method"], r["phase"]): r for r in out}
    # phase 0 = evaluations at 500, 850 (the episode of the one at 950 ends after the switch: left out);
    # seed s: mean(5 + s, 8.5 + s) = 6.75 + s; mean over seeds 7.75
    assert by[("a", 0)]["return_mean"] == pytest.approx(7.75)
    # phase 1 = evaluations at 1000, 1500 (the one at 2000 is already on the next task, phase 2; the one at
    # 2050 is past --total-steps and in no phase): 12.5 + s (+ 5 for b)
    assert by[("b", 1)]["return_mean"] == pytest.approx(12.5 + 1 + 5) and by[("b", 2)]["return_mean"] == 26.0
    assert {p for _, p in by} == {0, 1, 2}
    assert by[("b", 1)]["diff_mean"] == pytest.approx(5.0) and by[("b", 0)]["diff_mean"] == pytest.approx(0.0)
    assert "diff_mean" not in by[("a", 1)]
    assert by[("a", 0)]["value/srank_mean"] == pytest.approx(951.0)       # the phase's last evaluation: 950 + s
    assert (tmp_path / "claims_summary.csv").exists()


def test_an_unfinished_comparison_or_unknown_reference_is_one_error(tmp_path):
    with pytest.raises(SystemExit, match="error: .* is not a finished comparison"):
        claims.main(claims.ClaimsArgs(str(tmp_path)))
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"num_envs": 1, "total_steps": 2000}}))
    _write(tmp_path / "returns.csv", [{"env": "jax:PointMass?switch=obs_permutation&every=1000", "method": "a",
                                       "step": 50, "seed": 0, "return": 1.0}])
    with pytest.raises(SystemExit, match="--reference 'zz' is not a method .* valid: a"):
        claims.main(claims.ClaimsArgs(str(tmp_path), reference="zz"))
    assert np.isfinite(1.0)
