"""Measures of one model's runs: steps to a loss, speed, trajectory curvature, summaries."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from overparam.parameterizations import parameter_count
from overparam.toy2d.config import IN_FEATURES, OUT_FEATURES, ModelSpec
from overparam.toy2d.training import Problem, TrainingTrace

# Loss levels of the steps-to-loss columns; the last one also defines speed.
LOSS_THRESHOLDS = (1e-6, 1e-12)
SPEED_THRESHOLD = 1e-12

# The run and input whose prediction trajectory the figure shows and results.json stores.
SAMPLE_RUN = 0
SAMPLE_INPUT = 0


def threshold_key(threshold: float) -> str:
    """Name of a loss level in results.json, e.g. ``1e-12``."""
    return f"{threshold:.0e}"


def steps_to_threshold(loss: Tensor, threshold: float) -> list[int | None]:
    """First step at which each run's loss is <= ``threshold``; None where it never is.

    ``loss`` is (steps + 1, runs) and step 0 is the loss before the first update.
    """
    reached = loss <= threshold  # (steps + 1, runs)
    first = reached.to(torch.int64).argmax(dim=0)
    return [int(step) if hit else None for step, hit in zip(first, reached.any(dim=0), strict=True)]


def censored_mean_steps(steps_per_run: list[int | None], steps: int) -> float:
    """Mean steps to a loss, counting a run that never reached it as ``steps + 1``.

    Where a run did not reach the loss, the mean is a lower bound of the true mean.
    """
    return sum(steps + 1 if s is None else s for s in steps_per_run) / len(steps_per_run)


def area_above_threshold(loss: Tensor, threshold: float) -> Tensor:
    """Area between log10(loss) and log10(threshold) while the loss is above it, (runs,).

    The area is in decades x steps. It breaks ties between runs that reach the threshold
    at the same step: the one whose loss fell earlier has the smaller area.
    """
    excess = torch.log10(loss) - math.log10(threshold)  # (steps + 1, runs)
    return excess.clamp(min=0).sum(dim=0)


def path_curvature(points: Tensor) -> Tensor:
    """Path length over the straight-line distance from the first point to the last.

    ``points`` is (steps + 1, ..., dim); the result is (...). A straight path that never
    turns back gives 1.0. A path that ends where it started gives inf or NaN.
    """
    path_length = (points[1:] - points[:-1]).norm(dim=-1).sum(dim=0)
    chord = (points[-1] - points[0]).norm(dim=-1)
    return path_length / chord


def float64_loss_floor(problem: Problem) -> float:
    """Loss at which the float64 rounding of W x alone leaves a residual: eps² · mean(y²).

    Each entry of W x is rounded to about eps · |y| near the target, so the mean squared
    error cannot reliably fall below this level.
    """
    eps = torch.finfo(torch.float64).eps
    return eps**2 * float(problem.targets.square().mean())


@dataclass(frozen=True)
class ModelSummary:
    """Every measure of one model over all runs, as stored in results.json."""

    key: str
    label: str
    parameterization: str
    reproject: bool
    parameter_count: int
    runs_diverged: int
    steps_to_loss: dict[str, list[int | None]]
    """Per threshold key (``1e-06``, ``1e-12``): the first step of each run at or below it."""
    speed_steps: float
    """Mean steps to 1e-12 over runs; a run that never reaches it counts as steps + 1."""
    area_above_speed_threshold: float
    """Mean over runs of ``area_above_threshold`` at 1e-12; the tie-breaker of speed."""
    curvature: list[float | None]
    """Per run: mean trajectory curvature over the inputs; None for a diverged run."""
    loss_mean: list[float]
    loss_min: list[float]
    loss_max: list[float]
    trajectory: list[list[float]]
    """Prediction W x of the sample run and input at every step, [[y1, y2], ...]."""

    @property
    def speed_key(self) -> tuple[float, float]:
        """Sort key of speed: smaller is faster."""
        return (self.speed_steps, self.area_above_speed_threshold)

    @property
    def curvature_mean(self) -> float:
        """Mean curvature over the runs that did not diverge; NaN when all diverged."""
        values = [c for c in self.curvature if c is not None]
        return sum(values) / len(values) if values else math.nan

    @property
    def final_loss_mean(self) -> float:
        return self.loss_mean[-1]

    def to_dict(self) -> dict[str, Any]:
        """Fields plus the mean curvature; non-finite floats stay as they are."""
        return {**asdict(self), "curvature_mean": self.curvature_mean}


def summarize_model(spec: ModelSpec, trace: TrainingTrace) -> ModelSummary:
    """Reduce one model's trace over all runs to the measures of the tables and claims."""
    steps = trace.loss.shape[0] - 1
    steps_to_loss = {threshold_key(t): steps_to_threshold(trace.loss, t) for t in LOSS_THRESHOLDS}

    # Curvature of each input's prediction path, averaged over the inputs of a run.
    paths = trace.predictions.transpose(-1, -2)  # (steps + 1, runs, samples, out)
    curvature_per_run = path_curvature(paths).mean(dim=-1)  # (runs,)
    curvature = [
        None if bad else float(value)
        for value, bad in zip(curvature_per_run, trace.diverged, strict=True)
    ]

    trajectory = trace.predictions[:, SAMPLE_RUN, :, SAMPLE_INPUT]  # (steps + 1, out)
    return ModelSummary(
        key=spec.key,
        label=spec.label,
        parameterization=spec.parameterization,
        reproject=spec.reproject,
        parameter_count=parameter_count(OUT_FEATURES, IN_FEATURES, spec.parameterization),
        runs_diverged=int(trace.diverged.sum()),
        steps_to_loss=steps_to_loss,
        speed_steps=censored_mean_steps(steps_to_loss[threshold_key(SPEED_THRESHOLD)], steps),
        area_above_speed_threshold=float(area_above_threshold(trace.loss, SPEED_THRESHOLD).mean()),
        curvature=curvature,
        loss_mean=trace.loss.mean(dim=1).tolist(),
        loss_min=trace.loss.min(dim=1).values.tolist(),
        loss_max=trace.loss.max(dim=1).values.tolist(),
        trajectory=trajectory.tolist(),
    )
