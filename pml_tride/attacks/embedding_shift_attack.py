"""ES: embedding shift attack, giving ES:D and ES:R; reference doc section 2.6."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .base_attack import AttackContext, BaseRankingAttack, top1_hit
from .measurement import Measurement

__all__ = ["EmbeddingShiftAttack", "MAX_SHIFT"]

# Unit vectors are at most 2 apart: ES:D's worst value for ERS.
MAX_SHIFT = 2.0


class EmbeddingShiftAttack(BaseRankingAttack):
    """Perturb each query to move its embedding as far as possible from its clean embedding (untargeted).

    Loss: -sum ||f(q') - f(q)|| with ``F.pairwise_distance`` (its 1e-6 offset gives the first step a non-zero
    gradient, the role of robrank's 1e-7 jitter). ES:D is the L2 shift of the final adversarial embedding
    (``robrank_compat=True``: of the iterate before the last step, robrank's stale value); ES:R is the top-1
    hit with the query's own pool entry excluded.
    """

    # ES:D: ERS 100 (2 - x) / 2, no ARS (a shift is not a ranking outcome, Section 3.4); ES:R: R@1, ARS Eq. 31.
    measurement_info = (Measurement("ES:D", "L2 shift", percent=False, digits=2, ers_worst=MAX_SHIFT, ers_best=0.0),
                        Measurement("ES:R", "R@1 (%)", ars_goal=0.0))
    measurements = ("ES:D", "ES:R")

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        """No target."""

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return -F.pairwise_distance(embeddings, context.clean).sum()

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        if embeddings is context.clean:
            shift = torch.zeros(len(embeddings), dtype=torch.float64, device=embeddings.device)
        else:
            shifted = embeddings
            if self.robrank_compat and context.last_objective_embeddings is not None:
                shifted = context.last_objective_embeddings
            shift = (shifted - context.clean).norm(dim=1)
        return {"ES:D": shift, "ES:R": top1_hit(embeddings, context)}
