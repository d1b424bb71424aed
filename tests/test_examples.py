"""The shipped example sweep loads and expands to the grid its comment announces."""

from __future__ import annotations

from pathlib import Path

from overparam.sweep.config import SweepConfig
from overparam.sweep.grid import expand_grid

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"


def test_example_sweep_grid():
    config = SweepConfig.load(EXAMPLE)
    cells = expand_grid(config)
    # dense: 2 lrs x 2 seeds; SvecVD and IvecIW: 2 periods x 2 lrs x 2 seeds each.
    assert len(cells) == 2 * 2 + 2 * (2 * 2 * 2)
    assert {cell.parameterization for cell in cells} == {"dense", "SvecVD", "IvecIW"}
    assert "20 runs" in EXAMPLE.read_text(encoding="utf-8")
