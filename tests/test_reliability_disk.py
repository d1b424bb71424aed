"""Read-only and full file systems: a clear error and an exit code, never a traceback.

The fixtures mount real tmpfs file systems (see conftest.py), because the suite runs as root
and root ignores permission bits. toy2d's read-only --out is tested in test_toy2d_cli.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _llm_support import cli_args, data_cache, eval_curve, loss_curve, read_summary, tiny_config
from conftest import _mount_tmpfs, _unmount
from overparam.cli import main
from overparam.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from overparam.llm import run_training
from overparam.llm.checkpoint import list_checkpoints, load_checkpoint


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return data_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def reference_run(cache, tmp_path_factory) -> Path:
    """An uninterrupted tiny run (12 steps, checkpoints every 4) for the others to match."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert run_training(tiny_config(cache), out)["status"] == "completed"
    return out


@pytest.fixture
def small_disk_dir(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs: room for a few tiny checkpoints, and quick to fill."""
    target = tmp_path / "small-disk"
    if not _mount_tmpfs(target, "16m"):
        pytest.skip("no permission to mount a small tmpfs that can fill up")
    try:
        yield target
    finally:
        _unmount(target)


def _fill(path: Path) -> None:
    """Write zeros to `path` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    block = bytes(1 << 16)
    try:
        while True:
            os.write(fd, block)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


# --- read-only --------------------------------------------------------------------------------


def test_train_read_only_out(readonly_dir, tmp_path, caplog, cache):
    out = readonly_dir / "run"
    argv = ["train", "--out", str(out), *cli_args(tiny_config(tmp_path / "unused-cache"))]
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(argv)
    assert code == EXIT_USAGE
    assert f"invalid run directory {out} (--out)" in caplog.text
    assert "read-only file system" in caplog.text
    assert "Traceback" not in caplog.text
    # Rejected before the data were prepared: the data cache was never created.
    assert not (tmp_path / "unused-cache").exists()


def test_train_out_under_file(tmp_path, caplog, cache):
    blocking = tmp_path / "a-file"
    blocking.write_text("", encoding="utf-8")
    argv = ["train", "--out", str(blocking / "run"), *cli_args(tiny_config(cache))]
    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main(argv) == EXIT_USAGE
    assert f"{blocking} exists and is not a directory" in caplog.text


def test_sweep_read_only_out(readonly_dir, tmp_path, caplog):
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({"grid": {"parameterizations": ["dense"]}}), encoding="utf-8")
    out = readonly_dir / "sweep"
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["sweep", "--config", str(config), "--out", str(out)])
    assert code == EXIT_USAGE
    assert f"cannot write to the sweep folder {out}: Read-only file system" in caplog.text
    assert "Traceback" not in caplog.text


def test_report_read_only_out(readonly_dir, reference_run, caplog):
    out = readonly_dir / "report"
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["report", str(reference_run.parent), "--out", str(out)])
    assert code == EXIT_USAGE
    assert f"cannot write the report to {out}: Read-only file system" in caplog.text
    assert "Traceback" not in caplog.text


# --- full disk ----------------------------------------------------------------------------------


def test_train_full_disk_first_checkpoint(full_disk_dir, caplog, cache):
    """A 256 KiB disk has room for config.json and metrics, not for a checkpoint (1.6 MB)."""
    out = full_disk_dir / "run"
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["train", "--out", str(out), *cli_args(tiny_config(cache))])
    assert code == EXIT_FAILED
    assert f"cannot write checkpoint {out / 'checkpoints' / 'step-00000004'}" in caplog.text
    assert "no space left on device" in caplog.text
    assert "Traceback" not in caplog.text
    assert list_checkpoints(out) == []
    assert not list((out / "checkpoints").glob(".tmp-*")), "partial files must be removed"
    summary = read_summary(out)
    assert summary["status"] == "failed"
    assert "cannot write checkpoint" in summary["reason"]


def test_train_full_disk_keeps_checkpoint(
    small_disk_dir, reference_run, caplog, cache, monkeypatch
):
    """The disk fills up just before the checkpoint of step 8; step 4's stays loadable."""
    import overparam.llm.loop as loop

    save = loop.save_checkpoint
    filler = small_disk_dir / "filler"

    def fill_then_save(run_dir, step, *args, **kwargs):
        if step == 8:
            _fill(filler)
        return save(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", fill_then_save)
    out = small_disk_dir / "run"
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["train", "--out", str(out), *cli_args(tiny_config(cache))])

    assert code == EXIT_FAILED
    assert f"cannot write checkpoint {out / 'checkpoints' / 'step-00000008'}" in caplog.text
    assert "no space left on device" in caplog.text
    assert [p.name for p in list_checkpoints(out)] == ["step-00000004"]
    assert load_checkpoint(list_checkpoints(out)[0]).step == 4
    assert not list((out / "checkpoints").glob(".tmp-*"))

    # Once there is space again, --resume continues from step 4 as if nothing happened.
    monkeypatch.setattr(loop, "save_checkpoint", save)
    filler.unlink()
    assert main(["train", "--out", str(out), "--resume"]) == EXIT_OK
    assert loss_curve(out) == loss_curve(reference_run)
    assert eval_curve(out) == eval_curve(reference_run)
    assert read_summary(out)["final_eval_loss"] == read_summary(reference_run)["final_eval_loss"]
