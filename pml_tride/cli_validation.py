"""Checks of the ``pml-tride`` arguments that run before any data is loaded or any model is built.

Each command has one function (:func:`check_demo_arguments`, :func:`check_train_arguments`,
:func:`check_evaluate_arguments`); a failed check raises :class:`UsageError`, which the command line reports in one
line, naming the flag and the fix, with exit code 2.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
from typing import Any, Dict, Mapping, Optional

import torch

from .cli_common import DATASET_FLAGS, _device

__all__ = [
    "UsageError",
    "check_demo_arguments",
    "check_train_arguments",
    "check_evaluate_arguments",
    "check_device",
    "check_pixel_budget",
    "train_run_identity",
    "resolve_resume",
    "check_resume_identity",
]

logger = logging.getLogger(__name__)

# Images are in [0, 1]: an attack budget or step above this is not in pixel units.
MAX_PIXEL_BUDGET = 1.0
# A triplet needs two images of a class in the batch.
MIN_TRAIN_BATCH = 2
DEFAULT_MODELS = {"digits": "small_cnn", "entangled-digits": "small_cnn"}
FALLBACK_MODEL = "resnet18"
DEFAULT_EMBEDDING_DIMS = {"small_cnn": 64, "resnet18": 512}
# What a training checkpoint records of its run, and the flag that sets each.
RUN_IDENTITY_FLAGS = {"model": "--model", "embedding_dim": "--embedding-dim", "defense": "--defense",
                      "dataset": "--dataset", "image_size": "--image-size", "entanglement": "--entanglement",
                      "subclasses": "--subclasses"}
# Significant digits of a number shown in a resume mismatch.
SHOWN_DIGITS = 6


class UsageError(ValueError):
    """A command-line argument that cannot work; the message names the flag and the fix."""


def check_device(name: Optional[str]) -> None:
    """``--device`` names a torch device this machine has (None: the automatic choice)."""
    if name is None:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"--device {name!r} is not a torch device: use cpu, cuda or cuda:<index> (mps on Apple "
                         "silicon)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise UsageError(f"--device {name}: torch finds no CUDA device on this machine (torch {torch.__version__}, "
                             f"{build}): use --device cpu, or install a CUDA build of torch (see Getting started)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: torch finds no Apple MPS device on this machine: use --device cpu")


def check_pixel_budget(flag: str, value: float) -> None:
    """An attack budget or step size in pixel units of images in [0, 1]."""
    if value < 0:
        raise UsageError(f"{flag} must be >= 0, got {value:g}")
    if value > MAX_PIXEL_BUDGET:
        raise UsageError(f"{flag} {value:g} is above 1: budgets are in pixel units of images in [0, 1], e.g. "
                         f"{flag} {value:g}/255")


def _check_at_least(flag: str, value: Optional[int], minimum: int, why: str = "") -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}{why}, got {value}")


def check_demo_arguments(args: argparse.Namespace) -> None:
    check_device(args.device)
    check_pixel_budget("--eps", args.eps)
    _check_at_least("--epochs", args.epochs, 1)
    _check_at_least("--image-size", args.image_size, 1)


def train_run_identity(args: argparse.Namespace) -> Dict[str, Any]:
    """What ``pml-tride train`` builds: model, embedding dimension, defense, data set and image size, and for a data
    set that takes them (entangled-digits) its ``--entanglement`` and ``--subclasses``, with the defaults filled in
    (small_cnn on the built-in digits data sets, resnet18 otherwise; 64 or 512 dimensions; the data set's image size
    and options)."""
    from .datasets import DATASET_OPTIONS, DATASETS, DEFAULT_IMAGE_SIZES

    model = args.model or DEFAULT_MODELS.get(args.dataset, FALLBACK_MODEL)
    identity = {"model": model, "embedding_dim": args.embedding_dim or DEFAULT_EMBEDDING_DIMS[model],
                "defense": args.defense, "dataset": args.dataset,
                "image_size": args.image_size or DEFAULT_IMAGE_SIZES[args.dataset]}
    defaults = inspect.signature(DATASETS[args.dataset]).parameters
    for name in DATASET_FLAGS:
        if name in DATASET_OPTIONS.get(args.dataset, ()):
            given = getattr(args, name)
            identity[name] = defaults[name].default if given is None else given
    return identity


def resolve_resume(args: argparse.Namespace) -> Optional[str]:
    """The checkpoint ``--resume`` names: a path, or for ``auto`` (also after a torchrun restart) OUT/latest.pt when
    it exists."""
    from .trainers.tride_trainer import LATEST_CHECKPOINT

    resume = args.resume
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # a group restarted by torchrun continues from the last checkpoint
    if resume == "auto":
        latest = os.path.join(args.out, LATEST_CHECKPOINT)
        return latest if os.path.isfile(latest) else None
    return resume


def _recorded_identity(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The run a checkpoint records: its ``run`` entry, or, in a checkpoint without one, what its model and data
    entries tell."""
    if isinstance(state.get("run"), Mapping):
        return dict(state["run"])
    recorded: Dict[str, Any] = {}
    model = state.get("model")
    if isinstance(model, Mapping):
        recorded["model"] = model.get("name")
        recorded["embedding_dim"] = (model.get("kwargs") or {}).get("embedding_dim")
    recorded["image_size"] = (state.get("data") or {}).get("image_size")
    return {key: value for key, value in recorded.items() if value is not None}


