"""DecomposedLinear: composition, re-projection, gradients and edge cases, for every form."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save
from torch import nn

import overparam
from overparam import DecomposedLinear, NonFiniteWeightError
from overparam.parameterizations import DECOMPOSED, compose, init_factors, parameter_count

SHAPES = [(2, 2), (8, 8), (3, 5), (64, 256), (5, 3), (256, 64), (1, 7)]  # (out, in)
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
# Relative tolerance of one composition against the source weight, per dtype.
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-300))


def make_linear(
    out_features: int, in_features: int, dtype: torch.dtype, seed: int = 0
) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=True, dtype=torch.float64)
    return linear.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", DECOMPOSED)
def test_composition_equals_source(name, shape, dtype):
    linear = make_linear(*shape, dtype)
    layer = DecomposedLinear.from_linear(linear, name)

    assert layer.weight.dtype == dtype
    assert relative_error(layer.weight, linear.weight) <= RTOL[dtype]

    x = torch.randn(4, shape[1], dtype=torch.float64).to(dtype)
    expected = F.linear(x.double(), linear.weight.double(), linear.bias.double())
    assert relative_error(layer(x), expected) <= 2 * RTOL[dtype]


def assert_form_properties(layer: DecomposedLinear, atol: float) -> None:
    U, S, V = (factor.detach().double() for factor in layer.factors)
    rank = layer.rank
    eye = torch.eye(rank, dtype=torch.float64)
    if layer.parameterization in ("SvecVD", "SmatVD"):
        assert torch.allclose(U.T @ U, eye, atol=atol)
        assert torch.allclose(V.T @ V, eye, atol=atol)
        if S.dim() == 2:
            assert torch.count_nonzero(S - torch.diag(torch.diagonal(S))) == 0
            singular_values = torch.diagonal(S)
        else:
            singular_values = S
        assert torch.all(singular_values[:-1] >= singular_values[1:] - atol)
        assert torch.all(singular_values >= 0)
    else:
        identity_factor = U if layer.out_features <= layer.in_features else V
        assert torch.equal(identity_factor, eye)
        expected_s = eye if S.dim() == 2 else torch.ones(rank, dtype=torch.float64)
        assert torch.equal(S, expected_s)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", DECOMPOSED)
def test_reproject_keeps_weight_restores_form(name, shape, dtype):
    layer = DecomposedLinear.from_linear(make_linear(*shape, dtype), name)
    with torch.no_grad():  # drift the factors away from their properties
        for factor in layer.factors:
            factor.add_(0.05 * torch.randn_like(factor.double()).to(dtype))
    drifted = layer.weight.detach().clone()

    layer.reproject()

    # A bf16 re-projection rounds the new factors to bf16 once more.
    assert relative_error(layer.weight, drifted) <= 2 * RTOL[dtype]
    atol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    assert_form_properties(layer, atol)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("dense", 4), ("SvecVD", 10), ("IvecIW", 10), ("SmatVD", 12), ("ImatIW", 12)],
)
def test_parameter_count_2x2(name, expected):
    assert parameter_count(2, 2, name) == expected
    if name == "dense":
        return
    layer = DecomposedLinear.from_linear(nn.Linear(2, 2, bias=False), name)
    assert sum(p.numel() for p in layer.parameters()) == expected


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", DECOMPOSED)
def test_parameter_counts_match_by_s_kind(name, shape):
    svd_form = "SmatVD" if name in ("SmatVD", "ImatIW") else "SvecVD"
    assert parameter_count(*shape, name) == parameter_count(*shape, svd_form)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", DECOMPOSED)
def test_gradcheck_factors(name, shape):
    layer = DecomposedLinear.from_linear(make_linear(*shape, torch.float64), name)
    x = torch.randn(6, shape[1], dtype=torch.float64)
    bias = layer.bias.detach()

    def forward(U, S, V):
        return F.linear(x, compose(overparam.Factors(U, S, V)), bias)

    inputs = tuple(f.detach().clone().requires_grad_() for f in layer.factors)
    assert torch.autograd.gradcheck(forward, inputs)


@pytest.mark.parametrize("name", DECOMPOSED)
def test_product_order_same_output(name):
    layer = DecomposedLinear.from_linear(make_linear(48, 32, torch.float64), name)
    few_tokens = torch.randn(3, 32, dtype=torch.float64)
    many_tokens = torch.randn(2, 200, 32, dtype=torch.float64)
    assert layer._chain_is_cheaper(few_tokens)
    assert not layer._chain_is_cheaper(many_tokens)

    for x in (few_tokens, many_tokens):
        composed = F.linear(x, layer.compose(), layer.bias)
        chained = layer._forward_chain(x)
        assert relative_error(layer(x), composed) <= 1e-12
        assert relative_error(chained, composed) <= 1e-12


def one_training_step(layer: DecomposedLinear) -> None:
    x = torch.randn(16, layer.in_features, dtype=layer.U.dtype)
    target = torch.randn(16, layer.out_features, dtype=layer.U.dtype)
    F.mse_loss(layer(x), target).backward()
    for name in ("U", "S", "V"):
        grad = getattr(layer, name).grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", DECOMPOSED)
def test_rank_deficient_weight_trains(name):
    torch.manual_seed(1)
    low_rank = torch.randn(15, 3, dtype=torch.float64) @ torch.randn(3, 15, dtype=torch.float64)
    linear = nn.Linear(15, 15, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(low_rank)
    layer = DecomposedLinear.from_linear(linear, name)
    assert int(torch.linalg.matrix_rank(layer.weight.detach())) == 3
    assert relative_error(layer.weight, low_rank) <= 1e-12
    one_training_step(layer)


@pytest.mark.parametrize("name", DECOMPOSED)
def test_equal_singular_values_trains(name):
    torch.manual_seed(2)
    orthogonal, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    linear = nn.Linear(6, 6, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(3.0 * orthogonal)  # every singular value is 3
    layer = DecomposedLinear.from_linear(linear, name)
    assert relative_error(layer.weight, 3.0 * orthogonal) <= 1e-12
    one_training_step(layer)


@pytest.mark.parametrize("name", DECOMPOSED)
def test_reproject_nan_raises_naming_layer(name):
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(4, 4))
    overparam.decompose(model, name, targets=["q_proj"])
    before = [factor.detach().clone() for factor in model.q_proj.factors]
    with torch.no_grad():
        model.q_proj.V[0, 0] = float("nan")
    nan_v = model.q_proj.V.detach().clone()

    with pytest.raises(NonFiniteWeightError, match="q_proj") as info:
        overparam.reproject(model)
    assert info.value.layer_name == "q_proj"
    with pytest.raises(NonFiniteWeightError, match="q_proj"):
        model.q_proj.reproject()

    # Nothing was written: U and S are unchanged and V still holds exactly the injected state.
    assert torch.equal(model.q_proj.U, before[0])
    assert torch.equal(model.q_proj.S, before[1])
    assert torch.allclose(model.q_proj.V, nan_v, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", DECOMPOSED)
def test_reproject_keeps_parameter_identity(name):
    torch.manual_seed(3)
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(6, 4))
    model.add_module("o_proj", nn.Linear(4, 6))
    overparam.decompose(model, name, targets="attention")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids_before = [id(p) for p in model.parameters()]
    x = torch.randn(8, 6)

    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        snapshot = [p.detach().clone() for p in model.parameters()]
        assert overparam.reproject(model, optimizer) == 2

    assert [id(p) for p in model.parameters()] == ids_before
    assert all(p in optimizer.state for p in model.parameters())
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()  # the optimizer still steps the same, re-projected Parameters
    assert any(not torch.equal(p, s) for p, s in zip(model.parameters(), snapshot, strict=True))


def test_reproject_reset_zeroes_factor_moments():
    torch.manual_seed(4)
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(5, 5))
    model.add_module("head", nn.Linear(5, 2))
    overparam.decompose(model, "SvecVD", targets=["q_proj"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 5)).sum().backward()
    optimizer.step()

    overparam.reproject(model, optimizer, optimizer_state="keep")
    assert all(optimizer.state[p]["exp_avg"].abs().sum() > 0 for p in model.q_proj.factors)

    overparam.reproject(model, optimizer, optimizer_state="reset")
    for parameter in model.q_proj.factors:
        assert optimizer.state[parameter]["exp_avg"].abs().sum() == 0
        assert optimizer.state[parameter]["exp_avg_sq"].abs().sum() == 0
    assert optimizer.state[model.head.weight]["exp_avg"].abs().sum() > 0


def test_reproject_invalid_optimizer_state():
    with pytest.raises(overparam.ConfigError, match="'zero'"):
        overparam.reproject(nn.Sequential(), None, optimizer_state="zero")


@pytest.mark.parametrize("name", DECOMPOSED)
def test_bf16_layer_decomposes_and_reprojects(name):
    linear = make_linear(32, 48, torch.bfloat16)
    layer = DecomposedLinear.from_linear(linear, name)
    assert all(f.dtype == torch.bfloat16 for f in layer.factors)
    layer.reproject()
    assert relative_error(layer.weight, linear.weight) <= 4e-2
    assert_form_properties(layer, atol=3e-2)


@pytest.mark.parametrize("name", DECOMPOSED)
def test_batched_reproject_equals_per_layer(name):
    torch.manual_seed(5)
    model = nn.ModuleDict({f"q_proj{i}": nn.Linear(12, 8, dtype=torch.float64) for i in range(4)})
    model["odd_proj"] = nn.Linear(8, 12, dtype=torch.float64)  # a second shape group
    overparam.decompose(model, name, targets=["q_proj*", "odd_proj"])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    reference = {key: init_factors(layer.compose().detach(), name) for key, layer in model.items()}

    assert overparam.reproject(model) == 5

    for key, layer in model.items():
        for actual, expected in zip(layer.factors, reference[key], strict=True):
            assert torch.allclose(actual, expected, atol=1e-12), key


@pytest.mark.parametrize("name", DECOMPOSED)
def test_state_dict_safetensors_round_trip(name):
    model = nn.Sequential()
    model.add_module("v_proj", nn.Linear(7, 3))
    overparam.decompose(model, name, targets=["v_proj"])
    state = model.state_dict()
    restored = load(save(state))
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
        assert restored[key].dtype == value.dtype

    clone = nn.Sequential()
    clone.add_module("v_proj", nn.Linear(7, 3))
    overparam.decompose(clone, name, targets=["v_proj"])
    clone.load_state_dict(restored)
    x = torch.randn(2, 7)
    assert torch.equal(clone(x), model(x))


def test_torch_save_round_trip_weights_only():
    model = nn.Sequential()
    model.add_module("k_proj", nn.Linear(4, 4))
    overparam.decompose(model, "ImatIW", targets=["k_proj"])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=True)
    assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())


def test_svd_failure_raises_typed_error(monkeypatch):
    model = nn.Sequential()
    model.add_module("q_proj", nn.Linear(4, 4))
    overparam.decompose(model, "SvecVD", targets=["q_proj"])
    before = [factor.detach().clone() for factor in model.q_proj.factors]

    def failing_svd(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.svd: the algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", failing_svd)
    with pytest.raises(overparam.SVDConvergenceError, match="q_proj") as info:
        overparam.reproject(model)
    assert isinstance(info.value, overparam.DecompositionError)
    with pytest.raises(overparam.SVDConvergenceError, match="did not converge"):
        model.q_proj.reproject()
    for factor, expected in zip(model.q_proj.factors, before, strict=True):
        assert torch.equal(factor, expected)
