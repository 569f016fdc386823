"""Policy exports (experiments/policy.py), experiments/evaluate.py and videos (experiments/video.py).

- A finished tiny SAC run on gymnasium (2 seeds, the host loop) is evaluated from its export alone: its last eval.csv
  rows come back as text (same programs, keys and env seeds), and so does one seed alone; its videos, evaluate.py's
  and the run's own (--video-every), have a frame per step; its policy loads in a fresh process from the export file
  alone. The other runs that reproduce their rows: MR.Q (dm_control; drawn on dm_control and MJX) in
  tests/test_cli.py, PPO (a JAX env) in tests/test_learning.py, RAVL (offline) in tests/test_ravl.py -- each on a
  run those tests train anyway.
- Every registered agent's export, made from a state of random values, loads into a policy that acts as the agent's
  own `act` on the whole state (NEUBAY: its recurrent `act_step` too).
- Bad input: one `error:` line, exit code 2, nothing written.

Reduced configs: 16-wide networks, 200 env steps (50 random), videos 64 x 48 pixels.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from experiments import evaluate, policy
from tests.cli_utils import ROOT, assert_evaluate_reproduces, eval_rows, run_inprocess, run_main

VIDEO = ["--video-width", "64", "--video-height", "48"]


def frames(path) -> tuple[int, tuple[int, ...]]:
    """(number of frames, frame shape) of an MP4, read back with imageio's ffmpeg reader."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        read = [frame for frame in reader]
    return len(read), read[0].shape


