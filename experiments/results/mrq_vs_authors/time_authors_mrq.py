"""Time the authors' PyTorch MR.Q per training step on this CPU (the other side of `bench.py --agent mrq`).

Our own harness around facebookresearch/MRQ (not committed here; fetch it yourself):

    git clone https://github.com/facebookresearch/MRQ /tmp/MRQ && git -C /tmp/MRQ checkout 8a44a7d
    python3 -m venv /tmp/mrq-venv && . /tmp/mrq-venv/bin/activate
    pip install torch==2.13.0 numpy "gymnasium>=1.0" dm_control==1.0.50 "mujoco==3.17.*"   # torch: the CPU build
    python experiments/results/mrq_vs_authors/time_authors_mrq.py --mrq-dir /tmp/MRQ/MRQ --steps 500

It builds their env (`Dmc-cartpole-balance`) and agent with their default hyperparameters (buffer of 1e6
transitions: their LAP sampler takes a cumulative sum over all of it), stores their 10k random steps, then
times `--steps` training steps, each exactly their loop body (OnlineExperiment.run: select_action, env.step,
replay_buffer.add, train, reset at episode ends), with torch on `--threads` threads. Their buffer asks
torch.cuda.mem_get_info() where to keep its storage; on a CPU build the harness answers "plenty", so it stays
on the CPU device. 500 steps hold two
250-update encoder bursts, amortized as in a run. Prints one JSON line.
"""

import argparse
import json
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mrq-dir", required=True, help="the MRQ/ folder of facebookresearch/MRQ (MRQ.py, buffer.py)")
    parser.add_argument("--env", default="Dmc-cartpole-balance")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, args.mrq_dir)
    import numpy as np
    import torch

    import MRQ
    import env_preprocessing

    # Their buffer sizes its storage from torch.cuda.mem_get_info(), which a CPU build cannot answer: report
    # plenty, so the storage stays on the agent's device (the CPU), as it would on a big GPU.
    torch.cuda.mem_get_info = lambda *_: (2**40, 2**40)
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    env = env_preprocessing.Env(args.env, args.seed, eval_env=False)
    agent = MRQ.Agent(env.obs_shape, env.action_dim, env.max_action, env.pixel_obs, env.discrete,
                      torch.device("cpu"), env.history)

    def step(state):
        action = agent.select_action(np.array(state))
        if action is None:
            action = env.action_space.sample()
        next_state, reward, terminated, truncated = env.step(action)
        agent.replay_buffer.add(state, action, next_state, reward, terminated, truncated)
        agent.train()
        return env.reset() if terminated or truncated else next_state

    state = env.reset()
    warm = int(agent.buffer_size_before_training) + 1       # their random phase, then the first update
    for _ in range(warm):
        state = step(state)
    start = time.perf_counter()
    for _ in range(args.steps):
        state = step(state)
    elapsed = time.perf_counter() - start
    print(json.dumps({"who": "authors (facebookresearch/MRQ, PyTorch)", "env": args.env, "torch": torch.__version__,
                      "threads": args.threads, "buffer_size": int(agent.buffer_size), "random_steps": warm - 1,
                      "timed_steps": args.steps, "seconds": round(elapsed, 3),
                      "ms_per_step": round(1000 * elapsed / args.steps, 2)}))


if __name__ == "__main__":
    main()
