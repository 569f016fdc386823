"""The numbers behind a row of experiments/results/claims.md, from one experiments/compare.py directory.

    python experiments/claims.py experiments/results/<comparison> --reference sigreg_off

For each env, phase (the stretch between two task switches) and method: the mean evaluation return over the
phase's last `--last` evaluations, and the chosen diagnostics at the phase's last evaluation, each as the mean
over seeds with a 95% percentile-bootstrap CI (experiments/stats.bootstrap_ci). Every method is also compared
with the reference arm seed by seed (the arms share seeds, so the difference is paired): the mean difference
and its CI, and so is every diagnostic (`<name>_diff_mean/low/high`). recovery_ci.csv (written by compare.py) holds
steps-to-recover and the KL from the pre-switch policy. A stationary env id is one phase (phase 0).
experiments/arm_claims.py builds such a directory from separate run.py directories (off-policy arms).

Writes `claims_summary.csv` (or `--output`) into the directory and prints a markdown table.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.compare import episode_span, switch_steps  # noqa: E402
from experiments.stats import bootstrap_ci  # noqa: E402

DIAGNOSTICS = ("srank", "dormant", "isotropy", "feature_norm", "grama_inactive",
               # LEAST's episode statistics (least/*), cumulative: their value at the phase's last evaluation
               "stops", "episodes", "mean_episode_length", "mean_stopped_length", "budget_saved")


@dataclasses.dataclass
class ClaimsArgs:
    run_dir: str
    """A finished experiments/compare.py directory (summary.json, returns.csv, diagnostics.csv)."""
    reference: str | None = None
    """The arm every other method is compared with, seed by seed (e.g. sigreg_off, ppo)."""
    last: int = 3
    """Evaluations at the end of each phase averaged into the phase's return."""
    show: tuple[str, ...] = ("value/srank", "value/dormant_0.1", "value/isotropy_entropy", "value/feature_norm")
    """The diagnostics printed in the markdown table (claims_summary.csv holds every one)."""
    output: str = "claims_summary.csv"
    """The file written into the directory."""


