"""Offline datasets: D4RL's HDF5 layout (read and write), Minari folders, sampling.

A `Dataset` is a pytree of device arrays, one row per transition, plus static
metadata. Loading validates everything and raises `DatasetError` (a
`ValueError`) whose message names the file and the problem. The samplers are
pure and jittable; vmap them over keys with the dataset shared
(`jax.vmap(sample, in_axes=(None, 0, None))`).

File layout (what `write` produces and `load` reads)
----------------------------------------------------
Top-level HDF5 datasets, N rows each (D4RL's names):

    observations       float32 [N, obs_dim]
    actions            float32 [N, action_dim]
    rewards            float32 [N]
    next_observations  float32 [N, obs_dim]   the TRUE next observation, also at episode ends
    terminals          bool    [N]            next_observations[i] is a terminal state (no bootstrap)
    timeouts           bool    [N]            the episode was cut by a time limit after step i
    infos/<name>       numeric [N, ...]       optional extras, e.g. infos/qpos, infos/qvel (D4RL's)

A step is never both terminal and timeout. `load` accepts any numeric dtype and
converts to float32; it accepts a file without `timeouts` (old D4RL files) and
then finds the episode ends from the observations (see below); `write` always
writes all six.

Metadata are file attributes (scalars): `env_id` (our ids, e.g.
"gym:Hopper-v5"), `policy`, `seed`, `steps`, `code_version`, and the reference
returns under D4RL's names `ref_min_score` (random policy) and `ref_max_score`
(expert). Any other scalar attribute is kept in `DatasetMetadata.extra`. On
load, attributes (and scalar datasets) of a `metadata` group are read too, the
file's own attributes taking precedence; D4RL's `metadata/algorithm` stands in
for `policy` when that is missing.

Episode boundaries
------------------
Transition i is the LAST of its episode when any of:
  * terminals[i] (a true terminal state),
  * timeouts[i] (a time limit),
  * next_observations[i] != observations[i + 1] (any element, exact float
    comparison) -- D4RL's files sometimes lack timeouts or miss them; a break
    in the observation chain is then the only sign of a reset. Exact comparison
    can only split an episode (harmless), never join two,
  * i == N - 1 (the data ends).
Only the first counts as terminal; the others are cuts with no continuation in
the data (they bootstrap like a truncation).

Sequence windows
----------------
`sequence_starts(dataset, length)` gives every start i whose window of
`length` transitions [i, i + length) lies inside one episode. With
`allow_terminal=True` (default) it also gives the starts whose window runs
into a TERMINAL end: the steps after the terminal are then padded (mask 0,
all fields zero), so no unmasked step ever comes from another episode and
short terminated episodes (e.g. random-policy Hopper) still give windows.
Windows that would run past a timeout, an observation-chain break or the end
of the data are never allowed (there is no true continuation to learn from),
so truncated episodes shorter than `length` give no windows.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from replay.buffer import TransitionBatch

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
OPTIONAL_ON_LOAD = ("timeouts",)   # old D4RL files: episode ends then come from the observation chain
_MATRIX_KEYS = ("observations", "actions", "next_observations")   # [N, dim]
_FLAG_KEYS = ("terminals", "timeouts")                             # [N], 0/1
_INFOS = "infos"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------
# Metadata and the dataset pytree
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What a dataset records about how it was made (static: hashable, not traced)."""

    env_id: str | None = None
    policy: str | None = None
    seed: int | None = None
    steps: int | None = None
    code_version: str | None = None
    ref_min_score: float | None = None   # return of a random policy (D4RL's name)
    ref_max_score: float | None = None   # return of an expert policy (D4RL's name)
    source: str | None = None            # the file it was loaded from (never written)
    extra: tuple[tuple[str, Any], ...] = ()   # any other scalar attributes, sorted by name

    def to_attrs(self) -> dict[str, Any]:
        """The HDF5 file attributes `write` stores (None values are left out)."""
        attrs = {name: value for name, value in self.extra}
        for name in _METADATA_TYPES:
            value = getattr(self, name)
            if value is not None:
                attrs[name] = value
        return attrs


_METADATA_TYPES = {"env_id": str, "policy": str, "seed": int, "steps": int, "code_version": str,
                   "ref_min_score": float, "ref_max_score": float}


