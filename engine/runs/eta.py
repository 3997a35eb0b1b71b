"""A run's remaining time, computed one way for the engine's progress line and for the app's monitor.

Three parts: the time of a training step, the median of the last steps' own durations (``step_seconds``), so one
slow step does not swing it; the pauses the plan schedules (an evaluation every ``eval_every`` steps, a checkpoint
every ``checkpoint_every``), each counted at the mean length the ones so far took, for those still ahead; and what
is left between steps (logging), per step. So an evaluation adds its own length once it has been seen, instead of
making the figure jump while it sits in a window of recent steps. The range is the same sum with the 10th and 90th
percentile of the recent step times. A resume starts a new session (its speed may differ).
"""
from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

RECENT_STEPS = 20


def _boundaries(lo: int, hi: int, every: int) -> int:
    """Multiples of ``every`` in [lo, hi): the scheduled pauses after those steps."""
    if every <= 0 or hi <= lo:
        return 0
    return (hi - 1) // every - (lo - 1) // every


@dataclass
class Eta:
    total_steps: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    _recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    _last: tuple[int, float] | None = None       # (step, wall time) of the last measured step
    _pause_sum: float = 0.0                      # seconds of the scheduled pauses seen, and how many
    _pauses: int = 0
    _gap_sum: float = 0.0                        # seconds between other steps, and over how many steps
    _gap_steps: int = 0

    def restart(self) -> None:
        """A new session (a resume): its own speed."""
        self._recent.clear()
        self._last = None
        self._pause_sum = self._gap_sum = 0.0
        self._pauses = self._gap_steps = 0

    def _scheduled(self, lo: int, hi: int) -> int:
        return _boundaries(lo, hi, self.eval_every) + _boundaries(lo, hi, self.checkpoint_every)

    def add(self, step: int, wall_time: float, step_seconds: float) -> None:
        """A finished step: its number, when it ended (wall clock), and how long it took."""
        if self._last is not None and step <= self._last[0]:
            return
        self._recent.append(float(step_seconds))
        if self._last is not None:
            prev_step, prev_time = self._last
            # steps between two logged ones (training.log_every) are taken to be as long as the logged one
            gap = max(0.0, (wall_time - prev_time) - float(step_seconds) * (step - prev_step))
            pauses = self._scheduled(prev_step, step)
            if pauses:
                self._pause_sum += gap
                self._pauses += pauses
            else:
                self._gap_sum += gap
                self._gap_steps += step - prev_step
        self._last = (step, wall_time)

    def seconds_per_step(self) -> float | None:
        return statistics.median(self._recent) if self._recent else None

    def remaining(self, step: int | None = None) -> tuple[float, float, float] | None:
        """(seconds, low, high) left after ``step`` (default: the last seen), or None before a measured step."""
        if not self._recent or not self.total_steps:
            return None
        step = self._last[0] if step is None else step
        left = max(0, self.total_steps - step)
        per_gap = self._gap_sum / self._gap_steps if self._gap_steps else 0.0
        pause = self._pause_sum / self._pauses if self._pauses else 0.0
        ahead = self._scheduled(step, self.total_steps + 1) * pause    # the last step's own pauses too
        times = sorted(self._recent)
        q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
        return tuple((t + per_gap) * left + ahead for t in (statistics.median(times), q[0], q[-1]))


def clock(seconds: float) -> str:
    """1:02:03 or 4:05."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
