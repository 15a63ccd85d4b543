"""Counting host-device synchronisations on any machine, the CPU included: a diagnostic for a training loop.

On a GPU each host sync drains the device's queue, so the host can no longer run ahead of it; in an adversarial
step they add up (one per PGD step for an early-stop check that reads the loss). They cannot be timed on a CPU, but
they can be counted there: :class:`HostSyncCounter` is a ``TorchDispatchMode`` that sees every aten op dispatched
inside its ``with`` block (forward, autograd backward and optimizer alike) and counts those that make the host wait
for the device (:func:`is_host_sync`), plus the calls of ``Tensor.tolist`` and ``Tensor.numpy`` (on a CPU tensor
they dispatch no op, so the methods are wrapped while the block runs)::

    with HostSyncCounter() as counter:
        loss(embeddings, labels, indices_tuple).backward()
    print(counter.total, dict(counter.counts))

Not seen: ``.cpu()`` and ``.to("cpu")`` (nothing to copy on the CPU) and syncs hidden inside other kernels.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Dict, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HOST_SYNC_OPS = frozenset({
    # a device value read on the host: .item(), bool(tensor), float(tensor), int(tensor)
    "aten._local_scalar_dense", "aten.is_nonzero", "aten.equal",
    # output sizes that depend on the values: the host waits to learn them
    "aten.nonzero", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.masked_select",
})
# sync unless told the output size (the Tensor overload; the int one reaches the mode as a plain expand)
OUTPUT_SIZE_SYNC_OPS = frozenset({"aten.repeat_interleave"})
# advanced indexing: a boolean (or uint8) mask index makes the kernel run nonzero, which the mode does not see
MASK_INDEX_OPS = frozenset({"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"})
MASK_DTYPES = (torch.bool, torch.uint8)
# tensor methods that copy to the host without dispatching an aten op on a CPU tensor
HOST_SYNC_METHODS = ("tolist", "numpy")


def op_name(func: Any) -> str:
    """The op's overload packet, ``namespace.name`` (``aten.view`` for ``aten.view.default``)."""
    return str(func.overloadpacket)


def is_host_sync(func: Any, args: Sequence[Any], kwargs: Dict[str, Any]) -> bool:
    """Whether a dispatched op makes the host wait for the device: one of :data:`HOST_SYNC_OPS`, a
    ``repeat_interleave`` without ``output_size``, or indexing with a boolean mask."""
    name = op_name(func)
    if name in HOST_SYNC_OPS:
        return True
    if name in OUTPUT_SIZE_SYNC_OPS:
        return kwargs.get("output_size") is None
    if name in MASK_INDEX_OPS:
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(index, torch.Tensor) and index.dtype in MASK_DTYPES for index in indices or ())
    return False


class HostSyncCounter(TorchDispatchMode):
    """Counts the host syncs inside its ``with`` block: ``counts`` by op (``str(func)``, e.g.
    ``aten._local_scalar_dense.default``, and ``Tensor.tolist`` / ``Tensor.numpy``), ``total`` in all.

    ``sync_test(func, args, kwargs)``: what counts as a sync (default :func:`is_host_sync`); subclasses may see
    every op through :meth:`observe`."""

    def __init__(self, sync_test: Callable[[Any, Sequence[Any], Dict[str, Any]], bool] = is_host_sync) -> None:
        super().__init__()
        self.sync_test = sync_test
        self.counts: collections.Counter = collections.Counter()
        self._methods: Dict[str, Any] = {}

    def __enter__(self) -> "HostSyncCounter":
        for name in HOST_SYNC_METHODS:
            self._methods[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._counted_method(name, self._methods[name]))
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        for name, method in self._methods.items():
            setattr(torch.Tensor, name, method)
        self._methods.clear()
        super().__exit__(*exc_info)

    def method_key(self, name: str) -> str:
        """The key of a wrapped tensor method's calls in :attr:`counts`."""
        return f"Tensor.{name}"

    def op_key(self, func: Any) -> str:
        """The key of a syncing op in :attr:`counts`."""
        return str(func)

    def _counted_method(self, name: str, method: Any) -> Callable[..., Any]:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.counts[self.method_key(name)] += 1
            return method(tensor, *args, **kwargs)

        return counted

    def observe(self, func: Any, args: Sequence[Any], kwargs: Dict[str, Any]) -> None:
        """Called for every dispatched op before it runs: counts it when ``sync_test`` says it syncs."""
        if self.sync_test(func, args, kwargs):
            self.counts[self.op_key(func)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.observe(func, args, kwargs)
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
