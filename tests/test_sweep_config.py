"""Sweep config, grid, launch command and on-disk state, without training anything."""

from __future__ import annotations

import json
import sys

import pytest

from overparam.errors import ConfigError
from overparam.sweep.config import SweepConfig
from overparam.sweep.grid import Cell, expand_grid, format_lr
from overparam.sweep.launch import LaunchSpec, devices_for_slot, threads_per_process
from overparam.sweep.progress import SweepProgress
from overparam.sweep.state import DONE, FAILED, PENDING, RESUMABLE, SweepState

SWEEP_TOML = """
name = "t"
[grid]
parameterizations = ["dense", "svecvd", "ImatIW"]
reproject_every_steps = [128, 0]
lrs = [3e-4, 1e-3, 3e-4]
seeds = [1, 0]
[base.train]
max_steps = 5
[launch]
workers = 2
"""


def test_config_toml_roundtrip(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP_TOML)
    config = SweepConfig.load(path)
    assert config.grid.parameterizations == ["dense", "SvecVD", "ImatIW"]  # aliases resolved
    assert config.grid.lrs == [3e-4, 1e-3]  # sorted, duplicates dropped
    assert config.grid.seeds == [0, 1]
    assert config.base == {"train": {"max_steps": 5}}
    assert SweepConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_base_file_merged(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"train": {"max_steps": 9, "seed": 3}}))
    path = tmp_path / "sweep.toml"
    path.write_text('base_config = "run.json"\n[base.train]\nmax_steps = 5\n')
    assert SweepConfig.load(path).base == {"train": {"max_steps": 5, "seed": 3}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"grid": {"parameterizations": ["SvecDV"]}}, "Did you mean 'SvecVD'"),
        ({"grid": {"lrs": [0.0]}}, "grid.lrs"),
        ({"grid": {"lrs": []}}, "grid.lrs"),
        ({"grid": {"seeds": [-1]}}, "grid.seeds"),
        ({"grid": {"reproject_every_steps": [1.5]}}, "grid.reproject_every_steps"),
        ({"grid": {"lr": [1e-3]}}, "Did you mean 'lrs'"),
        ({"launch": {"executor": "slurn"}}, "Did you mean 'slurm'"),
        ({"launch": {"nproc_per_run": 0}}, "launch.nproc_per_run"),
        ({"slurm": {"time_limit_minutes": 0}}, "slurm.time_limit_minutes"),
        ({"gird": {}}, "Did you mean 'grid'"),
    ],
)
def test_config_invalid_values(values, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig.from_dict(values)


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        SweepConfig.load(tmp_path / "absent.toml")


def test_grid_cells_and_paths():
    config = SweepConfig.from_dict(
        {
            "grid": {
                "parameterizations": ["dense", "SvecVD", "IvecIW"],
                "reproject_every_steps": [128, 0],
                "lrs": [3e-4, 1.5e-3],
                "seeds": [0, 1, 2],
            }
        }
    )
    cells = expand_grid(config)
    # dense has no re-projection period: 1 row; each decomposed form has 2.
    assert len(cells) == (1 + 2 * 2) * 2 * 3
    assert len({cell.path for cell in cells}) == len(cells)
    paths = {cell.path for cell in cells}
    assert "SvecVD-rp128/lr3e-04/seed0" in paths
    assert "IvecIW-free/lr1.5e-03/seed2" in paths
    assert "dense/lr3e-04/seed1" in paths
    assert all(
        cell.reproject_every_steps == 0 for cell in cells if cell.parameterization == "dense"
    )


def test_format_lr_distinct():
    assert [format_lr(x) for x in (3e-4, 1.5e-3, 1e-2, 0.25)] == [
        "3e-04",
        "1.5e-03",
        "1e-02",
        "2.5e-01",
    ]


def test_threads_fill_cores_once():
    assert threads_per_process(workers=2, nproc_per_run=1, cores=2) == 1
    assert threads_per_process(workers=1, nproc_per_run=1, cores=16) == 16
    assert threads_per_process(workers=2, nproc_per_run=4, cores=16) == 2
    assert threads_per_process(workers=4, nproc_per_run=1, cores=2) == 1  # never zero


def test_launch_torchrun_command(tmp_path):
    spec = LaunchSpec(tmp_path / "c.json", tmp_path / "run", tmp_path / "log", True, 8, 4, "0,1")
    assert spec.command() == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=8",
        "-m",
        "overparam",
        "train",
        "--config",
        str(tmp_path / "c.json"),
        "--out",
        str(tmp_path / "run"),
        "--resume",
    ]
    env = spec.environment({"PATH": "/bin"})
    assert env == {
        "PATH": "/bin",
        "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4",
        "OPENBLAS_NUM_THREADS": "4",
        "CUDA_VISIBLE_DEVICES": "0,1",
    }


