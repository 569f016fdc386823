"""Run directories: the marker that says a directory is ours, the lock held for a run's life, and the only
files `--overwrite` may delete.

A run (or sweep) directory holds `status.json` from the moment it is created:

    {"schema": "ctrlrl.run/1", "kind": "run", "run_id": "3f2a...", "finished": false, "step": 0}

`--overwrite` deletes a directory's contents only where that marker is present, and then only the entries
a run writes (`RUN_ENTRIES`, `process_<i>/`): a user's own file that sits beside them stays. A directory
without the marker that holds anything is refused. (`status.json` without `schema`, as written before the
marker existed, with only `finished` and `step`, counts as ours.)

`RunDir.lock()` takes an exclusive OS file lock (`fcntl.flock`) on `<dir>/run.lock` and records the
holder's pid, host and start time in it. A second process on the same directory -- a second run, a
requeued `--resume` while the original still runs -- is refused, naming the holder. The kernel releases
the lock when its holder exits in any way (kill -9 included), so a stale `run.lock` file never blocks
`--resume`. (`flock` works on local file systems; on NFS, Linux emulates it with byte-range locks.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

SCHEMA = "ctrlrl.run/1"
LOCK_FILE = "run.lock"
# Everything a run or a sweep writes into its directory (temporary `.tmp` files included).
RUN_ENTRIES = frozenset({
    "status.json", "status.tmp", "config.json", "config.tmp", "eval.csv", "eval.tmp", "train.csv", "train.tmp",
    "summary.csv", "summary.tmp", "tensorboard", "checkpoints", "world", "wandb", "videos", "evaluations", LOCK_FILE,
})
_PROCESS_DIR = re.compile(r"^process_\d+$")     # non-main hosts of a multi-host run


class RunDirError(ValueError):
    """A run directory that cannot be used as asked: the message names it and what to do."""


def is_run_entry(name: str) -> bool:
    return name in RUN_ENTRIES or bool(_PROCESS_DIR.match(name))


def read_status(path: Path) -> dict | None:
    """`status.json` if it is our marker (this schema, or the earlier finished/step form), else None."""
    try:
        status = json.loads((path / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict):
        return None
    if status.get("schema") == SCHEMA:
        return status
    return status if set(status) == {"finished", "step"} else None


class RunDir:
    """One run or sweep directory (`kind`: "run" or "sweep")."""

    def __init__(self, path: str | os.PathLike, kind: str = "run"):
        self.path = Path(path)
        self.kind = kind
        self.created = False         # this process made the directory (so a failed start may remove it)
        self.lock_created = False    # ... or only its lock file
        self._lock_fd: int | None = None

    # -- what is there ------------------------------------------------------------------------

    def check_path(self) -> None:
        """Refuse a path that cannot be a directory of ours, before anything is written."""
        for parent in [self.path, *self.path.absolute().parents]:
            if parent.exists():
                if not parent.is_dir():
                    what = "is a file" if parent == self.path else f"is under {parent}, which is a file"
                    raise RunDirError(f"--run-dir {self.path} {what}: choose a directory")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise RunDirError(f"--run-dir {self.path}: {parent} is not writable: choose a writable place")
                return

    def entries(self) -> list[str]:
        """Names in the directory, other than the lock file; [] if it does not exist."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name != LOCK_FILE)

    def status(self) -> dict | None:
        return read_status(self.path)

    def foreign_entries(self) -> list[str]:
        return [name for name in self.entries() if not is_run_entry(name)]

    # -- the lock --------------------------------------------------------------------------------

    def lock(self) -> None:
        """Create the directory if needed and take its lock; RunDirError naming the holder if it is taken."""
        self.check_path()
        try:
            self.path.mkdir(parents=True)
            self.created = True
        except FileExistsError:
            pass
        lock_path = self.path / LOCK_FILE
        lock_existed = lock_path.exists()
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirError(f"{self.path} is in use by {self._holder()}; wait for it to finish (or stop it), "
                              "or choose another --run-dir") from None
        self.lock_created = not lock_existed
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "kind": self.kind}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._lock_fd = fd

    def _holder(self) -> str:
        try:
            holder = json.loads((self.path / LOCK_FILE).read_text())
            return (f"another {holder.get('kind', 'run')} (pid {holder['pid']} on {holder['host']}, "
                    f"since {holder['since']})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (its pid is not recorded yet)"

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)           # releases the flock; the file stays (removing it would race)
            self._lock_fd = None

    # -- writing and clearing ----------------------------------------------------------------------

    def mark(self, finished: bool = False, step: int = 0, run_id: str | None = None) -> str:
        """Write the marker (`status.json`, atomically); returns the run id (a new one unless given)."""
        run_id = run_id or uuid.uuid4().hex
        write_json(self.path / "status.json", {"schema": SCHEMA, "kind": self.kind, "run_id": run_id,
                                               "finished": finished, "step": step})
        return run_id

    def clear(self) -> None:
        """Delete what a run wrote here (not the lock, not anything else); the directory must be ours."""
        for name in self.entries():
            if is_run_entry(name):
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()

    def release_foreign(self) -> None:
        """Unlock a directory that turned out not to be ours, removing the lock file if this process made it."""
        self.unlock()
        if self.lock_created:
            (self.path / LOCK_FILE).unlink(missing_ok=True)

    def discard(self) -> None:
        """Undo a start that failed before training: remove the directory if this process created it (it
        then holds only our files), else the entries a run writes (and the lock file, if it was new)."""
        if self.created:
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.clear()
            self.release_foreign()


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
