"""A small convolutional embedder for small images (the digits demo, tests)."""

from __future__ import annotations

from torch import nn

from .embedder import Embedder

__all__ = ["SmallCNN", "small_cnn_embedder", "GRAY_MEAN", "GRAY_STD"]

GRAY_MEAN = 0.5
GRAY_STD = 0.5


class SmallCNN(nn.Sequential):
    """Three conv-BN-ReLU blocks (two with 2x2 max pooling) and global average pooling -> (B, 2 * width)."""

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        def block(cin: int, cout: int, pool: bool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        super().__init__(*block(in_channels, width, True), *block(width, 2 * width, True),
                         *block(2 * width, 2 * width, False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 2 * width


def small_cnn_embedder(in_channels: int = 1, embedding_dim: int = 64, width: int = 32,
                       normalize_output: bool = False) -> Embedder:
    """A :class:`SmallCNN` in an :class:`Embedder` with mean/std 0.5 per channel."""
    backbone = SmallCNN(in_channels, width)
    model = Embedder(backbone, backbone.feature_dim, embedding_dim, mean=(GRAY_MEAN,) * in_channels,
                     std=(GRAY_STD,) * in_channels, normalize_output=normalize_output)
    model.config = {"name": "small_cnn", "kwargs": {"in_channels": in_channels, "embedding_dim": embedding_dim,
                                                    "width": width, "normalize_output": normalize_output}}
    return model
