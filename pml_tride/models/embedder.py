"""Embedder: pixels in [0, 1] -> mean/std normalisation -> backbone -> linear head (-> L2 normalisation)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Embedder", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Embedder(nn.Module):
    """Normalisation inside the model, so that attacks and defenses work in pixel space ([0, 1], eps in pixels).

    Args:
        backbone: maps normalised images to (B, feature_dim) features.
        feature_dim, embedding_dim: sizes of the linear head.
        mean, std: per-channel normalisation (ImageNet's by default).
        normalize_output: L2-normalise the embeddings.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        embedding_dim: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        normalize_output: bool = False,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, embedding_dim)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.normalize_output = normalize_output
        self.config = None

    @property
    def in_channels(self) -> int:
        """The number of image channels the model takes (one mean/std value each)."""
        return self.mean.shape[1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, H, W) in [0, 1], got {list(images.shape)}"
            )
        embeddings = self.head(self.backbone((images - self.mean) / self.std))
        return F.normalize(embeddings, dim=1) if self.normalize_output else embeddings
