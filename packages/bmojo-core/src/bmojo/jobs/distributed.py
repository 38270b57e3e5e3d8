"""Process groups and model wrapping for ``torchrun``: DDP by default, FSDP2 (``fully_shard``) on request.

A process is distributed when ``WORLD_SIZE`` > 1 in its environment (``torchrun`` sets it, with
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). The backend is NCCL on CUDA and
gloo on CPU. FSDP2 shards every block and then the root module over a 1-d device mesh; gradients
and optimizer state are DTensors, and checkpoints gather full tensors (``bmojo.jobs.checkpoint``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: str) -> tuple[World, torch.device]:
    """Initialise the process group when launched by torchrun; returns the world and this rank's device."""
    world = world_from_env()
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device: expected a torch device name, got {device!r} ({err})") from None
    if dev.type == "cuda" and world.distributed:
        # before any CUDA call (torch.cuda.set_device on a CPU-only torch fails with an AttributeError);
        # is_available() creates no CUDA context, so no rank touches another rank's GPU here
        if not torch.cuda.is_available():
            raise ValueError(f"--device: expected an available torch device, got {device!r} (CUDA is not available)")
        if world.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"--nproc_per_node: expected at most {torch.cuda.device_count()} processes per node on --device "
                f"cuda (one GPU each), got local rank {world.local_rank}"
            )
        dev = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(dev)
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return world, dev


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, strategy: str, world: World, device: torch.device) -> nn.Module:
    """The module to train: ``model`` itself in one process, else DDP or FSDP2 around it."""
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy: expected one of {STRATEGIES}, got {strategy!r}")
    if not world.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world.size,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum floats over ranks (float64); a no-op in one process."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any (so all ranks stop at the same step)."""
    return all_reduce_sum([float(flag)], device)[0] > 0


def gather_tensors(t: torch.Tensor, world: World) -> list[torch.Tensor]:
    """Every rank's copy of a same-shape tensor (CPU), in rank order."""
    if not world.distributed:
        return [t]
    out = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(out, t)
    return out
