"""The five parameterizations of a weight W (out x in) as the product U · S · Vᵀ.

Shapes, with r = min(out, in):

    U: (..., out, r)    S: (..., r) for a vector S, (..., r, r) for a matrix S    V: (..., in, r)

Every function here is batched over leading dimensions, so the 2x2 experiment can run many
seeds at once and re-projection can decompose a group of same-shape layers in one call.

Initial factors of each form, all composing to the same W:

- ``SvecVD`` / ``SmatVD``: the thin SVD ``W = U diag(s) Vᵀ``, with ``S = s`` or ``S = diag(s)``.
- ``IvecIW`` / ``ImatIW``: identity factors and W itself. When out <= in: ``U = I``,
  ``S = 1`` (or ``I``), ``V = Wᵀ``. When out > in: ``U = W``, ``S = 1`` (or ``I``), ``V = I``.
  The parameter count equals that of the SVD form with the same kind of S.
- ``dense``: W itself, no factors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from overparam.errors import ConfigError, suggest

PARAMETERIZATIONS = ("dense", "SvecVD", "IvecIW", "SmatVD", "ImatIW")
DECOMPOSED = PARAMETERIZATIONS[1:]

_ALIASES = {name.lower(): name for name in PARAMETERIZATIONS}


class Factors(NamedTuple):
    """Factors of W = U · S · Vᵀ; S is a vector (..., r) or a matrix (..., r, r)."""

    U: Tensor
    S: Tensor
    V: Tensor


def resolve_parameterization(name: str) -> str:
    """Return the canonical name of a parameterization; lower-case aliases are accepted.

    Raises ConfigError naming the value and the accepted names, with a close match if any.
    """
    if name in PARAMETERIZATIONS:
        return name
    canonical = _ALIASES.get(str(name).lower())
    if canonical is not None:
        return canonical
    raise ConfigError(
        f"unknown parameterization '{name}'; expected one of {', '.join(PARAMETERIZATIONS)}."
        + suggest(str(name), PARAMETERIZATIONS)
    )


def is_svd(parameterization: str) -> bool:
    return resolve_parameterization(parameterization) in ("SvecVD", "SmatVD")


def is_matrix_s(parameterization: str) -> bool:
    return resolve_parameterization(parameterization) in ("SmatVD", "ImatIW")


def _require_decomposed(parameterization: str) -> str:
    name = resolve_parameterization(parameterization)
    if name == "dense":
        raise ValueError("'dense' has no factors; use the weight itself")
    return name


def svd_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype in which to run the SVD: float64 stays, everything else runs in float32.

    torch.linalg.svd has no bf16/fp16 kernels, and float32 is accurate enough for a
    re-projection whose result is cast back to the layer's dtype.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def _thin_svd(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    work = weight.to(svd_dtype(weight.dtype))
    U, s, Vh = torch.linalg.svd(work, full_matrices=False)  # (..., out, r), (..., r), (..., r, in)
    return U, s, Vh.mT


def init_factors(weight: Tensor, parameterization: str) -> Factors:
    """Decompose ``weight`` (..., out, in) into the initial factors of ``parameterization``.

    The factors have the weight's dtype and device. The SVD runs in float32 (float64 for a
    float64 weight) and its factors are cast back.
    """
    name = _require_decomposed(parameterization)
    out_features, in_features = weight.shape[-2:]
    rank = min(out_features, in_features)
    batch_shape = weight.shape[:-2]
    matrix_s = name in ("SmatVD", "ImatIW")

    if name in ("SvecVD", "SmatVD"):
        U, s, V = _thin_svd(weight)
        S = torch.diag_embed(s) if matrix_s else s
        return _contiguous(Factors(U, S, V), weight.dtype)

    eye = torch.eye(rank, dtype=weight.dtype, device=weight.device).expand(*batch_shape, rank, rank)
    if matrix_s:
        S = eye
    else:
        S = torch.ones(*batch_shape, rank, dtype=weight.dtype, device=weight.device)
    if out_features <= in_features:
        # rank == out: U = I (out, out), V = Wᵀ (in, out)
        return _contiguous(Factors(eye, S, weight.mT), weight.dtype)
    # rank == in: U = W (out, in), V = I (in, in)
    return _contiguous(Factors(weight, S, eye), weight.dtype)


def _contiguous(factors: Factors, dtype: torch.dtype) -> Factors:
    """Fresh contiguous copies in ``dtype``: safetensors and in-place copies need owned storage."""
    return Factors(
        *(t.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True) for t in factors)
    )


def compose(factors: Factors) -> Tensor:
    """Return the effective weight U · S · Vᵀ (..., out, in); differentiable in every factor."""
    U, S, V = factors
    if S.dim() == U.dim():  # matrix S (..., r, r)
        return U @ S @ V.mT
    return (U * S.unsqueeze(-2)) @ V.mT  # U diag(s) without building diag(s)


def reproject_factors(factors: Factors, parameterization: str) -> Factors:
    """Return the initial factors of ``parameterization`` for the current effective weight."""
    with torch.no_grad():
        return init_factors(compose(factors), parameterization)


def factor_shapes(
    out_features: int, in_features: int, parameterization: str
) -> dict[str, tuple[int, ...]]:
    """Shapes of U, S and V for one (out, in) weight."""
    name = _require_decomposed(parameterization)
    rank = min(out_features, in_features)
    s_shape = (rank, rank) if name in ("SmatVD", "ImatIW") else (rank,)
    return {"U": (out_features, rank), "S": s_shape, "V": (in_features, rank)}


def parameter_count(
    out_features: int, in_features: int, parameterization: str, bias: bool = False
) -> int:
    """Number of trainable parameters of one layer in the given form."""
    name = resolve_parameterization(parameterization)
    extra = out_features if bias else 0
    if name == "dense":
        return out_features * in_features + extra
    total = 0
    for shape in factor_shapes(out_features, in_features, name).values():
        count = 1
        for size in shape:
            count *= size
        total += count
    return total + extra
