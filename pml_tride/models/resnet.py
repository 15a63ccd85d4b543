"""ResNet-18 with a 512-d linear embedding head, as in the paper (Section 4.1)."""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

from .embedder import Embedder
from .torchvision_compat import import_torchvision

__all__ = ["resnet18_embedder", "RESNET18_FEATURES"]

RESNET18_FEATURES = 512


def resnet18_embedder(embedding_dim: int = 512, weights: Optional[str] = None,
                      normalize_output: bool = False) -> Embedder:
    """torchvision's ResNet-18 (fc removed) + a linear head, ImageNet mean/std inside.

    ``weights``: None (random initialisation), "imagenet" (torchvision's download; needs the network), or the
    path of a local state dict of torchvision's resnet18.
    """
    torchvision = import_torchvision()
    backbone = torchvision.models.resnet18(weights=None)
    if weights == "imagenet":
        try:
            state = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as error:  # the download failed: no network, proxy, ...
            raise ConnectionError(
                "could not download torchvision's ImageNet ResNet-18 weights; download them elsewhere and pass the "
                "file: weights='/path/to/resnet18-f37072fd.pth' (pml-tride train: --weights FILE; --weights none "
                "trains from a random initialisation)"
            ) from error
        backbone.load_state_dict(state)
    elif weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"ResNet-18 weights file not found: {weights!r}")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        try:
            backbone.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"{weights!r} is not a state dict of torchvision's resnet18: {error}") from error
    backbone.fc = nn.Identity()
    model = Embedder(backbone, RESNET18_FEATURES, embedding_dim, normalize_output=normalize_output)
    model.config = {"name": "resnet18", "kwargs": {"embedding_dim": embedding_dim, "weights": None,
                                                   "normalize_output": normalize_output}}
    return model
