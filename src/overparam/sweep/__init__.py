"""Sweeps: grids of training runs, run locally or on Slurm, resumable and safe to share."""

from overparam.sweep.config import GridConfig, LaunchConfig, SlurmConfig, SweepConfig
from overparam.sweep.grid import Cell, expand_grid
from overparam.sweep.runner import SweepResult, run_sweep

__all__ = [
    "Cell",
    "GridConfig",
    "LaunchConfig",
    "SlurmConfig",
    "SweepConfig",
    "SweepResult",
    "expand_grid",
    "run_sweep",
]
