"""The ``pml-tride`` command: ``demo``, ``train``, ``evaluate`` and ``embed``.

The parser, the logging options and :func:`main` live here; each command's arguments and run are in its own module
(:mod:`pml_tride.cli_demo`, :mod:`pml_tride.cli_train`, :mod:`pml_tride.cli_evaluate`, :mod:`pml_tride.cli_embed`),
the argument types and helpers they share in :mod:`pml_tride.cli_common`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Dict, List, Optional

from . import __version__
from .cli_common import (  # noqa: F401 (re-exported: pml_tride.cli's names before the split)
    DATASET_FLAGS,
    add_dataset_option_arguments,
    add_launch_arguments,
    add_workers_argument,
    dataset_options,
    lam_value,
    launch,
    non_negative_int,
    pixel_value,
    prepare_output_folder,
)
from .cli_demo import QUICK_EVAL_QUERIES, add_demo_arguments, run_demo_command  # noqa: F401
from .cli_embed import add_embed_arguments, run_embed_command
from .cli_evaluate import ROBRANK_COMPAT_HELP, add_evaluate_arguments, run_evaluate_command  # noqa: F401
from .cli_train import DEFAULT_BACKBONE_WEIGHTS, add_train_arguments, backbone_weights, run_train_command  # noqa: F401

__all__ = ["main", "build_parser"]

# PML's trainer formats the loss tensor for its progress bar, which makes torch warn once per process.
PML_PROGRESS_BAR_WARNING = "Converting a tensor with requires_grad=True to a scalar"


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
