"""The one chunked outer loop: train.py (a run), sweep.py (a grid's lanes) and bench.py (timed chunks) all
drive a loop through `drive`.

Training goes in chunks that end at every multiple of `log_every` and of `eval_every` and at `total_steps`,
each rounded up to the loop's granularity (on-policy loops advance in whole updates, so a run may end up to
one update past `total_steps`). After each chunk, in this order: `check(step, metrics)` (e.g. that every
metric is finite, before a diverged state is evaluated or saved); `on_log(step, metrics)` at a log boundary;
the evaluation and `on_eval(step, state, evaluation, diagnostics)` at an eval boundary; `on_chunk(step, state,
finished)` after every chunk. The last chunk counts as both boundaries. A callback that raises stops the run.
"""

from __future__ import annotations

from typing import Callable

from experiments.loops.base import Loop
from experiments.loops.evaluation import Evaluation


def round_up(n: int, loop: Loop) -> int:
    """`n` steps rounded up to whole chunks of the loop's granularity."""
    return -(-n // loop.granularity) * loop.granularity


def crossed(previous: int, step: int, every: int | None) -> bool:
    """Whether a multiple of `every` lies in (previous, step]."""
    return every is not None and step // every > previous // every


def drive(loop: Loop, state: dict, start_step: int, total_steps: int, *, log_every: int | None = None,
          eval_every: int | None = None, eval_episodes: int = 10,
          check: Callable[[int, dict], None] | None = None,
          on_log: Callable[[int, dict], None] | None = None,
          on_eval: Callable[[int, dict, Evaluation, dict], None] | None = None,
          on_chunk: Callable[[int, dict, bool], None] | None = None) -> tuple[dict, int]:
    """Train `loop` from `start_step` to `total_steps` (rounded up); returns the final state and step."""
    total_steps = round_up(total_steps, loop)
    step = start_step
    while step < total_steps:
        boundaries = [(step // every + 1) * every for every in (log_every, eval_every) if every is not None]
        target = min(round_up(min(boundaries, default=total_steps), loop), total_steps)
        state, metrics = loop.run(state, step, target - step)
        previous, step = step, target
        finished = step >= total_steps
        if check is not None:
            check(step, metrics)
        if on_log is not None and (crossed(previous, step, log_every) or finished):
            on_log(step, metrics)
        if eval_every is not None and (crossed(previous, step, eval_every) or finished):
            evaluation = loop.evaluate(state, step, eval_episodes)
            diagnostics = loop.diagnostics(state, step)
            if evaluation.discounted is not None:
                diagnostics["eval/discounted_return"] = evaluation.discounted.mean(axis=1)
            if on_eval is not None:
                on_eval(step, state, evaluation, diagnostics)
        if on_chunk is not None:
            on_chunk(step, state, finished)
    return state, step
