"""Policy exports: a trained agent's policy without its training state, in one portable file per checkpoint.

After every checkpoint, train.py writes `checkpoints/<step>/policy.msgpack` beside it (atomically: a temporary
file renamed into place; it goes when its checkpoint goes). `load_policy(path)` turns one back into a jitted
`obs -> action` function in any process, with nothing else of the run present; experiments/evaluate.py evaluates
one with the loops' own evaluator (experiments/loops/evaluation.py).

What is exported: the leaves of the agent's state that its `act(state, obs, key, explore)` reads, for `explore`
False and True (and `initial_carry` / `act_step` for agents that act from a history, NEUBAY). They are found by
tracing those functions once (`jax.make_jaxpr` on the state's shapes) and keeping the inputs their outputs depend
on: an actor's (MR.Q: encoder and policy) parameters, PPO's observation statistics, the config values acting
uses, the step counter an exploring policy reads. Replay buffers, optimizer states, critics and target networks
are left out. No agent declares anything: its `act` is the declaration (agents/contract.py).

File (flax msgpack, `flax.serialization.msgpack_serialize`; any msgpack reader opens it), one map:

    format   "ctrlrl.policy/1"
    meta     JSON text: agent, env_id, env_spec, agent_config (as config.json holds it), step, seed (the run's
             first), seeds (each lane's seed), eval_episodes, replay_capacity, matmul_precision
    leaves   {path: array [lanes, ...]}, path = jax.tree_util.keystr of the leaf in the agent's state
             (e.g. ".policy.params['params']['Dense_0']['kernel']"); lane i is seed index i of eval.csv

Loading rebuilds the state's structure from the agent's `init` under `jax.eval_shape` (with the saved config and
spec: nothing is allocated, not even the replay) and puts the exported leaves in it; the other leaves stay
abstract placeholders (shapes only), which acting never reads. A file that does not match the agent's state
(another version of its code), a corrupt file or an unknown agent raises ExportError naming the problem.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import agents
from envs.core import EnvSpec, TaskSpec

FORMAT = "ctrlrl.policy/1"
FILE = "policy.msgpack"


class ExportError(ValueError):
    """A policy export that cannot be written or read: the message names the file or the agent, and the problem."""


# ------------------------------------------------------------------------------------------------
# What acting reads
# ------------------------------------------------------------------------------------------------


def _init_lane(agent, spec: EnvSpec, capacity: int) -> Callable:
    """`init(key, config)` of one lane, as the loops call it (offline: without a world)."""
    if isinstance(agent, agents.OfflineAgent):
        return lambda key, config: agent.init(key, spec, config, None)
    if isinstance(agent, agents.OffPolicyAgent):
        return lambda key, config: agent.init(key, spec, config, capacity)
    return lambda key, config: agent.init(key, spec, config)


def abstract_state(agent, spec: EnvSpec, config: Any, capacity: int) -> Any:
    """One lane's state as shapes (`jax.eval_shape` of `init`: nothing allocated)."""
    try:
        return jax.eval_shape(_init_lane(agent, spec, capacity), jax.random.PRNGKey(0), config)
    except Exception as error:  # an offline agent whose init cannot run without its world, ...
        why = (f"its init fails without a training world ({type(error).__name__}: {error}); an offline agent's "
               "init must accept world=None (agents/contract.py)" if isinstance(agent, agents.OfflineAgent) else
               f"its init cannot be traced with shapes alone ({type(error).__name__}: {error})")
        raise ExportError(f"agent {agent.name!r} cannot be exported: {why}") from None


def _acting(agent, spec: EnvSpec) -> list[Callable]:
    """The functions of the state that acting calls, each `fn(state) -> outputs` on one observation."""
    obs = jnp.zeros((1, spec.obs_dim), jnp.float32)
    key = jax.random.PRNGKey(0)
    functions = [lambda state, explore=explore: agent.act(state, obs, key, explore) for explore in (False, True)]
    if agent.recurrent:
        def step(state, explore):
            carry = agent.initial_carry(state, (1,))
            return agent.act_step(state, carry, obs, jnp.zeros(1), jnp.ones(1, bool), key, explore)

        functions += [functools.partial(step, explore=explore) for explore in (False, True)]
    return functions


