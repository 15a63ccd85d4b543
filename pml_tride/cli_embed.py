"""``pml-tride embed``: write a model's embeddings of a data set split (.npy) and its labels."""

from __future__ import annotations

import argparse
import os

from .cli_common import (
    _device,
    add_checkpoint_arguments,
    add_workers_argument,
    load_checkpoint_model,
    prepare_output_folder,
)

__all__ = ["add_embed_arguments", "run_embed_command"]


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--device", default=None)
    add_workers_argument(parser)
    parser.add_argument("--out", default="embeddings.npy",
                        help="the (N, dim) float32 embeddings (.npy); the labels go to <stem>.labels.npy beside it")


def run_embed_command(args: argparse.Namespace) -> int:
    import numpy as np

    from .datasets import build_dataset
    from .recipes import embed_dataset

    if not args.out.endswith(".npy"):
        raise ValueError(f"--out must name a .npy file, got {args.out!r}")
    prepare_output_folder(os.path.dirname(args.out))
    device = _device(args.device)
    model, image_size = load_checkpoint_model(args, device)
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