def _shown(value: Any) -> str:
    return f"{value:.{SHOWN_DIGITS}g}" if isinstance(value, float) else str(value)


def check_resume_identity(path: str, identity: Mapping[str, Any]) -> None:
    """The checkpoint at ``path`` is a training checkpoint of the run ``identity`` describes; a checkpoint that does
    not record all of it resumes with a warning."""
    from .checkpoint_io import load_state

    state = load_state(path)
    if not isinstance(state, Mapping) or "models" not in state:
        raise UsageError(f"--resume {path}: not a training checkpoint (resume from OUT/latest.pt or OUT/epoch_<k>.pt; "
                         "model.pt holds only the weights)")
    recorded = _recorded_identity(state)
    differences = [f"{flag} {_shown(recorded[key])} there, {_shown(identity[key])} here"
                   for key, flag in RUN_IDENTITY_FLAGS.items()
                   if key in recorded and key in identity and recorded[key] != identity[key]]
    if differences:
        raise UsageError(f"--resume {path} is a checkpoint of another run ({'; '.join(differences)}): pass the same "
                         "settings to continue it, or write the new run to another --out")
    unchecked = [flag for key, flag in RUN_IDENTITY_FLAGS.items() if key in identity and key not in recorded]
    if unchecked:
        logger.warning("--resume %s does not record its %s (an older checkpoint): resuming without checking them",
                       path, ", ".join(unchecked))


def check_train_arguments(args: argparse.Namespace) -> None:
    from .recipes import defense_miner, needs_spc2_batches

    check_device(args.device)
    check_pixel_budget("--eps", args.eps)
    check_pixel_budget("--alpha", args.alpha)
    _check_at_least("--epochs", args.epochs, 1)
    _check_at_least("--batch-size", args.batch_size, MIN_TRAIN_BATCH, " (a triplet needs two images of a class)")
    _check_at_least("--image-size", args.image_size, 1)
    _check_at_least("--embedding-dim", args.embedding_dim, 1)
    miner = defense_miner(args.defense, margin=args.margin, seed=args.seed)
    if needs_spc2_batches(miner) and args.batch_size % MIN_TRAIN_BATCH:
        raise UsageError(f"--batch-size {args.batch_size}: defense {args.defense!r} mines with "
                         f"{type(miner).__name__}, which needs SPC-2 batches (same-class pairs in rows 2i and 2i + 1): "
                         f"use an even size, e.g. --batch-size {args.batch_size + 1}")
    resume = resolve_resume(args)
    if resume is not None:
        check_resume_identity(resume, train_run_identity(args))
    if args.sync_bn:
        _check_sync_bn(args)


def _check_sync_bn(args: argparse.Namespace) -> None:
    """--sync-bn needs several processes on GPUs: refused before any process is launched."""
    from .distributed import check_sync_batchnorm, launched_by_torchrun

    world_size = int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else args.nproc_per_node
    check_sync_batchnorm(world_size, _device(args.device))


def check_evaluate_arguments(args: argparse.Namespace) -> None:
    check_device(args.device)
    check_pixel_budget("--eps", args.eps)
    check_pixel_budget("--alpha", args.alpha)
    _check_at_least("--batch-size", args.batch_size, 1)
    _check_at_least("--image-size", args.image_size, 1)
