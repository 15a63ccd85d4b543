"""Progress bars of long loops (shared-interfaces section 5): tqdm with a time estimate, hidden when asked
(``disable_progress=True``, ``pml-tride --quiet``) or when the output is not a terminal."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*args: Any, disable_progress: bool = False, **kwargs: Any) -> tqdm:
    """A ``tqdm.auto.tqdm`` bar (same arguments); ``disable=None`` lets tqdm hide it off a terminal."""
    return tqdm(*args, disable=True if disable_progress else None, **kwargs)
