"""Data-parallel plumbing under torchrun (WORLD_SIZE > 1); every function is a no-op in a single process.

Every process trains on its own draws (its own RNG stream); gradients are averaged over the processes with one
all-reduce per optimizer step. torch's DistributedDataParallel wrapper is not used: the generator is called by
its parts (canonical, fields) and R1 needs a double backward, neither of which DDP's hooks follow.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def init() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def local_device(device: torch.device) -> torch.device:
    """A process's own GPU (LOCAL_RANK) where device names CUDA without an index."""
    if dist.is_initialized() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """Process 0 draws from the run's seed (so one process trains as before), the others from their own streams."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def broadcast(module: torch.nn.Module) -> None:
    """Process 0's weights (and buffers) in every process."""
    if dist.is_initialized():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_grads(module: torch.nn.Module) -> None:
    """Average the gradients over the processes: one all-reduce of them all, flattened."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads]) / dist.get_world_size()  # (n,)
    dist.all_reduce(flat)
    for g, avg in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(avg.view_as(g))


def average(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over the processes."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)  # (n,)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist(), strict=True))


def from_rank0(value: float, device: torch.device) -> float:
    """Process 0's value (e.g. its clock, which decides when a stage ends) on every process."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t)


def gather(value: Any) -> list[Any]:
    """Every process's value, by rank."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
