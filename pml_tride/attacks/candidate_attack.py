"""CA+/CA-: the candidate attack of Zhou et al. (ECCV 2020); reference doc section 2.1-2.2."""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Optional, Tuple

import torch

from .base_attack import AttackContext, BaseRankingAttack, exclude_self, pool_distances
from .measurement import PERCENT, Measurement

__all__ = ["CandidateAttack", "DIRECTIONS", "TOP_FRACTION", "UNTOUCHED_PERCENTILE", "rank_measurements",
           "top_neighbours"]

DIRECTIONS = ("+", "-")
# CA- and QA- pick their target among the top 1% of the pool (robrank's "topmost").
TOP_FRACTION = 0.01
# An untouched uniformly random target sits at the 50th percentile: the ERS best and table-mode ARS start of "+".
UNTOUCHED_PERCENTILE = 50.0


def rank_measurements(prefix: str) -> Tuple[Measurement, Measurement]:
    """The "+" and "-" percentile-rank measurements of CA or QA: ERS 100 x / 50 and 100 - x; ARS goal the top (0)
    or the bottom (100%), from a nominal 50% or the top 1% (table mode)."""
    unit = "percentile rank (%)"
    return (Measurement(f"{prefix}+", unit, ers_worst=0.0, ers_best=UNTOUCHED_PERCENTILE, ars_goal=0.0,
                        ars_initial=UNTOUCHED_PERCENTILE, ars_trialwise=True),
            Measurement(f"{prefix}-", unit, ers_worst=PERCENT, ers_best=0.0, ars_goal=PERCENT,
                        ars_initial=PERCENT * TOP_FRACTION, ars_trialwise=True))


def top_neighbours(distances: torch.Tensor, pool_indices: torch.Tensor) -> torch.Tensor:
    """(B, k) indices of the k = max(1, floor(0.01 N)) nearest pool items other than the row's own entry."""
    count = max(1, int(TOP_FRACTION * distances.shape[1]))
    return exclude_self(distances, pool_indices).topk(count, dim=1, largest=False).indices


def pick_one(candidates: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """One column of each row of ``candidates``, uniformly."""
    columns = torch.randint(0, candidates.shape[1], (candidates.shape[0],), generator=generator, device="cpu")
    columns = columns.to(candidates.device)
    return candidates.gather(1, columns[:, None]).squeeze(1)


class CandidateAttack(BaseRankingAttack):
    """Perturb each batch image, as a candidate, to move it up ("+") or down ("-") one query's ranking.

    The query (W = 1) is uniform over the pool without the candidate itself for CA+ (``robrank_compat=True``: with
    it), uniform among the candidate's top-1% neighbours for CA-.
    The loss is mean relu(d(c', q) - d(x, q)) over the pool (CA+; reversed for CA-). The measurement is the
    candidate's percentile rank for its query: the share of pool items strictly closer to the query (the pool
    keeps the query and the candidate's clean entry, as robrank).
    """

    measurement_info = rank_measurements("CA")

    @classmethod
    def build(cls, names: Collection[str], **kwargs: Any) -> List[BaseRankingAttack]:
        """One instance per requested direction."""
        return [cls(direction=direction, **kwargs) for direction in DIRECTIONS if f"CA{direction}" in names]

    def __init__(self, direction: str = "+", **kwargs) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        super().__init__(**kwargs)
        self.direction = direction
        self.measurements = (f"CA{direction}",)

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        pool = context.pool
        if self.direction == "+":
            queries = self.random_targets(context, generator)
        else:
            queries = pick_one(top_neighbours(pool_distances(context.clean, pool), context.pool_indices), generator)
        context.target_index = queries
        context.extras["query_to_pool"] = pool_distances(pool.embeddings[queries], pool)

    def _candidate_distances(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return (embeddings - context.pool.embeddings[context.target_index]).norm(dim=1)

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        gap = self._candidate_distances(embeddings, context)[:, None] - context.extras["query_to_pool"]
        return torch.relu(gap if self.direction == "+" else -gap).mean()

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        candidate = self._candidate_distances(embeddings, context)[:, None]
        rank = (context.extras["query_to_pool"] < candidate).sum(dim=1)
        return {self.measurements[0]: rank.double() / len(context.pool)}
