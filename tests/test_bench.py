"""experiments/bench.py: the multitask measurement's fields and replay accounting (a tiny config, no seeding
episode so the test stays short; the timings themselves are not asserted)."""

import pytest

import agents
from agents import mrq_multitask as mt
from experiments import bench


def test_multitask_bench_reports_steps_per_task_per_seed_and_replay_bytes():
    config = mt.Config(enc_dim=16, mlp_dim=16, latent_dim=16, num_q=3, za_dim=8, batch_size=16, utd=0.5,
                       buffer_size=100_000)
    result = bench.measure_multitask(agents.get("mrq_multitask"), config, "dmc:cartpole-balance,reacher-easy",
                                     num_seeds=2, steps=4, seeding_episodes=0)
    assert result["tasks"] == ["dmc:cartpole-balance", "dmc:reacher-easy"]
    assert (result["num_seeds"], result["timed_steps"], result["updates_timed"]) == (2, 4, 4.0)
    # obs: the widest task (6) + a 2-task one-hot; actions 2; + reward, flags, priority and the sum tree (the 7
    # slots of 5 transitions have 4 + 2 + 1 nodes above them): (8 + 2 + 5 + 1) * 4 bytes.
    assert result["replay_bytes_per_slot_per_task"] == 64.0
    assert result["replay_mb_per_task_per_seed_at_1e5"] == round(64 * 1e5 / 2**20, 2)
    assert result["agent_steps_per_s_all_tasks_all_seeds"] == pytest.approx(
        4 * result["agent_steps_per_s_per_task_per_seed"], rel=0.01)


@pytest.mark.parametrize("startup, repeats, message", [
    (("mrq", "dqn"), 1, "--startup dqn: no short run defined; valid: mrq, ppo, sac"),
    (("sac",), 0, "--startup-repeats must be >= 1, got 0"),
])
def test_startup_refuses_an_agent_without_a_short_run_and_zero_repeats(startup, repeats, message):
    with pytest.raises(SystemExit, match=message):
        bench.main(bench.BenchArgs(startup=startup, startup_repeats=repeats))
