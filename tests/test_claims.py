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
    env = "jax:PointMass?switch=obs_permutation&every=100"      # 10 envs: switch at env step 100
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"num_envs": 10, "total_steps": 200}}))
    rows, diag = [], []
    for method, offset in (("a", 0.0), ("b", 5.0)):
        for seed in (0, 1, 2):
            for step in (50, 90, 100, 150, 200):
                value = step / 10 + seed + offset * (step >= 100)
                rows.append({"env": env, "method": method, "step": step, "seed": seed, "return": value})
                diag.append({"env": env, "method": method, "step": step, "seed": seed, "value/srank": step + seed})
    _write(tmp_path / "returns.csv", rows)
    _write(tmp_path / "diagnostics.csv", diag)
    out = claims.main(claims.ClaimsArgs(str(tmp_path), reference="a", last=2))
    by = {(r["method"], r["phase"]): r for r in out}
    # phase 0 = evaluations at 50, 90; seed s: mean(5 + s, 9 + s) = 7 + s; mean over seeds 8
    assert by[("a", 0)]["return_mean"] == pytest.approx(8.0)
    # phase 1 = evaluations at 100, 150 (the one at 200 is already on the next task, phase 2): 12.5 + s (+ 5 for b)
    assert by[("b", 1)]["return_mean"] == pytest.approx(12.5 + 1 + 5) and by[("b", 2)]["return_mean"] == 26.0
    assert by[("b", 1)]["diff_mean"] == pytest.approx(5.0) and by[("b", 0)]["diff_mean"] == pytest.approx(0.0)
    assert "diff_mean" not in by[("a", 1)]
    assert by[("a", 0)]["value/srank_mean"] == pytest.approx(91.0)        # the phase's last evaluation: 90 + s
    assert (tmp_path / "claims_summary.csv").exists()


def test_an_unfinished_comparison_or_unknown_reference_is_one_error(tmp_path):
    with pytest.raises(SystemExit, match="error: .* is not a finished comparison"):
        claims.main(claims.ClaimsArgs(str(tmp_path)))
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"num_envs": 10, "total_steps": 200}}))
    _write(tmp_path / "returns.csv", [{"env": "jax:PointMass?switch=obs_permutation&every=100", "method": "a",
                                       "step": 50, "seed": 0, "return": 1.0}])
    with pytest.raises(SystemExit, match="--reference 'zz' is not a method .* valid: a"):
        claims.main(claims.ClaimsArgs(str(tmp_path), reference="zz"))
    assert np.isfinite(1.0)
