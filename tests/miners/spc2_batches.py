"""Hand-made SPC-2 batches and plain-Python distances for the SPC-2 miner tests."""

import math

import torch


def spc2_batch(classes, dim=3, seed=0):
    """Random embeddings in the row order of MPerClassSampler(m=2): rows 2i and 2i + 1 carry classes[i]."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes).repeat_interleave(2)
    return torch.randn(len(labels), dim, generator=generator), labels


def brute_distance(embeddings, i, j):
    """d of PML's default LpDistance: Euclidean distance of the L2-normalised embeddings, by plain loops."""
    def unit(row):
        values = embeddings[row].tolist()
        norm = math.sqrt(sum(value * value for value in values))
        return [value / norm for value in values]

    return math.sqrt(sum((a - b) ** 2 for a, b in zip(unit(i), unit(j))))
