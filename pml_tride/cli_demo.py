"""``pml-tride demo``: on entangled digits, an undefended, a naive-AT and a CA-TRIDE model trained, attacked and
compared with the collapse flag; ``--dataset digits``: the plain-digits demo (undefended and CA-TRIDE)."""

from __future__ import annotations

import argparse

from .cli_common import _device, add_dataset_option_arguments, dataset_options, pixel_value, prepare_output_folder
from .cli_validation import check_demo_arguments

__all__ = ["add_demo_arguments", "run_demo_command"]

# Test digits the --quick demo attacks.
QUICK_EVAL_QUERIES = 224


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo import DEMO_MODELS, DemoSettings

    defaults, plain = DemoSettings(), DemoSettings.plain_digits()
    parser.add_argument("--out", default=defaults.out, help="output folder (default: %(default)s)")
    parser.add_argument("--dataset", choices=sorted(DEMO_MODELS), default=defaults.dataset,
                        help="entangled-digits (default): undefended, naive AT and CA-TRIDE at eps = a, where an "
                             "attack can erase the sub-class evidence; digits: the plain-digits demo, undefended and "
                             "CA-TRIDE")
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
