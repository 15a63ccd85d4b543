"""QA+/QA-: the query attack of Zhou et al. (ECCV 2020); reference doc section 2.3-2.4."""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Optional

import torch

from .base_attack import AttackContext, BaseRankingAttack, pool_distances
from .candidate_attack import DIRECTIONS, pick_one, rank_measurements, top_neighbours

__all__ = ["QueryAttack", "query_rank", "query_attack_loss"]


def query_rank(distances: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Position of each row's candidate in the stable ascending sort of its distance row.

    Equal to the number of strictly closer items plus the number of equally distant items with a smaller
    index (ties broken by index, as a stable sort).
    """
    candidate_distance = distances.gather(1, candidates[:, None])
    columns = torch.arange(distances.shape[1], device=distances.device)[None, :]
    ties_before = (distances == candidate_distance) & (columns < candidates[:, None])
    return (distances < candidate_distance).sum(dim=1) + ties_before.sum(dim=1)


def query_attack_loss(embeddings: torch.Tensor, candidates: torch.Tensor, context: AttackContext, direction: str):
    """Mean over the pool of relu(d(q', c) - d(q', x)) for "+" (raise c), relu(d(q', x) - d(q', c)) for "-"."""
    distances = pool_distances(embeddings, context.pool)
    gap = distances.gather(1, candidates[:, None]) - distances
    return torch.relu(gap if direction == "+" else -gap).mean()


class QueryAttack(BaseRankingAttack):
    """Perturb each query so that one candidate rises to the top ("+") or sinks to the bottom ("-") of its list.

    The candidate (M = 1) is uniform over the pool without the query itself for QA+ (``robrank_compat=True``: with
    it), uniform among the query's top-1% non-self neighbours
    for QA-. The measurement is the candidate's percentile position in the query's ranking of the pool, which
    keeps the query's own clean entry (robrank's definition).
    """

    measurement_info = rank_measurements("QA")

    @classmethod
    def build(cls, names: Collection[str], **kwargs: Any) -> List[BaseRankingAttack]:
        """One instance per requested direction."""
        return [cls(direction=direction, **kwargs) for direction in DIRECTIONS if f"QA{direction}" in names]

    def __init__(self, direction: str = "+", **kwargs) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        super().__init__(**kwargs)
        self.direction = direction
        self.measurements = (f"QA{direction}",)

    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        if self.direction == "+":
            context.target_index = self.random_targets(context, generator)
        else:
            neighbours = top_neighbours(pool_distances(context.clean, context.pool), context.pool_indices)
            context.target_index = pick_one(neighbours, generator)

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        return query_attack_loss(embeddings, context.target_index, context, self.direction)

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        rank = query_rank(pool_distances(embeddings, context.pool), context.target_index)
        return {self.measurements[0]: rank.double() / len(context.pool)}
