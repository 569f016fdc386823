"""Orbax checkpoints of the whole training state: agent (with replay), env, counters.

A checkpoint is written to a temporary folder and renamed into place by orbax
once complete, so a crash while saving never damages the previous one; the
last `keep` checkpoints are kept. Before writing, the free space of the disk
is compared with the state's size: a disk that cannot hold the checkpoint
raises OSError(ENOSPC) before orbax starts (orbax's own failure, from its
writer threads, is a storm of tracebacks); any other write failure is
re-raised as one OSError. Restoring validates against the structure a
fresh `init` produces, so a checkpoint from another agent, env or config is
rejected with a clear message instead of silently mis-loading.

Sharded states (experiments/loops/sharding.py) are saved as whole arrays
(orbax writes each device's slices) and restored onto the shardings of that
fresh `init`: a checkpoint written on 4 devices resumes on 1, 2 or 8.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the run."""


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def delete(self, steps: list[int]) -> None:
        for step in steps:
            self._manager.delete(step)

    def save(self, step: int, tree: Any, meta: dict) -> None:
        """Save `tree` (arrays) and `meta` (JSON) as checkpoint `step`; blocks until written. A disk too full
        for it, or a failed write, raises OSError naming the checkpoint (the earlier ones stay intact)."""
        target = str(self.directory / str(step))
        # Sizes from shapes: a sharded array is not copied to the host (nor gathered from other hosts) to count it.
        need = sum(np.size(x) * np.dtype(x.dtype).itemsize if hasattr(x, "dtype") else np.asarray(x).nbytes
                   for x in jax.tree.leaves(tree)) + 2**20
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise OSError(errno.ENOSPC, f"No space left on device: the checkpoint needs about {need / 2**20:.1f} "
                          f"MiB and {free / 2**20:.1f} MiB are free", target)
        try:
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_fill_empty(tree)), meta=ocp.args.JsonSave(meta)), force=True)
            self._manager.wait_until_finished()
        except OSError:
            raise
        except Exception as error:  # orbax wraps I/O failures in ValueError and others
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            code = errno.ENOSPC if "No space left" in text else errno.EIO
            raise OSError(code, f"checkpoint write failed: {text}", target) from None

    def restore(self, target: dict, step: int | None = None, must_be_finite: tuple[str, ...] = ("agent",)
                ) -> tuple[Any, dict, int]:
        """Restore the latest (or given) checkpoint into the structure of `target`.

        The entries named in `must_be_finite` (the agent: parameters, optimizer,
        replay) are checked for NaN/inf; others (e.g. "no episode finished yet"
        markers) may legitimately hold NaN.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _fill_empty(target))
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as error:  # orbax raises many types for damaged files
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupt or does not match this run "
                f"(agent, env, config and number of seeds must be the same): {first_line}") from None
        tree = _restore_empty(restored["state"], target)
        for name in must_be_finite:
            _check_finite(tree[name], self.directory / str(step))
        return tree, dict(restored["meta"]), step

    def close(self) -> None:
        self._manager.close()


def checkpoint_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints in `directory` (orbax renames a checkpoint to its bare step number
    only once it is fully written), without creating anything."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def _fill_empty(tree: Any) -> Any:
    """Orbax cannot save zero-size arrays (MJX data has some, e.g. `act` of a model without
    actuator state): store a one-element placeholder instead."""
    return jax.tree.map(lambda x: np.zeros((1,), np.asarray(x).dtype) if np.size(x) == 0 else x, tree)


def _restore_empty(restored: Any, target: Any) -> Any:
    """Put the target's zero-size arrays back where `_fill_empty` left placeholders."""
    return jax.tree.map(lambda r, t: t if np.size(t) == 0 else r, restored, target)


def _check_finite(tree: Any, where: Path) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not np.issubdtype(np.asarray(leaf).dtype if not hasattr(leaf, "dtype") else leaf.dtype, np.floating):
            continue
        # A sharded array is checked where it lies, slice by slice (with several processes, each its own).
        parts = [shard.data for shard in leaf.addressable_shards] if isinstance(leaf, jax.Array) else [leaf]
        if not all(np.all(np.isfinite(np.asarray(part))) for part in parts):
            raise CheckpointError(f"checkpoint {where} holds non-finite values in {jax.tree_util.keystr(path)}")
