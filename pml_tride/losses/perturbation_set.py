"""The images one phase of a defense perturbs (:class:`PerturbationSet`) and what attacking them gives
(:class:`AttackedBatch`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from ..pgd import PGDResult

__all__ = ["PerturbationSet", "AttackedBatch", "PERTURB_MODES", "Triplets", "Objective"]

PERTURB_MODES = ("unique", "per_triplet")

Triplets = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Objective = Callable[[torch.Tensor], torch.Tensor]


class PerturbationSet:
    """The images one phase perturbs: ``source_rows`` index the batch; ``role_positions`` map the batch rows of
    each triplet role to rows of the perturbed set.

    ``perturb="unique"`` perturbs each distinct image of the role once (one delta shared by every triplet that
    uses it); ``"per_triplet"`` gives every triplet its own copy (the reference code's semantics).
    """

    def __init__(self, role_rows: Tuple[torch.Tensor, ...], perturb: str) -> None:
        stacked = torch.cat(role_rows)
        if perturb == "unique":
            self.source_rows, inverse = torch.unique(stacked, return_inverse=True)
        else:
            self.source_rows = stacked
            inverse = torch.arange(len(stacked), device=stacked.device)
        self.role_positions = torch.split(inverse, [len(rows) for rows in role_rows])

    def __len__(self) -> int:
        return len(self.source_rows)


@dataclass
class AttackedBatch:
    """One call's attack: the caller's ``embeddings`` and ``inputs``, the ``triplets`` trained on (``None`` until
    a defense that mines after the attack has mined them), the ``perturbation`` set, the engine's ``result`` and
    the training embeddings ``adversarial`` of its images."""

    embeddings: torch.Tensor
    inputs: torch.Tensor
    triplets: Optional[Triplets]
    perturbation: PerturbationSet
    result: PGDResult
    adversarial: torch.Tensor
