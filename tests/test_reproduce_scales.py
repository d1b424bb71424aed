"""Scales: grids as documented, in --help and in docs/study.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from overparam.cli import build_parser
from overparam.errors import ConfigError
from overparam.sweep.grid import expand_grid
from overparam.sweep.scales import SCALES, get_scale

STUDY_DOC = Path(__file__).resolve().parents[1] / "docs" / "study.md"


@pytest.mark.parametrize("name", list(SCALES))
def test_scale_documented(name, capsys):
    doc = STUDY_DOC.read_text()
    with pytest.raises(SystemExit):
        build_parser("reproduce").parse_args(["reproduce", "--help"])
    help_text = capsys.readouterr().out
    for line in SCALES[name].summary_lines():
        assert line in doc
        assert line.strip() in help_text


def test_scale_cpu_statistics_possible():
    scale = get_scale("cpu")
    for sweep in (scale.scratch, scale.finetune):
        assert len(sweep.grid.seeds) >= 2  # a standard error needs two seeds
    assert len(scale.scratch.grid.lrs) >= 4  # two low and two high learning rates
    max_steps = scale.scratch.base["train"]["max_steps"]
    periods = [p for p in scale.scratch.grid.reproject_every_steps if p]
    assert periods and all(p < max_steps for p in periods)  # re-projection does happen


def test_scale_gpu_is_study_setting():
    scale = get_scale("gpu-1b")
    base = scale.scratch.base
    assert base["model"] == {"preset": "llama3.2-1b", "context_length": 1024}
    assert (base["train"]["micro_batch_size"], base["train"]["grad_accum_steps"]) == (1, 8)
    assert scale.scratch.launch.nproc_per_run == 8
    assert scale.scratch.grid.reproject_every_steps == [128, 0]
    assert len(expand_grid(scale.scratch)) == (1 + 4 * 2) * 5 * 2


def test_scale_unknown_name():
    with pytest.raises(ConfigError, match="Did you mean 'smoke'"):
        get_scale("smok")
