"""Faults during a sweep: a diverged run, a run held by another process, and SIGTERM.

test_sweep_runs.py::test_sweep_two_at_once runs two whole sweeps on one folder. Here the
test itself holds one run directory's lock in place of the other sweep, so the outcome is fixed.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time

import pytest

from _llm_support import TEST_DATA, data_cache, read_summary, subprocess_env, tiny_config
from overparam.cli import main
from overparam.errors import EXIT_INTERRUPTED, EXIT_OK
from overparam.llm import run_training
from overparam.llm.checkpoint import list_checkpoints, load_checkpoint
from overparam.llm.config import RunConfig
from overparam.llm.data import prepare_data
from overparam.llm.rundir import RunLock

# Eight steps of llama3-tiny; lr 1e3 makes the loss leave the first step's by more than the
# divergence margin within a few steps (see test_llm_train.py::test_huge_lr_diverges).
BASE = {
    "model": {"context_length": 32},
    "optim": {"warmup_steps": 1},
    "train": {
        "max_steps": 8,
        "micro_batch_size": 2,
        "grad_accum_steps": 1,
        "eval_tokens": 256,
        "eval_every_steps": 4,
        "checkpoint_every_steps": 4,
        "diagnostics_every_steps": 0,
        "device": "cpu",
    },
}
GRID = {"parameterizations": ["dense"], "lrs": [1e-3, 1e3], "seeds": [0, 1]}
GOOD, TAKEN = "dense/lr1e-03/seed0", "dense/lr1e-03/seed1"
DIVERGING = ["dense/lr1e+03/seed0", "dense/lr1e+03/seed1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The session's data cache, filled here so that the runs' processes only read it."""
    path = data_cache(tmp_path_factory)
    config = tiny_config(path)
    prepare_data(config.data, config.context_length)
    return path


@pytest.mark.slow
def test_sweep_continues_past_faults(cache, tmp_path, caplog):
    config = tmp_path / "sweep.json"
    base = {**BASE, "data": {**TEST_DATA, "cache_dir": str(cache)}}
    config.write_text(json.dumps({"name": "faults", "grid": GRID, "base": base}))
    out = tmp_path / "sweep"
    argv = ["sweep", "--config", str(config), "--out", str(out), "--workers", "2"]

    taken_dir = out / TAKEN
    taken_dir.mkdir(parents=True)
    with RunLock(taken_dir), caplog.at_level(logging.INFO, logger="overparam"):
        code = main(argv)

    assert code == EXIT_OK
    assert f"run {TAKEN} is locked by another process" in caplog.text
    assert "1 runs were being trained by another process" in caplog.text
    assert [p.name for p in taken_dir.iterdir()] == [".lock"]  # the holder's files untouched
    assert read_summary(out / GOOD)["status"] == "completed"
    for path in DIVERGING:
        summary = read_summary(out / path)
        assert summary["status"] == "diverged", path
        assert 1 < summary["diverged_step"] <= 8
    assert not list((out / "_sweep" / "outcomes").glob("*.json")), "nothing recorded as failed"

    # Once the lock is free, a rerun trains only the run that was taken.
    finished = {path: (out / path / "metrics.jsonl").read_bytes() for path in [GOOD, *DIVERGING]}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="overparam"):
        assert main(argv) == EXIT_OK
    assert "4 runs in the grid, 1 to run" in caplog.text
    assert read_summary(out / TAKEN)["status"] == "completed"
    for path, metrics in finished.items():
        assert (out / path / "metrics.jsonl").read_bytes() == metrics, path


@pytest.mark.slow
def test_sweep_sigterm_then_resume(cache, tmp_path):
    """SIGTERM to a sweep (a scheduler's preemption) reaches its runs, which save and exit 3."""
    base = {**BASE, "data": {**TEST_DATA, "cache_dir": str(cache)}}
    # About 7 ms a step: the run is still going well after its first checkpoint (step 10).
    base["train"] = {**BASE["train"], "max_steps": 200, "checkpoint_every_steps": 10}
    grid = {"parameterizations": ["dense"], "lrs": [1e-3], "seeds": [0]}
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({"name": "preempted", "grid": grid, "base": base}))
    out = tmp_path / "sweep"
    run_dir = out / GOOD
    argv = ["sweep", "--config", str(config), "--out", str(out), "--workers", "1"]

    sweep = subprocess.Popen(
        [sys.executable, "-m", "overparam", *argv],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("checkpoints/step-*")):
        assert sweep.poll() is None, sweep.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    sweep.send_signal(signal.SIGTERM)
    _, stderr = sweep.communicate(timeout=120)

    assert sweep.returncode == EXIT_INTERRUPTED, stderr[-2000:]
    assert "rerun the same command to resume" in stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "interrupted"
    assert 10 <= summary["steps"] < 200
    assert load_checkpoint(list_checkpoints(run_dir)[0]).step == summary["steps"]

    # The run continues from that checkpoint. Rerunning the sweep starts the same
    # `overparam train --resume` (test_sweep_runs.py::test_sweep_killed_then_resumed).
    config = RunConfig.load(run_dir / "config.json")
    assert run_training(config, run_dir, resume=True)["status"] == "completed"
    resumed = json.loads((run_dir / "config.json").read_text())["run"]["resumed_from_step"]
    assert resumed == summary["steps"]
