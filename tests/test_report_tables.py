"""Report from synthetic run directories: cell texts, CSV numbers, best marks, missing runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from overparam.report import build_report
from overparam.report.cells import format_cell
from overparam.report.runs import load_runs


def run_config(parameterization, period, lr, seed, init_from=None):
    return {
        "model": {"preset": "llama3-tiny", "init_from": init_from},
        "decomposition": {"parameterization": parameterization, "reproject_every_steps": period},
        "data": {"source": "stdlib", "max_chars": 1000},
        "optim": {"lr": lr},
        "train": {"seed": seed, "max_steps": 40, "threads": 1},
        "run": {"data_fingerprint": "abc123"},
    }


def write_run(root: Path, name: str, identity: tuple, status: str | None, **summary) -> Path:
    """Write a run directory; status None leaves out summary.json (a killed run)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(run_config(*identity)))
    metrics = [
        {"step": s, "loss/train": 5.0 - 0.01 * s, "loss/eval": 5.0 - 0.01 * s}
        for s in range(0, 40, 10)
    ]
    metrics.append({"step": 20, "drift/orth_error_U": 1e-4, "drift/identity_distance": 0.1})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    if status is not None:
        (run_dir / "summary.json").write_text(json.dumps({"status": status, **summary}))
    return run_dir


def mean_std(a: float, b: float) -> tuple[float, float]:
    # Closed form of the sample standard deviation of two values: |a - b| / sqrt(2).
    return (a + b) / 2, abs(a - b) / math.sqrt(2)


LR_LOW, LR_HIGH = 1e-3, 1e-2


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    completed = {"status": "completed"}
    write_run(root, "d0", ("dense", 0, LR_LOW, 0), **completed, final_eval_loss=3.40)
    write_run(root, "d1", ("dense", 0, LR_LOW, 1), **completed, final_eval_loss=3.44)

    write_run(root, "d2", ("dense", 0, LR_HIGH, 0), "failed", reason="out of memory")
    write_run(root, "d3", ("dense", 0, LR_HIGH, 1), "failed", reason="out of memory")

    write_run(root, "s0", ("SvecVD", 0, LR_LOW, 0), **completed, final_eval_loss=3.30)
    write_run(root, "s1", ("SvecVD", 0, LR_LOW, 1), "diverged", diverged_step=50)
    write_run(root, "s2", ("SvecVD", 0, LR_HIGH, 0), "diverged", diverged_step=12)
    write_run(root, "s3", ("SvecVD", 0, LR_HIGH, 1), "diverged", diverged_step=20)

    write_run(root, "m0", ("ImatIW", 0, LR_LOW, 0), **completed, final_eval_loss=3.10)
    write_run(root, "m1", ("ImatIW", 0, LR_LOW, 1), **completed, final_eval_loss=3.20)
    write_run(root, "m2", ("ImatIW", 0, LR_HIGH, 0), **completed, final_eval_loss=3.90)
    write_run(root, "m3", ("ImatIW", 0, LR_HIGH, 1), None)  # killed: no summary

    write_run(root, "i0", ("IvecIW", 128, LR_LOW, 0), "failed", reason="disk full")

    # The directory name says dense; the report must go by config.json (SmatVD rp128).
    write_run(root, "dense-looking", ("SmatVD", 128, LR_LOW, 0), **completed, final_eval_loss=3.5)

    # A sweep manifest lists runs that were never started: they are "missing".
    cells = [
        {"path": "i1", "config": run_config("IvecIW", 128, LR_LOW, 1)},
        {"path": "i2", "config": run_config("IvecIW", 128, LR_HIGH, 0)},
        {"path": "i0", "config": run_config("IvecIW", 128, LR_LOW, 0)},
    ]
    for cell in cells:
        cell["key"] = cell["path"]
    (root / "_sweep" / "outcomes").mkdir(parents=True)
    (root / "_sweep" / "manifest.json").write_text(json.dumps({"cells": cells}))

    # The sweep records a failure that the training process could not write (killed).
    failure = {"status": "failed", "reason": "killed by signal 9"}
    (root / "_sweep" / "outcomes" / "i2.json").write_text(json.dumps(failure))

    return build_report(root, tmp_path_factory.mktemp("report"))


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3:
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_report_cell_texts(report):
    rows = table_rows(report.markdown_path.read_text())
    dense_mean, dense_std = mean_std(3.40, 3.44)
    imat_mean, imat_std = mean_std(3.10, 3.20)
    assert rows["dense"] == [f"{dense_mean:.3f} ± {dense_std:.3f} (n=2)", "failed"]
    assert rows["SvecVD free"] == ["3.300 (n=1), 1/2 diverged", "diverged (steps 12–20)"]
    # ImatIW is the lowest clean cell of column lr 1e-03, so it is bold there.
    assert rows["ImatIW free"] == [
        f"**{imat_mean:.3f} ± {imat_std:.3f} (n=2)**",
        "**3.900 (n=1), 1/2 missing**",
    ]
    assert rows["IvecIW rp128"] == ["1/2 failed, 1/2 missing", "failed"]
    assert rows["SmatVD rp128"] == ["3.500 (n=1)", "missing"]


def test_report_csv_numbers(report):
    with (report.out_dir / "table1_scratch.csv").open() as handle:
        cells = {(r["parameterization"], r["lr"]): r for r in csv.DictReader(handle)}
    dense_mean, dense_std = mean_std(3.40, 3.44)
    dense = cells[("dense", "1e-03")]
    assert float(dense["mean_loss"]) == pytest.approx(dense_mean, abs=1e-12)
    assert float(dense["std_loss"]) == pytest.approx(dense_std, abs=1e-12)
    assert dense["best_in_column"] == "False"
    assert cells[("ImatIW", "1e-03")]["best_in_column"] == "True"
    diverged = cells[("SvecVD", "1e-02")]
    assert (diverged["mean_loss"], diverged["n_diverged"]) == ("", "2")
    assert cells[("IvecIW", "1e-02")]["n_failed"] == "1"


def test_report_best_overall(report):
    best = report.tables["table1_scratch"].best_overall()
    assert (best.parameterization, best.reproject_every_steps, best.lr) == ("ImatIW", 0, LR_LOW)


def test_report_outputs_embedded(report):
    page = report.html_path.read_text()
    figures = sorted(p.name for p in (report.out_dir / "figures").glob("*.png"))
    assert figures == [
        "table1_scratch_drift.png",
        "table1_scratch_loss_curves.png",
        "table1_scratch_lr_sensitivity.png",
    ]
    assert page.count('src="data:image/png;base64,') == len(figures)
    assert '<td class="best">' in page


def test_report_unfinished_listed(report):
    statuses = {run.path.name: run.status for run in report.runs}
    assert statuses["m3"] == "incomplete"
    assert statuses["i1"] == "missing"
    assert statuses["i2"] == "failed"  # from the sweep's failure record
    assert statuses["i0"] == "failed"  # present on disk: the manifest entry adds no copy
    assert sum(run.path.name == "i0" for run in report.runs) == 1


def test_runs_identity_from_config(tmp_path):
    write_run(
        tmp_path, "dense-looking", ("SmatVD", 128, LR_LOW, 3), "completed", final_eval_loss=3.5
    )
    (run,) = load_runs(tmp_path)
    assert (run.setting.parameterization, run.setting.reproject_every_steps, run.seed) == (
        "SmatVD",
        128,
        3,
    )


def test_cell_missing_when_absent():
    assert format_cell(None) == "missing"
