"""The 2x2 motivation experiment: nine parameterizations of W learned by gradient descent.

``from overparam.toy2d import Toy2dConfig, run_experiment`` is the entry point of other
commands. The experiment module (and matplotlib) loads on first use, so that building the
CLI parser stays fast.
"""

from __future__ import annotations

from typing import Any

from overparam.toy2d.config import MODELS, ModelSpec, Toy2dConfig

__all__ = ["MODELS", "ModelSpec", "Toy2dConfig", "build_results", "run_experiment"]


def __getattr__(name: str) -> Any:
    if name in ("build_results", "run_experiment"):
        from overparam.toy2d import experiment

        return getattr(experiment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
