"""One process or many: the process group from timm's helper, and sums across ranks.

Under ``torchrun`` timm's ``init_distributed_device_so`` joins the process group (NCCL for CUDA devices, gloo for the
CPU) and picks this rank's device; without torchrun it is a plain single process. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from timm.utils.distributed import init_distributed_device_so, is_distributed_env

__all__ = ["Processes", "start_processes", "stop_processes", "sum_across_ranks"]


@dataclass(frozen=True)
class Processes:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def start_processes(device: str) -> Processes:
    """Join the torchrun process group when launched by torchrun (once per process), else a single process."""
    if is_distributed_env() and dist.is_initialized():  # joined already (e.g. a second verb in one process)
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        kind = device.split(":")[0]
        return Processes(torch.device("cpu" if kind == "cpu" else f"{kind}:{local_rank}"), dist.get_rank(), local_rank,
                         dist.get_world_size())
    info = init_distributed_device_so(device=device)
    return Processes(torch.device(info["device"]), info["global_rank"], info["local_rank"], info["world_size"])


def sum_across_ranks(values: list[float], processes: Processes) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64, so counts stay exact); unchanged in one process."""
    if not processes.distributed:
        return list(values)
    backend_device = processes.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def stop_processes(processes: Processes) -> None:
    """Leave the process group at the end of a verb (torch warns about a group left open at exit)."""
    if processes.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