def read_leaves(fn: Callable, abstract: Any) -> set[int]:
    """Indices (in `jax.tree.leaves(abstract)` order) of the leaves that `fn(state)`'s outputs depend on: its
    jaxpr's inputs that a backward walk from the outputs reaches (equations with effects count as outputs)."""
    from jax.extend.core import Literal

    leaves, treedef = jax.tree.flatten(abstract)
    jaxpr = jax.make_jaxpr(lambda leaves: fn(jax.tree.unflatten(treedef, leaves)))(leaves).jaxpr
    live = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            live.update(v for v in eqn.invars if not isinstance(v, Literal))
    return {i for i, v in enumerate(jaxpr.invars) if v in live}


def policy_paths(agent, spec: EnvSpec, abstract: Any) -> list[str]:
    """The paths (keystr) of the leaves acting reads, in the state's leaf order."""
    try:
        read = set().union(*(read_leaves(fn, abstract) for fn in _acting(agent, spec)))
    except Exception as error:
        raise ExportError(f"agent {agent.name!r} cannot be exported: tracing its act failed "
                          f"({type(error).__name__}: {error})") from None
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]]
    return [paths[i] for i in sorted(read)]


# ------------------------------------------------------------------------------------------------
# The export
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyExport:
    """The policies of a run's lanes at one step: `leaves` {path: array [lanes, ...]} and what rebuilding and
    evaluating them needs."""

    agent_name: str
    env_id: str
    spec: EnvSpec
    config: Any                  # the agent's Config
    step: int
    seed: int                    # the run's first seed: lane i evaluates on the host envs of seed index i
    seeds: tuple[int, ...]       # each lane's seed (its root key is PRNGKey(seed))
    eval_episodes: int
    capacity: int                # the replay capacity `init` was given (rebuilds the same shapes)
    matmul_precision: str        # the run's (experiments/jax_setup.py): evaluate.py applies it
    leaves: dict[str, np.ndarray]

    @property
    def agent(self):
        try:
            return agents.get(self.agent_name)
        except agents.UnknownAgentError:
            raise ExportError(f"agent {self.agent_name!r} of this export is not registered in this process: import "
                              "the file that registers it (agents.register) first") from None

    @property
    def num_lanes(self) -> int:
        return len(self.seeds)

    def select(self, lanes: list[int]) -> "PolicyExport":
        """The export of the given lanes only (seed indices)."""
        return dataclasses.replace(self, seeds=tuple(self.seeds[i] for i in lanes),
                                   leaves={p: a[np.asarray(lanes)] for p, a in self.leaves.items()})

    def meta(self) -> dict:
        from experiments.train import as_saved

        return {"agent": self.agent_name, "env_id": self.env_id, "env_spec": dataclasses.asdict(self.spec),
                "agent_config": as_saved(dataclasses.asdict(self.config)), "step": self.step, "seed": self.seed,
                "seeds": list(self.seeds), "eval_episodes": self.eval_episodes, "replay_capacity": self.capacity,
                "matmul_precision": self.matmul_precision}

    def policy_record(self):
        """The agent's record with its acting functions (act; initial_carry and act_step where it has them) taking
        the exported leaves {path: array} as their state, the rest of the state filled with shape placeholders.
        It goes wherever the agent's record goes: the loops' evaluator, `jax.vmap` over lanes."""
        agent = self.agent
        abstract = abstract_state(agent, self.spec, self.config, self.capacity)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
        paths = [jax.tree_util.keystr(path) for path, _ in with_paths]
        placeholders = dict(zip(paths, (leaf for _, leaf in with_paths)))
        missing = sorted(set(self.leaves) - set(paths))
        if missing:
            raise ExportError(f"this export does not fit agent {agent.name!r} as this code builds it (no leaf "
                              f"{missing[0]} in its state): it was written by another version of the agent")
        for path, array in self.leaves.items():
            want = placeholders[path]
            if tuple(array.shape[1:]) != tuple(want.shape) or np.dtype(array.dtype) != np.dtype(want.dtype):
                raise ExportError(f"this export does not fit agent {agent.name!r} as this code builds it: {path} "
                                  f"is {array.dtype}{list(array.shape[1:])}, the agent's {want.dtype}"
                                  f"{list(want.shape)}")

        def full(exported: dict) -> Any:
            return jax.tree.unflatten(treedef, [exported.get(p, placeholders[p]) for p in paths])

        record = dataclasses.replace(agent, act=lambda s, obs, key, explore: agent.act(full(s), obs, key, explore))
        if agent.recurrent:
            record = dataclasses.replace(
                record, initial_carry=lambda s, batch_shape: agent.initial_carry(full(s), batch_shape),
                act_step=lambda s, carry, *args: agent.act_step(full(s), carry, *args))
        return record

    def device_leaves(self) -> dict[str, jax.Array]:
        """The exported leaves [lanes, ...] on the device: the state `policy_record`'s functions take."""
        return {p: jnp.asarray(a) for p, a in self.leaves.items()}


