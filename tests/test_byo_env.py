"""Bring your own env (envs/registry.py, envs/gym_envs.py, envs/options.py): a gymnasium env and a pure-JAX env
defined here, registered through the hook, and trained by run.py with no edit to the project; any gymnasium id with
Box spaces (gym:Pendulum-v1), the spaces that are refused, what --resume does for a generic gymnasium env, and the
options in an env id.

Kept small: the training runs are a few hundred steps of tiny networks (a finished run is asserted, not learning).
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import registry
from tests.cli_utils import ROOT, run_inprocess

# The user's module: what a researcher writes in their own file. The tests import it (in this process), hand
# it to run.py with --env-module (in a subprocess, from PYTHONPATH), and point an entry point at it.
USER_MODULE = "ctrlrl_test_user_envs"
USER_SOURCE = textwrap.dedent('''
    """A user's own envs, registered through envs.register."""
    import gymnasium
    import jax
    import jax.numpy as jnp
    import numpy as np

    import envs


    class Lift(gymnasium.Env):
        """Hold a mass at height 1 with a force in [0, 2] (gravity is 1): a gymnasium env with Box spaces."""

        def __init__(self, gravity=1.0):
            self.gravity = gravity
            self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float64)
            self.action_space = gymnasium.spaces.Box(0.0, 2.0, (1,), np.float32)
            self.last_force = 0.0

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.height, self.speed = self.np_random.uniform(0.0, 2.0), 0.0
            return np.array([self.height, self.speed]), {}

        def step(self, action):
            self.last_force = float(action[0])
            self.speed += 0.05 * (self.last_force - self.gravity)
            self.height += 0.05 * self.speed
            reward = -abs(self.height - 1.0)
            return np.array([self.height, self.speed]), reward, bool(abs(self.height) > 10), False, {}


    def make_lift(name, episode_length=50, gravity=1.0):
        """The family "mygym": mygym:Lift."""
        if name != "Lift":
            raise envs.UnknownEnvError(f"mygym:{name}: the only mygym env is mygym:Lift")
        return gymnasium.wrappers.TimeLimit(Lift(gravity), max_episode_steps=episode_length)


    class Hover(envs.PureJaxEnv):
        """The same task in pure JAX: only spec, reset and step (envs.PureJaxEnv does the rest)."""

        def __init__(self, episode_length=50):
            self.spec = envs.EnvSpec("myjax:Hover", obs_dim=2, action_dim=1, max_episode_steps=episode_length,
                                     action_repeat=1, can_terminate=False)

        def reset(self, key):
            state = (jax.random.uniform(key, (1,), minval=0.0, maxval=2.0), jnp.zeros(1))
            return state, jnp.concatenate(state)

        def step(self, state, action):
            height, speed = state
            speed = speed + 0.05 * action                      # the force minus gravity, in [-1, 1]
            height = height + 0.05 * speed
            return (height, speed), jnp.concatenate([height, speed]), -jnp.abs(height[0] - 1.0), jnp.array(False)


    envs.register("mygym", make_lift, replace=True)
    envs.register("myjax:Hover", Hover, replace=True)