def test_launch_single_process_command(tmp_path):
    spec = LaunchSpec(tmp_path / "c.json", tmp_path / "run", tmp_path / "log", False)
    assert spec.command()[:4] == [sys.executable, "-m", "overparam", "train"]
    assert "--resume" not in spec.command()


def test_state_cell_transitions(tmp_path):
    state = SweepState(tmp_path)
    cell = Cell("SvecVD", 0, 1e-3, 0)
    assert state.cell_state(cell) == PENDING
    state.run_dir(cell).mkdir(parents=True)
    assert state.cell_state(cell) == RESUMABLE  # started, no summary: killed
    (state.run_dir(cell) / "summary.json").write_text('{"status": "interrupted"}')
    assert state.cell_state(cell) == RESUMABLE
    (state.run_dir(cell) / "summary.json").write_text('{"status": "diverged"}')
    assert state.cell_state(cell) == DONE
    (state.run_dir(cell) / "summary.json").write_text('{"status": "failed"}')
    assert state.cell_state(cell) == FAILED


def test_state_failure_record_and_retry(tmp_path):
    state = SweepState(tmp_path)
    cell = Cell("IvecIW", 128, 1e-3, 1)
    state.run_dir(cell).mkdir(parents=True)
    state.record_failure(cell, "killed by signal 9", -9)
    assert state.cell_state(cell) == FAILED
    state.move_failed_aside(cell)
    assert state.cell_state(cell) == PENDING
    moved = list((tmp_path / "_sweep" / "failed").iterdir())
    assert [p.name.split(".")[0] for p in moved] == [cell.key]


def test_state_config_conflict(tmp_path):
    state = SweepState(tmp_path)
    cell = Cell("dense", 0, 1e-3, 0)
    config = {"train": {"max_steps": 10, "threads": 1}, "optim": {"lr": 1e-3}}
    state.write_config(cell, config)
    state.check_config(cell, {"train": {"max_steps": 10, "threads": 4}, "optim": {"lr": 1e-3}})
    with pytest.raises(ConfigError, match="train.max_steps: 10 -> 20"):
        state.check_config(cell, {"train": {"max_steps": 20, "threads": 1}, "optim": {"lr": 1e-3}})


def test_state_manifest_union(tmp_path):
    state = SweepState(tmp_path)
    a, b = Cell("dense", 0, 1e-3, 0), Cell("dense", 0, 1e-3, 1)
    state.update_manifest("first", [(a, {"x": 1})])
    state.update_manifest("second", [(b, {"x": 2})])
    manifest = json.loads((tmp_path / "_sweep" / "manifest.json").read_text())
    assert manifest["sweeps"] == ["first", "second"]
    assert [entry["path"] for entry in manifest["cells"]] == [a.path, b.path]


def test_launch_gpu_blocks_per_slot():
    assert devices_for_slot(0, 0) is None
    assert [devices_for_slot(slot, 2) for slot in range(3)] == ["0,1", "2,3", "4,5"]


def test_progress_time_left_estimate():
    progress = SweepProgress("t", total=5, skipped=1, workers=2)
    assert progress.eta_seconds() is None  # nothing finished yet
    for _ in range(3):
        progress.started()
    progress.ended("completed", 10.0)
    progress.ended("diverged", 30.0)
    progress.ended("failed", 1.0)  # failed runs do not count toward the mean run time
    # mean of finished runs 20 s x 2 runs left / 2 workers
    assert progress.eta_seconds() == pytest.approx(20.0)
    assert progress.text().startswith(
        "3/5 runs ended (1 completed, 1 diverged, 1 failed), 0 running"
    )
