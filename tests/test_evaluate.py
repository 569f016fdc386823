"""Policy exports (experiments/policy.py), experiments/evaluate.py and videos (experiments/video.py).

- A finished tiny run of MR.Q (dm_control), SAC (gymnasium), PPO (a JAX env) and RAVL (offline) is evaluated from its
  export alone: the rows equal the run's last eval.csv rows, as text (same programs, keys and env seeds). SAC also
  reproduces one seed alone, draws its training videos (--video-every) and evaluate.py's (gymnasium), and loads in a
  fresh process from the export file alone; MR.Q's policy is drawn on dm_control and on MJX (mjx:CartpoleBalance has
  dm_control cartpole's widths).
- Every registered agent's export, made from a state of random values, loads into a policy that acts as the agent's
  own `act` on the whole state (NEUBAY: its recurrent `act_step` too).
- Bad input: one `error:` line, exit code 2, nothing written.

Reduced configs: 16-wide networks, a few hundred env steps (off-policy), 2 updates of 32 envs (PPO), 20 gradient
steps on a 600-step random dataset (RAVL); videos 64 x 48 pixels.
"""

from __future__ import annotations

import csv
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
from experiments import evaluate, policy
from tests.cli_utils import ROOT, TINY_MRQ, run_inprocess, run_main
from tests.test_ppo import TINY_FLAGS as TINY_PPO
from tests.test_ravl import TINY_RAVL

TINY_SAC = ["--learning-starts", "50", "--batch-size", "16", "--critic-hidden", "16", "16", "--actor-hidden", "16",
            "16"]
VIDEO = ["--video-width", "64", "--video-height", "48"]


def _rows(path, step):
    """{seed: (return, return_std)} of the rows of `step`, as the CSV holds them (text)."""
    with open(path) as f:
        return {row["seed"]: (row["return"], row["return_std"]) for row in csv.DictReader(f)
                if int(row["step"]) == step}


def _frames(path):
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        frames = [frame for frame in reader]
    return len(frames), frames[0].shape


def _evaluate(*args):
    result = run_main(evaluate.main, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def pendulum_dataset(tmp_path_factory):
    """600 transitions of a random policy on InvertedPendulum (experiments/collect.py, in this process)."""
    from experiments import collect

    path = tmp_path_factory.mktemp("evaluate") / "pend.hdf5"
    result = run_main(collect.main, "--env", "gym:InvertedPendulum-v5", "--policy", "random", "--steps", "600",
                      "--out", str(path), "--reference-episodes", "2", "--ref-expert", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    return path


RUNS = {   # agent: (flags, total steps, eval every)
    "mrq": (["--env", "dmc:cartpole-balance", "--eval-episodes", "1", *TINY_MRQ], 200, 100),
    "sac": (["--env", "gym:InvertedPendulum-v5", "--num-seeds", "2", "--eval-episodes", "2", "--video-every", "2",
             *TINY_SAC], 200, 100),
    "ppo": (["--env", "jax:PointMass", "--num-seeds", "2", "--eval-episodes", "2", *TINY_PPO], 512, 256),
    "ravl": (["--env", "gym:InvertedPendulum-v5", "--num-seeds", "2", "--eval-episodes", "2", *TINY_RAVL], 20, 10),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_evaluate_reproduces_the_runs_last_eval_rows(name, tmp_path, request):
    flags, total, every = RUNS[name]
    run_dir = tmp_path / "run"
    if name == "ravl":
        flags = [*flags, "--dataset", str(request.getfixturevalue("pendulum_dataset"))]
    result = run_inprocess("--agent", name, "--total-steps", str(total), "--eval-every", str(every),
                           "--log-every", str(every), "--run-dir", str(run_dir), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(policy.checkpoint_exports(run_dir)) == [total - every, total]

    _evaluate("--run-dir", str(run_dir), "--out", str(tmp_path / "eval.csv"))
    expected = _rows(run_dir / "eval.csv", total)
    assert _rows(tmp_path / "eval.csv", total) == expected and len(expected) >= 1
    _evaluate("--run-dir", str(run_dir), "--step", str(every), "--out", str(tmp_path / "first.csv"))
    assert _rows(tmp_path / "first.csv", every) == _rows(run_dir / "eval.csv", every)
    if name == "sac":
        _sac_checks(run_dir, tmp_path, total, expected)
    if name == "mrq":
        _mrq_videos(run_dir, tmp_path)


def _sac_checks(run_dir, tmp_path, total, expected):
    # One seed alone: its host envs are the ones it had in the run's evaluation.
    _evaluate("--run-dir", str(run_dir), "--seeds", "1", "--out", str(tmp_path / "one.csv"))
    assert _rows(tmp_path / "one.csv", total) == {"1": expected["1"]}

    # Videos: evaluate.py's of every seed, and the run's own (--video-every 2: the second evaluation, seed 0).
    # InvertedPendulum-v5 pays 1 per step but the last (the fall): an episode of R has R + 1 steps, one frame each.
    _evaluate("--run-dir", str(run_dir), "--video", *VIDEO, "--video-dir", str(tmp_path / "videos"),
              "--out", str(tmp_path / "episodes.json"))
    returns = json.loads((tmp_path / "episodes.json").read_text())["returns"]
    for seed in ("0", "1"):
        assert _frames(tmp_path / "videos" / f"seed{seed}_episode0.mp4") == (returns[seed][0] + 1, (48, 64, 3))
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == [str(total)]
    count, shape = _frames(run_dir / "videos" / str(total) / "seed0_episode0.mp4")
    assert (count, shape) == (returns["0"][0] + 1, (240, 320, 3))

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
    assert header == f"sac {total} 1 gym:InvertedPendulum-v5"
    here = policy.load_policy(run_dir, seed=1)
    np.testing.assert_array_equal(np.asarray(json.loads(actions), np.float32), np.asarray(here(obs)))
    assert np.asarray(here(obs)).shape == (3, 1) and not here.recurrent


def _mrq_videos(run_dir, tmp_path):
    """MR.Q's policy drawn on dm_control (500 agent steps an episode) and on MJX (1000)."""
    _evaluate("--run-dir", str(run_dir), "--video", *VIDEO, "--video-dir", str(tmp_path / "dmc"))
    assert _frames(tmp_path / "dmc" / "seed0_episode0.mp4") == (500, (48, 64, 3))
    _evaluate("--run-dir", str(run_dir), "--env", "mjx:CartpoleBalance", "--video", *VIDEO,
              "--video-dir", str(tmp_path / "mjx"), "--out", str(tmp_path / "mjx.json"))
    assert _frames(tmp_path / "mjx" / "seed0_episode0.mp4") == (1000, (48, 64, 3))
    rows = json.loads((tmp_path / "mjx.json").read_text())["rows"]
    assert [(r["env"], r["policy"]) for r in rows] == [("mjx:CartpoleBalance", "deterministic")]


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


@pytest.mark.parametrize("name", agents.names())
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
