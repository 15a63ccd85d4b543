"""TMA: targeted mismatch attack (Tolias et al., ICCV 2019); reference doc section 2.5."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from .base_attack import AttackContext, BaseRankingAttack
from .measurement import Measurement

__all__ = ["TargetedMismatchAttack"]


class TargetedMismatchAttack(BaseRankingAttack):
    """Perturb each query so that its embedding matches a random pool embedding (not its own, unless
    ``robrank_compat=True``), in cosine similarity.

    Loss: mean(1 - cos(f(q'), t)); measurement: cos(f(q'), t) (lower after the attack = more robust).
    """

    # ERS: 100 (1 - cosine); no ARS (the only cosine-based attack, Section 3.4).
    measurement_info = (Measurement("TMA", "cosine", percent=False, digits=3, ers_worst=1.0, ers_best=0.0),)
    measurements = ("TMA",)

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        context.target_index = self.random_targets(context, generator)

    def _cosine(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return (embeddings * context.pool.embeddings[context.target_index]).sum(dim=1)

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return (1 - self._cosine(embeddings, context)).mean()

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        return {"TMA": self._cosine(embeddings, context)}
