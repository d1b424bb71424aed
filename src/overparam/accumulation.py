"""Accumulated-weight mode: compose each decomposed weight once per optimizer step.

The effective weight W = U · S · Vᵀ does not depend on the data, so the micro-batches of an
optimizer step only need W and the sum of their gradients dL/dW. The factors need the chain
rule once per step: dL/dU, dL/dS, dL/dV follow from one backward through the product, which
is what the naive path computes micro-batch by micro-batch. Under data parallel, all-reducing
dL/dW moves as many bytes as dense training does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from overparam.layers import DecomposedLinear


class WeightAccumulator:
    """Compose once, run every micro-batch against W, back-propagate into the factors once.

    Usage within one optimizer step::

        accumulator.begin()
        for batch in micro_batches:
            loss(model, batch).backward()
        all_reduce(accumulator.weight_grads())  # only under data parallel
        accumulator.finish()                    # factor .grad now equals the naive path's
        optimizer.step()
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [module for module in model.modules() if isinstance(module, DecomposedLinear)]
        self._composed: list[Tensor] = []

    @property
    def active(self) -> bool:
        return bool(self._composed)

    def begin(self) -> None:
        """Compose every effective weight once; forward passes use it until finish()."""
        if self.active:
            raise RuntimeError("WeightAccumulator.begin() called twice without finish()")
        for layer in self.layers:
            composed = layer.compose()  # keeps the graph to U, S, V for finish()
            layer._accumulated_weight = composed.detach().requires_grad_(composed.requires_grad)
            self._composed.append(composed)

    def weight_grads(self) -> list[Tensor]:
        """The accumulated dL/dW of each layer (zeros where no micro-batch reached it)."""
        grads = []
        for layer in self.layers:
            weight = layer._accumulated_weight
            if weight is None:
                raise RuntimeError("WeightAccumulator.weight_grads() called outside begin/finish")
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            grads.append(weight.grad)
        return grads

    def finish(self) -> None:
        """Back-propagate the accumulated dL/dW into the factors and restore normal forward."""
        outputs, grads = [], []
        for layer, composed in zip(self.layers, self._composed, strict=True):
            weight = layer._accumulated_weight
            if composed.requires_grad and weight is not None and weight.grad is not None:
                outputs.append(composed)
                grads.append(weight.grad)
        if outputs:
            torch.autograd.backward(outputs, grads)
        self.discard()

    def discard(self) -> None:
        """Drop the composed weights without touching the factors' gradients."""
        for layer in self.layers:
            layer._accumulated_weight = None
        self._composed = []

    def __enter__(self) -> WeightAccumulator:
        self.begin()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.discard()
