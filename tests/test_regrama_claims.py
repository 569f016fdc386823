"""experiments/arm_claims.py (and the claims.py parts it adds): a claims row from separate run.py directories,
by hand on made-up runs; no training."""

import csv
import json

import pytest

from experiments import arm_claims

ENV = "jax:PointMass?switch=obs_permutation&every=1000"     # switches at 1000, 2000; episodes of 100 steps


def _run_dir(path, agent, offset, dormant, env=ENV, critic_hidden=(64, 64), extra=None):
    path.mkdir(parents=True)
    config = {"run": {"agent": agent, "env": env, "seed": 0, "num_seeds": 3, "total_steps": 3000,
                      "eval_every": 500, "eval_episodes": 5},
              "agent_config": {"batch_size": 128, "updates_per_step": 4.0, "critic_hidden": list(critic_hidden),
                               **(extra or {})},
              "command": f"experiments/run.py --agent {agent}"}
    (path / "config.json").write_text(json.dumps(config))
    with open(path / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "seed", "return", "return_std", "critic/dormant_0",
                                               "critic/grama_inactive_0.1"])
        writer.writeheader()
        for step in (500, 800, 1000, 1500, 2000, 2500, 3000):
            for seed in (0, 1, 2):
                writer.writerow({"step": step, "seed": seed, "return": step / 100 + seed + offset * (step >= 2000),
                                 "return_std": 0.0, "critic/dormant_0": dormant * step / 3000 + 0.01 * seed,
                                 "critic/grama_inactive_0.1": 0.5})
    return path


def test_phases_paired_return_and_diagnostic_differences(tmp_path):
    a = _run_dir(tmp_path / "a", "sac", 0.0, 0.3)
    b = _run_dir(tmp_path / "b", "regrama", 2.0, 0.0, extra={"reset_every": 1000})   # its own field may differ
    out = arm_claims.main(arm_claims.ArmClaimsArgs(arms=(f"sac={a}", f"regrama={b}"), out=str(tmp_path / "o"),
                                                   reference="sac", last=2))
    by = {(r["method"], r["phase"]): r for r in out}
    # experiments/claims.py's phases: a switch at --total-steps too, so the evaluation at 3000 is phase 3 alone
    assert {p for _, p in by} == {0, 1, 2, 3}
    # phase 0: evaluations at 500 and 800 (the one at 1000 is phase 1): seed s -> 6.5 + s, mean 7.5
    assert by[("sac", 0)]["return_mean"] == pytest.approx(7.5)
    # phase 2: 2000 and 2500 -> 22.5 + s (+ 2 for regrama); the paired difference is exactly 2
    assert by[("regrama", 2)]["return_mean"] == pytest.approx(23.5 + 2)
    assert by[("regrama", 2)]["diff_mean"] == pytest.approx(2.0) and by[("regrama", 0)]["diff_mean"] == 0
    # diagnostics at the phase's last evaluation (2500): sac 0.25 + 0.01 s, regrama 0.01 s -> paired -0.25
    assert by[("sac", 2)]["critic/dormant_0_mean"] == pytest.approx(0.26)
    assert by[("regrama", 2)]["critic/dormant_0_diff_mean"] == pytest.approx(-0.25)
    assert by[("regrama", 2)]["critic/dormant_0_diff_low"] == pytest.approx(-0.25)     # identical per seed
    assert by[("regrama", 2)]["critic/grama_inactive_0.1_mean"] == pytest.approx(0.5)
    assert "diff_mean" not in by[("sac", 1)] and "critic/dormant_0_diff_mean" not in by[("sac", 1)]
    o = tmp_path / "o"
    assert (o / "summary.csv").exists() and (o / "returns.csv").exists() and (o / "diagnostics.csv").exists()
    summary = json.loads((o / "summary.json").read_text())
    assert summary["settings"]["critic_hidden"] == [64, 64] and summary["arms"]["regrama"]["agent"] == "regrama"


def test_a_stationary_env_is_one_phase(tmp_path):
    a = _run_dir(tmp_path / "a", "sac", 0.0, 0.3, env="jax:PointMass")
    out = arm_claims.main(arm_claims.ArmClaimsArgs(arms=(f"sac={a}",), out=str(tmp_path / "o"), last=2))
    assert [r["phase"] for r in out] == [0] and out[0]["return_mean"] == pytest.approx(28.5)


def test_arms_that_differ_or_bad_arguments_are_one_error(tmp_path):
    a = _run_dir(tmp_path / "a", "sac", 0.0, 0.3)
    b = _run_dir(tmp_path / "b", "regrama", 0.0, 0.3, critic_hidden=(256, 256))
    with pytest.raises(SystemExit, match=r"differ in critic_hidden \(sac: \[64, 64\], regrama: \[256, 256\]\)"):
        arm_claims.main(arm_claims.ArmClaimsArgs(arms=(f"sac={a}", f"regrama={b}"), out=str(tmp_path / "o")))
    with pytest.raises(SystemExit, match="--reference 'td3' is not an arm; valid: sac"):
        arm_claims.main(arm_claims.ArmClaimsArgs(arms=(f"sac={a}",), out=str(tmp_path / "o"), reference="td3"))
    with pytest.raises(SystemExit, match="expected name=run_dir"):
        arm_claims.parse_arms(("sac",))
    with pytest.raises(SystemExit, match="has no config.json"):
        arm_claims.main(arm_claims.ArmClaimsArgs(arms=(f"x={tmp_path / 'missing'}",), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()          # nothing written before the arms are checked


def test_the_commands_refuse_bad_flags_in_one_error_line(tmp_path):
    """`ctrlrl-arm-claims` / `ctrlrl-claims` (their `command`): a missing or unknown flag is one `error:` line and
    exit code 2; a malformed arm is refused by name."""
    from experiments import claims
    from tests.cli_utils import run_main

    for command, args in ((arm_claims.command, ["--arms", "sac=x"]), (claims.command, ["--no-such-flag", "1"])):
        result = run_main(command, *args)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1, result.stderr
    with pytest.raises(SystemExit, match="--arms 'bad': expected name=run_dir"):
        arm_claims.command(["--arms", "bad", "--out", str(tmp_path / "o")])
