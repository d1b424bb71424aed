"""The fault fixtures really fail writes, so the tests that use them test something."""

from __future__ import annotations

import errno

import pytest


def test_readonly_dir_rejects_writes(readonly_dir):
    with pytest.raises(OSError) as info:
        (readonly_dir / "file.txt").write_text("x")
    assert info.value.errno in (errno.EROFS, errno.EACCES)


def test_full_disk_dir_raises_enospc(full_disk_dir):
    with pytest.raises(OSError) as info, open(full_disk_dir / "big.bin", "wb") as handle:
        handle.write(b"\0" * (1 << 20))
        handle.flush()
    assert info.value.errno == errno.ENOSPC
