"""Aggregate the seeds of one table cell (a setting) into the numbers the report shows."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from overparam.report.runs import RunRecord, Setting


@dataclass
class CellStats:
    """Outcome of all seeds of one setting.

    `losses` contains the final held-out loss of each completed seed; `std` is the sample
    standard deviation (n - 1 in the denominator), None with fewer than two seeds.
    """

    setting: Setting
    losses: list[float] = field(default_factory=list)
    diverged_steps: list[int | None] = field(default_factory=list)
    n_failed: int = 0
    n_missing: int = 0  # no run directory, or a run that never finished (interrupted/incomplete)
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.losses)

    @property
    def n_diverged(self) -> int:
        return len(self.diverged_steps)

    @property
    def n_total(self) -> int:
        return self.n + self.n_diverged + self.n_failed + self.n_missing

    @property
    def n_finished(self) -> int:
        """Seeds with a result: completed or diverged."""
        return self.n + self.n_diverged

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.losses) if self.losses else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.losses) if len(self.losses) >= 2 else None

    @property
    def clean(self) -> bool:
        """True when at least one seed completed and none diverged or failed."""
        return self.n > 0 and self.n_diverged == 0 and self.n_failed == 0


def aggregate(runs: list[RunRecord]) -> dict[Setting, CellStats]:
    """Group runs by setting; a seed present twice (two copies of one run) counts once."""
    cells: dict[Setting, CellStats] = {}
    seen: set[tuple[Setting, int]] = set()
    # Finished records first, so a finished copy wins over a missing or incomplete duplicate.
    order = {"completed": 0, "diverged": 0, "failed": 1}
    for run in sorted(runs, key=lambda r: order.get(r.status, 2)):
        if (run.setting, run.seed) in seen:
            continue
        seen.add((run.setting, run.seed))
        cell = cells.setdefault(run.setting, CellStats(run.setting))
        cell.runs.append(run)
        if run.loss is not None:
            cell.losses.append(run.loss)
        elif run.status == "diverged":
            cell.diverged_steps.append(run.diverged_step)
        elif run.status == "failed":
            cell.n_failed += 1
        else:
            cell.n_missing += 1
    return cells


def _format_steps(steps: list[int | None]) -> str:
    known = sorted(step for step in steps if step is not None)
    if not known:
        return ""
    if known[0] == known[-1]:
        return f" (step {known[0]})"
    return f" (steps {known[0]}–{known[-1]})"


def format_loss(mean: float, std: float | None, n: int) -> str:
    if std is None:
        return f"{mean:.3f} (n={n})"
    return f"{mean:.3f} ± {std:.3f} (n={n})"


def format_cell(cell: CellStats | None) -> str:
    """Render a cell as the study's tables do, e.g. `3.412 ± 0.021 (n=2)`.

    Seeds without a number are always named (`1/2 diverged`, `failed`, `missing`), so a table
    never shows a number that hides a lost run.
    """
    if cell is None or cell.n_total == 0:
        return "missing"
    total = cell.n_total
    parts = []
    if cell.n:
        parts.append(format_loss(cell.mean, cell.std, cell.n))  # type: ignore[arg-type]
    elif cell.n_diverged == total:
        return "diverged" + _format_steps(cell.diverged_steps)
    elif cell.n_failed == total:
        return "failed"
    elif cell.n_missing == total:
        return "missing"

    for count, word in (
        (cell.n_diverged, "diverged"),
        (cell.n_failed, "failed"),
        (cell.n_missing, "missing"),
    ):
        if count:
            steps = _format_steps(cell.diverged_steps) if word == "diverged" and not cell.n else ""
            parts.append(f"{count}/{total} {word}{steps}")
    return ", ".join(parts)


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
