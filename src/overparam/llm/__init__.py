"""Llama-3 training with decomposed attention projections: config, model, loop, CLI.

    from overparam.llm import RunConfig, run_training
    config = RunConfig().with_overrides({"decomposition.parameterization": "SvecVD"})
    summary = run_training(config, Path("runs/example"))

Names are imported on first use, so `import overparam.llm.data` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "overparam.llm.config",
    "ModelConfig": "overparam.llm.config",
    "DecompositionConfig": "overparam.llm.config",
    "OptimConfig": "overparam.llm.config",
    "TrainConfig": "overparam.llm.config",
    "PRESETS": "overparam.llm.presets",
    "Preset": "overparam.llm.presets",
    "get_preset": "overparam.llm.presets",
    "run_training": "overparam.llm.train",
    "TrainingHooks": "overparam.llm.train",
    "export_pretrained": "overparam.llm.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'overparam.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
