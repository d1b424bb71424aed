"""Expand a sweep's grid into cells: one training run each, with a stable directory name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overparam.sweep.config import SweepConfig


def format_lr(lr: float) -> str:
    """Shortest scientific form of a learning rate: 3e-04, 1.5e-03."""
    mantissa, exponent = f"{lr:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def row_name(parameterization: str, reproject_every_steps: int) -> str:
    if parameterization == "dense":
        return "dense"
    suffix = f"rp{reproject_every_steps}" if reproject_every_steps else "free"
    return f"{parameterization}-{suffix}"


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: its place in the grid and the overrides of the base config."""

    parameterization: str
    reproject_every_steps: int  # 0 = free
    lr: float
    seed: int

    @property
    def path(self) -> str:
        """Run directory relative to the sweep folder, e.g. `SvecVD-rp128/lr3e-04/seed0`."""
        row = row_name(self.parameterization, self.reproject_every_steps)
        return f"{row}/lr{format_lr(self.lr)}/seed{self.seed}"

    @property
    def key(self) -> str:
        """The path as one file name, for the sweep's per-cell files."""
        return self.path.replace("/", "__")

    def overrides(self) -> dict[str, Any]:
        return {
            "decomposition.parameterization": self.parameterization,
            "decomposition.reproject_every_steps": self.reproject_every_steps,
            "optim.lr": self.lr,
            "train.seed": self.seed,
        }


def expand_grid(config: SweepConfig) -> list[Cell]:
    """Return every combination of the grid, with dense once per learning rate and seed."""
    grid = config.grid
    cells = []
    for parameterization in grid.parameterizations:
        periods = [0] if parameterization == "dense" else grid.reproject_every_steps
        for period in periods:
            for lr in grid.lrs:
                for seed in grid.seeds:
                    cells.append(Cell(parameterization, period, lr, seed))
    return cells
