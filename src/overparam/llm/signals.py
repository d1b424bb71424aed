"""Graceful stop on SIGTERM, SIGINT and SIGUSR2: finish the optimizer step, save, exit 3.

SIGUSR2 is included because submitit asks Slurm for it shortly before a job's time limit;
its default action would end the process without a checkpoint.

The handler only sets a flag. The training loop reads it once per step (all-reduced across
processes, so every rank stops after the same step), saves a checkpoint and raises
RunInterrupted. A second signal while the first is being handled restores the previous
handlers and re-delivers the signal, so a stuck save can still be stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class StopRequest:
    """Context manager that turns the stop signals into a stop flag while it is active."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("second %s: stopping without waiting for the checkpoint", name)
            self._restore()
            signal.raise_signal(signum)
            return
        self.signal_name = name
        log.warning("%s received: finishing the current step, then saving a checkpoint", name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def __enter__(self) -> StopRequest:
        # Python delivers signals to the main thread only; elsewhere (a thread pool of a
        # sweep, say) the caller's own handlers stay in charge.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()
