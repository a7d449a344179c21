"""Running a function on several processes with torch.distributed, like detectron2's `launch`.

    launch(main, num_gpus_per_machine=2, args=(cfg_path,))   # 2 processes, rank 0 and 1

- `num_gpus_per_machine` processes are started per machine (torch.multiprocessing,
  "spawn"); on a machine without CUDA it is the number of CPU worker processes.
  Each joins the default process group: NCCL with CUDA, gloo without. With CUDA,
  process `local_rank` uses GPU `local_rank`.
- Under `torchrun` (RANK and WORLD_SIZE in the environment) nothing is spawned:
  the current process joins the group torchrun describes (MASTER_ADDR / MASTER_PORT,
  LOCAL_RANK) and runs `main_func` itself, so the same script works both ways.
- One process in total: `main_func(*args)` runs directly, without a process group.

Inside `main_func`, `get_rank()`, `get_world_size()` and `get_local_rank()` say
where the process stands.
"""
import datetime
import logging
import os
import socket
from typing import Any, Callable, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils.errors import DeviceUnavailableError

__all__ = ["launch", "get_rank", "get_world_size", "get_local_rank", "is_main_process", "synchronize",
           "all_gather_objects", "find_free_port", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)

# Environment variables torchrun sets for every process it starts.
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE")


# ----------------------------------------------------------------------------- where am I


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank of this process; 0 without torch.distributed."""
    return dist.get_rank() if _initialized() else 0


def get_world_size() -> int:
    """Number of processes in the default group; 1 without torch.distributed."""
    return dist.get_world_size() if _initialized() else 1


def get_local_rank() -> int:
    """Rank of this process on its machine (selects its GPU); 0 without torch.distributed."""
    return int(os.environ.get("LOCAL_RANK", 0)) if _initialized() else 0


def is_main_process() -> bool:
    """True on global rank 0 (the process that writes files and logs)."""
    return get_rank() == 0


def synchronize() -> None:
    """Waits until every process gets here (no-op with one process)."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's `obj` (picklable), in rank order, on every process."""
    if get_world_size() == 1:
        return [obj]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# ----------------------------------------------------------------------------- launching


def find_free_port() -> int:
    """A TCP port that is free on this machine right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _under_torchrun() -> bool:
    return all(v in os.environ for v in _TORCHRUN_VARS)


def _set_device(local_rank: int) -> None:
    """Pins this process to GPU `local_rank` (nothing to do on CPU)."""
    if not torch.cuda.is_available():
        return
    if local_rank >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"Process with local rank {local_rank} has no GPU: only {torch.cuda.device_count()} "
                           "visible. Ask for at most that many processes per machine (--num-gpus)")
    torch.cuda.set_device(local_rank)


def _run_and_clean_up(main_func: Callable[..., Any], args: Sequence[Any]) -> Any:
    """Runs main_func inside the process group, then leaves the group (also on errors)."""
    try:
        synchronize()  # every process is up before any starts working: errors surface at once
        return main_func(*args)
    finally:
        if _initialized():
            dist.destroy_process_group()


def _torchrun_worker(main_func: Callable[..., Any], args: Sequence[Any], timeout: datetime.timedelta) -> Any:
    """The current process is one that torchrun started: join its group and run."""
    world_size = int(os.environ["WORLD_SIZE"])
    if world_size == 1:
        return main_func(*args)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    _set_device(local_rank)
    dist.init_process_group(backend=_backend(), init_method="env://", timeout=timeout)
    logger.info("Process %d of %d (local rank %d) joined via torchrun", dist.get_rank(), world_size, local_rank)
    return _run_and_clean_up(main_func, args)


def _spawned_worker(local_rank: int, main_func: Callable[..., Any], world_size: int, num_per_machine: int,
                    machine_rank: int, dist_url: str, args: Sequence[Any], timeout: datetime.timedelta) -> None:
    """Entry point of a process started by `launch`: join the group, run main_func."""
    global_rank = machine_rank * num_per_machine + local_rank
    # torchrun's variables, so code (and libraries) that read them see the same as under torchrun.
    os.environ.update(RANK=str(global_rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(num_per_machine))
    _set_device(local_rank)
    dist.init_process_group(backend=_backend(), init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    _run_and_clean_up(main_func, args)


def _resolve_dist_url(dist_url: str, num_machines: int) -> str:
    if dist_url != "auto":
        return dist_url
    if num_machines != 1:
        raise ValueError("dist_url='auto' only works on one machine; pass e.g. tcp://<rank-0 host>:<port> "
                         "(--dist-url) when using several machines")
    return f"tcp://127.0.0.1:{find_free_port()}"


def launch(main_func: Callable[..., Any], num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto", args: Sequence[Any] = (), timeout: datetime.timedelta = DEFAULT_TIMEOUT
           ) -> Optional[Any]:
    """Runs `main_func(*args)` on every process of a (possibly) distributed job.

    num_gpus_per_machine: processes per machine (one per GPU; on a CPU-only machine,
        that many CPU processes using gloo).
    num_machines, machine_rank: the job's machines and this one's index.
    dist_url: rendezvous address of rank 0, e.g. "tcp://10.0.0.1:23456"; "auto" picks
        a free local port (one machine only).
    args: arguments of main_func; they must be picklable when processes are spawned.

    Returns main_func's result when it ran in this process (one process, or under
    torchrun), else None. A worker that fails makes launch raise (torch.multiprocessing
    reports its traceback).
    """
    if _under_torchrun():
        return _torchrun_worker(main_func, args, timeout)
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(f"Need at least one process per machine and one machine, got "
                         f"num_gpus_per_machine={num_gpus_per_machine}, num_machines={num_machines}")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"machine_rank {machine_rank} is not in [0, num_machines={num_machines})")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    url = _resolve_dist_url(dist_url, num_machines)
    logger.info("Launching %d processes on this machine (machine %d of %d, %s backend, rendezvous %s)",
                num_gpus_per_machine, machine_rank, num_machines, _backend(), url)
    mp.start_processes(_spawned_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, url, tuple(args), timeout))
    return None
