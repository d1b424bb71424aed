"""Sweeps of real (tiny) training runs: kill and resume, two sweeps at once, submitit, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overparam.errors import EXIT_USAGE
from overparam.report.runs import load_runs
from overparam.sweep.config import SweepConfig
from overparam.sweep.grid import expand_grid
from overparam.sweep.runner import run_sweep

# A run of about two seconds after start-up; checkpoints often, so a kill leaves one behind.
TINY_BASE = {
    "model": {"preset": "llama3-tiny"},
    "data": {"source": "stdlib", "max_chars": 300_000},
    "optim": {"warmup_steps": 2},
    "train": {
        "max_steps": 12,
        "grad_accum_steps": 2,
        "eval_every_steps": 6,
        "eval_tokens": 1024,
        "log_every_steps": 1,
        "diagnostics_every_steps": 6,
        "checkpoint_every_steps": 2,
        "device": "cpu",
    },
}


def tiny_sweep(tmp_path: Path, parameterizations, seeds=(0,), **launch) -> Path:
    config = {
        "name": "tiny",
        "grid": {
            "parameterizations": list(parameterizations),
            "reproject_every_steps": [4],
            "lrs": [1e-3],
            "seeds": list(seeds),
        },
        "base": TINY_BASE,
        "launch": launch,
        "slurm": {"cpus_per_task": 1, "time_limit_minutes": 5},
    }
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(config))
    return path


def sweep_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "overparam",
        "sweep",
        "--config",
        str(config),
        "--out",
        str(out),
        *extra,
    ]


def check_runs_once(out: Path, config_path: Path) -> None:
    """Every cell finished exactly once: a final summary and no repeated metrics line."""
    for cell in expand_grid(SweepConfig.load(config_path)):
        run_dir = out / cell.path
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] in ("completed", "diverged"), cell.path
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train_steps = [line["step"] for line in lines if "loss/train" in line]
        assert train_steps == sorted(set(train_steps)), f"{cell.path}: repeated steps"
        if summary["status"] == "completed":
            assert train_steps[-1] == summary["steps"]


def finished_runs(out: Path) -> int:
    return sum(1 for _ in out.glob("*/lr*/seed*/summary.json"))


def half_way_runs(out: Path) -> list[Path]:
    """Runs with a checkpoint but no summary yet."""
    return [
        run_dir
        for run_dir in out.glob("*/lr*/seed*")
        if not (run_dir / "summary.json").exists() and any(run_dir.glob("checkpoints/step-*"))
    ]


@pytest.mark.slow
def test_sweep_killed_then_resumed(tmp_path):
    config = tiny_sweep(tmp_path, ["dense", "SvecVD", "IvecIW"])
    out = tmp_path / "out"
    sweep = subprocess.Popen(
        sweep_command(config, out, "--workers", "2"),
        start_new_session=True,  # its own process group, killed whole below
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill once one run finished and another is half-way, with a checkpoint on disk.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sweep.poll() is None:
        if finished_runs(out) >= 1 and half_way_runs(out):
            break
        time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    half_way = half_way_runs(out)
    assert finished_runs(out) >= 1, "the kill must land after one run finished"
    assert half_way, "the kill must land while another run is half-way"

    rerun = subprocess.run(
        sweep_command(config, out, "--workers", "2"), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    check_runs_once(out, config)
    for run_dir in half_way:
        resumed = json.loads((run_dir / "config.json").read_text())["run"]["resumed_from_step"]
        assert resumed is not None and resumed > 0, f"{run_dir} did not resume from its checkpoint"

    # A third invocation finds nothing to do.
    result = run_sweep(SweepConfig.load(config), out)
    assert result.counts == {"completed": 3}
    assert not list((out / "_sweep" / "outcomes").glob("*.json"))


@pytest.mark.slow
def test_sweep_two_at_once(tmp_path):
    config = tiny_sweep(tmp_path, ["dense", "SvecVD"])
    out = tmp_path / "out"
    sweeps = [
        subprocess.Popen(
            sweep_command(config, out, "--workers", "1"), stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [sweep.communicate(timeout=240)[1] for sweep in sweeps]
    assert [sweep.returncode for sweep in sweeps] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    check_runs_once(out, config)
    manifest = json.loads((out / "_sweep" / "manifest.json").read_text())
    assert len(manifest["cells"]) == 2


@pytest.mark.slow
def test_sweep_submitit_local(tmp_path):
    config_path = tiny_sweep(tmp_path, ["dense", "IvecIW"], executor="slurm")
    out = tmp_path / "out"
    result = run_sweep(SweepConfig.load(config_path), out, submitit_cluster="local")
    assert result.counts == {"completed": 2}
    check_runs_once(out, config_path)
    job_logs = list((out / "_sweep" / "submitit").glob("*_result.pkl"))
    assert len(job_logs) == 2  # one submitit job per run


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return probe.returncode == 0


def run_in_mount(tmp_path: Path, options: str, setup: str, out: str) -> subprocess.CompletedProcess:
    """Run `overparam sweep` with a tmpfs mounted at tmp_path/mnt, in a private mount namespace."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    config = tiny_sweep(tmp_path, ["dense"])
    script = f"mount -t tmpfs -o {options} tmpfs {mount} && {setup} " + " ".join(
        sweep_command(config, mount / out)
    )
    return subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True
    )


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -r -m to mount a tmpfs")
def test_sweep_read_only_out(tmp_path):
    result = run_in_mount(tmp_path, "ro,size=64k", "", "sweep")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"cannot write to the sweep folder {tmp_path / 'mnt' / 'sweep'}" in result.stderr
    assert "Read-only file system" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -r -m to mount a tmpfs")
def test_sweep_full_disk(tmp_path):
    fill = f"(cat /dev/zero > {tmp_path / 'mnt' / 'fill'} 2>/dev/null; true) &&"
    result = run_in_mount(tmp_path, "size=64k", fill, "sweep")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "no space left on device" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_sweep_failed_run_kept(tmp_path):
    config = SweepConfig.load(tiny_sweep(tmp_path, ["dense", "SvecVD"]))
    out = tmp_path / "out"
    good, bad = expand_grid(config)

    # A run directory whose saved config is invalid cannot be resumed: that run fails.
    (out / bad.path).mkdir(parents=True)
    (out / bad.path / "config.json").write_text(json.dumps({"optim": {"lr": -1.0}}))
    result = run_sweep(config, out, workers=2)
    assert result.outcomes == {good.path: "completed", bad.path: "failed"}
    statuses = {run.path.relative_to(out).as_posix(): run.status for run in load_runs(out)}
    assert statuses == {good.path: "completed", bad.path: "failed"}

    # Failed runs stay failed: a rerun starts no process for them.
    log_path = out / "_sweep" / "logs" / f"{bad.key}.log"
    attempts = log_path.read_text().count("\n=== ")
    assert run_sweep(config, out).outcomes == result.outcomes
    assert log_path.read_text().count("\n=== ") == attempts

    # --retry-failed moves the failed run aside and runs it again.
    retried = run_sweep(config, out, retry_failed=True)
    assert retried.outcomes == {good.path: "completed", bad.path: "completed"}
    assert len(list((out / "_sweep" / "failed").iterdir())) == 1
