"""Batch samplers: SPC-2 pairs for data sets of any number of classes."""

from .class_pair_sampler import ClassPairSampler

__all__ = ["ClassPairSampler"]