@struct.dataclass
class Dataset:
    """N transitions on the device; `metadata` is static (part of the tree structure)."""

    observations: jax.Array        # [N, obs_dim] float32
    actions: jax.Array             # [N, action_dim] float32
    rewards: jax.Array             # [N] float32
    next_observations: jax.Array   # [N, obs_dim] float32, the true next observation
    terminals: jax.Array           # [N] float32 0/1: next_observations[i] is terminal (no bootstrap)
    timeouts: jax.Array            # [N] float32 0/1: time limit after step i (bootstrap)
    infos: dict = struct.field(default_factory=dict)   # optional extras, [N, ...] each (e.g. qpos, qvel)
    metadata: DatasetMetadata = struct.field(pytree_node=False, default=DatasetMetadata())

    @property
    def num_transitions(self) -> int:
        return self.observations.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]


class SequenceBatch(NamedTuple):
    """`length` consecutive transitions per row (leading axes [B, L]); padded steps are zero."""

    obs: jax.Array         # [B, L, obs_dim]
    action: jax.Array      # [B, L, action_dim]
    reward: jax.Array      # [B, L]
    next_obs: jax.Array    # [B, L, obs_dim]
    terminated: jax.Array  # [B, L]  1.0 at a terminal step
    mask: jax.Array        # [B, L]  1.0 while no terminal has occurred BEFORE step t


# --------------------------------------------------------------------------
# Validation (host, numpy)
# --------------------------------------------------------------------------


def _fail(where: str, problem: str) -> DatasetError:
    return DatasetError(f"dataset {where}: {problem}")


