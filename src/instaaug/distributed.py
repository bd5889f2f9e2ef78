"""Distributed data parallel helpers: process rank, collectives that are no-ops in a single process, torchrun setup.

Everything here works whether or not ``torch.distributed`` is initialised: in a single process the rank is 0, the
world size 1, and every collective returns its input unchanged. Launch with PyTorch's own ``torchrun``; this module
only reads the environment it sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group (of any size) is initialised."""
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, the only process that writes metrics, checkpoints, figures and augmenters."""
    return rank() == 0


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    out = tensor.detach().clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` (any shape) over all processes, as a new tensor; the input itself when not distributed.

    An asynchronous collective on GPU (NCCL): no host synchronisation, so it may sit in a training step.
    """
    if not is_distributed():
        return tensor
    # ReduceOp.AVG is NCCL-only; SUM then divide works with gloo too.
    return _all_reduce(tensor, dist.ReduceOp.SUM) / dist.get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes, as a new tensor; the input itself when not distributed."""
    return _all_reduce(tensor, dist.ReduceOp.SUM) if is_distributed() else tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``tensor`` over all processes; the input itself when not distributed."""
    return _all_reduce(tensor, dist.ReduceOp.MAX) if is_distributed() else tensor


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for each part and returns this process's share."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (N, ...) concatenated in rank order (W·N, ...); the input itself when single.

    Differentiable: each process's loss may depend on every part, so the backward pass sums, over the processes,
    the gradients of their losses with respect to this process's part (one all-reduce). With each process's loss
    the mean over its own N anchors and DDP averaging the parameter gradients, the update is the one a single
    process computes for the mean over all W·N anchors (lightly's ``GatherLayer`` does the same). Every process
    must pass the same shape.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable; exchanged between our own processes only), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (picklable; exchanged between our own processes only)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) of ``module`` to every rank (no-op if single)."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def local_device(device: str | torch.device) -> torch.device:
    """``device``, with a bare ``cuda`` mapped to this process's GPU (``cuda:LOCAL_RANK``) under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def init_from_env() -> bool:
    """Initialise the default process group from torchrun's environment; returns whether this process is distributed.

    Does nothing (returns False) outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) or when a group already
    exists. CPU tensors use gloo; with GPUs, CUDA tensors use NCCL and each process takes GPU ``LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={size} but {key} is not set; launch with torchrun")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    """Destroy the default process group if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
