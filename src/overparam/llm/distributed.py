"""Data parallel training over processes started by torchrun.

Every process keeps a full replica of the model and the optimizer. After the micro-batches
of an optimizer step, the gradients are summed across processes with one bucketed
all-reduce, which is what DistributedDataParallel does with `no_sync()` on all but the last
micro-batch. We do it by hand because in accumulated-weight mode the tensors to reduce are
the accumulated dL/dW of the decomposed layers (WeightAccumulator.weight_grads()), which are
not parameters and which DDP cannot see. Reducing dL/dW moves as many bytes as dense
training; reducing factor gradients instead would move more for the matrix-S forms.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from overparam.errors import ConfigError

log = logging.getLogger(__name__)

# Gradient bytes per all-reduce call, as DDP's default bucket_cap_mb=25.
BUCKET_BYTES = 25 * 2**20


@dataclass
class DistributedContext:
    """Rank, world size and device of this process; world_size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """Map train.device ("auto", "cpu", "cuda") to this process's torch device."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "invalid train.device = 'cuda': no CUDA device is available; use cpu or auto."
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device_choice: str) -> DistributedContext:
    """Join the process group described by torchrun's environment, if there is one.

    Uses NCCL for CUDA devices and gloo for CPU. Without WORLD_SIZE > 1 in the environment,
    returns a single-process context and initializes nothing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size <= 1:
        return DistributedContext(device=device)

    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=30),
            device_id=device if device.type == "cuda" else None,
        )
        initialized_here = True
    log.info("process %d of %d on %s", rank, world_size, device)
    return DistributedContext(rank, world_size, local_rank, device, initialized_here)


def shutdown(context: DistributedContext) -> None:
    """Leave the process group if this module joined it."""
    if context.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: Tensor, context: DistributedContext) -> Tensor:
    """Sum `tensor` over all processes, in place; a no-op for one process."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(grads: list[Tensor], context: DistributedContext) -> None:
    """Sum gradient tensors over all processes, in place, with one all-reduce per bucket.

    Tensors are packed into flat buckets of at most BUCKET_BYTES (per dtype and device) so
    that a step issues a few large collectives instead of one per tensor. All buckets are
    launched asynchronously, then waited for.
    """
    if not context.enabled or not grads:
        return
    buckets: list[list[Tensor]] = []
    current: list[Tensor] = []
    current_bytes = 0
    for grad in grads:
        size = grad.numel() * grad.element_size()
        same_kind = not current or (
            current[0].dtype == grad.dtype and current[0].device == grad.device
        )
        if current and (not same_kind or current_bytes + size > BUCKET_BYTES):
            buckets.append(current)
            current, current_bytes = [], 0
        current.append(grad)
        current_bytes += size
    if current:
        buckets.append(current)

    pending = []
    for bucket in buckets:
        flat = torch.cat([g.reshape(-1) for g in bucket])  # (sum of numels,)
        pending.append((bucket, flat, dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)))
    for bucket, flat, work in pending:
        work.wait()
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def broadcast_object(value: object, context: DistributedContext) -> object:
    """Send rank 0's `value` to every process and return it (the value itself for one)."""
    if not context.enabled:
        return value
    payload = [value]
    dist.broadcast_object_list(payload, src=0)
    return payload[0]


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
