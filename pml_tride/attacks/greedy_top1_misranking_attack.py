"""GTM: greedy top-1 misranking; reference doc section 2.8."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from .base_attack import EXCLUDED_DISTANCE, AttackContext, BaseRankingAttack, exclude_self, pool_distances, top1_hit
from .measurement import Measurement

__all__ = ["GreedyTop1MisrankingAttack", "robrank_subset_index_target"]


def robrank_subset_index_target(masked_distances: torch.Tensor, unmatched: torch.Tensor) -> torch.Tensor:
    """robrank's GTM target: the argmin over the *masked sub-vector*, used as a global pool index."""
    targets = []
    for row, mask in zip(masked_distances, unmatched):
        targets.append(row[mask].argmin())
    return torch.stack(targets)


class GreedyTop1MisrankingAttack(BaseRankingAttack):
    """Pull each query towards the nearest pool item whose label differs from its current top-1's label.

    Loss: mean ||f(q') - t||. ``robrank_compat=True`` reproduces robrank's target (a position inside the
    masked subset used as a global index, an essentially arbitrary item). Measurement: top-1 hit with the
    query's true label, own entry excluded.
    """

    measurement_info = (Measurement("GTM", "R@1 (%)", ars_goal=0.0),)
    measurements = ("GTM",)

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        labels = context.pool.labels
        masked = exclude_self(pool_distances(context.clean, context.pool), context.pool_indices)
        top1_label = labels[masked.argmin(dim=1)]
        # the query's own entry stays in the mask, as in robrank; its distance is excluded, so it is never the
        # corrected target, but it shifts positions inside the subset in compat mode
        unmatched = labels[None, :] != top1_label[:, None]
        if self.robrank_compat:
            context.target_index = robrank_subset_index_target(masked, unmatched)
        else:
            excluded = torch.full_like(masked, EXCLUDED_DISTANCE)
            context.target_index = torch.where(unmatched, masked, excluded).argmin(dim=1)

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return (embeddings - context.pool.embeddings[context.target_index]).norm(dim=1).mean()

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        return {"GTM": top1_hit(embeddings, context)}
