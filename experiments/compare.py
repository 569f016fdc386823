"""PPO, PPO+KL, GTR and SIGReg (beside its lambda = 0 twin) across task switches: who recovers, how fast.

    python experiments/compare.py --run-dir runs/compare
    python experiments/compare.py --envs "jax:PointMass?switch=action_sign&every=400000" \
        --methods ppo ppo_kl gtr --num-seeds 5 --run-dir runs/compare_sign
    python experiments/compare.py --envs "mjx:CheetahRun?switch=reward&every=20000000" --total-steps 60000000 \
        --preset playground --num-seeds 5 --run-dir runs/compare_cheetah

For every env id and method, all seeds train in one vmapped program (the
on-policy device loop) and are evaluated every `--eval-every` env steps on the
task the agent currently faces. Every method shares the env, budget, seeds,
evaluation, network sizes and the preset's other hyperparameters; only the
method's own terms differ. Written into `--run-dir`, rewritten after every
method (a stopped comparison keeps the methods it finished):

* `returns.csv`     -- env, method, step, seed, return, kl_from_pre_switch
* `recovery.csv`    -- per env, method, switch and seed: see `recovery`
* `recovery_ci.csv` -- the same per env, method and switch: mean over seeds and 95% bootstrap CI
* `diagnostics.csv` -- env, method, step, seed and the agent's diagnostics at each evaluation
                       (dormant ratio, srank, isotropy of each network's representation)
* `<env>.png`       -- return over steps, mean +- std over seeds, switches marked
* `summary.json`    -- the settings, JAX's (matmul precision, compile cache) and recovery_ci, written last

Methods: `ppo` (clipped surrogate), `ppo_kl` (clipped surrogate + `--kl-coef` x
KL to the old policy), `gtr` (agents/gtr.py with its defaults, or the `--gtr-*`
flags), `sigreg` (agents/sigreg.py with its defaults or `--sigreg-*`) and
`sigreg_off` (the same network at lambda = 0; added whenever `sigreg` is
asked for: SIGReg is always reported beside its own ablation). `--override`
sets any Config field: `gtr.sigma=0.3`, or `all.obs_norm_decay=0.99` for
every method at once (a shared setting keeps the comparison fair).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from envs import nonstationary
from experiments.jax_setup import JaxFlags

METHODS = ("ppo", "ppo_kl", "gtr", "sigreg", "sigreg_off")
RECOVERED_FRACTION = 0.9     # "recovered": back to 90% of the way from the post-switch floor to the pre-switch return
PRE_SWITCH_EVALUATIONS = 2   # the pre-switch return is the mean of the last evaluations at or before the switch


@dataclasses.dataclass(frozen=True)
class CompareArgs(JaxFlags):
    run_dir: str = "runs/compare"
    """Where the CSVs, plots and summary go (created; a directory with a comparison in it is refused)."""
    envs: tuple[str, ...] = ("jax:PointMass?switch=action_sign&every=400000",
                             "jax:PointMass?switch=obs_permutation&every=400000")
    """Non-stationary env ids (see envs/nonstationary.py)."""
    methods: tuple[str, ...] = ("ppo", "ppo_kl", "gtr", "sigreg")
    """Methods to compare: ppo, ppo_kl, gtr, sigreg (brings sigreg_off), sigreg_off."""
    num_seeds: int = 5
    """Seeds per method, trained at once by one vmapped program."""
    total_steps: int = 1_200_000
    """Env steps per seed."""
    eval_every: int = 50_000
    """Env steps between evaluations."""
    eval_episodes: int = 5
    """Evaluation episodes per seed."""
    window: int = 300_000
    """Env steps after each switch over which recovery is measured."""
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
    sigreg_coef: float | None = None
    """sigreg: lambda (None: sigreg.Config's default); sigreg_off always uses 0."""
    sigreg_network: str | None = None
    """sigreg and sigreg_off: shared_trunk or separate (None: sigreg.Config's default)."""
    override: tuple[str, ...] = ()
    """Config fields per method, METHOD.FIELD=VALUE (METHOD `all`: every method), e.g. gtr.anchor_period=4."""
    seed: int = 0
    """First seed."""


def parse_overrides(items: tuple[str, ...]) -> dict[str, dict]:
    """`("gtr.sigma=0.3", "all.obs_norm_decay=0.99")` -> {"gtr": {"sigma": 0.3}, "all": {...}}; values are Python
    literals (numbers, tuples, True) or else strings."""
    out: dict[str, dict] = {}
    for item in items:
        target, eq, value = item.partition("=")
        method, dot, name = target.partition(".")
        if not (eq and dot and name) or method not in METHODS + ("all",):
            raise ValueError(f"--override {item!r}: expected METHOD.FIELD=VALUE with METHOD one of "
                             f"{', '.join(METHODS + ('all',))}")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method, {})[name.replace("-", "_")] = parsed
    return out


