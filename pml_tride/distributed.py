"""torch.distributed helpers: the process group from torchrun's environment, ranks, and DDP unwrapping.

pml-tride writes no process management of its own: processes come from ``torchrun`` (``torch.distributed.run``),
which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; these helpers read them.
Without an initialised process group everything behaves as one process of rank 0.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "is_distributed",
    "get_rank",
    "get_world_size",
    "unwrap_model",
    "wrap_model",
    "launched_by_torchrun",
    "init_from_environment",
    "all_gather_objects",
    "broadcast_object",
    "barrier",
    "leave_process_group",
    "chunks_every_rank_forwards",
    "check_sync_batchnorm",
    "convert_sync_batchnorm",
]

# The environment variables torchrun sets in every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# How long a rank waits for the others to join the group.
JOIN_TIMEOUT = timedelta(minutes=10)


def is_distributed() -> bool:
    """True inside an initialised torch.distributed process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; other modules unchanged."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def wrap_model(model: nn.Module, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """``model`` in a ``DistributedDataParallel`` wrapper inside a process group, else ``model`` itself."""
    if not is_distributed() or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def launched_by_torchrun() -> bool:
    """True in a worker started by torchrun (all of its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_from_environment(device: Optional[torch.device] = None) -> torch.device:
    """Join the process group that torchrun describes (NCCL for CUDA, else gloo); returns this rank's device.

    Outside torchrun this does nothing and returns ``device`` (or the default device)."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not launched_by_torchrun() or is_distributed():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True):
        # torchrun's agent keeps one store across restarts: without a prefix per attempt, a restarted rank can read
        # the address a killed rank of the previous attempt published there, and fail to connect
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"/pml_tride/attempt_{attempt}", dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=JOIN_TIMEOUT))
        dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]), timeout=JOIN_TIMEOUT)
    else:
        dist.init_process_group(backend=backend)
    return device


def all_gather_objects(value: Any) -> List[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in one process)."""
    if not is_distributed():
        return [value]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank (``value`` itself in one process)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def leave_process_group() -> None:
    """Leave the process group: wait for every rank, then destroy it (nothing outside a group). The barrier keeps a
    rank from tearing down its connections while another still uses them, which can abort gloo at exit
    ("terminate called without an active exception")."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def chunks_every_rank_forwards(local_chunks: int, device: torch.device) -> int:
    """The number of chunked forward passes every rank must make: the largest ``local_chunks`` over the ranks
    (``local_chunks`` itself in one process); one all-reduce of a single integer on ``device``.

    Every forward through a ``DistributedDataParallel`` wrapper (and every ``SyncBatchNorm`` layer in train mode)
    makes collective calls: a broadcast of the buffers, an all-gather of the batch statistics. A rank that makes
    fewer of them than the others leaves those waiting for a partner that never comes, and the group hangs. A rank
    with fewer chunks of its own forwards empty padding chunks up to this number (see
    ``AdversarialTripletLoss.training_embeddings``)."""
    if not is_distributed():
        return local_chunks
    count = torch.tensor([local_chunks], dtype=torch.int64, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item())


def check_sync_batchnorm(world_size: int, device: torch.device) -> None:
    """Refuse ``SyncBatchNorm`` where it cannot work: one process (nothing to synchronise with) or a CPU device
    (torch's ``SyncBatchNorm`` has no CPU implementation: in a CPU/gloo group its forward raises, and
    ``DistributedDataParallel`` refuses to wrap it)."""
    if world_size < 2:
        raise ValueError(
            f"sync_batchnorm (--sync-bn) synchronises BatchNorm statistics across processes, but this run has "
            f"{world_size} process: drop it, or launch several (--nproc-per-node N, or torchrun)"
        )
    if torch.device(device).type == "cpu":
        raise ValueError(
            "sync_batchnorm (--sync-bn) needs GPUs: torch's SyncBatchNorm has no CPU implementation (in a CPU/gloo "
            "process group its forward raises 'SyncBatchNorm expected input tensor to be on GPU'). On CPU train "
            "without it: each rank then normalises with the statistics of its own batch"
        )


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer inside ``model`` (or inside its DDP wrapper) by a ``SyncBatchNorm`` in place:
    the same parameter and buffer tensors, so optimizers, losses and a DDP wrapper that hold them keep working.
    Returns ``model``. A model that is itself a single BatchNorm layer is refused (it cannot be replaced in place)."""
    module = unwrap_model(model)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise ValueError(
            f"cannot convert a model that is itself a {type(module).__name__} layer in place: wrap it in a "
            "container (e.g. torch.nn.Sequential) or call torch.nn.SyncBatchNorm.convert_sync_batchnorm yourself"
        )
    for name, child in module.named_children():
        module.add_module(name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return model
