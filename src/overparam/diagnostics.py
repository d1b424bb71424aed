"""Cheap per-layer drift figures of decomposed layers, for logging during training.

For a layer with factors U (out, r), S, V (in, r):

- ``orth_error_U`` = ‖UᵀU − I‖_F / √r, likewise ``orth_error_V``: 0 for orthonormal columns.
- ``offdiag_share_S`` (matrix S only) = ‖S − diag(S)‖_F / ‖S‖_F: 0 for a diagonal S.
- ``identity_distance`` (IIW forms only) = √(‖A − I‖²_F + ‖S − S₀‖²_F) / √r, where A is
  the factor that started as the identity (U when out <= in, else V) and S₀ is I or ones.
- ``spectral_norm`` and ``condition_number`` = σ_max / σ_min of the effective weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from overparam.layers import DecomposedLinear
from overparam.parameterizations import svd_dtype
from overparam.surgery import decomposed_layers


def _orthogonality_error(factor: Tensor) -> float:
    rank = factor.shape[-1]
    gram = factor.mT @ factor
    eye = torch.eye(rank, dtype=factor.dtype, device=factor.device)
    return float(torch.linalg.matrix_norm(gram - eye) / math.sqrt(rank))


@torch.no_grad()
def layer_diagnostics(layer: DecomposedLinear) -> dict[str, float]:
    """Drift figures of one layer (see the module docstring), computed in float32 or float64."""
    work = svd_dtype(layer.U.dtype)
    U, S, V = (factor.detach().to(work) for factor in layer.factors)
    rank = layer.rank
    figures = {"orth_error_U": _orthogonality_error(U), "orth_error_V": _orthogonality_error(V)}

    matrix_s = S.dim() == 2
    if matrix_s:
        off_diagonal = S - torch.diag_embed(torch.diagonal(S))
        norm = torch.linalg.matrix_norm(S)
        figures["offdiag_share_S"] = (
            float(torch.linalg.matrix_norm(off_diagonal) / norm) if norm > 0 else 0.0
        )

    if layer.parameterization in ("IvecIW", "ImatIW"):
        eye = torch.eye(rank, dtype=work, device=U.device)
        start = U if layer.out_features <= layer.in_features else V
        s_start = eye if matrix_s else torch.ones(rank, dtype=work, device=U.device)
        squared = torch.sum((start - eye) ** 2) + torch.sum((S - s_start) ** 2)
        figures["identity_distance"] = float(torch.sqrt(squared) / math.sqrt(rank))

    singular_values = torch.linalg.svdvals(layer.compose().detach().to(work))
    sigma_max = float(singular_values[0])
    sigma_min = float(singular_values[-1])
    figures["spectral_norm"] = sigma_max
    figures["condition_number"] = sigma_max / sigma_min if sigma_min > 0 else math.inf
    return figures


def diagnostics(model: nn.Module) -> dict[str, dict[str, float]]:
    """Drift figures of every DecomposedLinear of ``model``, by qualified layer name."""
    return {name: layer_diagnostics(layer) for name, layer in decomposed_layers(model).items()}


def summarize_diagnostics(per_layer: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each figure over the layers that have it, as ``drift/<figure>`` metric keys."""
    values: dict[str, list[float]] = {}
    for figures in per_layer.values():
        for key, value in figures.items():
            values.setdefault(key, []).append(value)
    return {f"drift/{key}": sum(items) / len(items) for key, items in values.items()}