def _python_value(value: Any) -> Any:
    """HDF5 attribute -> a hashable Python value (bytes decoded, arrays as tuples)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return tuple(_python_value(v) for v in value.tolist()) if value.ndim else _python_value(value.item())
    if isinstance(value, np.generic):
        return _python_value(value.item())
    if isinstance(value, (list, tuple)):
        return tuple(_python_value(v) for v in value)
    return value


def make_metadata(mapping: Mapping[str, Any] | DatasetMetadata | None, where: str = "<memory>",
                  source: str | None = None) -> DatasetMetadata:
    """Typed `DatasetMetadata` from a mapping of attributes; unknown names go to `extra`."""
    if isinstance(mapping, DatasetMetadata):
        return dataclasses.replace(mapping, source=source if source is not None else mapping.source)
    fields: dict[str, Any] = {}
    extra = []
    for name, raw in (mapping or {}).items():
        value = _python_value(raw)
        if name == "source":
            continue
        if name not in _METADATA_TYPES:
            if value is not None:
                try:
                    hash(value)
                except TypeError:
                    raise _fail(where, f"metadata {name!r} = {value!r} is not a scalar, string or tuple") from None
                extra.append((str(name), value))
            continue
        if value is None:
            continue
        kind = _METADATA_TYPES[name]
        try:
            if kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                converted = int(value)
            elif kind is float:
                converted = float(value)
                if not math.isfinite(converted):
                    raise ValueError
            else:
                converted = str(value)
        except (TypeError, ValueError):
            raise _fail(where, f"metadata {name!r} is {value!r}, expected {'a finite ' if kind is float else 'an '}"
                               f"{kind.__name__}") from None
        fields[name] = converted
    return DatasetMetadata(**fields, source=source, extra=tuple(sorted(extra)))


def _first_bad_index(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def _validate(arrays: Mapping[str, Any], where: str, require_timeouts: bool) -> dict[str, np.ndarray]:
    """Check keys, dtypes, ranks, lengths, finiteness and flags; return float32 / 0-1 numpy arrays."""
    required = [k for k in REQUIRED_KEYS if require_timeouts or k not in OPTIONAL_ON_LOAD]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise _fail(where, f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
                           f"required keys: {', '.join(required)}")
    out: dict[str, np.ndarray] = {}
    keys = [k for k in REQUIRED_KEYS if k in arrays]
    for key in keys:
        array = np.asarray(arrays[key])
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) \
                or np.issubdtype(array.dtype, np.complexfloating):
            raise _fail(where, f"{key!r} has dtype {array.dtype}, expected a real numeric (float, int or bool) array")
        rank = 2 if key in _MATRIX_KEYS else 1
        if array.ndim != rank:
            expected = "[N, dim]" if rank == 2 else "[N]"
            raise _fail(where, f"{key!r} has rank {array.ndim} (shape {array.shape}), expected rank {rank} {expected}")
        out[key] = array
    lengths = {k: out[k].shape[0] for k in keys}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} {n}" for k, n in lengths.items())
        raise _fail(where, f"lengths differ: {listed} (every key needs one row per transition)")
    n = lengths["observations"]
    if n == 0:
        raise _fail(where, "holds no transitions (N = 0)")
    if out["next_observations"].shape[1] != out["observations"].shape[1]:
        raise _fail(where, f"'next_observations' has size {out['next_observations'].shape[1]} but 'observations' "
                           f"has size {out['observations'].shape[1]}")
    for key in keys:
        if key in _FLAG_KEYS:
            flags = out[key]
            if np.issubdtype(flags.dtype, np.floating) and not np.isfinite(flags).all():
                bad = ~np.isfinite(flags)
                raise _fail(where, f"{key!r} holds a non-finite value at index {_first_bad_index(bad)}")
            bad = (flags != 0) & (flags != 1)
            if bad.any():
                i = _first_bad_index(bad)
                raise _fail(where, f"{key!r} must be 0/1 (or bool) but holds {flags[i]!r} at index {i}")
            out[key] = flags.astype(bool)
        else:
            values = out[key].astype(np.float32)   # also catches float64 values that overflow float32
            bad = ~np.isfinite(values)
            if bad.any():
                i = _first_bad_index(bad)
                kind = "nan" if np.isnan(values[i]).any() else "inf"
                raise _fail(where, f"{key!r} holds {kind} at index {i} ({int(bad.reshape(n, -1).any(axis=1).sum())} "
                                   f"bad row(s) in all)")
            out[key] = values
    if "timeouts" not in out:
        out["timeouts"] = np.zeros((n,), bool)
    both = out["terminals"] & out["timeouts"]
    if both.any():
        i = int(np.argmax(both))
        raise _fail(where, f"step {i} is both terminal and timeout ({int(both.sum())} such step(s)); a step ends as "
                           f"one or the other (terminal wins if the episode really terminated)")
    return out


def _validate_infos(infos: Mapping[str, Any], n: int, where: str) -> dict[str, np.ndarray]:
    out = {}
    for name, value in infos.items():
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise _fail(where, f"'infos/{name}' has dtype {array.dtype}, expected a numeric array")
        if array.ndim == 0 or array.shape[0] != n:
            raise _fail(where, f"'infos/{name}' has shape {array.shape}, expected {n} rows (one per transition)")
        out[name] = array
    return out


def _same_env(recorded: str, requested: str) -> bool:
    """Equal ids, allowing a bare gymnasium id for gym:<id> and 'dmc' for its default task."""
    def canonical(env_id: str) -> str:
        env_id = env_id.strip()
        if env_id == "dmc":
            return "dmc:cheetah-run"   # envs.dmc.DEFAULT_TASK (not imported: replay stays light)
        return env_id if ":" in env_id else f"gym:{env_id}"
    return canonical(recorded) == canonical(requested)


def _check_env(arrays: Mapping[str, np.ndarray], metadata: DatasetMetadata, where: str,
               env_id: str | None, spec: Any) -> None:
    """Sizes against the env spec and the recorded env id against the requested one."""
    spec_id = getattr(spec, "env_id", None) if spec is not None else None
    if env_id is not None and spec_id is not None and not _same_env(env_id, spec_id):
        raise ValueError(f"env_id {env_id!r} and spec.env_id {spec_id!r} disagree")
    requested = env_id if env_id is not None else spec_id
    if requested is not None and metadata.env_id is not None and not _same_env(metadata.env_id, requested):
        raise _fail(where, f"was recorded on env {metadata.env_id!r}, but env {requested!r} was requested")
    if spec is not None:
        name = spec_id or "of the given spec"
        for key, want in (("observations", spec.obs_dim), ("actions", spec.action_dim)):
            have = arrays[key].shape[1]
            if have != want:
                raise _fail(where, f"has {key} of size {have}, env {name} expects {want}")


def from_arrays(arrays: Mapping[str, Any], metadata: Mapping[str, Any] | DatasetMetadata | None = None, *,
                source: str = "<memory>", env_id: str | None = None, spec: Any = None,
                require_timeouts: bool = False) -> Dataset:
    """Validate host arrays (D4RL keys, optional `infos` mapping) and put them on the device as a `Dataset`."""
    meta = make_metadata(metadata, source, source=source)
    clean = _validate(arrays, source, require_timeouts)
    infos = _validate_infos(arrays.get(_INFOS, {}) or {}, clean["observations"].shape[0], source)
    _check_env(clean, meta, source, env_id, spec)
    _warn_actions_outside_bounds(clean["actions"], source)
    f32 = lambda k: jnp.asarray(clean[k], jnp.float32)  # noqa: E731
    return Dataset(observations=f32("observations"), actions=f32("actions"), rewards=f32("rewards"),
                   next_observations=f32("next_observations"), terminals=f32("terminals"),
                   timeouts=f32("timeouts"), infos={k: jnp.asarray(v) for k, v in infos.items()}, metadata=meta)


def _warn_actions_outside_bounds(actions: np.ndarray, source: str) -> None:
    """Agents act in [-1, 1] (envs scale to the simulator's bounds); data in other units would be learned as is."""
    outside = np.abs(actions) > 1.0 + 1e-6
    if outside.any():
        print(f"warning: {source}: {int(outside.any(axis=1).sum())} of {actions.shape[0]} actions lie outside "
              f"[-1, 1] (largest |a| = {float(np.abs(actions).max()):.3g}); agents act in [-1, 1], so these are "
              "learned as given (rescale the dataset's actions if they are in the simulator's units)",
              file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------


def _read_hdf5(path: Path, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, attributes) of a D4RL-layout file; OSError from h5py becomes a DatasetError."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, Any] = {}
            for key in REQUIRED_KEYS:
                if key not in f:
                    continue
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise _fail(where, f"{key!r} is an HDF5 group, expected an array")
                arrays[key] = node[()]
            infos = {}
            if _INFOS in f and isinstance(f[_INFOS], h5py.Group):
                for name, node in f[_INFOS].items():
                    if isinstance(node, h5py.Dataset):
                        infos[name] = node[()]
            arrays[_INFOS] = infos
            attrs: dict[str, Any] = {}
            if "metadata" in f and isinstance(f["metadata"], h5py.Group):
                group = f["metadata"]
                for name, node in group.items():
                    if isinstance(node, h5py.Dataset) and node.shape == ():
                        attrs[name] = node[()]
                attrs.update(group.attrs.items())
                if "policy" not in attrs and "algorithm" in attrs:
                    attrs["policy"] = attrs.pop("algorithm")
            attrs.update(f.attrs.items())
    except OSError as error:
        raise _fail(where, f"is not a readable HDF5 file (not HDF5, truncated or corrupt): {error}") from None
    return arrays, attrs


def _read_minari(path: Path, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(arrays, attributes) of a Minari dataset folder, flattened into D4RL's transition layout.

    A step Minari marks both terminated and truncated counts as terminal.
    """
    try:
        import minari
    except ImportError:
        raise _fail(where, "is a directory (a Minari dataset folder?); loading Minari datasets needs "
                           "`pip install minari`") from None
    data_dir = path / "data" if (path / "data" / "metadata.json").exists() else path
    if not (data_dir / "metadata.json").exists():
        raise _fail(where, "is a directory without Minari's data/metadata.json; expected an HDF5 file or a Minari "
                           "dataset folder")
    try:
        source = minari.MinariDataset(str(data_dir))
        chunks: dict[str, list] = {k: [] for k in REQUIRED_KEYS}
        for episode in source.iterate_episodes():
            obs = episode.observations
            if not isinstance(obs, np.ndarray):
                raise _fail(where, f"has {type(obs).__name__} observations; only flat array observations load")
            terminals = np.asarray(episode.terminations, bool)
            chunks["observations"].append(obs[:-1])
            chunks["next_observations"].append(obs[1:])
            chunks["actions"].append(np.asarray(episode.actions).reshape(len(terminals), -1))
            chunks["rewards"].append(np.asarray(episode.rewards))
            chunks["terminals"].append(terminals)
            chunks["timeouts"].append(np.asarray(episode.truncations, bool) & ~terminals)
        meta = dict(source.storage.metadata)
    except DatasetError:
        raise
    except Exception as error:   # minari raises many kinds; name the folder and pass the reason on
        raise _fail(where, f"could not be read as a Minari dataset: {type(error).__name__}: {error}") from None
    if not chunks["observations"]:
        raise _fail(where, "holds no episodes")
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    env_id = None
    if source.env_spec is not None:
        env_id = f"gym:{source.env_spec.id}"
    attrs = {"env_id": env_id, "policy": meta.get("algorithm_name"), "code_version": meta.get("code_permalink"),
             "steps": int(arrays["rewards"].shape[0]), "ref_min_score": meta.get("ref_min_score"),
             "ref_max_score": meta.get("ref_max_score"), "dataset_id": meta.get("dataset_id")}
    return arrays, attrs


def load(path: str | os.PathLike, env_id: str | None = None, spec: Any = None) -> Dataset:
    """Load and validate a D4RL-layout HDF5 file or a Minari dataset folder onto the device.

    `spec` (an `envs.EnvSpec`, or anything with obs_dim, action_dim, env_id) checks
    the sizes; `env_id` (or spec.env_id) must match the recorded env id when both
    are known. Every problem raises `DatasetError` naming the file.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise _fail(where, "does not exist")
    if path.is_dir():
        arrays, attrs = _read_minari(path, where)
    else:
        arrays, attrs = _read_hdf5(path, where)
    return from_arrays(arrays, make_metadata(attrs, where), source=where, env_id=env_id, spec=spec)


def write(path: str | os.PathLike, arrays: Mapping[str, Any] | Dataset,
          metadata: Mapping[str, Any] | DatasetMetadata | None = None, *, spec: Any = None,
          compression: str | None = None) -> Path:
    """Validate, then write a D4RL-layout HDF5 file atomically (`<path>.tmp`, then `os.replace`).

    `arrays` holds the six keys (all required here) and optionally `infos`, a
    mapping of extra [N, ...] arrays written under `infos/`. Nothing is written
    when validation fails; a crash while writing leaves at most `<path>.tmp`,
    never a half-written `path`. Returns the path.
    """
    path = Path(path)
    where = str(path)
    if isinstance(arrays, Dataset):
        metadata = arrays.metadata if metadata is None else metadata
        arrays = {**{k: np.asarray(getattr(arrays, k)) for k in REQUIRED_KEYS}, _INFOS: dict(arrays.infos)}
    meta = make_metadata(metadata, where)
    clean = _validate(arrays, where, require_timeouts=True)
    infos = _validate_infos(arrays.get(_INFOS, {}) or {}, clean["observations"].shape[0], where)
    _check_env(clean, meta, where, None, spec)

    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for key in REQUIRED_KEYS:
                f.create_dataset(key, data=clean[key], compression=compression)
            for name, value in infos.items():
                f.create_dataset(f"{_INFOS}/{name}", data=value, compression=compression)
            for name, value in meta.to_attrs().items():
                if isinstance(value, tuple):   # e.g. an array attribute read from another file
                    value = np.array(value, dtype=h5py.string_dtype()) \
                        if all(isinstance(v, str) for v in value) else np.asarray(value)
                f.attrs[name] = value
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------
# Normalized scores (D4RL)
# --------------------------------------------------------------------------


def normalized_score(returns, ref_random: float, ref_expert: float):
    """D4RL's normalized score: 100 * (R - random) / (expert - random); 0 = random policy, 100 = expert."""
    if not isinstance(ref_random, jax.Array) and not isinstance(ref_expert, jax.Array) \
            and float(ref_expert) == float(ref_random):
        raise ValueError(f"reference returns are equal (random = expert = {ref_random}); the score is undefined")
    if not isinstance(returns, jax.Array):
        returns = np.asarray(returns, np.float64)
    return 100.0 * (returns - ref_random) / (ref_expert - ref_random)


def reference_returns(dataset: Dataset | DatasetMetadata) -> tuple[float, float]:
    """(random, expert) returns the dataset records (`ref_min_score`, `ref_max_score`)."""
    meta = dataset.metadata if isinstance(dataset, Dataset) else dataset
    if meta.ref_min_score is None or meta.ref_max_score is None:
        raise DatasetError(f"dataset {meta.source or '<memory>'}: records no reference returns "
                           f"(attributes ref_min_score / ref_max_score); pass them to normalized_score directly")
    return meta.ref_min_score, meta.ref_max_score


def dataset_normalized_score(dataset: Dataset | DatasetMetadata, returns):
    """`normalized_score` with the reference returns recorded in the dataset's metadata."""
    return normalized_score(returns, *reference_returns(dataset))


# --------------------------------------------------------------------------
# Episode structure (host, numpy: the sizes depend on the data)
# --------------------------------------------------------------------------


def episode_end_flags(dataset: Dataset) -> np.ndarray:
    """bool [N]: transition i is the last of its episode (the rule in the module docstring)."""
    obs = np.asarray(dataset.observations)
    next_obs = np.asarray(dataset.next_observations)
    ends = (np.asarray(dataset.terminals) > 0) | (np.asarray(dataset.timeouts) > 0)
    ends[:-1] |= np.any(next_obs[:-1] != obs[1:], axis=1)
    ends[-1] = True
    return ends


def episode_ends(dataset: Dataset) -> np.ndarray:
    """int64 [E]: index of the last transition of each episode, ascending."""
    return np.flatnonzero(episode_end_flags(dataset))


def episode_starts(dataset: Dataset) -> np.ndarray:
    """int64 [E]: index of the first transition of each episode, ascending."""
    ends = episode_ends(dataset)
    return np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)


def episode_lengths(dataset: Dataset) -> np.ndarray:
    """int64 [E]: transitions per episode (sums to N)."""
    return episode_ends(dataset) - episode_starts(dataset) + 1


def episode_returns(dataset: Dataset) -> np.ndarray:
    """float64 [E]: undiscounted return of each episode (cut episodes count what the data holds)."""
    return np.add.reduceat(np.asarray(dataset.rewards, np.float64), episode_starts(dataset))


def sequence_starts(dataset: Dataset, length: int, allow_terminal: bool = True) -> jax.Array:
    """int32 [M]: starts i whose window [i, i + length) stays in one episode (see module docstring).

    With `allow_terminal`, windows that run into a terminal end are kept too
    (`sample_sequences` masks and zeroes the steps after the terminal).
    """
    if length < 1:
        raise ValueError(f"sequence length must be >= 1, got {length}")
    ends = episode_ends(dataset)
    n = dataset.num_transitions
    index = np.arange(n)
    last = ends[np.searchsorted(ends, index)]   # last transition of each i's episode
    valid = index + length - 1 <= last
    if allow_terminal:
        valid |= np.asarray(dataset.terminals)[last] > 0
    return jnp.asarray(np.flatnonzero(valid), jnp.int32)


# --------------------------------------------------------------------------
# Sampling (pure, jittable; vmap over keys with the dataset shared)
# --------------------------------------------------------------------------


def sample(dataset: Dataset, key: jax.Array, batch_size: int) -> TransitionBatch:
    """`batch_size` transitions drawn uniformly with replacement (`batch_size` static)."""
    index = jax.random.randint(key, (batch_size,), 0, dataset.num_transitions)
    return TransitionBatch(obs=dataset.observations[index], action=dataset.actions[index],
                           reward=dataset.rewards[index], next_obs=dataset.next_observations[index],
                           terminated=dataset.terminals[index])


def sequences_at(dataset: Dataset, start: jax.Array, length: int) -> SequenceBatch:
    """The windows of `length` transitions beginning at each `start` [B]; steps after a terminal padded."""
    steps = jnp.minimum(start[:, None] + jnp.arange(length), dataset.num_transitions - 1)
    terminated = dataset.terminals[steps]
    alive_before = jnp.cumprod(1.0 - terminated, axis=1)
    mask = jnp.concatenate([jnp.ones_like(alive_before[:, :1]), alive_before[:, :-1]], axis=1)
    pad = lambda x: x * mask.reshape(mask.shape + (1,) * (x.ndim - 2))  # noqa: E731
    return SequenceBatch(obs=pad(dataset.observations[steps]), action=pad(dataset.actions[steps]),
                         reward=pad(dataset.rewards[steps]), next_obs=pad(dataset.next_observations[steps]),
                         terminated=pad(terminated), mask=mask)


def sample_sequences(dataset: Dataset, key: jax.Array, batch_size: int, length: int,
                     starts: jax.Array) -> SequenceBatch:
    """`batch_size` windows of `length` steps, starts uniform over `starts` (from `sequence_starts`).

    `batch_size` and `length` are static; `starts` is an array (shared, not vmapped).
    """
    if starts.shape[0] == 0:
        raise ValueError(f"no sequence starts to sample from: no window of {length} steps fits in the dataset")
    pick = jax.random.randint(key, (batch_size,), 0, starts.shape[0])
    return sequences_at(dataset, starts[pick], length)
