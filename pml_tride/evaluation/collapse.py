"""The collapse rule: when a model's benign R@1 is too close to chance for its ERS/ARS to measure robustness.

ERS and ARS score what an attack changed relative to the clean state; ES:R, LTM and GTM divide by the benign R@1
(Eq. 31). A model whose embedding has collapsed retrieves at about chance, so an attack has nothing left to
destroy and the model scores as "robust". The rule, in one place:

* chance R@1 of a test set = the probability that a uniformly random other item of the pool has the query's class,
  sum_c n_c (n_c - 1) / (N (N - 1)), in percent (exact, from the labels);
* a model is collapsed when its benign R@1 <= chance + COLLAPSE_LIFT (100 - chance): it recovers at most
  ``COLLAPSE_LIFT`` (10%) of the way from chance to perfect retrieval.

Beside it, relative to a reference model (the undefended one, same data and seed): a model is *degraded* when its
benign R@1 is more than ``DEGRADED_POINTS`` (10) points below the reference's. A degraded model still retrieves,
so its ERS/ARS measure robustness, but bought with benign accuracy.
"""

from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch

__all__ = ["COLLAPSE_LIFT", "DEGRADED_POINTS", "chance_recall_at_1", "collapse_threshold", "is_collapsed",
           "is_degraded"]

# The share of the way from chance to perfect retrieval (R@1 = 100) at or below which a model is collapsed.
COLLAPSE_LIFT = 0.1
PERFECT_RECALL = 100.0
# R@1 points below the reference model's beyond which a model is degraded.
DEGRADED_POINTS = 10.0


def chance_recall_at_1(labels: Union[torch.Tensor, Sequence[int]]) -> float:
    """Chance R@1 (percent) of a retrieval test set with these labels: the probability that a uniformly random
    other item of the pool shares the query's class, 100 sum_c n_c (n_c - 1) / (N (N - 1)); the expected R@1 of an
    embedding that carries no class information (a random relabelling of the pool)."""
    # on the labels' own device (the CPU for a sequence), whatever the default device is
    labels = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels, device="cpu")
    if labels.dim() != 1 or len(labels) < 2:
        raise ValueError(f"labels must be a 1-D sequence of at least 2 items, got shape {tuple(labels.shape)}")
    counts = torch.unique(labels, return_counts=True)[1].tolist()
    total = len(labels)
    same_class_pairs = sum(count * (count - 1) for count in counts)  # Python integers: exact
    return PERFECT_RECALL * same_class_pairs / (total * (total - 1))


def _check_percent(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= PERFECT_RECALL:
        raise ValueError(f"{name} must be a percentage in [0, 100], got {value!r}")


def collapse_threshold(chance_r1: float, lift: float = COLLAPSE_LIFT) -> float:
    """The benign R@1 (percent) at or below which a model is collapsed: chance + lift (100 - chance)."""
    _check_percent(chance_r1, "chance_r1")
    if isinstance(lift, bool) or not isinstance(lift, numbers.Real) or not 0 <= lift < 1:
        raise ValueError(f"lift must be a number in [0, 1), got {lift!r}")
    return chance_r1 + lift * (PERFECT_RECALL - chance_r1)


def is_collapsed(benign_r1: float, chance_r1: float, lift: float = COLLAPSE_LIFT) -> bool:
    """True when ``benign_r1`` (percent) is at most :func:`collapse_threshold` of ``chance_r1``: the model
    retrieves too close to chance for ERS/ARS (normalised by the clean state) to measure its robustness."""
    _check_percent(benign_r1, "benign_r1")
    return benign_r1 <= collapse_threshold(chance_r1, lift)


def is_degraded(benign_r1: float, reference_r1: float, points: float = DEGRADED_POINTS) -> bool:
    """True when ``benign_r1`` (percent) is more than ``points`` below ``reference_r1``, the benign R@1 of the
    reference model (the undefended one on the same data, same seed)."""
    _check_percent(benign_r1, "benign_r1")
    _check_percent(reference_r1, "reference_r1")
    if isinstance(points, bool) or not isinstance(points, numbers.Real) or not 0 <= points <= PERFECT_RECALL:
        raise ValueError(f"points must be a number in [0, 100], got {points!r}")
    return benign_r1 < reference_r1 - points
