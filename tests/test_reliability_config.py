"""Invalid sweep and train configurations stop with exit code 2 before any run starts.

test_llm_cli.py covers the `overparam train` flags value by value. This file covers the
sweep config (its grid and its base run config) and a train config file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from _llm_support import TEST_DATA, data_cache
from overparam.cli import main
from overparam.errors import EXIT_USAGE

GRID = {"parameterizations": ["SvecVD"], "reproject_every_steps": [4], "lrs": [1e-3], "seeds": [0]}
BASE = {"optim": {"warmup_steps": 1}, "train": {"max_steps": 2, "device": "cpu"}}


def _sweep_file(tmp_path: Path, grid=None, base=None) -> Path:
    path = tmp_path / "sweep.json"
    config = {"name": "bad", "grid": {**GRID, **(grid or {})}, "base": base or BASE}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _sweep(tmp_path: Path, caplog, **config) -> tuple[int, Path]:
    out = tmp_path / "out"
    argv = ["sweep", "--config", str(_sweep_file(tmp_path, **config)), "--out", str(out)]
    with caplog.at_level(logging.ERROR, logger="overparam"):
        return main(argv), out


@pytest.mark.parametrize(
    ("grid", "fragments"),
    [
        ({"parameterizations": ["SvecDV"]}, ["grid.parameterizations", "SvecDV", "'SvecVD'"]),
        ({"lrs": [0.0]}, ["grid.lrs", "0.0", "finite numbers > 0"]),
        ({"lrs": ["fast"]}, ["grid.lrs", "'fast'", "finite numbers > 0"]),
        ({"reproject_every_steps": [-1]}, ["grid.reproject_every_steps", "-1", "integers >= 0"]),
        ({"seed": [1]}, ["unknown key 'seed'", "Did you mean 'seeds'"]),
    ],
)
def test_sweep_bad_grid_exits_2(tmp_path, caplog, grid, fragments):
    code, out = _sweep(tmp_path, caplog, grid=grid)
    assert code == EXIT_USAGE
    for fragment in fragments:
        assert fragment in caplog.text
    assert not out.exists()


BAD_BASES = {
    "lr-negative": ({"optim": {"lr": -1.0}}, ["optim.lr", "-1.0", "> 0"]),
    "lr-text": ({"optim": {"lr": "fast"}}, ["optim.lr", "'fast'", "a number"]),
    "micro-batch-0": ({"train": {"micro_batch_size": 0}}, ["train.micro_batch_size", ">= 1"]),
    "accumulation-0": ({"train": {"grad_accum_steps": 0}}, ["train.grad_accum_steps", ">= 1"]),
    "context-too-long": ({"model": {"context_length": 4096}}, ["4096", "at most 512"]),
    "unknown-preset": ({"model": {"preset": "llama3-huge"}}, ["llama3-huge", "llama3-tiny"]),
    "vocab-too-large": ({"data": {"vocab_size": 8192}}, ["data.vocab_size", "8192", "4096"]),
    "unknown-key": ({"train": {"max_step": 2}}, ["train.max_step", "Did you mean 'max_steps'"]),
}


@pytest.mark.parametrize(("base", "fragments"), BAD_BASES.values(), ids=BAD_BASES)
def test_sweep_bad_base_exits_2(tmp_path, caplog, base, fragments):
    code, out = _sweep(tmp_path, caplog, base=base)
    assert code == EXIT_USAGE
    for fragment in fragments:
        assert fragment in caplog.text
    assert not list(out.glob("*/lr*/seed*")), "no run directory may be created"


def test_sweep_bad_base_creates_nothing(tmp_path, caplog):
    code, out = _sweep(tmp_path, caplog, base={"optim": {"lr": -1.0}})
    assert code == EXIT_USAGE
    assert not out.exists()


def test_sweep_unknown_target_exits_2(tmp_path, caplog, tmp_path_factory):
    data = {"cache_dir": str(data_cache(tmp_path_factory)), **TEST_DATA}
    base = {**BASE, "decomposition": {"targets": "qproj"}, "data": data}
    code, out = _sweep(tmp_path, caplog, base=base)
    assert code == EXIT_USAGE
    assert "decomposition.targets" in caplog.text
    assert not out.exists()


def test_train_config_file_unknown_key(tmp_path, caplog):
    config = tmp_path / "run.toml"
    config.write_text("[optim]\nlrr = 1e-3\n", encoding="utf-8")
    out = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["train", "--config", str(config), "--out", str(out)])
    assert code == EXIT_USAGE
    assert "unknown config key 'optim.lrr'" in caplog.text
    assert "Did you mean 'lr'?" in caplog.text
    assert not out.exists()