def test_a_sac_run_is_evaluated_drawn_and_loaded_from_its_export(tmp_path):
    run_dir = tmp_path / "run"
    result = run_inprocess("--agent", "sac", "--env", "gym:InvertedPendulum-v5", "--num-seeds", "2",
                           "--total-steps", "200", "--eval-every", "100", "--log-every", "100", "--eval-episodes", "2",
                           "--video-every", "2", "--learning-starts", "50", "--batch-size", "16",
                           "--critic-hidden", "16", "16", "--actor-hidden", "16", "16", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(policy.checkpoint_exports(run_dir)) == [100, 200]

    expected = assert_evaluate_reproduces(run_dir, tmp_path / "all.csv", 200)
    # One seed alone: its host envs are the ones it had in the run's evaluation.
    result = run_main(evaluate.main, "--run-dir", str(run_dir), "--seeds", "1", "--out", str(tmp_path / "one.csv"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert eval_rows(tmp_path / "one.csv", 200) == {"1": expected["1"]}

    # Videos: evaluate.py's of every seed, and the run's own (--video-every 2: at the second evaluation, seed 0).
    # InvertedPendulum-v5 pays 1 per step but the last (the fall): an episode of R has R + 1 steps, one frame each.
    result = run_main(evaluate.main, "--run-dir", str(run_dir), "--video", *VIDEO, "--video-dir",
                      str(tmp_path / "videos"), "--out", str(tmp_path / "episodes.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    returns = json.loads((tmp_path / "episodes.json").read_text())["returns"]
    for seed in ("0", "1"):
        assert frames(tmp_path / "videos" / f"seed{seed}_episode0.mp4") == (returns[seed][0] + 1, (48, 64, 3))
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == ["200"]
    assert frames(run_dir / "videos" / "200" / "seed0_episode0.mp4") == (returns["0"][0] + 1, (240, 320, 3))

    # load_policy in a fresh process with the export file alone, against this process's.
    alone = tmp_path / "alone" / "policy.msgpack"
    alone.parent.mkdir()
    shutil.copy(policy.find_export(run_dir), alone)
    obs = np.linspace(-0.5, 0.5, 3 * 4, dtype=np.float32).reshape(3, 4)
    code = ("import sys, numpy as np; from experiments.evaluate import load_policy; p = load_policy(sys.argv[1], "
            "seed=1); print(p.agent, p.step, p.seed, p.env_id); "
            "print(np.asarray(p(np.linspace(-0.5, 0.5, 12, dtype=np.float32).reshape(3, 4))).tolist())")
    child = subprocess.run([sys.executable, "-c", code, str(alone)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, child.stderr[-3000:]
    header, actions = child.stdout.strip().splitlines()[-2:]
    assert header == "sac 200 1 gym:InvertedPendulum-v5"
    here = policy.load_policy(run_dir, seed=1)
    np.testing.assert_array_equal(np.asarray(json.loads(actions), np.float32), np.asarray(here(obs)))
    assert np.asarray(here(obs)).shape == (3, 1) and not here.recurrent


# ------------------------------------------------------------------------------------------------
# Every agent's export, from random states
# ------------------------------------------------------------------------------------------------


class _Loop:
    """What `policy.Exporter` reads of a loop."""

    def __init__(self, agent, spec, config, capacity):
        from experiments.loops.lanes import Lanes

        self.agent, self.spec, self.config, self.capacity = agent, spec, config, capacity
        self.env_id, self.seed, self.lanes = spec.env_id, 0, Lanes.of_run(config, 0, 2)


def _random_state(agent, spec, config, capacity):
    """Two lanes of the agent's state, every float leaf random but the config's (0.1: a valid value of every
    hyperparameter acting may read), so that what acting reads must really be exported."""
    abstract = policy.abstract_state(agent, spec, config, capacity)
    rng = np.random.default_rng(0)

    def fill(path, leaf):
        shape = (2, *leaf.shape)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.zeros(shape, leaf.dtype)
        if ".config." in jax.tree_util.keystr(path):
            return jnp.full(shape, 0.1, leaf.dtype)
        return jnp.asarray(rng.normal(0, 0.5, shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


# CI leaves out the two slowest (about 4 and 7 s here; their exports are built like the others'): `pytest -m long`.
SLOW = ("least", "mrq_multitask")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n in SLOW else n for n in agents.names()])
def test_every_agents_export_acts_as_its_agent(name, tmp_path):
    from envs.core import EnvSpec
    from tests.test_sweep_every_agent import CASES

    env_id, kwargs, *_ = CASES[name]
    agent = agents.get(name)
    config = agent.Config(**kwargs)
    spec = (EnvSpec("gym:InvertedPendulum-v5", 4, 1, 1000, 1, True) if agent.LOOP == "offline"
            else EnvSpec(env_id, 4, 2, 100, 1, False))
    state = _random_state(agent, spec, config, capacity=64)
    path = tmp_path / "policy.msgpack"
    export = policy.Exporter(_Loop(agent, spec, config, 64), eval_episodes=3).write(path, state, step=7)
    assert not (tmp_path / "policy.msgpack.tmp").exists()
    exported = sum(a.size for a in export.leaves.values())
    assert 0 < exported < sum(x.size for x in jax.tree.leaves(state))      # acting reads part of the state
    if agent.LOOP == "off_policy":
        assert not any("replay" in p or "opt_state" in p for p in export.leaves), sorted(export.leaves)

    loaded = policy.load_policy(path, seed=1)
    assert (loaded.agent, loaded.step, loaded.seed, loaded.spec) == (name, 7, 1, spec)
    lane = jax.tree.map(lambda x: x[1], state)
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(3, spec.obs_dim)), jnp.float32)
    key = jax.random.PRNGKey(0)
    expected = jax.jit(lambda s, o: agent.act(s, o, key, False))(lane, obs)
    np.testing.assert_array_equal(np.asarray(loaded(obs)), np.asarray(expected))
    if getattr(agent, "act_step", None) is not None:       # NEUBAY: the history-dependent policy, three steps
        assert loaded.recurrent
        carry, ours = agent.initial_carry(lane, (3,)), loaded.initial_carry((3,))
        for t in range(3):
            first, reward = jnp.full(3, t == 0), jnp.full(3, 0.5)
            action, carry = agent.act_step(lane, carry, obs + t, reward, first, key, False)
            mine, ours = loaded.act_step(ours, obs + t, reward, first)
            np.testing.assert_allclose(np.asarray(mine), np.asarray(action), rtol=1e-6, atol=1e-6)


def test_an_agent_that_cannot_be_exported_says_why():
    """An offline agent whose init needs its world cannot be loaded from an export: the export refuses it by name
    (training then says so once and goes on without exports)."""
    from agents import bc
    from envs.core import EnvSpec

    needs_world = dataclasses.replace(bc.AGENT, name="bc_needs_world",
                                      init=lambda key, spec, config, world: bc.init(key, spec, config, world["data"]))
    spec = EnvSpec("gym:InvertedPendulum-v5", 4, 1, 1000, 1, True)
    exporter = policy.Exporter(_Loop(needs_world, spec, bc.Config(), 0), eval_episodes=1)
    with pytest.raises(policy.ExportError, match="agent 'bc_needs_world' cannot be exported: its init fails "
                                                 "without a training world .* must accept world=None"):
        exporter.export({}, step=1)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sac_export(tmp_path_factory):
    """A run directory whose checkpoint 5 has a (random) SAC export on InvertedPendulum, and checkpoint 6 none."""
    from envs.core import EnvSpec

    run_dir = tmp_path_factory.mktemp("bad") / "run"
    (run_dir / "checkpoints" / "5").mkdir(parents=True)
    (run_dir / "checkpoints" / "6").mkdir()
    agent = agents.get("sac")
    config = agent.Config(critic_hidden=(16, 16), actor_hidden=(16, 16))
    spec = EnvSpec("gym:InvertedPendulum-v5", 4, 1, 1000, 1, True)
    state = _random_state(agent, spec, config, 64)
    policy.Exporter(_Loop(agent, spec, config, 64), eval_episodes=1).write(
        run_dir / "checkpoints" / "5" / policy.FILE, state, step=5)
    return run_dir


def test_a_failed_export_write_leaves_the_previous_file_whole(sac_export, monkeypatch):
    path = sac_export / "checkpoints" / "5" / policy.FILE
    before = path.read_bytes()
    export = policy.read_export(path)

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        policy.write_export(path, dataclasses.replace(export, step=6))
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [policy.FILE]


@pytest.mark.parametrize("case, args, expected", [
    ("missing", ["--run-dir", "{tmp}/nothing"], "nothing does not exist"),
    ("empty", ["--run-dir", "{tmp}"], "holds no checkpoint"),
    ("step", ["--run-dir", "{run}", "--step", "7"], "no checkpoint at step 7"),
    ("no_export", ["--run-dir", "{run}", "--step", "6"], "checkpoint 6 of"),
    ("corrupt", ["--run-dir", "{tmp}/policy.msgpack"], "is corrupt"),
    ("env", ["--run-dir", "{run}", "--step", "5", "--env", "gym:NotAnEnv-v0"], "Unknown env id 'gym:NotAnEnv-v0'"),
    ("widths", ["--run-dir", "{run}", "--step", "5", "--env", "dmc:cartpole-balance"],
     "dmc:cartpole-balance has 5 observation and 1 action dims"),
    ("seeds", ["--run-dir", "{run}", "--step", "5", "--seeds", "3"], "--seeds 3: give distinct seed indices"),
    ("out", ["--run-dir", "{run}", "--step", "5", "--out", "{tmp}/results.txt"], "give a .csv or a .json"),
])
def test_bad_input_gives_one_error_line(case, args, expected, sac_export, tmp_path):
    if case == "corrupt":         # an export cut short
        whole = (sac_export / "checkpoints" / "5" / policy.FILE).read_bytes()
        (tmp_path / "policy.msgpack").write_bytes(whole[: len(whole) // 2])
    args = [a.format(tmp=tmp_path, run=sac_export) for a in args]
    before = sorted(p.name for p in sac_export.rglob("*"))
    result = run_main(evaluate.main, *args, "--out", str(tmp_path / "out.csv")) if case != "out" else run_main(
        evaluate.main, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert sorted(p.name for p in sac_export.rglob("*")) == before and not (tmp_path / "out.csv").exists()


def test_video_where_rendering_is_unavailable_fails_clearly(sac_export, tmp_path):
    """osmesa is not installed here: evaluate.py --video says so, and what works, before evaluating anything."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "osmesa"}
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "evaluate.py"), "--run-dir", str(sac_export),
                             "--step", "5", "--video", "--out", str(tmp_path / "out.csv")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: MuJoCo cannot render here (MUJOCO_GL=osmesa" in result.stderr
    assert "MUJOCO_GL=egl works" in result.stderr and not (tmp_path / "out.csv").exists()


def test_a_ppo_export_evaluates_a_switching_env_in_the_runs_phase(tmp_path):
    """An on-policy run's env switches every `every` env steps summed over its num_envs envs (its evaluator's
    clock is step // num_envs): evaluating the export builds the env with the run's num_envs, so the eval envs
    start in the phase the run's evaluation saw -- here already switched, where one env would not be."""
    from envs.core import EnvSpec
    from tests.test_sweep_every_agent import CASES

    env_id = "jax:PointMass?switch=obs_permutation&every=800"
    agent = agents.get("ppo")
    config = agent.Config(**{**CASES["ppo"][1], "num_envs": 8})
    spec = EnvSpec(env_id, 4, 2, 100, 1, False)
    path = tmp_path / "policy.msgpack"
    policy.Exporter(_Loop(agent, spec, config, 64), eval_episodes=1).write(
        path, _random_state(agent, spec, config, capacity=64), step=800)
    evaluator = policy.ExportEvaluator(policy.read_export(path))
    clock = 800 // 8                                              # the phase switches at clock 800 / 8
    key = jax.random.PRNGKey(3)
    obs = lambda env: np.asarray(env.reset(key, clock).obs)
    np.testing.assert_array_equal(obs(evaluator.env), obs(envs.make(env_id, num_envs=8)))
    assert not np.array_equal(obs(evaluator.env), obs(envs.make(env_id, num_envs=1)))
