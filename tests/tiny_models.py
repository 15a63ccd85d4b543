"""Tiny models shared by the tests (importable because setup.cfg puts tests/ on pytest's pythonpath)."""

from torch import nn


def tiny_cnn(embedding_dim: int = 8) -> nn.Module:
    """Conv-BN-ReLU on 1-channel images, pooled to 2x2, then a linear head: BatchNorm buffers and a few weights."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, embedding_dim),
    )