''')


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A folder holding the user's module, on this process's path (and importable by the subprocesses through
    PYTHONPATH)."""
    folder = tmp_path_factory.mktemp("user_envs")
    (folder / f"{USER_MODULE}.py").write_text(USER_SOURCE)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def user(user_dir):
    import importlib

    return importlib.import_module(USER_MODULE)


# -------------------------------------------------------------------------- registration


def test_a_registered_gymnasium_env_is_a_host_env_with_scaled_actions(user):
    env = envs.make("mygym:Lift?episode_length=7", num_envs=2, seed=3)
    assert env.spec == envs.EnvSpec("mygym:Lift", obs_dim=2, action_dim=1, max_episode_steps=7, action_repeat=1,
                                    can_terminate=True)
    assert not envs.is_jax_env("mygym:Lift")
    first = env.reset()
    assert first.shape == (2, 2) and first.dtype == np.float32 and not np.allclose(first[0], first[1])  # seeds 3, 4
    np.testing.assert_array_equal(envs.make("mygym:Lift", num_envs=1, seed=4).reset()[0], first[1])
    env.step(np.array([[-1.0], [1.0]]))                         # [-1, 1] -> the space's [0, 2]
    assert [instance.env.unwrapped.last_force for instance in env.instances] == [0.0, 2.0]
    for _ in range(6):
        result = env.step(np.zeros((2, 1)))
    assert result.truncated.all()                               # the 7-step limit of the id's option
    # A checkpoint's env state names its env: another env's is refused.
    with pytest.raises(ValueError, match="saved from 'gym:Pendulum-v1', this env is 'mygym:Lift'"):
        env.set_state(envs.make("gym:Pendulum-v1", num_envs=2).get_state())
    assert "mygym:<name>" in envs.list_env_ids() and "myjax:Hover" in envs.list_env_ids()
    with pytest.raises(envs.UnknownEnvError, match=r"'atari:Pong'.*mygym:<name>.*myjax:Hover"):
        envs.make("atari:Pong")


def test_a_bad_option_names_the_factorys_parameters(user):
    with pytest.raises(envs.EnvOptionError, match="mygym:Lift\\?wind=3: .*its options are: episode_length, gravity"):
        envs.make("mygym:Lift?wind=3")
    with pytest.raises(envs.EnvOptionError, match="its options are: episode_length"):
        envs.make("myjax:Hover?gravity=2")


def test_register_refuses_built_in_families_repeats_and_bad_names(user):
    with pytest.raises(ValueError, match="built in"):
        envs.register("gym", user.make_lift)
    with pytest.raises(ValueError, match="already registered"):
        envs.register("mygym", user.make_lift)
    for bad in ("my:", "my:a?b", "a,b", ""):
        with pytest.raises(ValueError, match="is not a family"):
            envs.register(bad, user.make_lift)


def test_a_pure_jax_env_gets_auto_reset_time_limit_and_batching_from_the_base_class(user):
    env = envs.make("myjax:Hover?episode_length=3")
    assert isinstance(env, envs.JaxEnv) and envs.is_jax_env("myjax:Hover")
    assert env.spec.env_id == "myjax:Hover" and env.spec.max_episode_steps == 3
    states = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
    step = jax.jit(env.step_batch)
    for t in range(3):
        states, info = step(states, jnp.ones((4, 1)))
    assert info.truncated.all() and not info.terminated.any()
    np.testing.assert_array_equal(states.step, 0)                # reset at the time limit, with fresh starts
    assert not np.allclose(states.obs, info.final_obs)
    # The non-stationary switches that work on any JAX env work on it too.
    assert envs.make("myjax:Hover?switch=action_sign&every=10").spec.env_id == "myjax:Hover"


def test_a_jax_env_that_does_not_fit_its_spec_is_one_clear_error():
    class WrongWidth(envs.PureJaxEnv):
        spec = envs.EnvSpec("x:WrongWidth", obs_dim=3, action_dim=1, max_episode_steps=5, action_repeat=1,
                            can_terminate=False)

        def reset(self, key):
            return jnp.zeros(2), jnp.zeros(2)

        def step(self, state, action):
            return state, state, 0.0, False

    with pytest.raises(envs.UnsupportedEnvError, match=r"reset's obs has shape \(2,\); expected \(spec.obs_dim,\)"):
        WrongWidth().as_jax_env()


def test_an_entry_point_registers_a_family_with_no_import(user_dir):
    dist = user_dir / "ctrlrl_test_user_envs-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ctrlrl-test-user-envs\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ctrlrl.envs]\nepgym = {USER_MODULE}:make_lift\n")
    try:
        assert "epgym:<name>" in envs.list_env_ids()
        assert envs.make("epgym:Lift", num_envs=1).spec.env_id == "epgym:Lift"
    finally:
        registry._FACTORIES.pop("epgym", None)
        (dist / "entry_points.txt").unlink()


# -------------------------------------------------------------------------- any gymnasium env with Box spaces


def test_gym_pendulum_makes_steps_and_resumes_bit_identically():
    original = envs.make("gym:Pendulum-v1", num_envs=2, seed=0)
    assert original.spec == envs.EnvSpec("gym:Pendulum-v1", obs_dim=3, action_dim=1, max_episode_steps=200,
                                         action_repeat=1, can_terminate=True)
    rng = np.random.default_rng(0)
    original.reset()
    for _ in range(190):
        original.step(rng.uniform(-1, 1, (2, 1)))
    blob = original.get_state()
    actions = [rng.uniform(-1, 1, (2, 1)) for _ in range(20)]   # across the 200-step limit and the reset
    expected = [original.step(action) for action in actions]
    assert any(r.truncated.all() for r in expected)
    resumed = envs.make("gym:Pendulum-v1", num_envs=2, seed=7)
    resumed.reset()
    resumed.set_state(blob)
    for action, want in zip(actions, expected):
        got = resumed.step(action)
        for field in ("obs", "reward", "terminated", "truncated", "final_obs"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert envs.make("gym:Pendulum-v1?episode_length=20").spec.max_episode_steps == 20


class _Unsaveable(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-1, 1, (1,))
    action_space = gymnasium.spaces.Box(-1, 1, (1,))

    def __init__(self):
        self.handle = object()             # e.g. a simulator handle: no plain data

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1), {}

    def step(self, action):
        return np.zeros(1), 0.0, False, False, {}


def test_resume_of_an_env_that_cannot_be_saved_is_refused_in_one_line():
    envs.register("unsaveable:Env", lambda: gymnasium.wrappers.TimeLimit(_Unsaveable(), 10), replace=True)
    env = envs.make("unsaveable:Env", num_envs=1)
    env.reset()
    with pytest.warns(UserWarning, match="_Unsaveable.handle is of type object, not plain data.*--resume of this run "
                                         "will be refused"):
        blob = env.get_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert env.get_state() == blob                                   # warned once
    with pytest.raises(ValueError, match="unsaveable:Env cannot be resumed: its checkpoint does not hold the env "
                                         r"\(_Unsaveable.handle is of type object"):
        envs.make("unsaveable:Env", num_envs=1).set_state(blob)


class _Counter(gymnasium.Env):
    """Observes a noisy count: its future depends on its count and on its legacy numpy RandomState."""
    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,))
    action_space = gymnasium.spaces.Box(-1, 1, (1,))

    def __init__(self, with_handle=False):
        self.legacy_random = np.random.RandomState(0)
        self.count = 0
        if with_handle:
            self.handle = object()

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.count = int(self.np_random.integers(10))
        return np.array([self.count + self.legacy_random.normal()]), {}

    def step(self, action):
        self.count += 1
        return np.array([self.count + self.legacy_random.normal()]), float(action[0]), False, False, {}


class _CounterWithOwnState(_Counter):
    """The same with an attribute that is not plain data, and get_state / set_state of its own."""

    def __init__(self):
        super().__init__(with_handle=True)

    def get_state(self):
        return {"count": self.count, "legacy_random": self.legacy_random.get_state(legacy=False)}

    def set_state(self, state):
        self.count = state["count"]
        self.legacy_random.set_state(state["legacy_random"])


@pytest.mark.parametrize("env_class", [_Counter, _CounterWithOwnState])
def test_a_generic_env_resumes_exactly_from_its_attributes_or_its_own_get_state(env_class):
    envs.register("counter:Env", lambda: gymnasium.wrappers.TimeLimit(env_class(), 4), replace=True)
    original = envs.make("counter:Env", num_envs=2, seed=0)
    original.reset()
    original.step(np.zeros((2, 1)))
    blob = original.get_state()
    expected = [original.step(np.zeros((2, 1))) for _ in range(5)]     # across the 4-step limit and a reset
    resumed = envs.make("counter:Env", num_envs=2, seed=5)
    resumed.set_state(blob)
    for want in expected:
        got = resumed.step(np.zeros((2, 1)))
        np.testing.assert_array_equal(got.obs, want.obs)
        np.testing.assert_array_equal(got.truncated, want.truncated)


def test_a_registered_factory_may_return_a_jax_env():
    from envs.toy import make_point_mass

    envs.register("wrapped:PointMass", make_point_mass, replace=True)
    env = envs.make("wrapped:PointMass?episode_length=9")
    assert env.spec.env_id == "wrapped:PointMass" and env.spec.max_episode_steps == 9 and envs.is_jax_env(
        "wrapped:PointMass")
    on_a_line = make_point_mass(dim=1)                   # its obs is (x, vx): 2 wide, not the 2-D spec's 4
    envs.register("wrapped:Wrong", lambda: envs.JaxEnv(make_point_mass().spec, on_a_line._physics_reset,
                                                       on_a_line._physics_step), replace=True)
    with pytest.raises(envs.UnsupportedEnvError, match=r"wrapped:Wrong: reset's obs has shape \(2,\)"):
        envs.make("wrapped:Wrong")


@pytest.mark.parametrize("space, message", [
    ("discrete", "the action space Discrete(3) is not a Box"),
    ("dict", "the observation space Dict('x': Box(-1.0, 1.0, (1,), float32)) is not a Box; the agents need Box "
             "observations (flatten it first"),
    ("unbounded", "is unbounded in dims [0]; actions are scaled from [-1, 1] to the space's bounds"),
    ("no_limit", "the env has no time limit; wrap it in gymnasium.wrappers.TimeLimit"),
])
def test_spaces_the_agents_cannot_drive_are_refused(space, message):
    box = gymnasium.spaces.Box(-1, 1, (1,))
    env = _Unsaveable()
    env.observation_space = gymnasium.spaces.Dict({"x": box}) if space == "dict" else box
    env.action_space = {"discrete": gymnasium.spaces.Discrete(3),
                        "unbounded": gymnasium.spaces.Box(-np.inf, np.inf, (1,))}.get(space, box)
    envs.register("refused:Env", lambda: env if space == "no_limit" else gymnasium.wrappers.TimeLimit(env, 5),
                  replace=True)
    with pytest.raises(envs.UnsupportedEnvError) as error:
        envs.make("refused:Env")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_run_py_refuses_a_discrete_gym_env_in_one_error_line(tmp_path):
    result = run_inprocess("--agent", "sac", "--env", "gym:CartPole-v1", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: gym:CartPole-v1: the action space Discrete(2) is not a Box; the agents here emit continuous actions "
        "in [-1, 1] and need a Box action space with finite bounds"]
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------------------- options in the id


def test_id_options_set_action_repeat_and_episode_length_in_agent_steps():
    # MR.Q's DMC protocol (action repeat 2, 500 agent steps = 1000 frames), on dm_control and on MJX.
    assert envs.make("dmc:cartpole-balance").spec.max_episode_steps == 500
    dmc = envs.make("dmc:cartpole-balance?action_repeat=4&episode_length=100", num_envs=1)
    assert (dmc.spec.action_repeat, dmc.spec.max_episode_steps) == (4, 100)
    dmc.reset()
    ends = [step for step in range(1, 102) if dmc.step(np.zeros((1, 1))).truncated[0]]
    assert ends == [100]                                      # 400 frames, not dm_control's 1000
    mjx = envs.make("mjx:CartpoleBalance?action_repeat=2&episode_length=500").spec
    assert (mjx.action_repeat, mjx.max_episode_steps) == (2, 500)
    assert envs.make("mjx:CartpoleBalance?action_repeat=3").spec.max_episode_steps == 334    # ceil(1000 / 3)
    finger = envs.make("mjx:FingerSpin?ctrl_dt=0.01&sim_dt=0.005").playground
    assert (finger.dt, finger.sim_dt, finger.n_substeps) == (0.01, 0.005, 2)
    assert envs.make("jax:PointMass?episode_length=7&terminate_outside=2").spec.max_episode_steps == 7


@pytest.mark.parametrize("env_id, message", [
    ("dmc:cartpole-balance?repeat=2", "unknown option(s) repeat; valid keys for dmc: action_repeat, episode_length"),
    ("mjx:CartpoleBalance?episode_lenght=5", "valid keys for mjx: action_repeat, episode_length, ctrl_dt, sim_dt, "
                                             "switch, every, scale, seed"),
    ("gym:Pendulum-v1?action_repeat=2", "valid keys for gym: episode_length"),
    ("dmc:cartpole-balance?episode_length=0", "episode_length must be >= 1, got 0"),
    ("mjx:CartpoleBalance?ctrl_dt=fast", "ctrl_dt must be a number, got 'fast'"),
    ("mjx:FingerSpin?ctrl_dt=0.01&sim_dt=0.003", "ctrl_dt (0.01) must be a whole multiple of sim_dt (0.003)"),
    ("dmc:cartpole-balance?action_repeat", "option 'action_repeat' is not key=value"),
])
def test_bad_id_options_are_one_line_errors(env_id, message):
    with pytest.raises(envs.EnvOptionError) as error:
        envs.make(env_id)
    assert message in str(error.value) and "\n" not in str(error.value)


# -------------------------------------------------------------------------- training through run.py


def test_run_py_trains_a_registered_gymnasium_env_with_sac_and_resumes_it(user_dir, tmp_path):
    """The acceptance test: a gymnasium env defined in a user's file, registered through the hook, trains with SAC
    through run.py (--env-module, in a new process) with no edit to the project; --resume imports it again."""
    run_dir = tmp_path / "run"
    flags = ["--agent", "sac", "--env", "mygym:Lift?episode_length=50", "--env-module", USER_MODULE,
             "--learning-starts", "100", "--batch-size", "16", "--critic-hidden", "16", "16", "--actor-hidden", "16",
             "16", "--eval-every", "150", "--log-every", "150", "--eval-episodes", "2", "--run-dir", str(run_dir)]
    environment = {**os.environ, "JAX_PLATFORMS": "cpu",
                   "PYTHONPATH": os.pathsep.join([str(user_dir), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--no-progress", *flags,
                             "--total-steps", "300"], capture_output=True, text=True, timeout=600, env=environment,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [line for line in result.stderr.splitlines() if line.startswith("error")]
    rows = (run_dir / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,seed,return") and [r.split(",")[0] for r in rows[1:]] == ["150", "300"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["env_module"] == [USER_MODULE] and config["env_spec"]["env_id"] == "mygym:Lift"
    # Resumed in this process: the saved --env-module is imported again and the env restored from its checkpoint.
    resumed = run_inprocess("--run-dir", str(run_dir), "--resume", "--total-steps", "450")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r.split(",")[0] for r in (run_dir / "eval.csv").read_text().splitlines()[1:]] == ["150", "300", "450"]


TINY_PPO = ["--agent", "ppo", "--num-envs", "16", "--batch-size", "16", "--num-minibatches", "1", "--unroll-length",
            "10", "--num-epochs", "1", "--policy-hidden", "8", "8", "--value-hidden", "8", "8", "--total-steps", "320",
            "--eval-every", "160", "--log-every", "160"]
TINY_SAC = ["--agent", "sac", "--learning-starts", "50", "--batch-size", "16", "--critic-hidden", "16", "16",
            "--actor-hidden", "16", "16", "--total-steps", "200", "--eval-every", "100", "--log-every", "100"]


@pytest.mark.parametrize("flags", [pytest.param(TINY_SAC, id="sac"), pytest.param(TINY_PPO, id="ppo")])
def test_run_py_trains_a_registered_jax_env(user_dir, tmp_path, flags):
    """A pure-JAX env of the user's file trains with SAC (the device loop) and PPO (JAX envs only) via run.py."""
    run_dir = tmp_path / "run"
    result = run_inprocess(*flags, "--env", "myjax:Hover", "--env-module", USER_MODULE, "--eval-episodes", "2",
                           "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = (run_dir / "eval.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(np.isfinite(float(row.split(",")[2])) for row in rows)


def test_an_env_module_that_cannot_be_imported_is_one_error_line(tmp_path):
    result = run_inprocess("--agent", "sac", "--env", "nowhere:Env", "--env-module", "no_such_module_here",
                           "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "error: --env-module no_such_module_here: cannot import it (No module named 'no_such_module_here')" in \
        result.stderr
    assert not (tmp_path / "run").exists()
