"""Throughput of an off-policy agent at several seed counts, as JSON.

    python experiments/bench.py --agent mrq --env dmc:cartpole-balance
    python experiments/bench.py --agent mrq --env mjx:CartpoleBalance --seeds 1 4 10

Each seed count builds the same loop `run.py` uses (host env stepping
included), fills the buffer with random steps, then times one full schedule
period of training steps (for MR.Q: 250 value/policy updates plus one
250-step encoder burst), after compilation. "N seeds for the price of one" is
`time_ratio_vs_1_seed`: the wall time of a step with N seeds over one seed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import tyro

import agents
from experiments.off_policy import make_loop


@dataclasses.dataclass(frozen=True)
class BenchArgs:
    agent: str = "mrq"
    """Agent name."""
    env: str = "dmc:cartpole-balance"
    """Environment id."""
    seeds: tuple[int, ...] = (1, 4, 10)
    """Seed counts to measure."""
    steps: int = 0
    """Timed training steps per seed count (0: one period of the agent's schedule, 250 for MR.Q)."""
    out: str | None = None
    """Also write the JSON to this file."""


def measure(agent, config, env_id: str, num_seeds: int, steps: int) -> dict:
    # Training starts at the last warm-up step, so the warm-up compiles every branch
    # and the timed window holds exactly one schedule period.
    config = dataclasses.replace(config, random_steps=steps - 1)
    loop = make_loop(agent, config, env_id, num_seeds, seed=0, replay_transitions=4 * steps)
    start = time.perf_counter()
    state, _ = loop.run(loop.init(), 0, steps)
    jax.block_until_ready(state["agent"])
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    state, _ = loop.run(state, steps, steps)
    jax.block_until_ready(state["agent"])
    elapsed = time.perf_counter() - start
    loop.close()
    return {"num_seeds": num_seeds, "timed_steps": steps, "seconds": round(elapsed, 3),
            "ms_per_step": round(1000 * elapsed / steps, 2),
            "agent_steps_per_s_per_seed": round(steps / elapsed, 2),
            "agent_steps_per_s_all_seeds": round(num_seeds * steps / elapsed, 2),
            "compile_and_warmup_s": round(warmup, 1)}


def main(args: BenchArgs) -> dict:
    agent = agents.get(args.agent)
    config = agent.Config()
    steps = args.steps or getattr(config, "target_update_freq", 250)
    results = [measure(agent, config, args.env, n, steps) for n in args.seeds]
    base = results[0]["seconds"]
    for r in results:
        r["time_ratio_vs_first"] = round(r["seconds"] / base, 2)
    report = {"agent": args.agent, "env": args.env, "device": str(jax.devices()[0]),
              "backend": jax.default_backend(), "jax": jax.__version__,
              "what": "training steps (act + env step + store + update, encoder burst amortized) after warm-up",
              "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main(tyro.cli(BenchArgs))
