"""JAX's process-wide settings, applied by every entry point before it compiles anything.

Persistent compilation cache. XLA compiles every jitted program again in every new process, and on a
CPU that is most of a short run's start-up. JAX can keep the compiled programs on disk, keyed by the
program itself, its shapes and dtypes, the JAX and XLA versions, the backend and the compile options (the
matmul precision below included), so a later run that builds the same programs loads them instead of
compiling them (the measured start-ups: experiments/results/compile_cache_startup_cpu.json, made by
`python experiments/bench.py --startup mrq ppo sac`). It is on by default, in

    $CTRLRL_CACHE_DIR, else $XDG_CACHE_HOME/ctrlrl/jax, else ~/.cache/ctrlrl/jax;

`--compile-cache-dir DIR` chooses another directory, `--no-compile-cache` turns it off. Every program is
kept, however fast it compiled: JAX by default keeps only programs that took >= 1 s to compile, which on a
CPU leaves out many of a run's programs (a tiny TD3 run's second start still spent 14 s instead of 4 s
at that threshold; measured once, 2-core CPU). Entries are small (that run: 107 entries, 1.3 MB), but the
directory only grows, by one set of programs per new configuration: delete it to clear it. JAX trusts
the cache: whoever can write into the directory can run code in your process, so do not share it with
users you do not trust.

Matmul precision. On NVIDIA GPUs since Ampere, JAX's default runs float32 matmuls and convolutions in
TF32 (a 10-bit mantissa), and MuJoCo Playground's tasks can stop training under it (Playground issue #86:
LeapCubeReorient trains on a T4 and not on an RTX 4080 until the precision is `highest`). Runs here set
the precision explicitly, full float32 unless `--matmul-precision` says otherwise, and record it in
config.json. On a CPU every choice gave bitwise the same results (matmuls, convolutions, and a tiny PPO
run's train.csv and eval.csv, float32 against default); it is set there too, so that the record means
the same everywhere.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

CACHE_DIR_VARIABLE = "CTRLRL_CACHE_DIR"
"""The environment variable that moves the default compile cache."""

# --matmul-precision -> jax_default_matmul_precision (None: unset, JAX's own default for the backend).
MATMUL_PRECISIONS = {"float32": "float32", "tensorfloat32": "tensorfloat32", "bfloat16": "bfloat16", "default": None}


class JaxSetupError(ValueError):
    """A bad --compile-cache-dir or --matmul-precision: the message names it and the valid choices."""


@dataclasses.dataclass(frozen=True)
class JaxFlags:
    """The flags every entry point that compiles shares (run.py, sweep.py, bench.py, collect.py, compare.py)."""

    compile_cache: bool = True
    """Keep compiled programs on disk and reuse them in later runs with the same shapes (JAX's persistent
    compilation cache); --no-compile-cache turns it off."""
    compile_cache_dir: str | None = None
    """The compile cache's directory (default: $CTRLRL_CACHE_DIR, else $XDG_CACHE_HOME/ctrlrl/jax, else
    ~/.cache/ctrlrl/jax)."""
    matmul_precision: Literal["float32", "tensorfloat32", "bfloat16", "default"] = "float32"
    """Precision of float32 matmuls and convolutions (jax_default_matmul_precision): float32 (full), tensorfloat32,
    bfloat16, or default (JAX's choice per backend: TF32 on recent NVIDIA GPUs, which can break MJX training)."""


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the compile cache lives unless --compile-cache-dir says otherwise."""
    if environ.get(CACHE_DIR_VARIABLE):
        return Path(environ[CACHE_DIR_VARIABLE]).expanduser()
    cache_home = environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(cache_home) / "ctrlrl" / "jax"


def _unusable(directory: Path) -> str | None:
    """Why `directory` cannot hold the cache (it is created if missing), or None if it can."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):    # writable for real (os.access says yes to root)
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


def cache_directory(flags: JaxFlags, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The compile cache's directory for `flags`, created and checked writable; None when the cache is off.

    A directory the user named (--compile-cache-dir, $CTRLRL_CACHE_DIR) that cannot be used is an error; the
    default location falls back to no cache with a warning, so that a read-only home does not stop a run."""
    if not flags.compile_cache:
        return None
    named = flags.compile_cache_dir or environ.get(CACHE_DIR_VARIABLE)
    directory = Path(named).expanduser() if named else default_cache_dir(environ)
    problem = _unusable(directory)
    if problem is None:
        return directory.absolute()
    if named:
        how = "--compile-cache-dir" if flags.compile_cache_dir else f"${CACHE_DIR_VARIABLE}"
        raise JaxSetupError(f"{how} {directory}: cannot write there ({problem}); choose a writable directory "
                            "(--compile-cache-dir DIR) or turn the cache off with --no-compile-cache")
    print(f"warning: compile cache off: cannot write to {directory} ({problem}); choose a directory with "
          f"--compile-cache-dir DIR or ${CACHE_DIR_VARIABLE}", file=sys.stderr, flush=True)
    return None


def configure_jax(flags: JaxFlags, environ: Mapping[str, str] = os.environ) -> dict:
    """Apply `flags` to this process's JAX: the compile cache and the matmul precision. Call it before the
    first compilation. Raises JaxSetupError (nothing changed) for a bad flag; returns `settings()`."""
    if flags.matmul_precision not in MATMUL_PRECISIONS:
        raise JaxSetupError(f"--matmul-precision {flags.matmul_precision!r} is not one of "
                            f"{', '.join(MATMUL_PRECISIONS)}")
    directory = cache_directory(flags, environ)
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_default_matmul_precision", MATMUL_PRECISIONS[flags.matmul_precision])
    wanted = (directory is not None, None if directory is None else str(directory))
    if (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir) != wanted:
        jax.config.update("jax_enable_compilation_cache", wanted[0])
        jax.config.update("jax_compilation_cache_dir", wanted[1])
        # JAX opens its cache once, at a process's first compilation: make it open the new one at the next.
        compilation_cache.reset_cache()
    # Keep every program (JAX's defaults keep only those that compiled for >= 1 s, and let a
    # filesystem-dependent minimum size leave small ones out).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return settings()


def settings() -> dict:
    """This process's JAX settings as config.json records them: the matmul precision and the compile cache's
    directory (None when off)."""
    import jax

    on = jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir
    return {"matmul_precision": jax.config.jax_default_matmul_precision or "default",
            "compile_cache_dir": jax.config.jax_compilation_cache_dir if on else None}
