"""AdamW with decoupled weight decay and a warmup-then-cosine learning-rate schedule.

Weight decay applies to every weight matrix, to the embeddings, and to the factors U, S, V
of decomposed layers (a vector S included, since it carries the scale of W). Norm weights
and biases are not decayed, as in Llama and GPT-style pretraining.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from overparam.layers import DecomposedLinear
from overparam.llm.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed AdamW group.

    Decayed: parameters with two or more dimensions and every factor of a DecomposedLinear.
    Not decayed: the other one-dimensional parameters (RMSNorm weights, biases).
    """
    factors = {
        id(p)
        for module in model.modules()
        if isinstance(module, DecomposedLinear)
        for p in module.factors
    }
    decay, no_decay = [], []
    for parameter in model.parameters():  # each tied parameter once
        if not parameter.requires_grad:
            continue
        if id(parameter) in factors or parameter.dim() >= 2:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """Create AdamW over `model`'s trainable parameters.

    The fused kernel runs the whole update in one pass per parameter group; torch has it for
    CPU and CUDA float tensors. Other devices fall back to the multi-tensor (foreach) path.
    """
    groups = parameter_groups(model, config.weight_decay)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )


def lr_multiplier(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Return the learning rate of optimizer step `step` (0-based) as a fraction of the peak.

    Linear warmup reaches 1 at step warmup_steps - 1, then a cosine half-period decays to
    min_lr_ratio at the last step (max_steps - 1).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max_steps - warmup_steps
    if decay_steps <= 1:
        return 1.0
    progress = min((step - warmup_steps) / (decay_steps - 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int):
    """Create the LambdaLR scheduler of `lr_multiplier`; call its step() after each update."""
    multiplier = functools.partial(
        lr_multiplier,
        warmup_steps=config.warmup_steps,
        max_steps=max_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    return LambdaLR(optimizer, multiplier)