class ExportEvaluator:
    """The loops' own evaluator (experiments/loops/evaluation.py: `LaneEvaluator.of`, the same programs and keys)
    around an export's policies, on the export's env or `env_id` (same observation and action widths). Built once,
    it evaluates every export of the run with the same compiled programs (training videos).

    `evaluator(export, lanes, episodes)` gives the run's evaluation at the export's step of those lanes: the same
    returns as the run's eval.csv rows of that step (deterministic), or the exploring policy's (`explore`)."""

    def __init__(self, export: PolicyExport, env_id: str | None = None):
        import envs as envs_lib
        from experiments.loops.evaluation import LaneEvaluator, envs_per_lane

        self.env_id = env_id or export.env_id
        if envs_lib.is_jax_env(self.env_id):
            # The env as the run's loop made it: a non-stationary schedule switches every so many env steps
            # summed over its envs (envs/nonstationary.py), and the evaluator's clock divides by the same count.
            num_envs = envs_per_lane(export.agent, export.config)
            self.env = envs_lib.make(self.env_id, num_envs=num_envs)    # UnknownEnvError names the valid ids
            spec = self.env.spec
        else:
            self.env = None
            probe = envs_lib.make(self.env_id, num_envs=1, seed=export.seed)
            spec = probe.spec
            probe.close()
        trained = export.spec
        if (spec.obs_dim, spec.action_dim) != (trained.obs_dim, trained.action_dim) or spec.tasks != trained.tasks:
            raise ExportError(f"{self.env_id} has {spec.obs_dim} observation and {spec.action_dim} action dims"
                              f"{f' ({spec.num_tasks} tasks)' if spec.tasks else ''}; this policy acts on those of "
                              f"{export.env_id} ({trained.obs_dim} and {trained.action_dim}"
                              f"{f', {trained.num_tasks} tasks' if trained.tasks else ''})")
        self.spec = spec
        self.evaluator = LaneEvaluator.of(export.policy_record(), export.config, self.env_id, spec, export.seed,
                                          jax_env=self.env)

    def __call__(self, export: PolicyExport, lanes: list[int] | None = None, episodes: int | None = None,
                 explore: bool = False, recorder=None):
        """The evaluation (experiments/loops/evaluation.py's Evaluation) of the export's lanes `lanes` (seed
        indices; default all) at its step, `episodes` per lane (default the run's)."""
        lanes = list(range(export.num_lanes)) if lanes is None else list(lanes)
        chosen = export.select(lanes)
        seed_keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(chosen.seeds))
        discount = float(getattr(export.config, "discount", 1.0))
        return self.evaluator(chosen.device_leaves(), seed_keys, export.step, episodes or export.eval_episodes,
                              lanes=lanes, discount=discount, explore=explore, recorder=recorder)


