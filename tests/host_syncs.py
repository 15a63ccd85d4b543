"""The tests' host-sync counter: :class:`pml_tride.host_sync_counter.HostSyncCounter` with its counts keyed by the
op's short name (``_local_scalar_dense``) and the method's (``tolist``), so tests can bound syncs without a GPU."""

from __future__ import annotations

from typing import Any

from pml_tride import host_sync_counter


class HostSyncCounter(host_sync_counter.HostSyncCounter):
    """Counts host syncs by short op name inside its ``with`` block (``counts``; ``total``)."""

    def method_key(self, name: str) -> str:
        return name

    def op_key(self, func: Any) -> str:
        return func.overloadpacket.__name__
