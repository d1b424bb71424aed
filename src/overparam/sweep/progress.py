"""Progress of a sweep: counts of runs by state and an estimate of the time left."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

# Outcomes a run of this invocation can end with, in display order.
OUTCOMES = ("completed", "diverged", "failed", "interrupted", "taken")


class SweepProgress:
    """Counts runs as they start and end; shows a tqdm bar on a TTY, else one log line per change.

    The time left is an estimate: the mean wall time of the runs finished so far in this
    invocation, times the runs still to go, divided by the workers.
    """

    def __init__(self, name: str, total: int, skipped: int, workers: int) -> None:
        self.name = name
        self.total = total  # runs this invocation starts
        self.skipped = skipped  # runs already finished before this invocation
        self.workers = max(1, workers)
        self.running = 0
        self.outcomes: Counter[str] = Counter()
        self._durations: list[float] = []
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"sweep {name}", unit="run", file=sys.stderr)
        self._show()

    @property
    def finished(self) -> int:
        return sum(self.outcomes.values())

    def eta_seconds(self) -> float | None:
        if not self._durations:
            return None
        left = self.total - self.finished
        return sum(self._durations) / len(self._durations) * left / self.workers

    def started(self) -> None:
        self.running += 1
        self._show()

    def ended(self, outcome: str, duration_s: float) -> None:
        self.running -= 1
        self.outcomes[outcome] += 1
        if outcome in ("completed", "diverged"):
            self._durations.append(duration_s)
        if self._bar is not None:
            self._bar.update(1)
        self._show()

    def text(self) -> str:
        counts = ", ".join(f"{self.outcomes[o]} {o}" for o in OUTCOMES if self.outcomes[o])
        pending = self.total - self.finished - self.running
        eta = self.eta_seconds()
        eta_text = "unknown" if eta is None else _format_duration(eta)
        return (
            f"{self.finished}/{self.total} runs ended ({counts or 'none yet'}), {self.running} "
            f"running, {pending} pending, {self.skipped} finished earlier; time left ~{eta_text}"
        )

    def _show(self) -> None:
        if self._bar is not None:
            eta = self.eta_seconds()
            postfix = {o: self.outcomes[o] for o in OUTCOMES if self.outcomes[o]}
            postfix["running"] = self.running
            if eta is not None:
                postfix["left"] = _format_duration(eta)
            self._bar.set_postfix(postfix, refresh=True)
        else:
            log.info("sweep %s: %s", self.name, self.text())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def now() -> float:
    return time.monotonic()
