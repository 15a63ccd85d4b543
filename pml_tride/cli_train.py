"""``pml-tride train``: train an embedding model with a defense."""

from __future__ import annotations

import argparse
import json
import os
from typing import Optional

import torch

from .cli_common import (
    DATASET_FLAGS,
    _device,
    add_dataset_option_arguments,
    add_launch_arguments,
    add_workers_argument,
    attack_names,
    dataset_options,
    lam_value,
    launch,
    pixel_value,
    prepare_output_folder,
)
from .cli_validation import check_train_arguments, resolve_resume, train_run_identity

__all__ = ["add_train_arguments", "run_train_command", "backbone_weights", "DEFAULT_BACKBONE_WEIGHTS"]

# --weights of resnet18 when none is given: ImageNet, the paper's initialisation.
DEFAULT_BACKBONE_WEIGHTS = "imagenet"


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


def _monitoring_hook(args: argparse.Namespace):
    from .datasets import build_dataset
    from .evaluation import RobustnessTester

    if args.eval_every < 0:
        raise ValueError(f"--eval-every must be >= 0, got {args.eval_every}")
    test_set = build_dataset(args.dataset, root=args.data_root, split="test", image_size=args.image_size,
                             **dataset_options(args))
    tester = RobustnessTester.monitoring(queries=args.eval_queries, steps=args.eval_steps,
                                         attacks=attack_names(args.eval_attacks), eps=args.eps, seed=args.seed,
                                         select=args.eval_select, num_workers=args.workers)
    hook = tester.end_of_epoch_hook({"test": test_set}, test_interval=args.eval_every,
                                    best_checkpoint=os.path.join(args.out, "best.pt"))
    return tester, hook


def monitoring_outcome(tester, args: argparse.Namespace) -> str:
    """The sentence on the epoch ``--eval-every`` selected: its number and best.pt, or why there is none."""
    from .evaluation import COLLAPSE_LIFT

    best = os.path.join(args.out, "best.pt")
    if tester.best_epoch is not None:
        return f"best epoch by {args.eval_select}: {tester.best_epoch} ({best})"
    if not tester.history:
        return (f"no epoch selected: no epoch was monitored (--eval-every {args.eval_every}, --epochs {args.epochs}); "
                "no best.pt written")
    return (f"no epoch selected: every monitored epoch was collapsed (benign R@1 within {COLLAPSE_LIFT:.0%} of the "
            "way from chance to 100); no best.pt written")


def backbone_weights(flag: Optional[str]) -> Optional[str]:
    """The ``weights`` of ``resnet18_embedder`` for ``--weights``: "imagenet" when not given (the paper's setting),
    None for "none", else the flag (a file)."""
    if flag is None:
        return DEFAULT_BACKBONE_WEIGHTS
    return None if flag == "none" else flag


def run_train_command(args: argparse.Namespace) -> int:
    from .datasets import build_dataset
    from .distributed import get_rank, get_world_size, init_from_environment, leave_process_group
    from .models import IMAGENET_MEAN, build_model, save_model
    from .recipes import train_embedder

    check_train_arguments(args)
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
        print(f"robustness over epochs: {os.path.join(args.out, 'robustness.json')}; "
              f"{monitoring_outcome(tester, args)}")
    path = os.path.join(args.out, "model.pt")
    if get_rank() == 0:
        recorded = {name: getattr(dataset, name) for name in DATASET_FLAGS if hasattr(dataset, name)}
        save_model(model, path, defense=args.defense, data={"dataset": args.dataset, "image_size": dataset.image_size,
                                                            **recorded}, run=identity)
        print(f"trained {args.defense} on {args.dataset} in {seconds:.0f} s ({get_world_size()} process(es), "
              f"{args.batch_size} images each per step); model: {path}; "
              f"evaluate with: pml-tride evaluate --checkpoint {path} --dataset {args.dataset}")
    leave_process_group()
    return 0

