"""PPO vs GTR (vs PPO with a KL penalty) on non-stationary tasks: where PPO stalls and GTR adapts.

    python experiments/compare.py --run-dir runs/compare
    python experiments/compare.py --envs "mjx:CheetahRun?switch=reward&every=20000000" --total-steps 60000000 \
        --preset playground --num-seeds 5 --run-dir runs/compare_cheetah

For every env id and method, all seeds train in one vmapped program (the
on-policy device loop) and are evaluated every `--eval-every` env steps on the
task the agent currently faces. Written into `--run-dir`:

* `returns.csv`     -- env, method, step, seed, return
* `recovery.csv`    -- per env, method and switch: the mean evaluation return over
                       the `--window` env steps after the switch (the return
                       recovered), mean and std over seeds, beside the return
                       just before the switch
* `<env>.png`       -- return over steps, mean +- std over seeds, switches marked
* `diagnostics.csv` -- env, method, step, seed and the agent's diagnostics at each evaluation
                       (dormant ratio, srank, isotropy of each network's representation)
* `summary.json`    -- the settings and the recovery table

Methods: `ppo` (clipped surrogate), `ppo_kl` (clipped surrogate + `--kl-coef` x
KL to the old policy), `gtr` (agents/gtr.py with its defaults, or
`--gtr-sigma` / `--gtr-beta` / `--gtr-anchors`), `sigreg` (agents/sigreg.py:
shared trunk + lambda SIGReg, its defaults and the preset's trunk). Every
method shares the preset's other hyperparameters.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import tyro

from envs import nonstationary

METHODS = ("ppo", "ppo_kl", "gtr", "sigreg")


@dataclasses.dataclass(frozen=True)
class CompareArgs:
    run_dir: str = "runs/compare"
    """Where the CSVs, plots and summary go (created; an existing summary.json is refused)."""
    envs: tuple[str, ...] = ("jax:PointMass?switch=obs_permutation&every=400000",
                             "mjx:CartpoleBalance?switch=gravity&scale=0.25&every=2000000")
    """Non-stationary env ids (see envs/nonstationary.py)."""
    methods: tuple[str, ...] = METHODS
    """Methods to compare: ppo, ppo_kl, gtr, sigreg."""
    num_seeds: int = 3
    """Seeds per method, trained at once by one vmapped program."""
    total_steps: int = 1_200_000
    """Env steps per seed."""
    eval_every: int = 100_000
    """Env steps between evaluations."""
    eval_episodes: int = 5
    """Evaluation episodes per seed."""
    window: int = 300_000
    """Env steps after each switch over which the recovered return is averaged."""
    preset: str = "cpu"
    """PPO preset shared by every method."""
    num_envs: int = 256
    """Parallel envs per seed (above the preset's, minibatches are co-scaled; below, minibatches shrink)."""
    kl_coef: float = 1.0
    """ppo_kl: the KL penalty coefficient."""
    gtr_sigma: float | None = None
    """gtr: kernel width (None: gtr.Config's default)."""
    gtr_beta: float | None = None
    """gtr: penalty scale (None: gtr.Config's default)."""
    gtr_anchors: int | None = None
    """gtr: number of anchors K (None: gtr.Config's default)."""
    gtr_penalty_scale: str | None = None
    """gtr: sigma_sq or unit (None: gtr.Config's default)."""
    seed: int = 0
    """First seed."""


def method_config(method: str, args: CompareArgs):
    from agents import gtr, ppo

    base = dict(ppo.PRESETS[args.preset])
    reference = base.get("num_envs", ppo.Config.num_envs)
    if args.num_envs >= reference:   # the co-scaling recipe: more minibatches of the same size
        base.update(num_envs=args.num_envs, scale_envs=True, reference_num_envs=reference)
    else:                            # fewer envs: same number of minibatches, proportionally smaller
        batch_size = base.get("batch_size", ppo.Config.batch_size)
        base.update(num_envs=args.num_envs, batch_size=max(1, batch_size * args.num_envs // reference))
    if method == "ppo":
        return ppo, ppo.Config(**base)
    if method == "ppo_kl":
        return ppo, ppo.Config(**base, kl_coef=args.kl_coef)
    if method == "sigreg":
        from agents import sigreg

        preset = dict(sigreg.PRESETS.get(args.preset, {}))
        extra = {k: v for k, v in preset.items() if k not in base and k in ("trunk_hidden", "trunk_dim")}
        return sigreg, sigreg.Config(**base, **extra)
    if method == "gtr":
        extra = {k: v for k, v in (("sigma", args.gtr_sigma), ("beta", args.gtr_beta),
                                   ("num_anchors", args.gtr_anchors),
                                   ("penalty_scale", args.gtr_penalty_scale)) if v is not None}
        return gtr, gtr.Config(**base, **extra)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def switch_steps(env_id: str, num_envs: int, total_steps: int) -> list[int]:
    """The env steps per seed at which the task switches (the first step of each new phase)."""
    _, schedule = nonstationary.split_env_id(env_id)
    per_env = -(-schedule.every // num_envs)
    return list(range(per_env * num_envs, total_steps + 1, per_env * num_envs))


def train_and_evaluate(agent, config, env_id: str, args: CompareArgs,
                       diagnostics: list | None = None) -> tuple[list[int], np.ndarray]:
    """Returns (steps, returns [seeds, evaluations]); appends the agent's diagnostics per evaluation and seed."""
    from experiments.on_policy import OnPolicyLoop

    loop = OnPolicyLoop(agent, config, env_id, args.num_seeds, args.seed)
    state, step, steps, returns = loop.init(), 0, [], []
    granularity = loop.granularity
    while step < args.total_steps:
        target = min(-(-(step + args.eval_every) // granularity) * granularity,
                     -(-args.total_steps // granularity) * granularity)
        state, _ = loop.run(state, step, target - step)
        step = target
        steps.append(step)
        returns.append(loop.evaluate(state, step, args.eval_episodes).mean(axis=1))
        if diagnostics is not None:
            values = loop.diagnostics(state, step)
            diagnostics += [{"step": step, "seed": args.seed + i, **{k: float(v[i]) for k, v in values.items()}}
                            for i in range(args.num_seeds)]
        print(f"  {agent.__name__.split('.')[-1]} {env_id} step {step}: "
              f"{np.round(returns[-1], 1).tolist()}", file=sys.stderr, flush=True)
    return steps, np.stack(returns, axis=1)          # [seeds, evaluations]


def recovery(steps: list[int], returns: np.ndarray, switches: list[int], window: int) -> list[dict]:
    """Mean return over the evaluations in (switch, switch + window], per seed, then over seeds; beside it the
    return of the last evaluation at or before the switch (what the agent had before the task changed)."""
    rows = []
    steps_array = np.asarray(steps)
    for switch in switches:
        inside = (steps_array > switch) & (steps_array <= switch + window)
        if not inside.any():
            continue
        per_seed = returns[:, inside].mean(axis=1)
        before = steps_array <= switch
        pre_switch = returns[:, np.flatnonzero(before)[-1]] if before.any() else np.full(len(returns), np.nan)
        rows.append({"switch_step": switch, "evaluations": int(inside.sum()),
                     "pre_switch_return_mean": float(pre_switch.mean()),
                     "recovered_return_mean": float(per_seed.mean()), "recovered_return_std": float(per_seed.std())})
    return rows


def plot(path: Path, env_id: str, curves: dict, switches: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for method, (steps, returns) in curves.items():
        mean, std = returns.mean(axis=0), returns.std(axis=0)
        axis.plot(steps, mean, label=method)
        axis.fill_between(steps, mean - std, mean + std, alpha=0.2)
    for i, switch in enumerate(switches):
        axis.axvline(switch, color="grey", linestyle="--", linewidth=0.8, label="switch" if i == 0 else None)
    axis.set_xlabel("env steps per seed")
    axis.set_ylabel("evaluation return")
    axis.set_title(env_id, fontsize=9)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args: CompareArgs) -> dict:
    for method in args.methods:
        if method not in METHODS:
            raise SystemExit(f"error: unknown method {method!r}; valid: {', '.join(METHODS)}")
    for env_id in args.envs:
        if nonstationary.split_env_id(env_id)[1] is None:
            raise SystemExit(f"error: {env_id!r} is stationary; add ?switch=...&every=... (see envs/nonstationary.py)")
    run_dir = Path(args.run_dir)
    if (run_dir / "summary.json").exists():
        raise SystemExit(f"error: {run_dir} already holds a comparison; choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    rows, table, diagnostic_rows = [], [], []
    for env_id in args.envs:
        switches = switch_steps(env_id, args.num_envs, args.total_steps)
        curves = {}
        for method in args.methods:
            agent, config = method_config(method, args)
            method_diagnostics: list = []
            steps, returns = train_and_evaluate(agent, config, env_id, args, method_diagnostics)
            diagnostic_rows += [{"env": env_id, "method": method, **r} for r in method_diagnostics]
            curves[method] = (steps, returns)
            rows += [{"env": env_id, "method": method, "step": s, "seed": args.seed + i, "return": float(returns[i, j])}
                     for j, s in enumerate(steps) for i in range(args.num_seeds)]
            table += [{"env": env_id, "method": method, **r} for r in recovery(steps, returns, switches, args.window)]
        name = env_id.replace(":", "_").replace("?", "_").replace("&", "_").replace("=", "-")
        plot(run_dir / f"{name}.png", env_id, curves, switches)
    for file_name, data in (("returns.csv", rows), ("recovery.csv", table), ("diagnostics.csv", diagnostic_rows)):
        with open(run_dir / file_name, "w", newline="") as f:
            fields = list(dict.fromkeys(k for r in data for k in r)) or ["env"]
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(data)
    summary = {"settings": dataclasses.asdict(args), "recovery": table}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(table, indent=1))
    return summary


if __name__ == "__main__":
    main(tyro.cli(CompareArgs))
