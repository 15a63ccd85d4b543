"""The one place that reads, writes, seeds and preserves the global random generators (torch, CUDA, numpy,
Python's ``random``): checkpoints store :func:`global_rng_state`, an evaluation that must not disturb a training
run draws inside :func:`preserved_global_rng`, and a run starts from :func:`seed_global_rng`."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator

import numpy as np
import torch

__all__ = ["global_rng_state", "set_global_rng_state", "preserved_global_rng", "seed_global_rng"]


def global_rng_state() -> Dict[str, Any]:
    """The state of every global generator, made of tensors and plain Python values (so a checkpoint holding it
    loads with ``torch.load(weights_only=True)``); CUDA's of every device when CUDA is available."""
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "algorithm": algorithm,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }


def set_global_rng_state(state: Dict[str, Any]) -> None:
    """Restore a :func:`global_rng_state` (CUDA's only when it was saved and CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["algorithm"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(state["python"])


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore the global torch, CUDA (the devices already initialised: CUDA is not started for this), numpy and
    Python random states on exit, also on error (data loaders draw their seeds from torch's)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def seed_global_rng(seed: int) -> None:
    """Seed torch (CUDA included), numpy and Python's ``random`` with ``seed``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
