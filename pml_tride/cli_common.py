"""Argument types, options and helpers the ``pml-tride`` commands share."""

from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from typing import Dict, List, Optional, Union

import torch

__all__ = [
    "pixel_value",
    "lam_value",
    "non_negative_int",
    "add_dataset_option_arguments",
    "dataset_options",
    "prepare_output_folder",
    "add_workers_argument",
    "add_launch_arguments",
    "launch",
    "attack_names",
]

# The build_dataset options the command line takes (for entangled-digits).
DATASET_FLAGS = ("entanglement", "subclasses")


def pixel_value(text: str) -> float:
    """A budget in pixel units, as a number or a fraction: 0.0314, 8/255."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as error:
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from error


def lam_value(text: str) -> Union[float, str]:
    """--lam: a number, or 'auto'."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from error


def add_dataset_option_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entanglement", type=pixel_value, default=None,
                        help="entangled-digits: the sub-class pattern's L-inf amplitude, e.g. 16/255 (default 16/255)")
    parser.add_argument("--subclasses", type=int, default=None,
                        help="entangled-digits: sub-classes per digit (default 4)")


def dataset_options(args: argparse.Namespace, recorded: Optional[dict] = None) -> Dict[str, object]:
    """The given --entanglement/--subclasses as build_dataset options, over those ``recorded`` with a model trained
    on the same data set; an error if given for a data set that takes none."""
    from .datasets import DATASET_OPTIONS

    given = {name: getattr(args, name) for name in DATASET_FLAGS if getattr(args, name) is not None}
    if given and not set(given) <= set(DATASET_OPTIONS.get(args.dataset, ())):
        flags = ", ".join("--" + name for name in given)
        raise ValueError(f"{flags} only apply to --dataset entangled-digits, not {args.dataset}")
    recorded = recorded if recorded and recorded.get("dataset") == args.dataset else {}
    return {**{name: recorded[name] for name in DATASET_FLAGS if name in recorded}, **given}


def _device(name: Optional[str]) -> torch.device:
    return torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_output_folder(folder: str) -> str:
    """Create ``folder`` (and its parents) and check that it is writable, before any long work."""
    folder = folder or "."
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write to the output folder {folder!r}")
    return folder


def non_negative_int(text: str) -> int:
    """A count that may be 0: 0, 2, 8."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from error
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                        help="data loader worker processes (default: 0 on CPU; on CUDA min(8, CPU cores / processes "
                             "on this machine))")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nproc-per-node", type=int, default=1,
                        help="processes on this machine (one per GPU), launched through torch.distributed.run")
    parser.add_argument("--max-restarts", type=int, default=0,
                        help="with --nproc-per-node: restart the whole group this many times after a failure")


def launch(args: argparse.Namespace) -> Optional[int]:
    """Relaunch this command under ``torch.distributed.run`` (torchrun) with ``--nproc-per-node`` processes; None
    when no launch is needed (one process, or already a torchrun worker)."""
    from .distributed import launched_by_torchrun

    if args.nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node must be >= 1, got {args.nproc_per_node}")
    if args.nproc_per_node == 1 or launched_by_torchrun():
        return None
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(args.nproc_per_node), "--max-restarts",
                  str(args.max_restarts), "-m", "pml_tride.cli", *args.argv])
    except ChildFailedError as error:
        print(f"pml-tride {args.command}: error: a worker process failed: {error}", file=sys.stderr)
        return 1
    return 0


def attack_names(text: str) -> Union[str, List[str]]:
    """--attacks/--eval-attacks: 'all', or a comma list of attack names."""
    return "all" if text == "all" else [name.strip() for name in text.split(",")]

