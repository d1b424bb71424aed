"""Choice of the dense run that `reproduce` exports as the pretrained model."""

from __future__ import annotations

import json

import pytest

from overparam.errors import OverparamError
from overparam.reproduce import best_dense_run


def write_run(root, name, parameterization, lr, seed, status, loss=None):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "decomposition": {"parameterization": parameterization, "reproject_every_steps": 0},
        "optim": {"lr": lr},
        "train": {"seed": seed},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "final_eval_loss": loss}))


def test_export_best_mean_then_best_seed(tmp_path):
    write_run(tmp_path, "a0", "dense", 1e-3, 0, "completed", 3.0)
    write_run(tmp_path, "a1", "dense", 1e-3, 1, "completed", 3.2)  # mean 3.1: the best setting
    write_run(tmp_path, "b0", "dense", 3e-3, 0, "completed", 2.9)  # lowest run, mean 3.2
    write_run(tmp_path, "b1", "dense", 3e-3, 1, "completed", 3.5)
    write_run(tmp_path, "c0", "dense", 1e-2, 0, "completed", 2.0)  # a seed diverged: excluded
    write_run(tmp_path, "c1", "dense", 1e-2, 1, "diverged")
    write_run(tmp_path, "d0", "SvecVD", 1e-3, 0, "completed", 1.0)  # not dense
    run_dir, loss = best_dense_run(tmp_path)
    assert run_dir.name == "a0"
    assert loss == 3.0


def test_export_without_clean_dense(tmp_path):
    write_run(tmp_path, "c0", "dense", 1e-2, 0, "completed", 2.0)
    write_run(tmp_path, "c1", "dense", 1e-2, 1, "failed")
    with pytest.raises(OverparamError, match="no dense setting"):
        best_dense_run(tmp_path)
