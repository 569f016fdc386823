"""The lanes of a loop: what one compiled program trains side by side.

Lane i is a seed and a config. A run's lanes are its seeds (seed, seed + 1,
...), all with the same config; a sweep's lanes are (point, seed) pairs whose
configs differ in traced fields only (agents/config.py: floats are pytree
leaves). Every loop initialises its agents by vmapping over the lanes' keys
and `stacked` configs (base.Loop.init_agents; the on-policy loop's own init):

    jax.vmap(lambda key, config: agent.init(key, spec, config, ...))(init_keys, lanes.stacked)

so each lane's state carries its own hyperparameters, and every later call
(act, update, train_step, diagnostics) reads them from the state. Nothing
else in a loop knows whether it runs a sweep. Lane i draws the keys of a run
with --seed seeds[i], so its results equal that run's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class LanesError(ValueError):
    """Lanes whose configs differ in a field that shapes the program (a static field)."""


@dataclasses.dataclass(frozen=True)
class Lanes:
    seeds: tuple[int, ...]
    configs: tuple[Any, ...]

    def __post_init__(self):
        if len(self.seeds) != len(self.configs) or not self.seeds:
            raise LanesError(f"one config per seed: got {len(self.seeds)} seeds and {len(self.configs)} configs")
        check_same_program(self.configs)

    @classmethod
    def of_run(cls, config: Any, seed: int, num_seeds: int) -> "Lanes":
        """A run's lanes: seeds seed .. seed + num_seeds - 1, one config."""
        return cls(tuple(seed + i for i in range(num_seeds)), (config,) * num_seeds)

    @classmethod
    def of_sweep(cls, configs: Sequence[Any], seeds: Sequence[int]) -> "Lanes":
        """Lane (point p, seed s) for every config (point) and seed, points outermost."""
        return cls(tuple(s for _ in configs for s in seeds), tuple(c for c in configs for _ in seeds))

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def config(self) -> Any:
        """The config whose static fields every lane shares (shapes, loop counts, Python branches)."""
        return self.configs[0]

    @property
    def keys(self) -> jax.Array:
        """The root key of each lane: PRNGKey(seed of the lane), as a run of that seed has."""
        return jax.vmap(jax.random.PRNGKey)(jnp.asarray(self.seeds))

    @property
    def stacked(self) -> Any:
        """The lanes' configs as one config whose traced leaves have a leading lane axis."""
        if all(config is self.configs[0] for config in self.configs):
            # A run's lanes share one config: broadcast it (a run of 1e5 seeds stacks nothing).
            return jax.tree.map(lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (len(self),) + jnp.shape(v)),
                                self.configs[0])
        # One host array per leaf, then one transfer (not one device array per lane and leaf).
        return jax.tree.map(lambda *values: jnp.asarray(np.stack([np.asarray(v, np.float32) for v in values])),
                            *self.configs)

    def with_configs(self, configs: Sequence[Any]) -> "Lanes":
        """The same seeds with other configs, which must share this one's static fields (so that a loop's compiled
        programs serve them: fresh agents with other hyperparameters, no recompilation)."""
        check_same_program((self.config, *configs))
        return Lanes(self.seeds, tuple(configs))


def unaliased(tree: Any) -> Any:
    """`tree` with every array that appears at more than one leaf copied, so that each leaf owns its buffer.
    A state may hold the same config leaves twice (LEAST keeps its own config and its base agent's, built from
    the same values); the loops donate the state to their compiled chunks, and XLA refuses to donate one
    buffer twice. Only the repeated leaves are copied (never the replay buffer)."""
    seen: set[int] = set()

    def own(leaf):
        if not isinstance(leaf, jax.Array) or id(leaf) not in seen:
            seen.add(id(leaf))
            return leaf
        return jnp.copy(leaf)

    return jax.tree.map(own, tree)


def check_same_program(configs: Sequence[Any]) -> None:
    """LanesError unless every config has the first one's type and static fields (one compiled program)."""
    first = configs[0]
    for other in configs[1:]:
        if other is first:
            continue
        differing = [name for name in type(first).static_fields if getattr(first, name) != getattr(other, name)]
        if type(other) is not type(first) or differing:
            raise LanesError("the lanes of one program may differ only in traced (float) fields; they differ "
                             f"in {', '.join(differing) or 'their config type'}")


def lanes_for(config: Any, seed: int, num_seeds: int, lanes: Lanes | None) -> Lanes:
    """The lanes a loop trains: `lanes` when given (a sweep), else the run's seeds with `config`."""
    if lanes is None:
        return Lanes.of_run(config, seed, num_seeds)
    if len(lanes) != num_seeds:
        raise LanesError(f"{len(lanes)} lanes for a loop of {num_seeds} seeds")
    return lanes
