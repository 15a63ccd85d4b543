"""Counting host-device synchronisations on the CPU: the aten ops (and tensor-to-Python conversions) that make
the host wait for the device on a GPU, seen through a dispatch mode, so tests can bound them without a GPU."""

from __future__ import annotations

import collections
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose result the host must read (item(), bool(), comparisons to Python) or whose output size depends on
# the data (the device must finish before the host can allocate it)
SYNCING_OPS = frozenset({
    "_local_scalar_dense", "equal", "is_nonzero", "nonzero", "_unique2", "unique_dim", "unique_consecutive",
    "masked_select",
})
# conversions that copy a tensor to the host without dispatching an aten op on CPU tensors
SYNCING_METHODS = ("tolist", "numpy")


class HostSyncCounter(TorchDispatchMode):
    """Counts host syncs by op name inside its ``with`` block (``counts``; ``total``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self._originals: dict = {}

    def __enter__(self) -> "HostSyncCounter":
        for name in SYNCING_METHODS:
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def counted(tensor: torch.Tensor, *args: Any, _name: str = name, _original: Any = original, **kwargs: Any):
                self.counts[_name] += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()
        super().__exit__(*exc_info)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING_OPS:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())
