"""Run cells as local `overparam train` subprocesses, a fixed number at a time.

Each run is its own process, so a crash or a kill of one run never takes the sweep down. The
children stay in the sweep's process group: Ctrl-C in a terminal reaches them directly, and
killing the group stops everything, after which a rerun resumes from the last checkpoints.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from overparam.sweep.grid import Cell
from overparam.sweep.launch import LaunchSpec
from overparam.sweep.state import SweepIOError

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2


@dataclass
class _Running:
    cell: Cell
    spec: LaunchSpec
    process: subprocess.Popen
    slot: int
    started: float


def _terminal_sent_it() -> bool:
    """True when this process group is a terminal's foreground group, which got Ctrl-C too."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def start_process(spec: LaunchSpec) -> subprocess.Popen:
    try:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = spec.log_path.open("ab")
    except OSError as error:
        raise SweepIOError(f"cannot write {spec.log_path}: {error.strerror or error}") from None
    with log_file:
        header = f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(spec.command())}\n"
        log_file.write(header.encode())
        log_file.flush()
        # The child keeps its own copy of the file descriptor after this block closes ours.
        return subprocess.Popen(
            spec.command(),
            env=spec.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def run_local(
    jobs: list[tuple[Cell, LaunchSpec]],
    workers: int,
    make_spec: Callable[[Cell, LaunchSpec, int], LaunchSpec],
    on_start: Callable[[Cell], None],
    on_end: Callable[[Cell, int, float, bool], None],
) -> bool:
    """Run jobs with at most `workers` at a time; return True when stopped by a signal.

    `make_spec(cell, spec, slot)` finalizes a spec for a worker slot (e.g. its GPUs);
    `on_end(cell, exit_code, duration_s, stopping)` is called as each process ends.
    """
    queue = list(jobs)
    running: list[_Running] = []
    free_slots = list(range(workers))
    stopping = False

    def handle_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.warning(
                "%s received: stopping the running training runs at their next step",
                signal.Signals(signum).name,
            )
        stopping = True
        forward = signum == signal.SIGTERM or not _terminal_sent_it()
        for job in running:
            if forward and job.process.poll() is None:
                job.process.send_signal(signum)

    # Signal handlers can only be set from the main thread; elsewhere the caller handles them.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, handle_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while queue or running:
            while not stopping and queue and free_slots:
                cell, spec = queue.pop(0)
                slot = free_slots.pop(0)
                spec = make_spec(cell, spec, slot)
                running.append(_Running(cell, spec, start_process(spec), slot, time.monotonic()))
                on_start(cell)
            if stopping and not running:
                break
            time.sleep(POLL_INTERVAL_S)
            for job in list(running):
                exit_code = job.process.poll()
                if exit_code is None:
                    continue
                running.remove(job)
                free_slots.append(job.slot)
                on_end(job.cell, exit_code, time.monotonic() - job.started, stopping)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return stopping
