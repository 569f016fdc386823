"""A run's progress bar: steps per seed up to the steps the run really trains, the training steps/s, the latest
evaluation return, and an ETA measured on training alone.

tqdm's own ETA extrapolates from the average rate since the bar started, which includes compilation and an
off-policy agent's random warm-up; the warm-up runs many times faster than training (MR.Q on dm_control, 2 CPU
cores: ~40 min shown for a run of about a day). Here the rate comes from the intervals between progress reports
(the loops report after each update or env step where they can, else after each chunk, experiments/loops/base.py)
that lie wholly in the training phase, leaving out the first interval of the process (it compiles) and any
interval marked with `skip_interval` (the first evaluation compiles too). Evaluations and checkpoints after that
count: they are part of what the remaining steps will cost. The remaining warm-up is extrapolated at the
warm-up's own rate. Until a training interval has been measured, the ETA reads "?".
"""

from __future__ import annotations

import sys
import time
from typing import Callable


class ProgressBar:
    """`total`: the steps the run will reach (rounded up to whole updates); `warmup`: the steps of random
    actions before the first update (0 for agents without a warm-up)."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, initial: int, warmup: int = 0, enabled: bool = True, desc: str = "",
                 clock: Callable[[], float] = time.perf_counter, file=None):
        from tqdm import tqdm

        self.total, self.warmup, self._clock = total, warmup, clock
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                         desc=desc, bar_format=self.FORMAT, file=file or sys.stderr)
        self._postfix = {"eta": "?", "sps": "-", "eval_return": "-"}
        self._last: tuple[int, float] | None = None     # the latest report (step, time); None: skip the next
        # [steps, seconds] measured in each phase
        self._measured = {"warmup": [0, 0.0], "training": [0, 0.0]}
        self.step = initial

    # -- what the run reports ------------------------------------------------------------------

    def advance(self, step: int) -> None:
        """The run has reached `step` (within a chunk or at its end)."""
        now = self._clock()
        if self._last is not None and step > self._last[0]:
            previous, then = self._last
            phase = "training" if previous >= self.warmup else "warmup" if step <= self.warmup else None
            if phase is not None:           # an interval across the warm-up's end belongs to neither
                self._measured[phase][0] += step - previous
                self._measured[phase][1] += now - then
        self._last = (step, now)
        self.step = step
        self._postfix["eta"] = self.eta()
        self._bar.set_postfix_str(self._text(), refresh=False)
        self._bar.update(min(step, self.total) - self._bar.n)

    def skip_interval(self) -> None:
        """Leave the time until the next report out of the rate (e.g. the first evaluation, which compiles)."""
        self._last = None

    def show(self, **values: str) -> None:
        """Update the shown values (sps, eval_return) and redraw."""
        self._postfix.update(values)
        self._bar.set_postfix_str(self._text())

    def close(self) -> None:
        self._bar.close()

    # -- the estimate ----------------------------------------------------------------------------

    def rate(self, phase: str = "training") -> float | None:
        """Measured steps per second in `phase` ("training" or "warmup"), None before any interval of it."""
        steps, seconds = self._measured[phase]
        return steps / seconds if steps and seconds > 0 else None

    def remaining_seconds(self) -> float | None:
        """Seconds to `total` from the latest report: the rest of the warm-up at its rate, the training steps
        at theirs; None while a needed rate is unknown."""
        training = self.rate("training")
        if training is None:
            return None
        seconds = (self.total - max(self.step, self.warmup)) / training
        if self.step < self.warmup:
            warmup = self.rate("warmup")
            if warmup is None:
                return None
            seconds += (self.warmup - self.step) / warmup
        return max(seconds, 0.0)

    def eta(self) -> str:
        from tqdm import tqdm

        seconds = self.remaining_seconds()
        return "?" if seconds is None else tqdm.format_interval(seconds)

    def _text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._postfix.items())
