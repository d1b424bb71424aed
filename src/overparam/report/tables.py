"""The study's tables: rows are parameterization x re-projection, columns learning rates."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from overparam.parameterizations import PARAMETERIZATIONS
from overparam.report.cells import CellStats, aggregate, format_cell
from overparam.report.runs import RunRecord, Setting
from overparam.sweep.grid import format_lr

Row = tuple[str, int]  # (parameterization, reproject_every_steps); 0 = free


def row_label(row: Row) -> str:
    parameterization, period = row
    if parameterization == "dense":
        return "dense"
    return f"{parameterization} rp{period}" if period else f"{parameterization} free"


def _row_order(row: Row) -> tuple[int, int]:
    parameterization, period = row
    # Re-projected rows first, by period, then the free row of the same parameterization.
    return (PARAMETERIZATIONS.index(parameterization), period if period else 1 << 62)


@dataclass
class StudyTable:
    """One study table (from scratch or fine-tuning) with its cells and best-cell marks."""

    title: str
    rows: list[Row]
    lrs: list[float]
    cells: dict[Setting, CellStats]

    def cell(self, row: Row, lr: float) -> CellStats | None:
        return self.cells.get(Setting(row[0], row[1], lr))

    def best_in_column(self, lr: float) -> Row | None:
        """Row with the lowest mean loss among cells whose seeds all completed."""
        candidates = [
            (cell.mean, row)
            for row in self.rows
            if (cell := self.cell(row, lr)) is not None and cell.clean
        ]
        return min(candidates)[1] if candidates else None

    def best_overall(self) -> Setting | None:
        candidates = [(cell.mean, setting) for setting, cell in self.cells.items() if cell.clean]
        return min(candidates, key=lambda item: item[0])[1] if candidates else None


def build_table(title: str, runs: list[RunRecord]) -> StudyTable:
    cells = aggregate(runs)
    rows = sorted({setting.row for setting in cells}, key=_row_order)
    lrs = sorted({setting.lr for setting in cells})
    return StudyTable(title, rows, lrs, cells)


def table_grid(table: StudyTable) -> list[list[tuple[str, bool]]]:
    """Rows of (text, is_best) per column, the first column holding the row label."""
    best = {lr: table.best_in_column(lr) for lr in table.lrs}
    grid = []
    for row in table.rows:
        line = [(row_label(row), False)]
        for lr in table.lrs:
            line.append((format_cell(table.cell(row, lr)), best[lr] == row))
        grid.append(line)
    return grid


def table_header(table: StudyTable) -> list[str]:
    return ["parameterization"] + [f"lr {format_lr(lr)}" for lr in table.lrs]


CSV_FIELDS = [
    "parameterization",
    "reproject_every_steps",
    "lr",
    "cell",
    "mean_loss",
    "std_loss",
    "n_completed",
    "n_diverged",
    "n_failed",
    "n_missing",
    "best_in_column",
]


def write_csv(table: StudyTable, path: Path) -> None:
    """Write one line per cell, with the numbers and counts behind the rendered text."""
    best = {lr: table.best_in_column(lr) for lr in table.lrs}
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in table.rows:
            for lr in table.lrs:
                cell = table.cell(row, lr)
                writer.writerow(
                    {
                        "parameterization": row[0],
                        "reproject_every_steps": row[1],
                        "lr": format_lr(lr),
                        "cell": format_cell(cell),
                        "mean_loss": "" if cell is None or cell.mean is None else cell.mean,
                        "std_loss": "" if cell is None or cell.std is None else cell.std,
                        "n_completed": 0 if cell is None else cell.n,
                        "n_diverged": 0 if cell is None else cell.n_diverged,
                        "n_failed": 0 if cell is None else cell.n_failed,
                        "n_missing": "" if cell is None else cell.n_missing,
                        "best_in_column": best[lr] == row,
                    }
                )
