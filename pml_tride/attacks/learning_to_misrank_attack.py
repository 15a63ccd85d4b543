"""LTM: learning-to-misrank style attack (arXiv 2004.04199); reference doc section 2.7."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from .base_attack import AttackContext, BaseRankingAttack, pool_distances, top1_hit
from .measurement import Measurement

__all__ = ["LearningToMisrankAttack"]

# Sentinels outside [0, 2], the range of distances between unit vectors.
BELOW_ANY_DISTANCE = -1.0
ABOVE_ANY_DISTANCE = 3.0


class LearningToMisrankAttack(BaseRankingAttack):
    """Perturb each query so that every negative ranks before every positive.

    Loss: sum over queries of relu(max_neg d(q', x) - min_pos d(q', x)). By default the query's own pool entry
    is not a positive; ``robrank_compat=True`` keeps it (robrank's no-op scatter). Measurement: top-1 hit with
    the query's own entry excluded.
    """

    measurement_info = (Measurement("LTM", "R@1 (%)", ars_goal=0.0),)
    measurements = ("LTM",)

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        pool, indices = context.pool, context.pool_indices
        same = pool.labels[None, :] == pool.labels[indices][:, None]
        positives = same.clone()
        if not self.robrank_compat:
            positives[torch.arange(len(indices), device=indices.device), indices] = False
        context.extras["positives"], context.extras["negatives"] = positives, ~same

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        distances = pool_distances(embeddings, context.pool)
        farthest_negative = torch.where(context.extras["negatives"], distances,
                                        torch.full_like(distances, BELOW_ANY_DISTANCE)).max(dim=1).values
        nearest_positive = torch.where(context.extras["positives"], distances,
                                       torch.full_like(distances, ABOVE_ANY_DISTANCE)).min(dim=1).values
        return torch.relu(farthest_negative - nearest_positive).sum()

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        return {"LTM": top1_hit(embeddings, context)}
