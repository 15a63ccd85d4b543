"""GTT: greedy top-1 translocation; reference doc section 2.9."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from .base_attack import AttackContext, BaseRankingAttack, exclude_self, pool_distances
from .measurement import PERCENT, Measurement
from .query_attack import query_attack_loss

__all__ = ["GreedyTop1TranslocationAttack", "RETAIN_DEPTH"]

# GTT's ERS value is retain@4: the clean top-1 still among the 4 nearest non-self items.
RETAIN_DEPTH = 4


class GreedyTop1TranslocationAttack(BaseRankingAttack):
    """Push each query's current top-1 (its nearest non-self item) out of its top ranks.

    Loss: the QA- loss with that item as the candidate. Measurement: retain@4 (1 where the item is still among
    the 4 nearest non-self pool items; 1 on clean images by construction).
    """

    # retain@4 starts at 100% by construction: table-mode ARS is the raw value.
    measurement_info = (Measurement("GTT", "retain@4 (%)", ars_goal=0.0, ars_initial=PERCENT),)
    measurements = ("GTT",)

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        context.target_index = exclude_self(pool_distances(context.clean, context.pool), context.pool_indices).argmin(1)

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return query_attack_loss(embeddings, context.target_index, context, "-")

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        masked = exclude_self(pool_distances(embeddings, context.pool), context.pool_indices)
        nearest = masked.topk(min(RETAIN_DEPTH, masked.shape[1] - 1), dim=1, largest=False).indices
        return {"GTT": (nearest == context.target_index[:, None]).any(dim=1).double()}
