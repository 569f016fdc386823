"""The agent contract: the whole of it. An agent is one record of pure functions, declared at the end of its file.

    AGENT = OffPolicyAgent(name="sac", Config=Config, init=init, act=act, store=store, update=update,
                           diagnostics=diagnostics)

The record's type names the loop that drives it; the loops read its fields and never probe a module for
optional names. Every function is pure and vmappable over lanes (seeds, sweep points): the loops
`jit(vmap(...))` them. `Config` is declared `@hyperparameters` (agents/config.py): a frozen dataclass whose
float fields are pytree leaves; `init` stores the config in the state it returns, and every later function
reads its hyperparameters from the state, so a sweep is a vmap over stacked configs (experiments/loops/lanes.py).
Required fields are checked when the record is built: a missing one is refused with its name.

Exporting a policy needs nothing more (experiments/policy.py): after every checkpoint, the state leaves that
`act` reads (with `explore` False and True; `initial_carry` and `act_step` too where the agent has them) are
written to a params-only file, found by tracing those functions, and loaded back into the structure `init` gives
under `jax.eval_shape` (nothing allocated). So `act` must read its state through jnp operations (not Python values
of traced leaves), and an offline agent's `init` must accept `world=None` (a state to load a policy into: its
world-derived leaves may be stand-ins, as acting never reads them).

Every record
    name          the registry name (`--agent NAME`)
    Config        the `@hyperparameters` dataclass; tyro builds its flags, `validate()` checks them
    init          (key, spec, config, ...) -> state      (off-policy: + replay capacity; offline: + world, or None)
    act           (state, obs, key, explore: bool) -> action in [-1, 1]
    diagnostics   optional: (state, key) -> {name: scalar}, logged at every evaluation (dormant ratio, srank, ...)
    PRESETS       named sets of flag values (`--preset NAME`); RUN_DEFAULTS: run.py's defaults for this agent
    curve_points  optional: when --eval-every / --log-every are not given, run.py shrinks them (from
                  RUN_DEFAULTS') to --total-steps / curve_points in whole updates, so a short run still has a curve
    default_preset  optional: () -> the preset used when none is given (the choice is printed and saved)
    task_preset   optional: (preset, env_id) -> per-task flag values of that preset

OffPolicyAgent (experiments/loops/off_policy.py: host envs one step at a time, JAX envs in scanned chunks)
    store         (state, transition) -> state           the replay write of one loop step: [N, ...] rows for
                                                          N envs per seed, unbatched for one env
    update        (state, key, step) -> (state, metrics)  after every loop step; `step` counts env steps per
                                                          seed (summed over its N envs, so it grows by N) and
                                                          is unbatched, so the agent's schedule branches for real
    early_stop    optional: (state, obs, action) -> bool  ends the episode after this step as a truncation
    multitask     True if the agent trains on a multitask env (envs/multitask.py): it acts on and stores
                  [tasks, ...] per seed, one env of every task; the loop refuses such an env otherwise
    envs_per_seed (config) -> N: the envs each seed steps together, the config's `num_envs` (1 without one);
                  the one place the loops read it. N > 1 needs a JAX env (the device loop steps them with
                  `step_batch`); `act` then sees [N, obs_dim] per seed
    replay_transitions  the replay transitions the agent keeps per seed, over all its envs: min(config's
                  buffer_size, total steps)
    warmup        optional: (config, spec) -> the env steps per seed before the first update (random actions
                  until then); run.py refuses a run that ends within it, since nothing would be trained
    warmup_flag   the Config field that sets the warm-up (e.g. "learning_starts"), named in that refusal

OnPolicyAgent (experiments/loops/on_policy.py: whole updates on a JAX env, the env axis sharded over devices)
    train_step    (state, env, env_state, key, sync_axes) -> (state, env_state, metrics): rollout + update
    collect       (state, env, env_state, key, sync_axes) -> (env_state, batch, stats): the rollout alone
                  (the loop's memory estimate traces it)
    layout        (config) -> a NamedTuple with `steps_per_update` (saved in config.json as "derived")

OfflineAgent (experiments/loops/offline.py: gradient steps on a fixed world; evaluation in the real env)
    prepare       (dataset, spec, config, world_dir, key) -> world: the dataset on the device, a dynamics
                  model, ...; saved under world_dir when it costs time to build
    update        (state, world, key, step) -> (state, metrics)
    check         optional: (dataset, spec, config) -> None, raising ValueError before anything is written
    initial_carry, act_step   optional, both or neither: agents that act from a history (NEUBAY):
                  initial_carry(state, batch_shape) -> carry;
                  act_step(state, carry, obs, prev_reward, first, key, explore) -> (action, carry)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar


class ContractError(TypeError):
    """An agent record that lacks a required function (the message names it)."""


@dataclasses.dataclass(frozen=True)
class Agent:
    name: str
    Config: type
    init: Callable | None = None
    act: Callable | None = None
    diagnostics: Callable | None = None
    PRESETS: dict = dataclasses.field(default_factory=dict)
    RUN_DEFAULTS: dict = dataclasses.field(default_factory=dict)
    default_preset: Callable | None = None
    task_preset: Callable | None = None
    curve_points: int | None = None

    LOOP: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("init", "act")

    def __post_init__(self):
        kind = type(self).__name__
        if not isinstance(self.name, str) or not self.name:
            raise ContractError(f"{kind}: `name` must be a non-empty string, got {self.name!r}")
        if not isinstance(self.Config, type) or not hasattr(self.Config, "traced_fields"):
            raise ContractError(f"agent {self.name!r} ({kind}): `Config` must be a class declared with "
                                "@hyperparameters (agents/config.py)")
        missing = [f for f in self.REQUIRED if not callable(getattr(self, f))]
        if missing:
            raise ContractError(f"agent {self.name!r} ({kind}): missing required function(s) {', '.join(missing)}; "
                                f"a {kind} needs {', '.join(self.REQUIRED)} (agents/contract.py)")

    @property
    def __name__(self) -> str:          # what messages print: "agents.sac"
        return f"agents.{self.name}"

    @property
    def recurrent(self) -> bool:
        """Whether the agent acts from a history (`initial_carry`, `act_step`); only offline agents can."""
        return False

    def preset(self) -> str | None:
        """The preset used when `--preset` is not given (None: the flags' own defaults)."""
        return self.default_preset() if self.default_preset is not None else None


@dataclasses.dataclass(frozen=True)
class OffPolicyAgent(Agent):
    store: Callable | None = None
    update: Callable | None = None
    early_stop: Callable | None = None
    multitask: bool = False
    warmup: Callable | None = None
    warmup_flag: str | None = None

    LOOP: ClassVar[str] = "off_policy"
    REQUIRED: ClassVar[tuple[str, ...]] = ("init", "act", "store", "update")

    def replay_transitions(self, config: Any, total_steps: int) -> int:
        """The transitions the replay keeps per seed: the config's buffer size, at most the run's steps."""
        return min(total_steps, config.buffer_size)

    def envs_per_seed(self, config: Any) -> int:
        """N, the envs each seed steps together: the config's `num_envs` (a static field: it shapes the
        program), 1 for an agent whose config has none."""
        return getattr(config, "num_envs", 1)

    def warmup_steps(self, config: Any, spec: Any) -> int:
        """Env steps per seed before the first update (0 for an agent that declares no warm-up)."""
        return 0 if self.warmup is None else int(self.warmup(config, spec))


@dataclasses.dataclass(frozen=True)
class OnPolicyAgent(Agent):
    train_step: Callable | None = None
    collect: Callable | None = None
    layout: Callable | None = None

    LOOP: ClassVar[str] = "on_policy"
    REQUIRED: ClassVar[tuple[str, ...]] = ("init", "act", "train_step", "collect", "layout")


@dataclasses.dataclass(frozen=True)
class OfflineAgent(Agent):
    prepare: Callable | None = None
    update: Callable | None = None
    check: Callable | None = None
    initial_carry: Callable | None = None
    act_step: Callable | None = None

    LOOP: ClassVar[str] = "offline"
    REQUIRED: ClassVar[tuple[str, ...]] = ("init", "act", "prepare", "update")

    def __post_init__(self):
        super().__post_init__()
        if (self.initial_carry is None) != (self.act_step is None):
            raise ContractError(f"agent {self.name!r} (OfflineAgent): initial_carry and act_step come together "
                                "(an agent that acts from a history needs both)")

    @property
    def recurrent(self) -> bool:
        return self.act_step is not None
