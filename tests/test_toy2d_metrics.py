"""Curvature, steps to a loss and the speed tie-breaker against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from overparam.toy2d.config import MODELS_BY_KEY
from overparam.toy2d.metrics import (
    area_above_threshold,
    censored_mean_steps,
    path_curvature,
    steps_to_threshold,
    summarize_model,
)
from overparam.toy2d.training import TrainingTrace


def _points(*coordinates: tuple[float, float]) -> torch.Tensor:
    return torch.tensor(coordinates, dtype=torch.float64)  # (steps + 1, 2)


def test_curvature_straight_path_is_one():
    # Uneven steps along one line, never turning back.
    points = _points((0.0, 0.0), (0.5, 1.0), (0.6, 1.2), (2.0, 4.0))
    assert path_curvature(points).item() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize(("a", "b"), [(3.0, 4.0), (1.0, 1.0), (0.1, 5.0)])
def test_curvature_l_shape_closed_form(a, b):
    points = _points((0.0, 0.0), (a, 0.0), (a, b))
    assert path_curvature(points).item() == pytest.approx((a + b) / math.hypot(a, b), rel=1e-14)


def test_curvature_back_and_forth_counts_path():
    # 0 -> 2 -> 1 on a line: path 3, distance 1.
    points = _points((0.0, 0.0), (2.0, 0.0), (1.0, 0.0))
    assert path_curvature(points).item() == pytest.approx(3.0)


def test_curvature_batched_over_paths():
    straight = _points((0.0, 0.0), (1.0, 1.0), (2.0, 2.0))
    bent = _points((0.0, 0.0), (3.0, 0.0), (3.0, 4.0))
    batch = torch.stack([straight, bent], dim=1)  # (steps + 1, 2 paths, 2)
    torch.testing.assert_close(
        path_curvature(batch), torch.tensor([1.0, 7.0 / 5.0], dtype=torch.float64)
    )


def test_steps_to_threshold_first_step():
    steps = torch.arange(21, dtype=torch.float64)
    loss = torch.stack([10.0**-steps, 10.0 ** (-steps / 4), torch.ones(21)], dim=1)  # (21, 3)
    assert steps_to_threshold(loss, 1e-6) == [6, None, None]
    assert steps_to_threshold(loss, 1e-5) == [5, 20, None]
    assert steps_to_threshold(loss, 10.0) == [0, 0, 0]


def test_censored_mean_counts_missing_as_steps_plus_one():
    assert censored_mean_steps([10, 20], steps=100) == 15.0
    assert censored_mean_steps([10, None], steps=100) == (10 + 101) / 2


def test_area_above_threshold_closed_form():
    steps = torch.arange(31, dtype=torch.float64)
    loss = (10.0**-steps)[:, None]  # (31, 1)
    # log10(loss) - log10(1e-12) = 12 - t while positive: 12 + 11 + ... + 1 = 78.
    assert area_above_threshold(loss, 1e-12).item() == pytest.approx(78.0, abs=1e-9)
    # A loss that reaches 0 adds nothing below the threshold.
    loss[20:] = 0.0
    assert area_above_threshold(loss, 1e-12).item() == pytest.approx(78.0, abs=1e-9)


def test_summarize_model_statistics_and_divergence():
    steps = torch.arange(5, dtype=torch.float64)
    loss = torch.stack([10.0 ** (-3 * steps), 10.0**-steps], dim=1)  # (5 steps + 1, 2 runs)
    loss[3:, 1] = torch.inf
    # Run 0 moves on an L: (0,0) -> (3,0) -> (3,4); run 1 is diverged.
    run0 = _points((0.0, 0.0), (3.0, 0.0), (3.0, 4.0), (3.0, 4.0), (3.0, 4.0))
    predictions = torch.stack([run0, torch.full_like(run0, torch.nan)], dim=1)[..., None]
    trace = TrainingTrace(loss, predictions, torch.tensor([False, True]))

    summary = summarize_model(MODELS_BY_KEY["SmatVD+reproject"], trace)

    assert summary.parameter_count == 12
    assert summary.runs_diverged == 1
    assert summary.steps_to_loss["1e-06"] == [2, None]
    assert summary.steps_to_loss["1e-12"] == [4, None]
    assert summary.speed_steps == (4 + 5) / 2
    assert summary.curvature == [pytest.approx(7.0 / 5.0), None]
    assert summary.curvature_mean == pytest.approx(7.0 / 5.0)
    assert summary.loss_mean[1] == pytest.approx((1e-3 + 1e-1) / 2)
    assert summary.loss_min[1] == pytest.approx(1e-3)
    assert summary.loss_max[-1] == math.inf
    assert summary.trajectory[1] == [3.0, 0.0]
