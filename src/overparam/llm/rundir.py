"""The run directory: its lock, config.json and summary.json.

run_dir/
  .lock            fcntl lock held by the process that trains in this directory
  config.json      the resolved RunConfig plus a "run" table (versions, data fingerprint, ...)
  metrics.jsonl    see overparam.llm.metrics
  summary.json     status and headline numbers, written when the run stops
  checkpoints/     see overparam.llm.checkpoint
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from overparam.errors import ConfigError, RunLockedError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"

STATUSES = ("completed", "diverged", "failed", "interrupted")


class RunLock:
    """Exclusive, non-blocking flock on run_dir/.lock, released on close or process exit.

    The kernel drops the lock when the process dies, even by SIGKILL, so a stale lock file
    never blocks a later run.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError (exit code 4) without writing anything."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path.parent} is locked by another process (flock on "
                f"{self.path}); wait for it to finish or use another --out"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def write_json_atomic(path: Path, value: Any) -> None:
    """Write `value` as JSON through a temporary file, fsync and os.replace.

    On failure (a full disk, say) the temporary file is removed and the OSError names `path`;
    the previous content of `path`, if any, is kept.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            json.dump(value, stream, indent=2, sort_keys=False)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from error


def read_json(path: Path) -> dict[str, Any] | None:
    """Return the JSON object in `path`, or None when the file is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Raise ConfigError when `run_dir` cannot hold this run, without creating anything.

    Checked before the data are prepared, so a wrong --out fails in seconds. A directory that
    does not exist yet needs its nearest existing parent to be writable. os.access reports a
    read-only file system (EROFS) even to root, who passes every permission check.
    """
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"invalid run directory {run_dir} (--out): {existing} exists and is not a "
            "directory; choose another --out."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "permission denied"
        raise ConfigError(
            f"invalid run directory {run_dir} (--out): cannot write in {existing} ({reason}); "
            "choose a writable --out."
        )
    if existing == run_dir and not resume and has_run(run_dir):
        raise ConfigError(
            f"run directory {run_dir} already contains a run; pass --resume to continue it, "
            "or choose another --out"
        )


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def has_run(run_dir: Path) -> bool:
    """Return whether `run_dir` already contains metrics, a summary or checkpoints of a run."""
    return any((run_dir / name).exists() for name in ("metrics.jsonl", SUMMARY_FILE, "checkpoints"))
