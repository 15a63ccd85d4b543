"""Per-call diagnostics shared by the baseline defenses (EST, ACT, HM): collapseness, hardness and the embedding
shift of every perturbed role, recorded as PML stats (``AdversarialTripletLoss.diagnosed_roles``).

The reproduction study plots these per iteration for every defense (CA-TRIDE Section 4.3, Figure 5).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch

from ..collapseness import collapseness, hardness

__all__ = ["ROLES", "DIAGNOSTIC_LAM", "diagnostic_stat_names", "record_triplet_diagnostics"]

ROLES = ("anchor", "positive", "negative")
# lambda of the collapseness diagnostic (Eq. 7): the paper's CUB value; the baselines do not use C otherwise.
DIAGNOSTIC_LAM = 10.0


def diagnostic_stat_names(perturbed_roles: Sequence[str]) -> List[str]:
    """The stats a baseline registers on top of the base class's: C and H, clean and adversarial, and one
    embedding shift per perturbed role."""
    return ["collapseness_clean", "collapseness_adv", "hardness_clean", "hardness_adv"] + [
        f"embedding_shift_{role}" for role in perturbed_roles
    ]


def record_triplet_diagnostics(
    loss: Any,
    clean_triplet: Sequence[torch.Tensor],
    adversarial_triplet: Sequence[torch.Tensor],
    clean: Tuple[torch.Tensor, torch.Tensor],
    adversarial: Tuple[torch.Tensor, torch.Tensor],
    perturbed_roles: Sequence[str],
) -> None:
    """Fill :func:`diagnostic_stat_names` on ``loss`` (an ``AdversarialTripletLoss``) for one call.

    ``clean_triplet`` and ``adversarial_triplet`` are the (anchor, positive, negative) embeddings of the caller's
    clean triplets and of those the loss trains on; ``clean`` and ``adversarial`` their (d(a, p), d(a, n)).
    Shifts are d(f(x'), f(x)) against the clean embeddings of the same rows.
    """
    with torch.no_grad():
        loss.collapseness_clean = collapseness(*clean, lam=DIAGNOSTIC_LAM).item()
        loss.collapseness_adv = collapseness(*adversarial, lam=DIAGNOSTIC_LAM).item()
        loss.hardness_clean = hardness(*clean).item()
        loss.hardness_adv = hardness(*adversarial).item()
        for role in perturbed_roles:
            index = ROLES.index(role)
            shift = loss.pair_distances(adversarial_triplet[index], clean_triplet[index]).mean()
            setattr(loss, f"embedding_shift_{role}", shift.item())
