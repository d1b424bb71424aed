"""A sweep's files on disk: the manifest, each cell's config, failure records, and cell states.

Layout under the sweep folder::

    <row>/lr<lr>/seed<k>/        run directory written by `overparam train`
    _sweep/manifest.json         every cell of every sweep run on this folder, with its config
    _sweep/configs/<key>.json    the config file each cell's training run is started with
    _sweep/outcomes/<key>.json   failures the training run could not record itself
    _sweep/logs/<key>.log        stdout and stderr of each cell's training processes
    _sweep/failed/               run directories moved aside by --retry-failed
"""

from __future__ import annotations

import contextlib
import errno
import fcntl  # POSIX only, as is the training run's own directory lock
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from overparam.errors import ConfigError, OverparamError
from overparam.sweep.grid import Cell

STATE_DIR = "_sweep"

# Cell states. "done" covers completed and diverged runs: both are results and never rerun.
PENDING = "pending"  # no run directory yet
RESUMABLE = "resumable"  # started but not finished (killed or interrupted): continue with --resume
DONE = "done"
FAILED = "failed"

# Fields that may differ between two invocations of the same cell without changing the run.
NEUTRAL_FIELDS = {("train", "threads")}


class SweepIOError(OverparamError):
    """A file of the sweep could not be written (full disk, permissions)."""


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary file and a rename, so readers never see half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise SweepIOError(f"cannot write {path}: {error.strerror or error}") from None


def check_writable(out_dir: Path) -> None:
    """Raise ConfigError naming out_dir when it cannot be created or written."""
    probe = out_dir / f".write_test.{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno == errno.ENOSPC:
            reason = "no space left on device"
        raise ConfigError(f"cannot write to the sweep folder {out_dir}: {reason}") from None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class SweepState:
    """Paths and records of one sweep folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.state_dir = out_dir / STATE_DIR

    def run_dir(self, cell: Cell) -> Path:
        return self.out_dir / cell.path

    def config_path(self, cell: Cell) -> Path:
        return self.state_dir / "configs" / f"{cell.key}.json"

    def outcome_path(self, cell: Cell) -> Path:
        return self.state_dir / "outcomes" / f"{cell.key}.json"

    def log_path(self, cell: Cell) -> Path:
        return self.state_dir / "logs" / f"{cell.key}.log"

    # -- cell configs and the manifest -------------------------------------------------------

    def check_config(self, cell: Cell, config: dict[str, Any]) -> None:
        """Raise ConfigError when the cell was started before with a different config."""
        previous = read_json(self.config_path(cell))
        if previous is None:
            return
        differences = _differences(previous, config)
        if differences:
            raise ConfigError(
                f"run {self.run_dir(cell)} was started with a different configuration "
                f"({'; '.join(differences[:3])}); use another --out folder, or delete the run "
                "to start it again."
            )

    def write_config(self, cell: Cell, config: dict[str, Any]) -> Path:
        path = self.config_path(cell)
        write_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
        return path

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold an exclusive lock (flock) on state_dir/name while two sweeps update one file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / name, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def update_manifest(self, name: str, cells: list[tuple[Cell, dict[str, Any]]]) -> None:
        """Add this sweep's cells to the manifest, keeping cells that other sweeps added."""
        path = self.state_dir / "manifest.json"
        with self._locked("manifest.lock"):
            manifest = read_json(path) or {"sweeps": [], "cells": []}
            entries = {entry["path"]: entry for entry in manifest.get("cells", [])}
            for cell, config in cells:
                entries[cell.path] = {"path": cell.path, "key": cell.key, "config": config}
            sweeps = list(dict.fromkeys([*manifest.get("sweeps", []), name]))
            manifest = {
                "sweeps": sweeps,
                "cells": sorted(entries.values(), key=lambda e: e["path"]),
            }
            write_atomic(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    # -- outcomes -------------------------------------------------------------------------------

    def record_failure(self, cell: Cell, reason: str, exit_code: int | None) -> None:
        record = {"status": FAILED, "reason": reason, "exit_code": exit_code, "time": time.time()}
        write_atomic(self.outcome_path(cell), json.dumps(record) + "\n")

    def summary(self, cell: Cell) -> dict[str, Any] | None:
        return read_json(self.run_dir(cell) / "summary.json")

    def cell_state(self, cell: Cell) -> str:
        """PENDING, RESUMABLE, DONE or FAILED, from summary.json and the failure records."""
        summary = self.summary(cell)
        status = None if summary is None else summary.get("status")
        if status in ("completed", "diverged"):
            return DONE
        if status == "failed" or self.outcome_path(cell).is_file():
            return FAILED
        return RESUMABLE if self.run_dir(cell).exists() else PENDING

    def move_failed_aside(self, cell: Cell) -> None:
        """Keep a failed run for inspection under _sweep/failed/ and clear its records."""
        run_dir = self.run_dir(cell)
        try:
            if run_dir.exists():
                stamp = time.strftime("%Y%m%d-%H%M%S")
                target = self.state_dir / "failed" / f"{cell.key}.{stamp}"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(run_dir, target)
            self.outcome_path(cell).unlink(missing_ok=True)
        except OSError as error:
            raise SweepIOError(
                f"cannot move the failed run {run_dir} aside: {error.strerror}"
            ) from None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    found = []
    for section in sorted(set(old) | set(new)):
        old_section, new_section = old.get(section) or {}, new.get(section) or {}
        if not isinstance(old_section, dict) or not isinstance(new_section, dict):
            if old_section != new_section:
                found.append(f"{section}: {old_section!r} -> {new_section!r}")
            continue
        for key in sorted(set(old_section) | set(new_section)):
            if (section, key) in NEUTRAL_FIELDS:
                continue
            if old_section.get(key) != new_section.get(key):
                found.append(
                    f"{section}.{key}: {old_section.get(key)!r} -> {new_section.get(key)!r}"
                )
    return found
