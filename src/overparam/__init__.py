"""overparam: linear layers re-parameterized as U·S·Vᵀ, and the experiments that test them.

The library API::

    import overparam
    names = overparam.decompose(model, "SvecVD")   # attention projections by default
    overparam.reproject(model, optimizer)          # restore the form's properties
    overparam.diagnostics(model)                   # drift figures per layer
    overparam.merge(model)                         # back to nn.Linear
"""

from overparam.accumulation import WeightAccumulator
from overparam.diagnostics import diagnostics, layer_diagnostics, summarize_diagnostics
from overparam.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DecompositionError,
    NonFiniteWeightError,
    OverparamError,
    SVDConvergenceError,
    TargetNotFoundError,
)
from overparam.layers import DecomposedLinear
from overparam.parameterizations import (
    PARAMETERIZATIONS,
    Factors,
    compose,
    init_factors,
    parameter_count,
    reproject_factors,
    resolve_parameterization,
)
from overparam.reprojection import reproject
from overparam.surgery import TARGET_SHORTCUTS, decompose, decomposed_layers, merge, resolve_targets

__version__ = "0.1.0"

__all__ = [
    "PARAMETERIZATIONS",
    "TARGET_SHORTCUTS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DecompositionError",
    "DecomposedLinear",
    "Factors",
    "NonFiniteWeightError",
    "OverparamError",
    "SVDConvergenceError",
    "TargetNotFoundError",
    "WeightAccumulator",
    "compose",
    "decompose",
    "decomposed_layers",
    "diagnostics",
    "init_factors",
    "layer_diagnostics",
    "merge",
    "parameter_count",
    "reproject",
    "reproject_factors",
    "resolve_parameterization",
    "resolve_targets",
    "summarize_diagnostics",
]
