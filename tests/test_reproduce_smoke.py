"""`overparam reproduce --scale smoke` end to end, then a rerun that finds nothing to do."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from overparam.sweep.grid import expand_grid
from overparam.sweep.scales import get_scale


@pytest.mark.slow
def test_reproduce_smoke(tmp_path):
    out = tmp_path / "study"
    command = [
        sys.executable,
        "-m",
        "overparam",
        "reproduce",
        "--scale",
        "smoke",
        "--out",
        str(out),
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]

    # Every run of both sweeps has a result, in the report as on disk.
    scale = get_scale("smoke")
    expected = {("scratch", c.path) for c in expand_grid(scale.scratch)}
    expected |= {("finetune", c.path) for c in expand_grid(scale.finetune)}
    with (out / "report" / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected)
    assert {row["status"] for row in rows} <= {"completed", "diverged"}
    for sweep, path in expected:
        assert json.loads((out / sweep / path / "summary.json").read_text())["status"] in (
            "completed",
            "diverged",
        )

    # Fine-tuning starts from the exported best dense run, on the other corpus.
    export = json.loads((out / "pretrained" / "export.json").read_text())
    assert "/dense/" in export["run_dir"]
    finetune_config = json.loads(
        next((out / "finetune").glob("*/lr*/seed0/config.json")).read_text()
    )
    assert finetune_config["model"]["init_from"] == str(out / "pretrained")
    assert finetune_config["data"]["source"] == "stdlib-docs"

    report = (out / "report" / "report.md").read_text()
    for heading in (
        "## Table 1: training from scratch",
        "## Table 2: fine-tuning",
        "## Claim check",
    ):
        assert heading in report
    assert "## Toy experiment" in report
    page = (out / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6  # 3 figures per table

    # The rerun resumes: both sweeps find every run finished.
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count(" runs in the grid, 0 to run with") == 2
    assert "toy experiment already done" in second.stderr
    assert "pretrained model already exported" in second.stderr
