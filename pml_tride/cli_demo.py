"""``pml-tride demo``: train an undefended and a CA-TRIDE model on digits, attack both, compare."""

from __future__ import annotations

import argparse

from .cli_common import _device, pixel_value, prepare_output_folder
from .cli_validation import check_demo_arguments

__all__ = ["add_demo_arguments", "run_demo_command"]

# Test digits the --quick demo attacks.
QUICK_EVAL_QUERIES = 224


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo import DemoSettings

    defaults = DemoSettings()
    parser.add_argument("--out", default=defaults.out, help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--eps", type=pixel_value, default=defaults.eps, help="attack budget (default 16/255)")
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps)
    parser.add_argument("--eval-steps", type=int, default=defaults.eval_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--monitor-every", type=int, default=defaults.monitor_every,
                        help="monitor ARS/ERS/R@1 every K epochs during training (0: never; default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: 2 epochs, 2 training and 4 attack steps on {QUICK_EVAL_QUERIES} test "
                             "digits, monitoring every epoch")


def run_demo_command(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, demo_summary, run_demo

    check_demo_arguments(args)
    settings = DemoSettings(out=args.out, epochs=args.epochs, image_size=args.image_size, eps=args.eps,
                            train_alpha=args.eps / 4, eval_alpha=args.eps / 4, train_steps=args.train_steps,
                            eval_steps=args.eval_steps, seed=args.seed, monitor_every=args.monitor_every)
    if args.quick:
        settings.epochs, settings.train_steps, settings.eval_steps = 2, 2, 4
        settings.monitor_every, settings.monitor_steps, settings.eval_queries = 1, 2, QUICK_EVAL_QUERIES
    prepare_output_folder(settings.out)
    reports = run_demo(settings, device=_device(args.device), progress=not args.quiet)
    print(demo_summary(settings, reports))
    return 0

