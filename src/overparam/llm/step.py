"""Gradients of one optimizer step over its micro-batches, and the held-out loss.

Loss normalization: the step's loss is the sum of the token losses of the whole global batch
(all micro-batches, all processes) divided by the number of label tokens in it (labels not
equal to IGNORE_INDEX). The count is taken up front and all-reduced, and each micro-batch
backpropagates its summed token loss divided by that global count. The gradient is then the
same for every split of the global batch into processes x micro-batches, even when the
micro-batches hold different numbers of label tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overparam import WeightAccumulator
from overparam.layers import DecomposedLinear
from overparam.llm.distributed import DistributedContext, all_reduce_gradients, all_reduce_sum

IGNORE_INDEX = -100


@dataclass
class StepGradients:
    """Device tensors of one step, read with a single host sync by the caller."""

    loss: Tensor  # global mean token loss, scalar float32
    nonfinite_flag: Tensor  # > 0 when some process saw a non-finite loss
    stop_flag: Tensor  # > 0 when some process was asked to stop


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Return bf16 autocast for precision "bf16", else a no-op context (fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def summed_token_loss(model: nn.Module, input_ids: Tensor, labels: Tensor) -> Tensor:
    """Return the sum of the cross-entropy of every label token, in float32."""
    logits = model(input_ids=input_ids, use_cache=False).logits  # (B, T, V)
    return F.cross_entropy(
        logits.float().flatten(0, 1),  # (B*T, V); float32 so bf16 logits lose no precision here
        labels.flatten(),  # (B*T,)
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def factor_parameters(model: nn.Module) -> set[int]:
    """Return the ids of the U, S, V parameters of every DecomposedLinear of `model`."""
    return {
        id(p)
        for module in model.modules()
        if isinstance(module, DecomposedLinear)
        for p in module.factors
    }


def compute_gradients(
    model: nn.Module,
    micro_batches: Sequence[tuple[Tensor, Tensor]],
    *,
    accumulator: WeightAccumulator | None,
    context: DistributedContext,
    precision: str = "fp32",
    stop_requested: bool = False,
) -> StepGradients:
    """Accumulate the gradients of one optimizer step into the parameters' .grad.

    `micro_batches` are this process's (input_ids, labels) pairs, already on the device.
    With an `accumulator`, decomposed layers run against their composed weight and their
    factors receive gradients once, in `accumulator.finish()`, after the all-reduce of dL/dW.
    The caller zeroes the gradients before and clips them after. No host sync happens here.
    """
    device = micro_batches[0][0].device

    # Global number of label tokens, so that every micro-batch divides by the same count.
    token_count = torch.zeros((), dtype=torch.float32, device=device)
    for _, labels in micro_batches:
        token_count += (labels != IGNORE_INDEX).sum()
    all_reduce_sum(token_count, context)
    token_count = token_count.clamp_min(1.0)

    if accumulator is not None:
        accumulator.begin()
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    autocast = autocast_context(device, precision)
    for input_ids, labels in micro_batches:
        with autocast:
            micro_loss = summed_token_loss(model, input_ids, labels)
        (micro_loss / token_count).backward()
        loss_sum += micro_loss.detach()

    # One small all-reduce of the step's scalars: loss, non-finite flag, stop flag.
    local_loss = loss_sum / token_count
    scalars = torch.stack(
        [
            local_loss,
            (~torch.isfinite(local_loss)).float(),
            torch.tensor(float(stop_requested), device=device),
        ]
    )
    all_reduce_sum(scalars, context)

    # Sum the gradients over processes: ordinary parameters plus, in accumulated-weight
    # mode, dL/dW of the decomposed layers (their factors have no gradient yet).
    if context.enabled:
        factors = factor_parameters(model) if accumulator is not None else set()
        grads = []
        for parameter in model.parameters():
            if not parameter.requires_grad or id(parameter) in factors:
                continue
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            grads.append(parameter.grad)
        if accumulator is not None:
            grads.extend(accumulator.weight_grads())
        all_reduce_gradients(grads, context)

    if accumulator is not None:
        accumulator.finish()
    return StepGradients(loss=scalars[0], nonfinite_flag=scalars[1], stop_flag=scalars[2])


def gradient_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> Tensor:
    """Return the global L2 norm of the gradients, clipping them to `max_norm` if it is > 0."""
    grads = [p for p in parameters if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)
    return torch.nn.utils.get_total_norm([p.grad for p in grads], foreach=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    context: DistributedContext,
    precision: str = "fp32",
) -> float:
    """Return the mean token loss over `batches`, split across processes by batch index."""
    was_training = model.training
    model.eval()
    device = context.device
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, token count)
    autocast = autocast_context(device, precision)
    for index, (input_ids, labels) in enumerate(batches):
        if index % context.world_size != context.rank:
            continue
        input_ids, labels = input_ids.to(device), labels.to(device)
        with autocast:
            totals[0] += summed_token_loss(model, input_ids, labels).double()
        totals[1] += (labels != IGNORE_INDEX).sum()
    all_reduce_sum(totals, context)
    model.train(was_training)
    return float(totals[0] / totals[1].clamp_min(1.0))
