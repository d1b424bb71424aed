"""DecomposedLinear: an nn.Linear whose weight is the product U · S · Vᵀ."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overparam.errors import NonFiniteWeightError, SVDConvergenceError
from overparam.parameterizations import (
    Factors,
    compose,
    factor_shapes,
    init_factors,
    resolve_parameterization,
)


class DecomposedLinear(nn.Module):
    """A linear layer y = x Wᵀ + b with W = U · S · Vᵀ held as three trainable factors.

    ``U`` is (out, r), ``S`` is (r,) or (r, r), ``V`` is (in, r) with r = min(out, in).
    Build one from an existing layer with :meth:`from_linear`, which keeps its function.
    """

    factor_names = ("U", "S", "V")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        parameterization: str,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = resolve_parameterization(parameterization)
        if name == "dense":
            raise ValueError("DecomposedLinear needs a decomposed form; 'dense' is nn.Linear")
        self.parameterization = name
        self.in_features = in_features
        self.out_features = out_features
        self.rank = min(in_features, out_features)
        # Qualified name inside the model, set by overparam.decompose; used in error messages.
        self.layer_name = "DecomposedLinear"

        shapes = factor_shapes(out_features, in_features, name)
        options = {"device": device, "dtype": dtype}
        self.U = nn.Parameter(torch.empty(shapes["U"], **options))
        self.S = nn.Parameter(torch.empty(shapes["S"], **options))
        self.V = nn.Parameter(torch.empty(shapes["V"], **options))
        self.bias = nn.Parameter(torch.empty(out_features, **options)) if bias else None

        # Set by WeightAccumulator: a detached composed weight that forward uses instead of
        # the factors, so that the micro-batches of one optimizer step compose W only once.
        self._accumulated_weight: Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, parameterization: str) -> DecomposedLinear:
        """Decompose ``linear`` into the initial factors of ``parameterization``.

        The new layer computes the same function, on the same device and in the same dtype.
        """
        weight = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            parameterization,
            bias=linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        layer.load_weight(weight)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    @property
    def factors(self) -> Factors:
        return Factors(self.U, self.S, self.V)

    def compose(self) -> Tensor:
        """Return the effective weight (out, in), differentiable in U, S and V."""
        return compose(self.factors)

    @property
    def weight(self) -> Tensor:
        """The effective weight U · S · Vᵀ (out, in)."""
        return self.compose()

    @torch.no_grad()
    def load_weight(self, weight: Tensor) -> None:
        """Overwrite the factors in place with the initial factors of ``weight``.

        The Parameter objects are kept, so optimizers and data-parallel wrappers keep their
        references. Raises NonFiniteWeightError, writing nothing, if the weight is not finite,
        and SVDConvergenceError if the SVD fails on a finite one.
        """
        if not torch.isfinite(weight).all():
            raise NonFiniteWeightError(self.layer_name, "cannot decompose NaN or Inf values")
        try:
            factors = init_factors(weight, self.parameterization)
        except torch.linalg.LinAlgError as error:
            raise SVDConvergenceError(self.layer_name, str(error)) from None
        for parameter, value in zip(self.factors, factors, strict=True):
            parameter.copy_(value)

    @torch.no_grad()
    def reproject(self) -> None:
        """Restore the form's properties for the current effective weight, in place.

        SVD forms get the thin SVD again; IIW forms get identity factors and the weight.
        """
        self.load_weight(self.compose())

    def forward(self, x: Tensor) -> Tensor:
        if self._accumulated_weight is not None:
            return F.linear(x, self._accumulated_weight, self.bias)
        if self._chain_is_cheaper(x):
            return self._forward_chain(x)
        return F.linear(x, self.compose(), self.bias)

    def _chain_is_cheaper(self, x: Tensor) -> bool:
        """Compare the multiply-adds of composing W then x Wᵀ against x · V · Sᵀ · Uᵀ.

        Backward costs scale the same way for both orders, so the forward count decides.
        """
        tokens = x.numel() // max(x.shape[-1], 1)
        out_features, in_features, rank = self.out_features, self.in_features, self.rank
        matrix_s = self.S.dim() == 2
        compose_cost = out_features * rank * in_features + tokens * out_features * in_features
        chain_cost = tokens * rank * (in_features + out_features)
        if matrix_s:
            compose_cost += out_features * rank * rank
            chain_cost += tokens * rank * rank
        return chain_cost < compose_cost

    def _forward_chain(self, x: Tensor) -> Tensor:
        hidden = x @ self.V  # (..., r)
        hidden = hidden @ self.S.mT if self.S.dim() == 2 else hidden * self.S  # x V Sᵀ
        return F.linear(hidden, self.U, self.bias)  # (..., out)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"parameterization={self.parameterization}, rank={self.rank}, "
            f"bias={self.bias is not None}"
        )