def _read(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _fmt(estimate) -> str:
    return f"{estimate.value:.1f} [{estimate.low:.1f}, {estimate.high:.1f}]"


def phases_of(env_id: str, num_envs: int, total_steps: int) -> list[int]:
    """The switch steps of `env_id` (experiments/compare.switch_steps); none for a stationary env."""
    from envs import nonstationary

    if nonstationary.split_env_id(env_id)[1] is None:
        return []
    return switch_steps(env_id, num_envs, total_steps)


def phase_returns(rows: list[dict], switches: list[int], total_steps: int, last: int,
                  episode_span: int = 0) -> dict:
    """{(method, phase): {seed: mean of the phase's last `last` evaluation returns}}; a phase is
    [previous switch, next switch), and its evaluations are those whose episodes end before the next switch
    (step < next switch - episode_span: an evaluation started just before a switch plays on the new task)."""
    bounds = [0, *switches, total_steps + 1]
    per = defaultdict(lambda: defaultdict(list))
    for r in rows:
        step = int(r["step"])
        phase = int(np.searchsorted(bounds, step, side="right")) - 1
        if phase >= len(bounds) - 1:      # past --total-steps (the loop ends on a whole update): not a phase's
            continue
        if phase + 1 < len(bounds) - 1 and step >= bounds[phase + 1] - episode_span:
            continue
        per[(r["method"], phase)][int(r["seed"])].append((step, float(r["return"])))
    out = {}
    for key, seeds in per.items():
        out[key] = {seed: float(np.mean([v for _, v in sorted(points)[-last:]])) for seed, points in seeds.items()}
    return out


def phase_diagnostics(rows: list[dict], switches: list[int], total_steps: int) -> dict:
    """{(method, phase, name): {seed: value at the phase's last evaluation}} for names like network/<DIAGNOSTIC>..."""
    bounds = [0, *switches, total_steps + 1]
    latest = {}
    for r in rows:
        step = int(r["step"])
        phase = int(np.searchsorted(bounds, step, side="right")) - 1
        for name, value in r.items():
            if value in ("", None) or not name.split("/")[-1].startswith(DIAGNOSTICS):
                continue
            key = (r["method"], phase, name, int(r["seed"]))
            if key not in latest or latest[key][0] < step:
                latest[key] = (step, float(value))
    out = defaultdict(dict)
    for (method, phase, name, seed), (_, value) in latest.items():
        out[(method, phase, name)][seed] = value
    return out


def main(args: ClaimsArgs) -> list[dict]:
    import json

    run_dir = Path(args.run_dir)
    if not (run_dir / "summary.json").exists():
        raise SystemExit(f"error: {run_dir} is not a finished comparison (no summary.json)")
    summary = json.loads((run_dir / "summary.json").read_text())
    settings = summary["settings"]
    returns = _read(run_dir / "returns.csv")
    diagnostics = _read(run_dir / "diagnostics.csv") if (run_dir / "diagnostics.csv").exists() else []
    out = []
    for env_id in dict.fromkeys(r["env"] for r in returns):
        switches = phases_of(env_id, settings["num_envs"], settings["total_steps"])
        per_phase = phase_returns([r for r in returns if r["env"] == env_id], switches, settings["total_steps"],
                                  args.last, episode_span(env_id, settings["num_envs"]))
        per_diag = phase_diagnostics([r for r in diagnostics if r["env"] == env_id], switches,
                                     settings["total_steps"])
        methods = list(dict.fromkeys(m for m, _ in per_phase))
        if args.reference is not None and args.reference not in methods:
            raise SystemExit(f"error: --reference {args.reference!r} is not a method of {run_dir}; "
                             f"valid: {', '.join(methods)}")
        for phase in sorted({p for _, p in per_phase}):
            for method in methods:
                seeds = per_phase.get((method, phase), {})
                if not seeds:
                    continue
                row = {"env": env_id, "phase": phase, "method": method, "seeds": len(seeds)}
                estimate = bootstrap_ci(np.array([seeds[s] for s in sorted(seeds)]))
                row.update(return_mean=estimate.value, return_low=estimate.low, return_high=estimate.high)
                reference = per_phase.get((args.reference, phase), {}) if args.reference else {}
                shared = sorted(set(seeds) & set(reference))
                if method != args.reference and shared:
                    difference = bootstrap_ci(np.array([seeds[s] - reference[s] for s in shared]))
                    row.update(diff_mean=difference.value, diff_low=difference.low, diff_high=difference.high)
                for (m, p, name), values in per_diag.items():
                    if m == method and p == phase:
                        estimate = bootstrap_ci(np.array([values[s] for s in sorted(values)]))
                        row.update({f"{name}_mean": estimate.value, f"{name}_low": estimate.low,
                                    f"{name}_high": estimate.high})
                        reference = per_diag.get((args.reference, phase, name), {}) if args.reference else {}
                        shared = sorted(set(values) & set(reference))
                        if method != args.reference and shared:
                            difference = bootstrap_ci(np.array([values[s] - reference[s] for s in shared]))
                            row.update({f"{name}_diff_mean": difference.value, f"{name}_diff_low": difference.low,
                                        f"{name}_diff_high": difference.high})
                out.append(row)
    fields = list(dict.fromkeys(k for row in out for k in row))
    temporary = run_dir / (args.output + ".tmp")
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(out)
    temporary.replace(run_dir / args.output)
    diag_names = [k[:-5] for k in fields if k.endswith("_mean") and k[:-5] in args.show]
    print("| env | phase | method | seeds | return (last %d evals) | minus %s | %s |"
          % (args.last, args.reference or "-", " | ".join(diag_names)))
    print("|" + "---|" * (6 + len(diag_names)))
    for row in out:
        cell = lambda k: (f"{row[k + '_mean']:.3g} [{row[k + '_low']:.3g}, {row[k + '_high']:.3g}]"
                          if k + "_mean" in row else "")
        diff = (f"{row['diff_mean']:.1f} [{row['diff_low']:.1f}, {row['diff_high']:.1f}]" if "diff_mean" in row
                else "")
        print(f"| {row['env']} | {row['phase']} | {row['method']} | {row['seeds']} | "
              f"{row['return_mean']:.1f} [{row['return_low']:.1f}, {row['return_high']:.1f}] | {diff} | "
              + " | ".join(cell(n) for n in diag_names) + " |")
    return out


def command(argv: list[str] | None = None) -> int:
    """`python experiments/claims.py` and `ctrlrl-claims`: the flags (a bad one is one
    `error:` line, exit 2), then main."""
    from experiments.run import parse_or_exit

    main(parse_or_exit(ClaimsArgs, "The numbers behind a row of claims.md, from one compare.py directory "
                       "(see the module's docstring).", argv))
    return 0


if __name__ == "__main__":
    sys.exit(command())
