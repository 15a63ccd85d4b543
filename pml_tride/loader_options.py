"""DataLoader settings shared by training, evaluation and embedding: worker processes, pinned memory, prefetching.

The one place where the default number of loader worker processes is decided (:func:`default_num_workers`):
0 on CPU-only runs (the workers would compete with the model for the same cores), and on CUDA
``min(MAX_DEFAULT_WORKERS, cpu_count // local_world_size)``, the cores of the machine shared between the
processes torchrun started on it (``LOCAL_WORLD_SIZE``), at least 1.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import torch

__all__ = ["default_num_workers", "resolve_num_workers", "loader_options", "MAX_DEFAULT_WORKERS", "PREFETCH_FACTOR"]

# Most worker processes the CUDA default starts per training process.
MAX_DEFAULT_WORKERS = 8
# Batches each worker loads ahead (torch's own default, named here).
PREFETCH_FACTOR = 2
LOCAL_WORLD_SIZE_VARIABLE = "LOCAL_WORLD_SIZE"


def default_num_workers(device: Union[str, torch.device, None]) -> int:
    """Loader worker processes for a run on ``device``: 0 unless it is a CUDA device; on CUDA
    ``min(MAX_DEFAULT_WORKERS, os.cpu_count() // local_world_size)``, at least 1, where local_world_size is the
    number of processes torchrun started on this machine (1 without torchrun)."""
    if device is None or torch.device(device).type != "cuda":
        return 0
    local_world_size = max(1, int(os.environ.get(LOCAL_WORLD_SIZE_VARIABLE, "1")))
    return max(1, min(MAX_DEFAULT_WORKERS, (os.cpu_count() or 1) // local_world_size))


def resolve_num_workers(num_workers: Optional[int], device: Union[str, torch.device, None]) -> int:
    """``num_workers`` checked (a non-negative integer), or :func:`default_num_workers` of ``device`` when None."""
    if num_workers is None:
        return default_num_workers(device)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be None (automatic) or a non-negative integer, got {num_workers!r}")
    return num_workers


def loader_options(num_workers: int, device: Union[str, torch.device, None], persistent: bool = False
                   ) -> Dict[str, Any]:
    """``DataLoader`` keyword arguments: ``num_workers``; ``pin_memory`` when the batches go to a CUDA device;
    with workers, ``prefetch_factor`` and (``persistent``: for a loader iterated more than once) ``persistent_workers``
    (the workers then live as long as the loader, instead of restarting at every pass)."""
    options: Dict[str, Any] = {"num_workers": num_workers,
                               "pin_memory": device is not None and torch.device(device).type == "cuda"}
    if num_workers > 0:
        options.update(prefetch_factor=PREFETCH_FACTOR, persistent_workers=persistent)
    return options
