"""Read training run directories: identity from `config.json`, outcome from `summary.json`.

A run's identity (parameterization, re-projection period, learning rate, seed, pretrained
checkpoint) always comes from the resolved config the harness saved, never from the
directory name, so renamed or hand-made run directories are still placed correctly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overparam.errors import DataError
from overparam.parameterizations import resolve_parameterization

log = logging.getLogger(__name__)

# Folders that contain no training runs: the sweep's own state and report outputs.
SKIPPED_FOLDERS = frozenset({"_sweep", "report", "checkpoints", "pretrained"})

# Outcome of a run in the report. The first four come from summary.json. "incomplete" is a run
# directory without a summary (still running or killed), and "missing" is a cell of a sweep
# manifest that has no run directory at all.
FINISHED = ("completed", "diverged")
STATUSES = ("completed", "diverged", "failed", "interrupted", "incomplete", "missing")


@dataclass(frozen=True)
class Setting:
    """One row-and-column position of a study table: the run's identity without its seed."""

    parameterization: str
    reproject_every_steps: int  # 0 = free (no re-projection); always 0 for dense
    lr: float

    @property
    def row(self) -> tuple[str, int]:
        return (self.parameterization, self.reproject_every_steps)


@dataclass
class RunRecord:
    """One training run (or one expected but absent run) and its outcome."""

    path: Path
    setting: Setting
    seed: int
    finetune: bool  # True when the run starts from a pretrained checkpoint (model.init_from)
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    final_eval_loss: float | None = None
    diverged_step: int | None = None
    steps: int | None = None
    reason: str = ""

    @property
    def loss(self) -> float | None:
        """Final held-out loss of a completed run with a finite loss, else None."""
        if self.status != "completed" or self.final_eval_loss is None:
            return None
        return self.final_eval_loss if math.isfinite(self.final_eval_loss) else None


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    return value if isinstance(value, dict) else {}


def setting_from_config(config: dict[str, Any], where: Path) -> tuple[Setting, int, bool]:
    """Return (setting, seed, finetune) of a resolved RunConfig dict.

    Raises DataError naming the file when a field the report needs is absent.
    """
    decomposition = _section(config, "decomposition")
    try:
        parameterization = resolve_parameterization(str(decomposition["parameterization"]))
        lr = float(_section(config, "optim")["lr"])
        seed = int(_section(config, "train")["seed"])
    except KeyError as error:
        raise DataError(f"{where}: run config has no field {error}; cannot place the run") from None
    period = int(decomposition.get("reproject_every_steps") or 0)
    if parameterization == "dense":
        period = 0  # re-projection does not apply to a dense layer
    init_from = _section(config, "model").get("init_from")
    return Setting(parameterization, period, lr), seed, bool(init_from)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def load_run(run_dir: Path) -> RunRecord:
    """Read one run directory; a missing or unreadable summary makes the run 'incomplete'."""
    config = _read_json(run_dir / "config.json")
    if config is None:
        raise DataError(f"{run_dir / 'config.json'}: missing or not a JSON object")
    setting, seed, finetune = setting_from_config(config, run_dir / "config.json")
    record = RunRecord(run_dir, setting, seed, finetune, "incomplete", config)

    summary = _read_json(run_dir / "summary.json")
    if summary is None:
        return record
    status = str(summary.get("status", "incomplete"))
    record.status = status if status in STATUSES else "failed"
    record.final_eval_loss = _finite_or_none(summary.get("final_eval_loss"))
    record.steps = summary.get("steps")
    record.reason = str(summary.get("reason") or "")
    if summary.get("diverged_step") is not None:
        record.diverged_step = int(summary["diverged_step"])
    if record.status == "completed" and record.final_eval_loss is None:
        # A completed run must have a finite held-out loss; without one it is no result.
        record.status = "failed"
        record.reason = record.reason or "completed without a finite final_eval_loss"
    return record


def find_run_dirs(root: Path) -> Iterator[Path]:
    """Yield every directory under root that contains a `config.json`, in sorted order."""
    if (root / "config.json").is_file():
        yield root
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if child.name in SKIPPED_FOLDERS or child.name.startswith("."):
            continue
        yield from find_run_dirs(child)


@dataclass(frozen=True)
class ExpectedRun:
    """A run that a sweep manifest lists, so its absence can be reported as 'missing'."""

    path: Path
    setting: Setting
    seed: int
    finetune: bool
    failure: dict[str, Any] | None = None  # the sweep's record of a failure the run could not write


def find_expected_runs(root: Path) -> list[ExpectedRun]:
    """Read every sweep manifest (`_sweep/manifest.json`) under root."""
    expected = []
    for manifest_path in sorted(root.rglob("_sweep/manifest.json")):
        manifest = _read_json(manifest_path)
        if manifest is None:
            raise DataError(f"{manifest_path}: unreadable sweep manifest")
        sweep_dir = manifest_path.parent.parent
        for cell in manifest.get("cells", []):
            setting, seed, finetune = setting_from_config(cell["config"], manifest_path)
            failure = _read_json(manifest_path.parent / "outcomes" / f"{cell.get('key')}.json")
            path = sweep_dir / cell["path"]
            expected.append(ExpectedRun(path, setting, seed, finetune, failure))
    return expected


def load_runs(root: Path, problems: list[str] | None = None) -> list[RunRecord]:
    """Load every run under root, plus a 'missing' record for each manifest cell without one.

    A run directory whose config.json cannot be read is left out, with a message appended to
    `problems` (and logged); a sweep manifest still places it, from the sweep's records.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"runs directory {root} is not a directory; pass the folder of the runs")
    if not root.is_dir():
        raise DataError(f"runs directory not found: {root}")
    records = []
    for run_dir in find_run_dirs(root):
        try:
            records.append(load_run(run_dir))
        except DataError as error:
            log.warning("skipping run directory %s: %s", run_dir, error)
            if problems is not None:
                problems.append(str(error))

    present = {record.path.resolve(): record for record in records}
    for run in find_expected_runs(root):
        record = present.get(run.path.resolve())
        if record is None:
            record = RunRecord(run.path, run.setting, run.seed, run.finetune, "missing")
            records.append(record)
        if run.failure is not None and record.status in ("missing", "incomplete", "interrupted"):
            # The training process died without a summary; the sweep recorded why.
            record.status = "failed"
            record.reason = str(run.failure.get("reason", ""))
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Read `metrics.jsonl`, skipping a torn last line from a killed run."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
