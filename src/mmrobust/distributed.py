"""Data-parallel training: the process group, the sharding rule and the gradient all-reduce.

Launch any training entry point with `torchrun` (which sets RANK, WORLD_SIZE, MASTER_ADDR ...)
and `fit` joins the process group itself (gloo on CPU, nccl on CUDA), e.g.

    torchrun --nproc_per_node 2 --no-python mmrobust run configs/demo.yaml --out runs/ddp

The rule: every rank shuffles with the same seeded generator, so all ranks see the same
order of *global* batches of `batch_size` rows, and rank r takes the r-th of `world_size`
contiguous, equal slices of each (`batch_size` must be divisible by `world_size`; the last,
short batch is split as evenly as possible). After backward, gradients are averaged across
ranks weighted by each rank's share of the global batch, so with mean-reduced losses a step
equals the single-process step on the same global batch, up to float summation order.
Augmentation and dropout draw from per-rank random streams. Only rank 0 writes files.
A single process (no WORLD_SIZE > 1) never touches any of this.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from .data.batch import Batch
from .data.dataset import MultimodalData
from .errors import MMRobustError

T = TypeVar("T")


def env_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> bool:
    """Join the process group described by torchrun's environment when WORLD_SIZE > 1 (once);
    True when training is distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise MMRobustError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    atexit.register(_teardown)
    return dist.get_world_size() > 1


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def device() -> torch.device:
    """Where collective tensors live: this process's GPU under nccl, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return rank() == 0


def local_device(device: str) -> str:
    """`auto`/`cuda` under torchrun with CUDA: this process's GPU (LOCAL_RANK)."""
    if env_world_size() > 1 and torch.cuda.is_available() and device in ("auto", "cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def check_batch_size(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise MMRobustError(
            f"batch_size {batch_size} is not divisible by the {world} processes: each takes batch_size/{world} "
            "rows of every global batch; choose a multiple of the process count"
        )


def shard_batches(
    data: MultimodalData, batch_size: int, generator: torch.Generator, rank: int, world: int
) -> Iterator[tuple[Batch | None, int, int]]:
    """(this rank's slice or None if empty, its rows, the global batch's rows) per global batch.

    The shuffle draws exactly what `MultimodalData.batches(batch_size, generator)` draws, so the
    global batches are the single-process ones."""
    order = torch.randperm(len(data), generator=generator)
    for start in range(0, len(data), batch_size):
        rows = order[start : start + batch_size]
        mine = torch.tensor_split(rows, world)[rank]
        yield (data.batch(mine) if len(mine) else None), len(mine), len(rows)


def all_reduce_grads(params: Sequence[torch.nn.Parameter], share: float, diverged: bool = False) -> bool:
    """Sum `share`-weighted gradients over ranks in one flat buffer; True when any rank reports
    `diverged` (its loss was not finite), so every rank stops at the same step instead of one
    raising while the others wait. A parameter that no rank gave a gradient keeps `None` (as in a
    single process, AdamW then skips it)."""
    dev = params[0].device
    flat = [
        p.grad.reshape(-1) * share if p.grad is not None else torch.zeros(p.numel(), device=dev, dtype=p.dtype)
        for p in params
    ]
    used = torch.tensor([float(p.grad is not None) for p in params] + [float(diverged)], device=dev)
    buffer = torch.cat([*flat, used])
    dist.all_reduce(buffer)
    offset = 0
    for p, flag in zip(params, buffer[-len(params) - 1 : -1].tolist(), strict=True):
        n = p.numel()
        p.grad = buffer[offset : offset + n].view_as(p).clone() if flag > 0 else None
        offset += n
    return bool(buffer[-1] > 0)


def all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, on every rank."""
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_object(obj: T) -> T:
    """Rank 0's (picklable) `obj` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device())
    return box[0]


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (they start equal; this makes it certain)."""
    for t in module.state_dict().values():
        dist.broadcast(t, src=0)
