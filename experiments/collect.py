"""Make offline datasets with this project's own agents, in D4RL's HDF5 layout.

    python experiments/collect.py --env gym:Hopper-v5 --policy medium-replay --out data/hopper-medium-replay.hdf5
    python experiments/collect.py --env gym:InvertedPendulum-v5 --policy random --steps 20000 \
        --out data/pendulum-random.hdf5

D4RL cannot be downloaded here, so its recipe is followed with our agents:

* `random`        -- uniform actions in [-1, 1].
* `expert`        -- a behaviour agent (SAC by default) trained for `--train-steps`; its best evaluated
                     snapshot acts (sampling its stochastic policy, as D4RL's SAC policies did).
* `medium`        -- the first snapshot of the same training run whose evaluation return reaches
                     `--medium-fraction` (1/3) of the expert's.
* `medium-replay` -- the replay buffer of that training run up to the medium snapshot.
* `medium-expert` -- medium and expert data, `--steps` transitions each, concatenated (D4RL's mixture).

Every file records, as HDF5 attributes, the env id, the policy, the seed, the number of transitions, the
code version, the matmul precision (experiments/jax_setup.py), and the random and expert reference returns
(`ref_min_score`, `ref_max_score`, as D4RL names them) that normalized scores use:
100 (R - random) / (expert - random). For gymnasium envs, `infos/qpos` and `infos/qvel` hold the simulator
state of each observation (for rollouts in the true simulator, agents/ravl.py `--dynamics true`), except
in `medium-replay`: it is the behaviour agent's replay buffer, which keeps observations only. Files are
written atomically; training the behaviour agent writes an ordinary run directory (`--run-dir`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import numpy as np

from agents.config import check_fields, field
from experiments import jax_setup
from experiments.jax_setup import JaxFlags

POLICIES = ("random", "medium", "expert", "medium-replay", "medium-expert")


class CollectError(ValueError):
    """A bad input: the message names it and the valid choices."""


@dataclasses.dataclass(frozen=True)
class CollectArgs(JaxFlags):
    env: str = "gym:Hopper-v5"
    """Host environment id (gym:<id> or dmc:<domain>-<task>)."""
    policy: Literal["random", "medium", "expert", "medium-replay", "medium-expert"] = "medium-replay"
    """Which behaviour policy makes the data."""
    out: str = "data/dataset.hdf5"
    """The HDF5 file to write (refused if it exists, unless --overwrite)."""
    steps: int = field(100_000, ">= 1")
    """Transitions to collect (medium-expert: this many from each policy; medium-replay: the buffer as is)."""
    agent: Literal["sac", "td3"] = "sac"
    """Behaviour agent trained for medium / expert / medium-replay."""
    train_steps: int = field(300_000, ">= 1")
    """Env steps the behaviour agent trains for."""
    eval_every: int = field(5_000, ">= 1")
    """Env steps between evaluations (snapshots) of the behaviour agent."""
    eval_episodes: int = field(5, ">= 1")
    """Episodes per evaluation."""
    medium_fraction: float = field(1.0 / 3.0, "(0, 1]")
    """The medium snapshot is the first whose return reaches this fraction of the expert's."""
    reference_episodes: int = field(10, ">= 1")
    """Episodes that measure the random and expert reference returns."""
    ref_expert: float | None = field(None, "finite")
    """--policy random: the expert reference return to record (e.g. ref_max_score of another file made here,
    or the task's known maximum); without it a random dataset records only the random reference."""
    learning_starts: int | None = field(None, ">= 0")
    """Override the behaviour agent's random warm-up steps (None: its default)."""
    seed: int = field(0, ">= 0")
    """Seed of the behaviour agent and of the collection envs."""
    run_dir: str | None = None
    """Where the behaviour agent's training run goes (default: <out>.behaviour/)."""
    overwrite: bool = False
    """Replace an existing --out file."""

    def validate(self) -> None:
        """Everything that can be checked before collecting: flags, the env family, the output path, and the
        behaviour agent's configuration (CollectError naming the first problem)."""
        import envs

        try:
            check_fields(self)
        except ValueError as error:
            raise CollectError(str(error)) from None
        if self.policy not in POLICIES:
            raise CollectError(f"--policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if envs.is_jax_env(self.env):
            raise CollectError(f"--env {self.env}: collect.py records host envs (gym:<id>, dmc:<domain>-<task>), "
                               "whose simulator state it can save; JAX envs are not supported")
        out = Path(self.out)
        if out.is_dir():
            raise CollectError(f"--out {out} is a directory; name the HDF5 file to write (e.g. {out / 'data.hdf5'})")
        if out.exists() and not self.overwrite:
            raise CollectError(f"{self.out} exists; pass --overwrite to replace it or choose another --out")
        for parent in out.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise CollectError(f"--out {out}: {parent} is a file, not a directory")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise CollectError(f"--out {out}: {parent} is not writable")
                break
        if self.policy != "random":
            behaviour_config(self)

def behaviour_config(args: CollectArgs):
    """The behaviour agent's Config, validated (CollectError names a bad override or a too-small buffer)."""
    import agents

    agent = agents.get(args.agent)
    overrides = {} if args.learning_starts is None else {"learning_starts": args.learning_starts}
    config = agent.Config(**overrides)
    try:
        config.validate()
    except ValueError as error:
        raise CollectError(f"behaviour agent {args.agent}: {error}") from None
    if args.train_steps > config.buffer_size:
        raise CollectError(f"--train-steps {args.train_steps} exceeds the {args.agent} buffer "
                           f"({config.buffer_size}): medium-replay needs the whole run in the buffer")
    return config


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------------------------------------
# Rolling out a policy on a host env
# ------------------------------------------------------------------------------------------------


def rollout(env_id: str, policy_fn, steps: int, seed: int, episodes: int | None = None) -> dict:
    """`steps` transitions (or `episodes` whole episodes) of `policy_fn(obs [1, d], key) -> action [1, a]`.

    Returns D4RL arrays (plus `infos` with the simulator state where the env has one) and the returns of
    the episodes that finished."""
    import envs

    env = envs.make(env_id, num_envs=1, seed=seed)
    columns = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    infos: dict[str, list] = {}
    returns, episode_return = [], 0.0
    key = jax.random.PRNGKey(seed)
    try:
        obs = env.reset()
        t = 0
        while (episodes is None and t < steps) or (episodes is not None and len(returns) < episodes):
            physics = env.physics_states()
            action = np.asarray(policy_fn(obs, jax.random.fold_in(key, t)), np.float32)
            result = env.step(action)
            for name, value in (("observations", obs[0]), ("actions", action[0]), ("rewards", result.reward[0]),
                                ("next_observations", result.final_obs[0]), ("terminals", result.terminated[0]),
                                ("timeouts", result.truncated[0])):
                columns[name].append(value)
            for name, value in (physics or {}).items():
                infos.setdefault(name, []).append(value[0])
            episode_return += float(result.reward[0])
            if result.terminated[0] or result.truncated[0]:
                returns.append(episode_return)
                episode_return = 0.0
            obs = result.obs
            t += 1
    finally:
        env.close()
    if columns["timeouts"]:
        columns["timeouts"][-1] = columns["timeouts"][-1] or not columns["terminals"][-1]   # the data ends here
    arrays = {k: np.asarray(v, np.float32) for k, v in columns.items()}
    arrays["terminals"], arrays["timeouts"] = arrays["terminals"] > 0, arrays["timeouts"] > 0
    arrays["infos"] = {k: np.asarray(v, np.float32) for k, v in infos.items()}
    return {"arrays": arrays, "returns": returns}


def random_policy(action_dim: int):
    return lambda obs, key: np.asarray(jax.random.uniform(key, (1, action_dim), minval=-1.0, maxval=1.0))


def agent_policy(agent, snapshot, explore: bool):
    """A host policy from one seed's agent state (leaves without the seed axis)."""
    act = jax.jit(lambda state, obs, key: agent.act(state, obs, key, explore))
    return lambda obs, key: np.asarray(act(snapshot, obs, key))


# ------------------------------------------------------------------------------------------------
# Training the behaviour agent, keeping snapshots
# ------------------------------------------------------------------------------------------------


def train_behaviour(args: CollectArgs, run_dir: Path) -> dict:
    """Train the behaviour agent; returns its snapshots (without replay) with their evaluation returns, and
    the final replay buffer. The buffer at step s is the final one restricted to its first s transitions:
    it never wraps around, since --train-steps <= the buffer size (checked)."""
    import agents
    from experiments.loops.driver import drive
    from experiments.loops.off_policy import HostLoop

    agent = agents.get(args.agent)
    config = behaviour_config(args)
    loop = HostLoop(agent, config, args.env, num_seeds=1, seed=args.seed, replay_transitions=args.train_steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = []

    def on_eval(step, state, evaluation, diagnostics):
        mean_return = float(evaluation.returns.mean())
        snapshot = jax.tree.map(lambda x: np.asarray(x[0]), state["agent"].replace(replay=None))
        history.append({"step": step, "return": mean_return, "snapshot": snapshot})
        print(f"  {args.agent} {args.env} step {step}: eval return {mean_return:.1f}", file=sys.stderr, flush=True)

    try:
        state, _ = drive(loop, loop.init(), 0, args.train_steps, eval_every=args.eval_every,
                         eval_episodes=args.eval_episodes, on_eval=on_eval)
    finally:
        loop.close()
    # Seed 0's replay; the host loop steps one env per seed, so all of it is stream 0 (replay/streams.py).
    buffer = jax.tree.map(lambda x: np.asarray(x[0, 0]), state["agent"].replay)
    (run_dir / "evaluations.json").write_text(json.dumps([{k: h[k] for k in ("step", "return")} for h in history]))
    return {"agent": agent, "history": history, "buffer": buffer}


def buffer_transitions(buffer, num_transitions: int) -> dict:
    """The first `num_transitions` transitions of a replay buffer (replay/buffer.py layout) as D4RL arrays."""
    has = np.asarray(buffer.has_transition) > 0
    slots = np.flatnonzero(has)[:num_transitions]
    after = (slots + 1) % has.shape[0]
    terminals = np.asarray(buffer.terminated)[slots] > 0
    episode_end = ~has[after]                       # the next slot holds the episode's final observation
    timeouts = episode_end & ~terminals
    timeouts[-1] = timeouts[-1] or not terminals[-1]
    obs = np.asarray(buffer.obs)
    return {"observations": obs[slots], "actions": np.asarray(buffer.action)[slots],
            "rewards": np.asarray(buffer.reward)[slots], "next_observations": obs[after],
            "terminals": terminals, "timeouts": timeouts}


# ------------------------------------------------------------------------------------------------


def collect(args: CollectArgs) -> Path:
    import envs
    from replay import datasets

    args.validate()
    try:
        jax_settings = jax_setup.configure_jax(args)       # before anything compiles
    except jax_setup.JaxSetupError as error:
        raise CollectError(str(error)) from None
    spec = envs.make(args.env, num_envs=1, seed=args.seed)   # UnknownEnvError names the valid ids
    action_dim = spec.spec.action_dim
    spec.close()
    reference = rollout(args.env, random_policy(action_dim), 0, args.seed + 10_000, episodes=args.reference_episodes)
    ref_random = float(np.mean(reference["returns"]))
    metadata = {"env_id": args.env, "policy": args.policy, "seed": args.seed, "code_version": code_version(),
                "matmul_precision": jax_settings["matmul_precision"], "ref_min_score": ref_random}

    if args.policy == "random":
        data = rollout(args.env, random_policy(action_dim), args.steps, args.seed)["arrays"]
        if args.ref_expert is not None:
            metadata["ref_max_score"] = args.ref_expert
    else:
        run_dir = Path(args.run_dir) if args.run_dir else Path(args.out).with_suffix(".behaviour")
        trained = train_behaviour(args, run_dir)
        history, agent = trained["history"], trained["agent"]
        best = max(history, key=lambda h: h["return"])
        expert_policy = agent_policy(agent, best["snapshot"], explore=True)
        expert_eval = rollout(args.env, agent_policy(agent, best["snapshot"], explore=False), 0, args.seed + 20_000,
                              episodes=args.reference_episodes)
        ref_expert = float(np.mean(expert_eval["returns"]))
        metadata["ref_max_score"] = ref_expert
        target = ref_random + args.medium_fraction * (ref_expert - ref_random)
        medium = next((h for h in history if h["return"] >= target), best)
        metadata["medium_step"], metadata["expert_step"] = medium["step"], best["step"]
        print(f"  random {ref_random:.1f}, expert {ref_expert:.1f} (step {best['step']}), medium snapshot at step "
              f"{medium['step']} ({medium['return']:.1f}, target {target:.1f})", file=sys.stderr, flush=True)
        medium_policy = agent_policy(agent, medium["snapshot"], explore=True)
        if args.policy == "expert":
            data = rollout(args.env, expert_policy, args.steps, args.seed + 1)["arrays"]
        elif args.policy == "medium":
            data = rollout(args.env, medium_policy, args.steps, args.seed + 1)["arrays"]
        elif args.policy == "medium-replay":
            data = buffer_transitions(trained["buffer"], medium["step"])
        else:   # medium-expert
            parts = [rollout(args.env, p, args.steps, args.seed + i)["arrays"]
                     for i, p in ((1, medium_policy), (2, expert_policy))]
            data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "infos"}
            data["infos"] = {k: np.concatenate([p["infos"][k] for p in parts]) for k in parts[0]["infos"]}
    metadata["steps"] = int(len(data["observations"]))
    return datasets.write(args.out, data, metadata)


def main(argv: list[str] | None = None) -> int:
    from envs import UnknownEnvError
    from experiments.run import cli
    from experiments.train import RunError
    from replay.datasets import DatasetError

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = cli(CollectArgs, argv, "Make an offline dataset (D4RL's HDF5 layout) with this project's agents.")
        path = collect(args)
    except (CollectError, UnknownEnvError, DatasetError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no dataset was written", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"error: {error.strerror or error}{f' ({error.filename})' if error.filename else ''}; no dataset "
              "was written", file=sys.stderr)
        return 1
    print(f"dataset written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