class Exporter:
    """Writes a training run's policy exports: `write(path, agent_state, step)` after each checkpoint. What
    acting reads is traced once, on the first call; an agent that cannot be exported raises ExportError then."""

    def __init__(self, loop, eval_episodes: int, matmul_precision: str = "float32"):
        self.loop, self.eval_episodes, self.matmul_precision = loop, eval_episodes, matmul_precision
        self._paths: list[str] | None = None

    def export(self, agent_state, step: int) -> PolicyExport:
        """The lanes' policies in `agent_state` (stacked, on the device) as host arrays: only the leaves acting
        reads are copied."""
        from experiments.loops.sharding import to_host

        loop = self.loop
        with_paths = jax.tree_util.tree_flatten_with_path(agent_state)[0]
        if self._paths is None:
            abstract_state(loop.agent, loop.spec, loop.config, loop.capacity)    # loading will rebuild it
            lane = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), agent_state)
            self._paths = policy_paths(loop.agent, loop.spec, lane)
        by_path = {jax.tree_util.keystr(path): leaf for path, leaf in with_paths}
        leaves = to_host({p: by_path[p] for p in self._paths})
        return PolicyExport(loop.agent.name, loop.env_id, loop.spec, loop.config, step, loop.seed,
                            tuple(loop.lanes.seeds), self.eval_episodes, loop.capacity, self.matmul_precision, leaves)

    def write(self, path: Path, agent_state, step: int, write: bool = True) -> PolicyExport:
        """Export and (where `write`: the main process) write it to `path`."""
        export = self.export(agent_state, step)
        if write:
            write_export(path, export)
        return export


def write_export(path: str | os.PathLike, export: PolicyExport) -> None:
    """Write `export` to `path` atomically: a temporary file beside it, renamed into place once complete."""
    from flax import serialization

    path = Path(path)
    data = serialization.msgpack_serialize({"format": FORMAT, "meta": json.dumps(export.meta()),
                                            "leaves": dict(export.leaves)})
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_export(path: str | os.PathLike) -> PolicyExport:
    """The export in file `path`; ExportError for a missing, corrupt or foreign file."""
    from flax import serialization

    from experiments.train import from_saved

    path = Path(path)
    try:
        data = serialization.msgpack_restore(path.read_bytes())
    except OSError as error:
        raise ExportError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:
        raise ExportError(f"{path} is corrupt (not a msgpack policy export: {type(error).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ExportError(f"{path} is not a policy export of format {FORMAT}" + (f" (it says {found!r})" if found
                                                                                     else ""))
    try:
        meta = json.loads(data["meta"])
        spec = dict(meta["env_spec"])
        spec["tasks"] = tuple(TaskSpec(**task) for task in spec.get("tasks", ()))
        seeds = tuple(int(s) for s in meta["seeds"])
        leaves = {str(p): np.asarray(a) for p, a in data["leaves"].items()}
        if any(a.shape[:1] != (len(seeds),) for a in leaves.values()):
            raise ValueError("leaves without one row per seed")
        export = PolicyExport(agent_name=meta["agent"], env_id=meta["env_id"], spec=EnvSpec(**spec), config=None,
                              step=int(meta["step"]), seed=int(meta["seed"]), seeds=seeds,
                              eval_episodes=int(meta["eval_episodes"]), capacity=int(meta["replay_capacity"]),
                              matmul_precision=str(meta["matmul_precision"]), leaves=leaves)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ExportError(f"{path} is corrupt ({type(error).__name__}: {error})") from None
    try:
        config = from_saved(export.agent.Config, meta["agent_config"])
    except (TypeError, ValueError) as error:
        raise ExportError(f"{path}: its agent_config does not fit agent {export.agent_name!r}: {error}") from None
    return dataclasses.replace(export, config=config)


def checkpoint_exports(run_dir: Path) -> dict[int, Path]:
    """{step: export file} of the run's checkpoints that have one."""
    from experiments.checkpoint import checkpoint_steps

    directory = run_dir / "checkpoints"
    return {step: directory / str(step) / FILE for step in checkpoint_steps(directory)
            if (directory / str(step) / FILE).is_file()}


