"""A claims row from separate run.py directories, one per arm (off-policy agents, which compare.py does not drive).

    python experiments/arm_claims.py --arms sac=runs/sac redo=runs/redo regrama=runs/regrama \
        --reference sac --out experiments/results/regrama_pointmass_obsperm

Each arm is one `experiments/run.py` directory (its config.json and eval.csv; all seeds of the arm in one
vmapped program). The arms must share what makes a comparison fair -- env id, --total-steps, --seed,
--num-seeds, --eval-every, --eval-episodes and the `SHARED_CONFIG` fields of the agents' configs (network
size, update-to-data ratio, batch, learning rates, ...); a difference is an error that names it. Only the
fields an arm's agent adds (ReGraMa's reset rule) may differ.

Writes into --out, in experiments/compare.py's format, and then runs experiments/claims.py on it:

* `returns.csv`      -- env, method, step, seed, return (every evaluation of every arm)
* `diagnostics.csv`  -- env, method, step, seed and the diagnostics logged at each evaluation
                        (critic/dormant_<tau>, critic/grama_inactive_<tau>, critic/srank, ...)
* `summary.json`     -- the shared settings, each arm's run directory, command and agent config
* `summary.csv`      -- experiments/claims.py's table: per env, phase and arm the phase's return and its
                        last evaluation's diagnostics, mean [95% bootstrap CI] over seeds, and the paired
                        differences from --reference (return and every diagnostic)

The phase of a stationary env is the whole run (phase 0).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import claims  # noqa: E402

RUN_FIELDS = ("env", "seed", "num_seeds", "total_steps", "eval_every", "eval_episodes")
"""run.py flags every arm must share."""
SHARED_CONFIG = ("buffer_size", "batch_size", "discount", "tau", "critic_lr", "actor_lr", "alpha_lr",
                 "learning_starts", "updates_per_step", "policy_frequency", "target_frequency", "autotune",
                 "alpha", "target_entropy_scale", "num_critics", "critic_hidden", "actor_hidden", "activation",
                 "layer_norm", "initializer", "log_std_min", "log_std_max", "sigreg_coef")
"""Agent-config fields (SAC's) every arm must share where its agent has them."""


@dataclasses.dataclass
class ArmClaimsArgs:
    arms: tuple[str, ...]
    """name=run_dir for each arm, e.g. sac=runs/sac regrama=runs/regrama."""
    out: str
    """The directory to write (created): returns.csv, diagnostics.csv, summary.json, summary.csv."""
    reference: str | None = None
    """The arm the others are compared with, seed by seed."""
    last: int = 3
    """Evaluations at the end of each phase averaged into the phase's return."""
    show: tuple[str, ...] = ("critic/dormant_0", "critic/dormant_0.1", "critic/grama_inactive_0.1", "critic/srank")
    """Diagnostics printed in the markdown table (summary.csv holds every one)."""


def parse_arms(items: tuple[str, ...]) -> dict[str, Path]:
    """{name: run_dir} from name=run_dir items; a bad or repeated item is a SystemExit naming it."""
    arms: dict[str, Path] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not (eq and name and path):
            raise SystemExit(f"error: --arms {item!r}: expected name=run_dir")
        if name in arms:
            raise SystemExit(f"error: --arms: {name!r} given twice")
        arms[name] = Path(path)
    if not arms:
        raise SystemExit("error: --arms needs at least one name=run_dir")
    return arms


def read_arm(run_dir: Path) -> tuple[dict, list[dict]]:
    """(config.json, eval.csv rows) of one run directory."""
    for name in ("config.json", "eval.csv"):
        if not (run_dir / name).exists():
            raise SystemExit(f"error: {run_dir} has no {name}: not a run.py directory (or not started)")
    config = json.loads((run_dir / "config.json").read_text())
    with open(run_dir / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    return config, rows


def check_shared(configs: dict[str, dict]) -> dict:
    """The settings every arm shares ({field: value}); a SystemExit naming the first field that differs."""
    shared = {}
    names = list(configs)
    for group, fields in (("run", RUN_FIELDS), ("agent_config", SHARED_CONFIG)):
        for field in fields:
            have = {n: configs[n][group][field] for n in names if field in configs[n][group]}
            if not have:
                continue
            values = list(have.values())
            if any(v != values[0] for v in values[1:]):
                listing = ", ".join(f"{n}: {v}" for n, v in have.items())
                raise SystemExit(f"error: the arms differ in {field} ({listing}); a comparison needs them equal")
            shared[field] = values[0]
    return shared


def collect(arms: dict[str, Path]) -> tuple[dict, list[dict], list[dict]]:
    """(summary, returns rows, diagnostics rows) of the arms, in experiments/compare.py's format."""
    configs, returns, diagnostics = {}, [], []
    for name, run_dir in arms.items():
        config, rows = read_arm(run_dir)
        configs[name] = config
        env = config["run"]["env"]
        for r in rows:
            base = {"env": env, "method": name, "step": int(r["step"]), "seed": int(r["seed"])}
            returns.append({**base, "return": float(r["return"])})
            extra = {k: v for k, v in r.items() if k not in ("step", "seed", "return", "return_std") and v != ""}
            if extra:
                diagnostics.append({**base, **extra})
    shared = check_shared(configs)
    settings = {**shared, "num_envs": 1}       # off-policy loops: one env per seed
    summary = {"settings": settings, "methods": list(arms),
               "arms": {n: {"run_dir": str(arms[n]), "command": configs[n].get("command"),
                            "agent": configs[n]["run"]["agent"], "agent_config": configs[n]["agent_config"]}
                        for n in arms}}
    return summary, returns, diagnostics


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["env"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def main(args: ArmClaimsArgs) -> list[dict]:
    arms = parse_arms(args.arms)
    if args.reference is not None and args.reference not in arms:
        raise SystemExit(f"error: --reference {args.reference!r} is not an arm; valid: {', '.join(arms)}")
    summary, returns, diagnostics = collect(arms)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "returns.csv", returns)
    if diagnostics:
        _write_csv(out / "diagnostics.csv", diagnostics)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return claims.main(claims.ClaimsArgs(str(out), reference=args.reference, last=args.last, show=args.show,
                                         output="summary.csv"))


def command(argv: list[str] | None = None) -> int:
    """`python experiments/arm_claims.py` and `ctrlrl-arm-claims`: the flags (a bad one is one
    `error:` line, exit 2), then main."""
    from experiments.run import parse_or_exit

    main(parse_or_exit(ArmClaimsArgs, "A claims row from separate run.py directories, "
                       "one per arm (see the module's docstring).", argv))
    return 0


if __name__ == "__main__":
    sys.exit(command())