def method_config(method: str, args: CompareArgs):
    """(agent module, Config) of `method` in this comparison's shared setting."""
    from agents import gtr, ppo, sigreg

    base = dict(ppo.PRESETS[args.preset])
    reference = base.get("num_envs", ppo.Config.num_envs)
    if args.num_envs >= reference:   # the co-scaling recipe: more minibatches of the same size
        base.update(num_envs=args.num_envs, scale_envs=True, reference_num_envs=reference)
    else:                            # fewer envs: same number of minibatches, proportionally smaller
        batch_size = base.get("batch_size", ppo.Config.batch_size)
        base.update(num_envs=args.num_envs, batch_size=max(1, batch_size * args.num_envs // reference))
    overrides = parse_overrides(args.override)
    base.update(overrides.get("all", {}))
    own = overrides.get(method, {})
    if method == "ppo":
        agent, fields = ppo, {}
    elif method == "ppo_kl":
        agent, fields = ppo, {"kl_coef": args.kl_coef}
    elif method in ("sigreg", "sigreg_off"):
        preset = dict(sigreg.PRESETS.get(args.preset, {}))
        agent = sigreg
        fields = {k: v for k, v in preset.items() if k not in base and k in ("trunk_hidden", "trunk_dim")}
        if args.sigreg_network is not None:
            fields["network"] = args.sigreg_network
        if method == "sigreg_off":
            fields.update(overrides.get("sigreg", {}), sigreg_coef=0.0)     # the twin: sigreg's network, lambda 0
        elif args.sigreg_coef is not None:
            fields["sigreg_coef"] = args.sigreg_coef
    elif method == "gtr":
        agent = gtr
        fields = {k: v for k, v in (("sigma", args.gtr_sigma), ("beta", args.gtr_beta),
                                    ("num_anchors", args.gtr_anchors)) if v is not None}
    else:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    fields.update(own)
    names = {f.name for f in dataclasses.fields(agent.Config)}
    unknown = sorted(set(base) - names) + sorted(set(fields) - names)
    if unknown:
        raise ValueError(f"{method}: {agent.__name__.split('.')[-1]}.Config has no field(s) {unknown}")
    config = agent.Config(**{**base, **fields})
    config.validate()
    return agent, config


def methods_to_run(methods: tuple[str, ...]) -> list[str]:
    """The asked-for methods in order, with sigreg_off right after sigreg when it was not asked for."""
    out = []
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        if method not in out:
            out.append(method)
        if method == "sigreg" and "sigreg_off" not in methods:
            out.append("sigreg_off")
    return out


def episode_span(env_id: str, num_envs: int) -> int:
    """Env steps per seed (num_envs in lockstep) during one evaluation episode of `env_id`."""
    import envs

    return envs.make(nonstationary.split_env_id(env_id)[0]).spec.max_episode_steps * num_envs


def switch_steps(env_id: str, num_envs: int, total_steps: int) -> list[int]:
    """The env steps per seed at which the task switches (the first step of each new phase)."""
    _, schedule = nonstationary.split_env_id(env_id)
    per_env = -(-schedule.every // num_envs)
    return list(range(per_env * num_envs, total_steps + 1, per_env * num_envs))


def _policy_kl_program():
    """jit(vmap over seeds) of the mean KL(old policy || new policy) on the new state's probe observations, each
    policy with the observation statistics it acts with."""
    import jax
    import jax.numpy as jnp

    from agents import ppo
    from networks import distributions as dist_lib

    def one(old, new):
        old, new = getattr(old, "ppo", old), getattr(new, "ppo", new)    # GTR keeps PPO's state inside its own
        obs = new.probe_obs
        return jnp.mean(dist_lib.kl_divergence(ppo.policy_dist(old, old.params, old.obs_stats, obs),
                                               ppo.policy_dist(new, new.params, new.obs_stats, obs)))

    return jax.jit(jax.vmap(one))


def train_and_evaluate(agent, config, env_id: str, args: CompareArgs, switches: list[int],
                       diagnostics: list | None = None) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Returns (steps, returns [seeds, evaluations], kl_from_pre_switch [seeds, evaluations]): the KL of the
    policy at each evaluation from the pre-switch policy of the latest switch before it (the policy at the last
    update boundary at or before that switch; NaN until the first). Appends the agent's diagnostics per evaluation and
    seed."""
    import jax

    from experiments.loops.on_policy import OnPolicyLoop

    loop = OnPolicyLoop(agent, config, env_id, args.num_seeds, args.seed)
    kl_program = _policy_kl_program()
    state, step, steps, returns, kls = loop.init(), 0, [], [], []
    granularity = loop.granularity
    pre_switch, upcoming = None, list(switches)
    while step < args.total_steps:
        target = min(-(-(step + args.eval_every) // granularity) * granularity,
                     -(-args.total_steps // granularity) * granularity)
        if upcoming and step < upcoming[0] < target:
            # Also evaluate at the last update boundary at or before the switch: that policy has trained on the
            # old task only (the pre-switch policy), and at the switch itself it meets the new task untrained.
            target = max(step + granularity, upcoming[0] // granularity * granularity)
        state, _ = loop.run(state, step, target - step)
        step = target
        steps.append(step)
        returns.append(loop.evaluate(state, step, args.eval_episodes).returns.mean(axis=1))
        kls.append(np.asarray(kl_program(pre_switch, state["agent"])) if pre_switch is not None
                   else np.full(args.num_seeds, np.nan))
        if upcoming and upcoming[0] - granularity < step <= upcoming[0]:
            pre_switch = jax.device_get(state["agent"])     # a host copy: the loop donates its device buffers
            upcoming.pop(0)
        if diagnostics is not None:
            values = loop.diagnostics(state, step)
            diagnostics += [{"step": step, "seed": args.seed + i, **{k: float(v[i]) for k, v in values.items()}}
                            for i in range(args.num_seeds)]
        print(f"  {agent.__name__.split('.')[-1]} {env_id} step {step}: "
              f"{np.round(returns[-1], 1).tolist()}", file=sys.stderr, flush=True)
    return steps, np.stack(returns, axis=1), np.stack(kls, axis=1)


def recovery(steps: list[int], returns: np.ndarray, kls: np.ndarray, switches: list[int], window: int,
             seed: int = 0, episode_span: int = 0) -> list[dict]:
    """Per switch and seed, over the evaluations in [switch, switch + window] (an evaluation at step s runs on
    the task of the training clock at s, so the one at the switch is the old policy on the new task):

    * pre_switch_return: mean of the last PRE_SWITCH_EVALUATIONS evaluations whose episodes end before the switch
      (at steps < switch - episode_span, the env steps per seed an evaluation episode spans: an evaluation
      that starts just before the switch plays most of its episode on the new task);
    * floor_return: the lowest evaluation in the window;
    * steps_to_recover: env steps after the switch until the first evaluation, at or after the floor, that is
      back RECOVERED_FRACTION of the way from the floor to the pre-switch return (0 if the switch cost nothing;
      NaN if it never came back within the window);
    * window_return: mean evaluation return in the window;
    * kl_from_pre_switch: KL(pre-switch policy || policy) at the window's last evaluation: how far the policy
      moved to adapt.
    """
    rows = []
    steps_array = np.asarray(steps)
    for switch in switches:
        inside = np.flatnonzero((steps_array >= switch) & (steps_array <= switch + window))
        before = np.flatnonzero(steps_array < switch - episode_span)
        if not inside.size or not before.size:
            continue
        for i in range(returns.shape[0]):
            pre = float(returns[i, before[-PRE_SWITCH_EVALUATIONS:]].mean())
            window_returns = returns[i, inside]
            lowest = int(np.argmin(window_returns))
            floor = float(window_returns[lowest])
            if floor >= pre:
                steps_to_recover = 0.0
            else:
                goal = floor + RECOVERED_FRACTION * (pre - floor)
                back = np.flatnonzero(window_returns[lowest:] >= goal)
                steps_to_recover = float(steps_array[inside[lowest + back[0]]] - switch) if back.size else np.nan
            rows.append({"switch_step": switch, "seed": seed + i, "pre_switch_return": pre, "floor_return": floor,
                         "steps_to_recover": steps_to_recover, "window_return": float(window_returns.mean()),
                         # the window's last evaluation, unless that is the pre-switch policy itself
                         "kl_from_pre_switch": 0.0 if steps[inside[-1]] == switch else float(kls[i, inside[-1]])})
    return rows


def recovery_ci(rows: list[dict]) -> list[dict]:
    """recovery()'s rows of one env and method, per switch: the mean over seeds with a 95% bootstrap CI
    (experiments/stats.bootstrap_ci) of every measure; steps_to_recover over the seeds that recovered, beside how
    many did."""
    from experiments.stats import bootstrap_ci

    out = []
    for switch in sorted({r["switch_step"] for r in rows}):
        group = [r for r in rows if r["switch_step"] == switch]
        entry = {"switch_step": switch, "seeds": len(group),
                 "recovered_seeds": int(sum(np.isfinite(r["steps_to_recover"]) for r in group))}
        for name in ("pre_switch_return", "floor_return", "window_return", "steps_to_recover", "kl_from_pre_switch"):
            values = np.array([r[name] for r in group], np.float64)
            values = values[np.isfinite(values)]
            if values.size:
                estimate = bootstrap_ci(values)
                entry.update({f"{name}_mean": float(estimate.value), f"{name}_ci_low": float(estimate.low),
                              f"{name}_ci_high": float(estimate.high)})
            else:
                entry.update({f"{name}_mean": np.nan, f"{name}_ci_low": np.nan, f"{name}_ci_high": np.nan})
        out.append(entry)
    return out


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


def _write_csv(path: Path, data: list[dict]) -> None:
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in data for k in r)) or ["env"]
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(data)
    partial.replace(path)      # a reader never sees half a file


def main(args: CompareArgs) -> dict:
    from experiments import jax_setup

    try:
        methods = methods_to_run(args.methods)
        configs = {m: method_config(m, args) for m in methods}       # every bad flag refused before training
        jax_settings = jax_setup.configure_jax(args)                  # before anything compiles
    except ValueError as error:                                       # JaxSetupError included
        raise SystemExit(f"error: {error}") from None
    for env_id in args.envs:
        if nonstationary.split_env_id(env_id)[1] is None:
            raise SystemExit(f"error: {env_id!r} is stationary; add ?switch=...&every=... (see envs/nonstationary.py)")
    run_dir = Path(args.run_dir)
    if (run_dir / "summary.json").exists() or (run_dir / "returns.csv").exists():
        raise SystemExit(f"error: {run_dir} already holds a comparison; choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    rows, per_seed, table, diagnostic_rows = [], [], [], []
    for env_id in args.envs:
        switches = switch_steps(env_id, args.num_envs, args.total_steps)
        name = env_id.replace(":", "_").replace("?", "_").replace("&", "_").replace("=", "-")
        curves = {}
        for method in methods:
            agent, config = configs[method]
            method_diagnostics: list = []
            steps, returns, kls = train_and_evaluate(agent, config, env_id, args, switches, method_diagnostics)
            diagnostic_rows += [{"env": env_id, "method": method, **r} for r in method_diagnostics]
            curves[method] = (steps, returns)
            rows += [{"env": env_id, "method": method, "step": s, "seed": args.seed + i,
                      "return": float(returns[i, j]), "kl_from_pre_switch": float(kls[i, j])}
                     for j, s in enumerate(steps) for i in range(args.num_seeds)]
            seeds = recovery(steps, returns, kls, switches, args.window, args.seed, episode_span(env_id, args.num_envs))
            per_seed += [{"env": env_id, "method": method, **r} for r in seeds]
            table += [{"env": env_id, "method": method, **r} for r in recovery_ci(seeds)]
            for file_name, data in (("returns.csv", rows), ("recovery.csv", per_seed), ("recovery_ci.csv", table),
                                    ("diagnostics.csv", diagnostic_rows)):
                _write_csv(run_dir / file_name, data)
            plot(run_dir / f"{name}.png", env_id, curves, switches)
    summary = {"settings": dataclasses.asdict(args), "jax": jax_settings, "methods": methods,
               "configs": {m: dataclasses.asdict(c) for m, (_, c) in configs.items()}, "recovery": table}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(table, indent=1))
    return summary


def command(argv: list[str] | None = None) -> int:
    """`python experiments/compare.py` and `ctrlrl-compare`: the flags (a bad one is one `error:` line, exit 2),
    then main."""
    from experiments.run import parse_or_exit

    main(parse_or_exit(CompareArgs, "PPO, PPO+KL, GTR and SIGReg across task switches (see the module's "
                                    "docstring).", argv))
    return 0


if __name__ == "__main__":
    sys.exit(command())
