"""Crash-safe checkpoint files: atomic writes and reads that fail with a clear error.

:func:`atomic_save` writes to a temporary file in the same folder, flushes and fsyncs it, then renames it over the
target (``os.replace``, atomic on POSIX and Windows) and fsyncs the folder: a process killed at any moment leaves
either the previous file or the new one, never a half-written one. :func:`load_state` reads with
``torch.load(weights_only=True)`` and turns a truncated or corrupted file into a :class:`CorruptCheckpointError`
that names the file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

__all__ = ["CorruptCheckpointError", "atomic_save", "load_state"]

TEMPORARY_SUFFIX = ".partial"


class CorruptCheckpointError(ValueError):
    """A checkpoint file that exists but cannot be read (truncated, corrupted, or not written by torch.save)."""


def _fsync_folder(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_save(state: Any, path: str) -> None:
    """``torch.save(state, path)`` through a temporary file, fsync and rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=TEMPORARY_SUFFIX, dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def load_state(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a missing file raises FileNotFoundError, an unreadable one a
    :class:`CorruptCheckpointError` naming the file (no traceback from inside torch)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for broken files
        size = os.path.getsize(path)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        problem = CorruptCheckpointError(
            f"checkpoint {path!r} ({size} bytes) is truncated or corrupted and cannot be read ({message}); "
            "resume from an earlier checkpoint (epoch_<k>.pt) or start again"
        )
    raise problem
