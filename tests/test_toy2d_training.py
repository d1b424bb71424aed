"""Gradient descent of the 2x2 experiment against closed forms computed here."""

from __future__ import annotations

import pytest
import torch

from overparam.parameterizations import init_factors
from overparam.toy2d.config import MODELS, MODELS_BY_KEY, Toy2dConfig
from overparam.toy2d.training import Problem, draw_problem, gradient_step, train_model

DECOMPOSED_SPECS = [spec for spec in MODELS if not spec.is_dense]


def _slice_runs(problem: Problem, runs: slice) -> Problem:
    return Problem(problem.initial_weight[runs], problem.target_weight[runs], problem.inputs[runs])


def test_draw_problem_unit_inputs_and_seed():
    config = Toy2dConfig(runs=4, samples=3, seed=7)
    problem = draw_problem(config)

    assert problem.inputs.shape == (4, 2, 3)
    assert problem.inputs.dtype == torch.float64
    torch.testing.assert_close(problem.inputs.norm(dim=1), torch.ones(4, 3, dtype=torch.float64))
    assert torch.equal(draw_problem(config).initial_weight, problem.initial_weight)
    assert not torch.equal(
        draw_problem(Toy2dConfig(runs=4, samples=3, seed=8)).initial_weight,
        problem.initial_weight,
    )


def test_dense_matches_closed_form_update():
    config = Toy2dConfig(runs=3, samples=3, seed=1, lr=0.07, steps=25)
    problem = draw_problem(config)
    trace = train_model(MODELS_BY_KEY["dense"], problem, config.lr, config.steps)

    # W <- W - lr * (2 / (out * n)) (W X - Y) Xᵀ for the loss mean((W X - Y)²) over out x n.
    X, Y = problem.inputs, problem.targets
    out_features, samples = Y.shape[-2:]
    weight = problem.initial_weight.clone()
    for step in range(config.steps + 1):
        residual = weight @ X - Y
        expected_loss = (residual**2).sum(dim=(-2, -1)) / (out_features * samples)
        torch.testing.assert_close(trace.loss[step], expected_loss, rtol=1e-12, atol=0)
        torch.testing.assert_close(trace.predictions[step], weight @ X, rtol=1e-12, atol=1e-14)
        weight = weight - config.lr * (2 / (out_features * samples)) * residual @ X.mT


@pytest.mark.parametrize("spec", DECOMPOSED_SPECS[::2], ids=lambda spec: spec.parameterization)
def test_factor_gradients_match_closed_form(spec):
    problem = draw_problem(Toy2dConfig(runs=3, samples=4, seed=2))
    generator = torch.Generator().manual_seed(3)
    # Perturbed factors, so that U, S and V are generic rather than identities or orthogonal.
    factors = [
        tensor + 0.3 * torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        for tensor in init_factors(problem.initial_weight, spec.parameterization)
    ]
    U, S, V = factors
    matrix_s = spec.is_matrix_s
    S_matrix = S if matrix_s else torch.diag_embed(S)

    _, _, updated = gradient_step(spec, factors, problem, lr=1.0)
    measured = [old - new for old, new in zip(factors, updated, strict=True)]

    # G = dL/dW = (2 / (out * n)) (W X - Y) Xᵀ, then the chain rule through U S Vᵀ.
    weight = U @ S_matrix @ V.mT
    X, Y = problem.inputs, problem.targets
    G = 2 / (Y.shape[-2] * Y.shape[-1]) * (weight @ X - Y) @ X.mT
    expected_U = G @ V @ S_matrix.mT
    expected_S = U.mT @ G @ V
    if not matrix_s:
        expected_S = torch.diagonal(expected_S, dim1=-2, dim2=-1)
    expected_V = G.mT @ U @ S_matrix
    for name, got, want in zip("USV", measured, (expected_U, expected_S, expected_V), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"d{name}")


@pytest.mark.parametrize("key", ["SvecVD+reproject", "ImatIW", "dense"])
def test_runs_train_independently(key):
    spec = MODELS_BY_KEY[key]
    problem = draw_problem(Toy2dConfig(runs=3, samples=2, seed=4))
    batched = train_model(spec, problem, lr=0.05, steps=30)
    alone = train_model(spec, _slice_runs(problem, slice(1, 2)), lr=0.05, steps=30)

    torch.testing.assert_close(batched.loss[:, 1:2], alone.loss, rtol=1e-10, atol=1e-300)
    torch.testing.assert_close(
        batched.predictions[:, 1:2], alone.predictions, rtol=1e-10, atol=1e-13
    )


def test_imatiw_reprojected_path_straight():
    # ImatIW re-projected moves W x straight towards y: each step subtracts a multiple of
    # the residual, so the residual keeps its direction (closed form for one input).
    problem = draw_problem(Toy2dConfig(runs=5, samples=1, seed=5))
    trace = train_model(MODELS_BY_KEY["ImatIW+reproject"], problem, lr=0.02, steps=20)
    residual = trace.predictions[..., 0] - problem.targets[None, ..., 0]  # (steps + 1, runs, 2)
    direction = residual / residual.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(direction, direction[:1].expand_as(direction), rtol=0, atol=1e-9)


def test_diverging_run_is_frozen_and_others_continue():
    problem = draw_problem(Toy2dConfig(runs=2, samples=1, seed=6))
    # Run 0 starts far out, where lr * |W x|² is far above 2 and the factors blow up.
    initial = problem.initial_weight.clone()
    initial[0] *= 1e3
    blown = Problem(initial, problem.target_weight, problem.inputs)
    spec = MODELS_BY_KEY["ImatIW+reproject"]

    trace = train_model(spec, blown, lr=0.05, steps=60)
    alone = train_model(spec, _slice_runs(blown, slice(1, 2)), lr=0.05, steps=60)

    assert trace.diverged.tolist() == [True, False]
    assert trace.loss[-1, 0] == float("inf")
    assert torch.isnan(trace.predictions[-1, 0]).all()
    torch.testing.assert_close(trace.loss[:, 1], alone.loss[:, 0], rtol=1e-10, atol=1e-300)
