"""The one chunk iterator of the package: every loop that pushes rows through a model (or builds distance blocks)
a chunk at a time takes its slices from :func:`chunk_slices`."""

from __future__ import annotations

from typing import Iterator, Optional

__all__ = ["chunk_slices"]


def chunk_slices(rows: int, chunk_size: Optional[int]) -> Iterator[slice]:
    """Consecutive slices ``[start, stop)`` that cover ``range(rows)``, each at most ``chunk_size`` long (``None``:
    one slice of all the rows; no slice when ``rows`` is 0). Index tensors, lists or ranges with them."""
    size = rows if chunk_size is None else chunk_size
    return (slice(start, min(start + size, rows)) for start in range(0, rows, max(size, 1)))
