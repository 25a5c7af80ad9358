"""One process or many: the process group from timm's helper, the CPU threads and loader workers, sums across ranks.

Under ``torchrun`` timm's ``init_distributed_device_so`` joins the process group (NCCL for CUDA devices, gloo for the
CPU) and picks this rank's device; without torchrun it is a plain single process. Only rank 0 writes files and logs.

Threads that fit the machine (:func:`cpu_plan`, applied by :func:`start_processes`): a process gets the CPUs it may
run on (its affinity mask, capped by a cgroup CPU quota) divided by the processes torchrun starts on the node, and
splits them between the data loader's worker processes and torch's intra-op threads:

    workers = min(4, cpus - 1)        (--workers overrides)
    threads = max(1, cpus - workers)  (OMP_NUM_THREADS overrides)

so that the loader and the model's step never ask for more cores than there are. torch's own default is one thread
per core whatever else runs: with loader workers beside it every parallel region waits for a descheduled thread, and
on a busy machine a step took many times its CPU time (issue 26: 7.5 s for a 0.13 CPU-s step;
tools/benchmarks/threads.py measures the difference).
"""

from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from timm.utils.distributed import init_distributed_device_so, is_distributed_env

__all__ = ["CpuPlan", "Processes", "available_cpus", "cpu_plan", "start_processes", "stop_processes",
           "sum_across_ranks"]

MAX_DEFAULT_WORKERS = 4
# cgroup v2, then v1: a container's CPU quota (quota and period in microseconds)
_CGROUP_QUOTAS = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask (``taskset``, a batch scheduler's cpuset), capped by a cgroup
    CPU quota rounded up (``docker --cpus``); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    for quota_file, period_file in _CGROUP_QUOTAS:
        try:
            if period_file is None:
                quota, period = Path(quota_file).read_text().split()[:2]
            else:
                quota, period = Path(quota_file).read_text().strip(), Path(period_file).read_text().strip()
            if quota not in ("max", "-1"):
                cpus = min(cpus, math.ceil(int(quota) / int(period)))
            break
        except (OSError, ValueError):
            continue
    return max(1, cpus)


@dataclass(frozen=True)
class CpuPlan:
    """How one process uses the CPUs: ``threads`` intra-op threads, ``workers`` loader processes, out of ``cpus``."""

    cpus: int
    workers: int
    threads: int
    threads_from: str  # "OMP_NUM_THREADS" or "default"


def cpu_plan(workers: int | None = None, local_processes: int = 1) -> CpuPlan:
    """The threads and loader workers of one of ``local_processes`` processes on this machine (see the module doc);
    ``workers`` (--workers) and ``OMP_NUM_THREADS`` override the defaults."""
    cpus = max(1, available_cpus() // max(1, local_processes))
    if workers is None:
        workers = min(MAX_DEFAULT_WORKERS, cpus - 1)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return CpuPlan(cpus, workers, int(env), "OMP_NUM_THREADS")
    return CpuPlan(cpus, workers, max(1, cpus - workers), "default")


@dataclass(frozen=True)
class Processes:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    workers: int = 0  # data loader processes of this process (cpu_plan)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def start_processes(device: str, workers: int | None = None) -> Processes:
    """Join the torchrun process group when launched by torchrun (once per process), else a single process; set
    torch's intra-op threads and choose the loader workers for this machine (:func:`cpu_plan`; ``workers`` is
    --workers, None for the default)."""
    plan = cpu_plan(workers, local_processes=int(os.environ.get("LOCAL_WORLD_SIZE", 1) or 1))
    if plan.threads_from == "default":  # torch read OMP_NUM_THREADS itself when it is set
        torch.set_num_threads(plan.threads)
    if is_distributed_env() and dist.is_initialized():  # joined already (e.g. a second verb in one process)
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        kind = device.split(":")[0]
        return Processes(torch.device("cpu" if kind == "cpu" else f"{kind}:{local_rank}"), dist.get_rank(), local_rank,
                         dist.get_world_size(), plan.workers)
    info = init_distributed_device_so(device=device)
    return Processes(torch.device(info["device"]), info["global_rank"], info["local_rank"], info["world_size"],
                     plan.workers)


def sum_across_ranks(values: list[float], processes: Processes) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64, so counts stay exact); unchanged in one process."""
    if not processes.distributed:
        return list(values)
    backend_device = processes.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def stop_processes(processes: Processes) -> None:
    """Leave the process group at the end of a verb (torch warns about a group left open at exit). What still holds
    the group (a DDP wrapper's reducer, in a reference cycle) is collected first, so no gloo connection is torn down
    at interpreter exit, after the group, in a different order on each rank."""
    if processes.distributed and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
