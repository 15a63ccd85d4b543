"""SeededMiner: the base of the miners that draw at random, with their own generator and its state."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from pytorch_metric_learning.miners import BaseMiner

__all__ = ["SeededMiner"]


class SeededMiner(BaseMiner):
    """A PML miner that draws from its own generator (seeded by ``seed``) or, with ``seed=None``, from torch's
    global RNG. The generator's state is the miner's extra state, so ``state_dict()`` resumes the draws exactly;
    subclasses that keep more state extend :meth:`get_extra_state` / :meth:`set_extra_state`.

    Args:
        seed: seed of the miner's own generator (None: torch's global RNG).
        **kwargs: PML miner arguments (``distance``, ``collect_stats``).
    """

    def __init__(self, seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def get_extra_state(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state() if self.generator is not None else None}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        if state["generator"] is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator"])

    def uniform_choice(self, mask: torch.Tensor) -> torch.Tensor:
        """For each row, a column drawn uniformly among the True entries of ``mask`` (rows need one); drawn on the
        CPU from the miner's generator (reproducible on any device), else on the mask's device."""
        if self.generator is None:
            scores = torch.rand(mask.shape, device=mask.device)
        else:
            scores = torch.rand(mask.shape, generator=self.generator, device="cpu").to(mask.device)
        return torch.where(mask, scores, torch.full_like(scores, -1.0)).argmax(dim=1)
