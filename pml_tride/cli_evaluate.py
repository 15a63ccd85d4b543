"""``pml-tride evaluate``: evaluate a model against the ten ranking attacks (ERS, ARS)."""

from __future__ import annotations

import argparse
import logging
import os

from .cli_common import (
    _device,
    add_checkpoint_arguments,
    add_dataset_option_arguments,
    add_launch_arguments,
    add_workers_argument,
    attack_names,
    dataset_options,
    launch,
    load_checkpoint_model,
    pixel_value,
    prepare_output_folder,
)
from .cli_validation import check_evaluate_arguments

__all__ = ["add_evaluate_arguments", "run_evaluate_command", "ROBRANK_COMPAT_HELP"]

logger = logging.getLogger(__name__)

ROBRANK_COMPAT_HELP = ("reproduce robrank's attack quirks: GTM's target index, LTM keeping the query's own entry among "
                       "its positives, ES:D measured one step stale, and CA+/QA+/TMA targets that can be the attacked "
                       "image itself")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
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
    from .distributed import get_rank, init_from_environment, leave_process_group
    from .evaluation import RobustnessEvaluator

    check_evaluate_arguments(args)
    launched = launch(args)
    if launched is not None:
        return launched
    prepare_output_folder(os.path.dirname(args.out))
    device = init_from_environment(_device(args.device))
    model, image_size = load_checkpoint_model(args, device)
    options = dataset_options(args, recorded=getattr(model, "data_info", None))
    dataset = build_dataset(args.dataset, root=args.data_root, split="test", image_size=image_size, **options)
    evaluator = RobustnessEvaluator(eps=args.eps, alpha=args.alpha, steps=args.steps,
                                    attacks=args.attacks if args.attacks == "none" else attack_names(args.attacks),
                                    batch_size=args.batch_size, seed=args.seed,
                                    robrank_compat=args.robrank_compat, device=device, max_batches=args.max_batches,
                                    queries=args.queries, progress=not args.quiet, num_workers=args.workers)
    report = evaluator.evaluate(model, dataset)
    rank = get_rank()
    leave_process_group()
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

