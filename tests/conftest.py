"""Shared fixtures: real read-only and full file systems for the fault tests.

Root ignores directory permissions, so a chmod-ed directory tests nothing when the suite
runs as root (as CI does). Where the process may mount, the fixtures mount a small tmpfs:
remounted read-only, or so small that the first large write fails with ENOSPC. Elsewhere a
non-root process gets a chmod-ed directory; a root process that cannot mount skips.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]
    return subprocess.run(command, capture_output=True).returncode == 0


def _unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in which creating any file fails with EROFS or EACCES."""
    target = tmp_path / "readonly"
    if _mount_tmpfs(target, "1m"):
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
        try:
            yield target
        finally:
            _unmount(target)
        return
    if os.geteuid() == 0:
        pytest.skip("running as root without permission to mount a read-only file system")
    target.mkdir(exist_ok=True)
    target.chmod(0o555)
    try:
        yield target
    finally:
        target.chmod(0o755)


@pytest.fixture
def full_disk_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 256 KiB file system: a write of more than that fails with ENOSPC."""
    target = tmp_path / "full"
    if not _mount_tmpfs(target, "256k"):
        pytest.skip("no permission to mount a small tmpfs that can fill up")
    try:
        yield target
    finally:
        _unmount(target)