def find_export(path: str | os.PathLike, step: int | None = None) -> Path:
    """The export file of a run directory's checkpoint `step` (default: its latest checkpoint), or `path` itself
    when it is a file. ExportError names what is missing."""
    from experiments.checkpoint import checkpoint_steps

    path = Path(path)
    if path.is_file():
        if step is not None:
            raise ExportError(f"{path} is one export file (step {read_export(path).step}): --step is for run "
                              "directories")
        return path
    if not path.is_dir():
        raise ExportError(f"{path} does not exist")
    if (path / FILE).is_file() and not (path / "checkpoints").is_dir():
        return find_export(path / FILE)
    steps = checkpoint_steps(path / "checkpoints")
    if not steps:
        raise ExportError(f"{path} holds no checkpoint (no {path / 'checkpoints'}/<step>): is it a run directory "
                          "that has reached its first evaluation?")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ExportError(f"no checkpoint at step {step} in {path / 'checkpoints'}; it holds "
                          f"{', '.join(map(str, steps))}")
    exported = checkpoint_exports(path)
    if step not in exported:
        others = ", ".join(map(str, sorted(exported))) or "none"
        raise ExportError(f"checkpoint {step} of {path} has no policy export ({FILE}; checkpoints with one: "
                          f"{others}): the run stopped between the checkpoint and its export, or its agent could "
                          "not be exported (training said why)")
    return exported[step]


# ------------------------------------------------------------------------------------------------
# The public loader
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Policy:
    """One seed's trained policy from an export (`load_policy`).

    `policy(obs)` -> action: the deterministic policy, jitted; obs [..., obs_dim] float32, action
    [..., action_dim] in [-1, 1] (the envs of envs/ scale it to the simulator's bounds).

    Agents that act from a history (`recurrent`, NEUBAY) also give the policy itself, stateful:
    `carry = policy.initial_carry(batch_shape)`, then per step `action, carry = policy.act_step(carry, obs,
    prev_reward, first)` (prev_reward: the reward of the previous step, first: True at an episode's first
    step); their `policy(obs)` is the agent's memoryless `act` (the policy at an episode's first step)."""

    agent: str
    env_id: str
    spec: EnvSpec
    config: Any
    step: int
    seed: int
    act: Callable
    initial_carry: Callable | None = None
    act_step: Callable | None = None

    def __call__(self, obs) -> jax.Array:
        return self.act(jnp.asarray(obs, jnp.float32))

    @property
    def recurrent(self) -> bool:
        return self.act_step is not None


def load_policy(run_dir: str | os.PathLike, step: int | None = None, seed: int = 0) -> Policy:
    """The deterministic policy of seed index `seed` (as in eval.csv) at checkpoint `step` (default: the latest)
    of the run in `run_dir`, from its export alone; `run_dir` may also be an export file itself (e.g. a
    `policy.msgpack` copied elsewhere). Raises ExportError for a missing, corrupt or foreign export."""
    export = read_export(find_export(run_dir, step))
    if not 0 <= seed < export.num_lanes:
        raise ExportError(f"seed {seed}: the export holds seeds 0 .. {export.num_lanes - 1}")
    chosen = export.select([seed])
    record, state = chosen.policy_record(), jax.tree.map(lambda x: x[0], chosen.device_leaves())
    key = jax.random.PRNGKey(0)           # the deterministic policy draws nothing
    act = jax.jit(lambda s, obs: record.act(s, obs, key, False))
    common = dict(agent=export.agent_name, env_id=export.env_id, spec=export.spec, config=export.config,
                  step=export.step, seed=seed, act=functools.partial(act, state))
    if getattr(record, "act_step", None) is None:
        return Policy(**common)
    initial_carry = jax.jit(record.initial_carry, static_argnums=1)
    act_step = jax.jit(lambda s, carry, obs, reward, first: record.act_step(s, carry, obs, reward, first, key, False))
    return Policy(**common, initial_carry=lambda batch_shape=(): initial_carry(state, tuple(batch_shape)),
                  act_step=functools.partial(act_step, state))
