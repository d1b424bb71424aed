"""Re-projection of every decomposed layer of a model, batched by shape."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor, nn

from overparam.errors import ConfigError, NonFiniteWeightError, SVDConvergenceError
from overparam.layers import DecomposedLinear
from overparam.parameterizations import Factors, init_factors, svd_dtype
from overparam.surgery import decomposed_layers

OPTIMIZER_STATES = ("keep", "reset")


def _group_key(layer: DecomposedLinear) -> tuple:
    return (
        layer.parameterization,
        tuple(layer.U.shape),
        tuple(layer.V.shape),
        layer.U.dtype,
        layer.U.device,
    )


@torch.no_grad()
def reproject(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    optimizer_state: str = "keep",
) -> int:
    """Re-project every DecomposedLinear of ``model`` in place; return how many there were.

    Layers of the same form, shape, dtype and device are decomposed together with one
    batched SVD. The new factors are copied into the existing Parameters, so the optimizer
    keeps its references. ``optimizer_state`` decides what happens to the optimizer's
    per-parameter state of the factors: ``"keep"`` leaves Adam's moments as they are,
    ``"reset"`` zeroes the moments and the step count, as for freshly created parameters.

    Raises NonFiniteWeightError naming the first layer whose effective weight is not
    finite, and SVDConvergenceError naming the layers of a group whose SVD failed. Every
    layer is decomposed before any factor is written, so a failed call changes nothing.
    """
    if optimizer_state not in OPTIMIZER_STATES:
        raise ConfigError(
            f"optimizer_state '{optimizer_state}' is invalid; expected one of {OPTIMIZER_STATES}"
        )
    layers = decomposed_layers(model)
    groups: dict[tuple, list[DecomposedLinear]] = defaultdict(list)
    for layer in layers.values():
        groups[_group_key(layer)].append(layer)

    # Decompose everything before writing anything, so that a non-finite weight or an SVD
    # that fails to converge leaves the model untouched.
    new_factors: dict[tuple, Factors] = {}
    for key, members in groups.items():
        weights = torch.stack([layer.compose() for layer in members])  # (n, out, in)
        finite = torch.isfinite(weights).flatten(1).all(dim=1)
        if not bool(finite.all()):
            bad = members[int((~finite).nonzero()[0])]
            raise NonFiniteWeightError(bad.layer_name, "re-projection needs a finite weight")
        try:
            new_factors[key] = init_factors(
                weights.to(svd_dtype(weights.dtype)), members[0].parameterization
            )
        except torch.linalg.LinAlgError as error:
            names = ", ".join(layer.layer_name for layer in members)
            raise SVDConvergenceError(names, str(error)) from None

    for key, members in groups.items():
        for index, layer in enumerate(members):
            for parameter, value in zip(layer.factors, new_factors[key], strict=True):
                parameter.copy_(value[index])

    if optimizer is not None and optimizer_state == "reset":
        _reset_optimizer_state(optimizer, layers.values())
    return len(layers)


def _reset_optimizer_state(optimizer: torch.optim.Optimizer, layers: object) -> None:
    factors = {id(p) for layer in layers for p in layer.factors}  # type: ignore[attr-defined]
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if id(parameter) not in factors:
                continue
            for value in optimizer.state.get(parameter, {}).values():
                if isinstance(value, Tensor):
                    value.zero_()
