"""Argument types, options and helpers the ``pml-tride`` commands share."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from fractions import Fraction
from typing import Dict, List, Optional, Tuple, Union

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
    "add_checkpoint_arguments",
    "load_checkpoint_model",
]

logger = logging.getLogger(__name__)

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



def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """The model to load and the data set to run it on, for the commands that take a trained model."""
    from .datasets import DATASETS

    parser.add_argument("--checkpoint", required=True,
                        help="a pml-tride model or trainer checkpoint, a TorchScript file, or (with --trust-pickle) "
                             "a torch.save'd module")
    parser.add_argument("--trust-pickle", action="store_true", help="allow unpickling a whole module (runs code)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--data-root")
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: the size recorded in the checkpoint, else 16 for digits, 224 otherwise")


def load_checkpoint_model(args: argparse.Namespace, device: torch.device) -> Tuple[torch.nn.Module, Optional[int]]:
    """The model ``--checkpoint`` holds, and the image size to run it at: ``--image-size``, else the size the model
    was trained at (recorded in the checkpoint; None when not recorded). A warning when the two differ."""
    from .models import load_model

    model = load_model(args.checkpoint, map_location=device, trust_pickle=args.trust_pickle)
    trained_size = getattr(model, "data_info", {}).get("image_size")
    if args.image_size is not None and trained_size is not None and args.image_size != trained_size:
        logger.warning("--image-size %s, but the model was trained on %sx%s images", args.image_size, trained_size,
                       trained_size)
    return model, args.image_size if args.image_size is not None else trained_size
