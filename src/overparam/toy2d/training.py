"""The 2x2 problem and full-batch gradient descent of one model over all runs at once.

Every tensor carries the run as its leading dimension, so one step updates all runs of a
model together. The runs never interact: the summed loss gives each run's factors the
gradient of that run's own loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from overparam.parameterizations import Factors, compose, init_factors, reproject_factors
from overparam.toy2d.config import IN_FEATURES, OUT_FEATURES, ModelSpec, Toy2dConfig

DTYPE = torch.float64


@dataclass(frozen=True)
class Problem:
    """Start, target and data of every run, all float64 with the run as leading dimension."""

    initial_weight: Tensor
    """W0, (runs, out, in): the effective matrix every model starts from."""
    target_weight: Tensor
    """W*, (runs, out, in)."""
    inputs: Tensor
    """x, (runs, in, samples), each column of unit length."""

    @property
    def targets(self) -> Tensor:
        """y = W* x, (runs, out, samples)."""
        return self.target_weight @ self.inputs


@dataclass(frozen=True)
class TrainingTrace:
    """Loss and predictions of one model at every step, before each update and after the last."""

    loss: Tensor
    """(steps + 1, runs); +inf from the step a run diverged on."""
    predictions: Tensor
    """W x, (steps + 1, runs, out, samples); NaN from the step a run diverged on."""
    diverged: Tensor
    """(runs,) bool: the run produced a non-finite factor or weight and was stopped."""


def draw_problem(config: Toy2dConfig) -> Problem:
    """Draw W0, W* and x of every run from ``config.seed``, in that order.

    W0 and W* have Gaussian entries of standard deviation ``config.weight_std``. Each input
    is a Gaussian vector scaled to unit length, i.e. uniform on the unit circle.
    """
    generator = torch.Generator().manual_seed(config.seed)
    weight_shape = (config.runs, OUT_FEATURES, IN_FEATURES)
    initial = torch.randn(weight_shape, generator=generator, dtype=DTYPE) * config.weight_std
    target = torch.randn(weight_shape, generator=generator, dtype=DTYPE) * config.weight_std
    inputs = torch.randn(
        (config.runs, IN_FEATURES, config.samples), generator=generator, dtype=DTYPE
    )
    inputs = inputs / inputs.norm(dim=-2, keepdim=True)
    return Problem(initial, target, inputs)


def mse_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error of each run, (runs,): the mean over outputs and samples.

    With predictions W x, its gradient in W is (2 / (out · samples)) · (W x − y) xᵀ.
    """
    return (predictions - targets).square().mean(dim=(-2, -1))


def initial_parameters(spec: ModelSpec, weight: Tensor) -> list[Tensor]:
    """Trainable tensors of a model that starts at ``weight``: [W] for dense, else [U, S, V]."""
    if spec.is_dense:
        return [weight.clone()]
    return list(init_factors(weight, spec.parameterization))


def effective_weight(spec: ModelSpec, parameters: list[Tensor]) -> Tensor:
    """W of each run, (runs, out, in), differentiable in the parameters."""
    if spec.is_dense:
        return parameters[0]
    return compose(Factors(*parameters))


def gradient_step(
    spec: ModelSpec, parameters: list[Tensor], problem: Problem, lr: float
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Return each run's loss and predictions W x, and the parameters after one step.

    The step is plain gradient descent: no re-projection and no divergence check, which
    ``train_model`` adds.
    """
    leaves = [tensor.detach().requires_grad_(True) for tensor in parameters]
    predictions = effective_weight(spec, leaves) @ problem.inputs  # (runs, out, samples)
    loss = mse_loss(predictions, problem.targets)
    gradients = torch.autograd.grad(loss.sum(), leaves)
    with torch.no_grad():
        updated = [leaf - lr * gradient for leaf, gradient in zip(leaves, gradients, strict=True)]
    return loss.detach(), predictions.detach(), updated


def train_model(spec: ModelSpec, problem: Problem, lr: float, steps: int) -> TrainingTrace:
    """Run ``steps`` gradient-descent steps of one model on every run of ``problem``.

    A re-projected model gets ``reproject_factors`` after every step. A run whose loss or
    parameters become non-finite keeps its last finite parameters and is marked as
    diverged, so the other runs go on and the re-projection's SVD never gets NaN.
    """
    runs = problem.initial_weight.shape[0]
    loss_history = torch.empty(steps + 1, runs, dtype=DTYPE)
    prediction_history = torch.empty(
        steps + 1, runs, OUT_FEATURES, problem.inputs.shape[-1], dtype=DTYPE
    )
    diverged = torch.zeros(runs, dtype=torch.bool)
    parameters = initial_parameters(spec, problem.initial_weight)

    for step in range(steps + 1):
        loss, predictions, updated = gradient_step(spec, parameters, problem, lr)
        diverged |= ~torch.isfinite(loss)
        if diverged.any():
            loss = loss.masked_fill(diverged, torch.inf)
            predictions = predictions.masked_fill(diverged[:, None, None], torch.nan)
        loss_history[step] = loss
        prediction_history[step] = predictions
        if step == steps:
            break  # the last pass only measures the trained parameters

        # Keep the last finite parameters of a diverging run, so that the SVD of the
        # re-projection never gets NaN. Every entry of U, S and V enters U S Vᵀ, so a finite
        # product means finite factors: NaN spreads, and inf times 0 gives NaN.
        with torch.no_grad():
            weight = effective_weight(spec, updated)
            diverged |= ~torch.isfinite(weight).flatten(start_dim=1).all(dim=1)
            if diverged.any():
                updated = [
                    torch.where(_broadcast_runs(diverged, new), old, new)
                    for old, new in zip(parameters, updated, strict=True)
                ]
            if spec.reproject:
                updated = list(reproject_factors(Factors(*updated), spec.parameterization))
        parameters = updated

    return TrainingTrace(loss_history, prediction_history, diverged)


def _broadcast_runs(mask: Tensor, like: Tensor) -> Tensor:
    """(runs,) mask viewed as (runs, 1, ...) to broadcast against ``like``."""
    return mask.view(-1, *([1] * (like.dim() - 1)))
