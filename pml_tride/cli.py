"""The ``pml-tride`` command: ``demo``, ``train``, ``evaluate`` and ``embed``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from fractions import Fraction
from typing import Dict, List, Optional, Union

import torch

from . import __version__
from .cli_validation import (
    check_demo_arguments,
    check_evaluate_arguments,
    check_train_arguments,
    resolve_resume,
    train_run_identity,
)

__all__ = ["main"]

logger = logging.getLogger(__name__)

# PML's trainer formats the loss tensor for its progress bar, which makes torch warn once per process.
PML_PROGRESS_BAR_WARNING = "Converting a tensor with requires_grad=True to a scalar"
# --weights of resnet18 when none is given: ImageNet, the paper's initialisation.
DEFAULT_BACKBONE_WEIGHTS = "imagenet"
# Test digits the --quick demo attacks.
QUICK_EVAL_QUERIES = 224
ROBRANK_COMPAT_HELP = ("reproduce robrank's attack quirks: GTM's target index, LTM keeping the query's own entry among "
                       "its positives, ES:D measured one step stale, and CA+/QA+/TMA targets that can be the attacked "
                       "image itself")
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


# ----------------------------------------------------------------------------------------------- demo
def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo import DEMO_MODELS, DemoSettings

    defaults, plain = DemoSettings(), DemoSettings.plain_digits()
    parser.add_argument("--out", default=defaults.out, help="output folder (default: %(default)s)")
    parser.add_argument("--dataset", choices=sorted(DEMO_MODELS), default=defaults.dataset,
                        help="entangled-digits (default): undefended, naive AT and CA-TRIDE, where naive AT collapses; "
                             "digits: the plain-digits demo, undefended and CA-TRIDE")
    add_dataset_option_arguments(parser)
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default {defaults.epochs} ({plain.epochs} for --dataset digits)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--eps", type=pixel_value, default=defaults.eps, help="attack budget (default 16/255)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help=f"default {defaults.train_steps} ({plain.train_steps} for --dataset digits)")
    parser.add_argument("--eval-steps", type=int, default=None,
                        help=f"default {defaults.eval_steps} ({plain.eval_steps} for --dataset digits)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--monitor-every", type=int, default=None,
                        help=f"monitor ARS/ERS/R@1 every K epochs during training (0: never; default "
                             f"{defaults.monitor_every}, {plain.monitor_every} for --dataset digits)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: 2 epochs of 2 iterations, 2 training and 2 attack steps on "
                             f"{QUICK_EVAL_QUERIES} test images, monitoring every epoch")


def run_demo_command(args: argparse.Namespace) -> int:
    import dataclasses

    from .demo import DemoSettings, demo_summary, run_demo

    base = DemoSettings() if args.dataset == "entangled-digits" else DemoSettings.plain_digits()
    given = {"epochs": args.epochs, "train_steps": args.train_steps, "eval_steps": args.eval_steps,
             "monitor_every": args.monitor_every}
    for name, value in given.items():
        setattr(args, name, getattr(base, name) if value is None else value)
    check_demo_arguments(args)
    settings = dataclasses.replace(
        base, out=args.out, image_size=args.image_size, eps=args.eps, train_alpha=args.eps / 4,
        eval_alpha=args.eps / 4, seed=args.seed, **dataset_options(args),
        **{name: getattr(args, name) for name in given})
    if args.quick:
        settings = dataclasses.replace(settings, epochs=2, iterations_per_epoch=2, train_steps=2, eval_steps=2,
                                       monitor_every=1, monitor_steps=2, eval_queries=QUICK_EVAL_QUERIES)
    prepare_output_folder(settings.out)
    reports = run_demo(settings, device=_device(args.device), progress=not args.quiet)
    print(demo_summary(settings, reports))
    return 0


# ----------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS
    from .evaluation import MONITORING_SETTINGS
    from .recipes import DEFENSES
    from .trainers.tride_trainer import PRECISIONS

    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--data-root", help="folder of the data set's standard layout; for image-folder, a folder "
                        "with one sub-folder per class (not needed for digits)")
    parser.add_argument("--defense", choices=sorted(DEFENSES), default="ca-tride")
    parser.add_argument("--model", choices=["small_cnn", "resnet18"], default=None,
                        help="default: small_cnn for digits, resnet18 otherwise")
    parser.add_argument("--weights", default=None,
                        help="resnet18 initialisation: 'imagenet' (torchvision's download, the default, as the paper), "
                             "a local state-dict file of torchvision's resnet18, or 'none' (random)")
    parser.add_argument("--embedding-dim", type=int, default=None, help="default: 64 (small_cnn), 512 (resnet18)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 16 for digits, 224 otherwise")
    add_dataset_option_arguments(parser)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--eps", type=pixel_value, default=8 / 255)
    parser.add_argument("--alpha", type=pixel_value, default=1 / 255)
    parser.add_argument("--steps", type=int, default=None,
                        help="PGD steps (default: the defense's own, 16 for CA-TRIDE, 32 for est/act/hm)")
    parser.add_argument("--lam", type=lam_value, default=None, help="lambda of CA-TRIDE's collapseness (default 10), "
                        "or 'auto': set from the entanglement of the training batches")
    parser.add_argument("--max-iters", type=int, default=None, help="iterations per epoch (default: one pass)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="runs/train", help="checkpoints and the final model go here")
    parser.add_argument("--resume", help="a checkpoint of this run to continue from; 'auto': OUT/latest.pt if it "
                        "exists (the default after a torchrun restart)")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="also write OUT/latest.pt every that many iterations (mid-epoch)")
    parser.add_argument("--eval-every", type=int, default=0, metavar="K",
                        help="every K epochs, monitor robustness on the test split with the cheap RobustnessTester "
                             "(ARS, ERS, R@1 per epoch in the log, robustness.json and the checkpoints' history; "
                             "the best epoch is saved as best.pt); 0: never")
    parser.add_argument("--eval-queries", type=int, default=MONITORING_SETTINGS["queries"],
                        help="attacked test images per monitoring run (default: %(default)s)")
    parser.add_argument("--eval-steps", type=int, default=MONITORING_SETTINGS["steps"],
                        help="PGD steps of the monitoring attacks (default: %(default)s)")
    parser.add_argument("--eval-attacks", default="all", help="'all' or a comma list of monitoring attacks")
    parser.add_argument("--eval-select", choices=["ARS", "ERS", "R@1"], default="ARS",
                        help="what best.pt maximises")
    add_workers_argument(parser)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                        help="bf16: autocast the training forward and the attack's passes (fp32 weights and "
                             "perturbations); for GPUs, not yet measured on one")
    parser.add_argument("--channels-last", action="store_true",
                        help="models and batches in channels-last memory format (for GPUs)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="BatchNorm statistics over the batches of all processes (SyncBatchNorm); needs "
                             "--nproc-per-node > 1 on GPUs")
    add_launch_arguments(parser)


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


def _attack_names(text: str):
    return "all" if text == "all" else [name.strip() for name in text.split(",")]


def _monitoring_hook(args: argparse.Namespace):
    from .datasets import build_dataset
    from .evaluation import RobustnessTester

    if args.eval_every < 0:
        raise ValueError(f"--eval-every must be >= 0, got {args.eval_every}")
    test_set = build_dataset(args.dataset, root=args.data_root, split="test", image_size=args.image_size,
                             **dataset_options(args))
    tester = RobustnessTester.monitoring(queries=args.eval_queries, steps=args.eval_steps,
                                         attacks=_attack_names(args.eval_attacks), eps=args.eps, seed=args.seed,
                                         select=args.eval_select, num_workers=args.workers)
    hook = tester.end_of_epoch_hook({"test": test_set}, test_interval=args.eval_every,
                                    best_checkpoint=os.path.join(args.out, "best.pt"))
    return tester, hook


def backbone_weights(flag: Optional[str]) -> Optional[str]:
    """The ``weights`` of ``resnet18_embedder`` for ``--weights``: "imagenet" when not given (the paper's setting),
    None for "none", else the flag (a file)."""
    if flag is None:
        return DEFAULT_BACKBONE_WEIGHTS
    return None if flag == "none" else flag


def run_train_command(args: argparse.Namespace) -> int:
    from .datasets import build_dataset
    from .distributed import get_rank, get_world_size, init_from_environment, is_distributed
    from .models import IMAGENET_MEAN, build_model, save_model
    from .recipes import train_embedder

    check_train_arguments(args)
    if args.sync_bn:  # refused before any process is launched
        from .distributed import check_sync_batchnorm, launched_by_torchrun

        world_size = int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else args.nproc_per_node
        check_sync_batchnorm(world_size, _device(args.device))
    launched = launch(args)
    if launched is not None:
        return launched
    prepare_output_folder(args.out)
    device = init_from_environment(_device(args.device))
    resume = resolve_resume(args)
    if resume is not None and get_rank() == 0:
        print(f"resuming from {resume}", flush=True)
    torch.manual_seed(args.seed)  # the initial weights, as everything else, follow --seed
    options = dataset_options(args)
    dataset = build_dataset(args.dataset, root=args.data_root, split="train", image_size=args.image_size, **options)
    identity = train_run_identity(args)
    model_name = identity["model"]
    kwargs = {"embedding_dim": identity["embedding_dim"]}
    channels = dataset[0][0].shape[0]
    if model_name == "resnet18":
        if channels != len(IMAGENET_MEAN):  # before any download
            raise ValueError(f"--model {model_name} takes {len(IMAGENET_MEAN)}-channel images but the {args.dataset} "
                             f"images have {channels}: use --model small_cnn, which takes any number of channels")
        # a resumed run takes every weight from its checkpoint: no download
        kwargs["weights"] = None if resume is not None else backbone_weights(args.weights)
    elif args.weights not in (None, "none"):
        raise ValueError(f"--weights {args.weights} is for --model resnet18; {model_name} has no pretrained weights")
    else:
        kwargs["in_channels"] = channels
    model = build_model(model_name, **kwargs)
    if args.sync_bn:
        from .distributed import convert_sync_batchnorm

        convert_sync_batchnorm(model)
    end_of_epoch_hook, tester = None, None
    if args.eval_every:
        tester, end_of_epoch_hook = _monitoring_hook(args)
    trainer, seconds = train_embedder(
        model, dataset, defense=args.defense, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, margin=args.margin, eps=args.eps, alpha=args.alpha, steps=args.steps,
        lam=args.lam, seed=args.seed, device=device, checkpoint_dir=args.out, resume=resume,
        iterations_per_epoch=args.max_iters, checkpoint_every=args.checkpoint_every,
        end_of_epoch_hook=end_of_epoch_hook, disable_progress=args.quiet, run_info=identity, num_workers=args.workers,
        precision=args.precision, channels_last=args.channels_last,
    )
    if tester is not None and get_rank() == 0:
        with open(os.path.join(args.out, "robustness.json"), "w") as handle:
            json.dump(tester.history, handle, indent=1)
        print(f"robustness over epochs: {os.path.join(args.out, 'robustness.json')}; best epoch by "
              f"{args.eval_select}: {tester.best_epoch} ({os.path.join(args.out, 'best.pt')})")
    path = os.path.join(args.out, "model.pt")
    if get_rank() == 0:
        recorded = {name: getattr(dataset, name) for name in DATASET_FLAGS if hasattr(dataset, name)}
        save_model(model, path, defense=args.defense, data={"dataset": args.dataset, "image_size": dataset.image_size,
                                                            **recorded}, run=identity)
        print(f"trained {args.defense} on {args.dataset} in {seconds:.0f} s ({get_world_size()} process(es), "
              f"{args.batch_size} images each per step); model: {path}; "
              f"evaluate with: pml-tride evaluate --checkpoint {path} --dataset {args.dataset}")
    if is_distributed():
        torch.distributed.destroy_process_group()
    return 0


# ----------------------------------------------------------------------------------------------- evaluate
def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS

    parser.add_argument("--checkpoint", required=True,
                        help="a pml-tride model or trainer checkpoint, a TorchScript file, or (with --trust-pickle) "
                             "a torch.save'd module")
    parser.add_argument("--trust-pickle", action="store_true", help="allow unpickling a whole module (runs code)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--data-root")
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: the size recorded in the checkpoint, else 16 for digits, 224 otherwise")
    add_dataset_option_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--eps", type=pixel_value, default=8 / 255)
    parser.add_argument("--alpha", type=pixel_value, default=3 / 255)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--attacks", default="all", help="'all', 'none' (benign metrics, chance R@1, collapse flag "
                        "and entanglement only: seconds) or a comma list, e.g. CA+,QA-,ES:R")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robrank-compat", action="store_true", help=ROBRANK_COMPAT_HELP)
    parser.add_argument("--max-batches", type=int, default=None, help="attack only the first batches")
    parser.add_argument("--queries", type=int, default=None,
                        help="attack only a fixed random subset of this many test images (default: all)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="report.json", help="JSON report; the .md and .png go next to it")
    add_workers_argument(parser)
    add_launch_arguments(parser)


def run_evaluate_command(args: argparse.Namespace) -> int:
    from .datasets import build_dataset
    from .distributed import get_rank, init_from_environment, is_distributed
    from .evaluation import RobustnessEvaluator
    from .models import load_model

    check_evaluate_arguments(args)
    launched = launch(args)
    if launched is not None:
        return launched
    prepare_output_folder(os.path.dirname(args.out))
    device = init_from_environment(_device(args.device))
    model = load_model(args.checkpoint, map_location=device, trust_pickle=args.trust_pickle)
    trained_size = getattr(model, "data_info", {}).get("image_size")
    if args.image_size is not None and trained_size is not None and args.image_size != trained_size:
        logger.warning("--image-size %s, but the model was trained on %sx%s images", args.image_size, trained_size,
                       trained_size)
    image_size = args.image_size if args.image_size is not None else trained_size
    options = dataset_options(args, recorded=getattr(model, "data_info", None))
    dataset = build_dataset(args.dataset, root=args.data_root, split="test", image_size=image_size, **options)
    evaluator = RobustnessEvaluator(eps=args.eps, alpha=args.alpha, steps=args.steps,
                                    attacks=args.attacks if args.attacks == "none" else _attack_names(args.attacks),
                                    batch_size=args.batch_size, seed=args.seed,
                                    robrank_compat=args.robrank_compat, device=device, max_batches=args.max_batches,
                                    queries=args.queries, progress=not args.quiet, num_workers=args.workers)
    report = evaluator.evaluate(model, dataset)
    rank = get_rank()
    if is_distributed():
        torch.distributed.destroy_process_group()
    if rank != 0:  # every rank holds the whole report; rank 0 writes it
        return 0
    report.settings.update({"checkpoint": args.checkpoint, "dataset": args.dataset, "image_size": dataset.image_size,
                            **options})
    markdown = report.to_markdown(title=os.path.basename(args.checkpoint))
    print(markdown)
    report.to_json(args.out)
    stem = os.path.splitext(args.out)[0]
    with open(stem + ".md", "w") as handle:
        handle.write(markdown)
    written = [args.out, stem + ".md"]
    if report.ers is not None and report.ars is not None:
        try:
            report.plot(stem + ".png")
            written.append(stem + ".png")
        except ImportError:
            logger.warning("matplotlib is not installed: no bar chart")
    print("written: " + ", ".join(written))
    return 0


# ----------------------------------------------------------------------------------------------- embed
def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASETS

    parser.add_argument("--checkpoint", required=True,
                        help="a pml-tride model or trainer checkpoint, a TorchScript file, or (with --trust-pickle) "
                             "a torch.save'd module")
    parser.add_argument("--trust-pickle", action="store_true", help="allow unpickling a whole module (runs code)")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--data-root")
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: the size recorded in the checkpoint, else 16 for digits, 224 otherwise")
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--device", default=None)
    add_workers_argument(parser)
    parser.add_argument("--out", default="embeddings.npy",
                        help="the (N, dim) float32 embeddings (.npy); the labels go to <stem>.labels.npy beside it")


def run_embed_command(args: argparse.Namespace) -> int:
    import numpy as np

    from .datasets import build_dataset
    from .models import load_model
    from .recipes import embed_dataset

    if not args.out.endswith(".npy"):
        raise ValueError(f"--out must name a .npy file, got {args.out!r}")
    prepare_output_folder(os.path.dirname(args.out))
    device = _device(args.device)
    model = load_model(args.checkpoint, map_location=device, trust_pickle=args.trust_pickle)
    trained_size = getattr(model, "data_info", {}).get("image_size")
    image_size = args.image_size if args.image_size is not None else trained_size
    dataset = build_dataset(args.dataset, root=args.data_root, split=args.split, image_size=image_size)
    # the test transform on both splits: embeddings of the images as they are, no random crop or flip
    if hasattr(dataset, "transform"):
        from .datasets import test_transform

        dataset.transform = test_transform(dataset.image_size)
    embeddings, labels = embed_dataset(model, dataset, batch_size=args.batch_size, device=device,
                                       num_workers=args.workers)
    labels_path = os.path.splitext(args.out)[0] + ".labels.npy"
    np.save(args.out, embeddings)
    np.save(labels_path, labels)
    print(f"embedded {len(labels)} {args.split} images of {args.dataset} into {embeddings.shape[1]} dimensions; "
          f"written: {args.out}, {labels_path}")
    return 0


COMMANDS: Dict[str, tuple] = {
    "demo": ("train an undefended and a CA-TRIDE model on digits, attack both, compare", add_demo_arguments,
             run_demo_command),
    "train": ("train an embedding model with a defense", add_train_arguments, run_train_command),
    "evaluate": ("evaluate a model against the ten ranking attacks (ERS, ARS)", add_evaluate_arguments,
                 run_evaluate_command),
    "embed": ("write a model's embeddings of a data set split (.npy) and its labels", add_embed_arguments,
              run_embed_command),
}


def verbosity_parser() -> argparse.ArgumentParser:
    """The --quiet / --verbose options every command takes."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and results; no progress bars")
    group.add_argument("-v", "--verbose", action="store_true", help="debug messages, PML's included")
    return parser


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Messages of pml_tride (and, with --verbose, PML's) to stderr: warnings only with --quiet, debug messages
    with --verbose, else information."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    for name in ("pml_tride", "PML") if verbose else ("pml_tride",):
        library_logger = logging.getLogger(name)
        library_logger.handlers = [handler]
        library_logger.setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pml-tride", description="CA-TRIDE adversarial training and "
                                     "ranking-robustness evaluation for pytorch-metric-learning")
    parser.add_argument("--version", action="version", version=f"pml-tride {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    common = verbosity_parser()
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        subparser = subcommands.add_parser(name, help=help_text, description=help_text, parents=[common])
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 0
    warnings.filterwarnings("ignore", message=PML_PROGRESS_BAR_WARNING)
    configure_logging(args.quiet, args.verbose)
    try:
        return args.run(args)
    except (ValueError, OSError, ImportError, FloatingPointError) as error:  # OSError: missing files, downloads
        print(f"pml-tride {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
