"""Per-call diagnostics shared by the baseline defenses (EST, ACT, HM): collapseness, hardness, separability,
mean distance and the embedding shift of every perturbed role, recorded as PML stats.

The reproduction study plots these per iteration for every defense (CA-TRIDE Section 4.3, Figure 5).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from ..collapseness import collapseness, hardness
from ..pgd import PGDResult
from .adversarial_triplet_loss import AdversarialTripletLoss, PerturbationSet, Triplets

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
    loss: AdversarialTripletLoss,
    embeddings: torch.Tensor,
    inputs: torch.Tensor,
    triplets: Triplets,
    perturbation: PerturbationSet,
    result: PGDResult,
    adversarial: torch.Tensor,
    adversarial_triplet: Sequence[torch.Tensor],
    perturbed_roles: Sequence[str],
) -> None:
    """Fill the base stats and :func:`diagnostic_stat_names` of one call.

    ``adversarial`` are the training embeddings of ``perturbation``'s images; ``adversarial_triplet`` the
    (anchor, positive, negative) embeddings the loss trains on. Shifts are d(f(x'), f(x)) against the caller's
    (clean) embeddings of the same rows.
    """
    with torch.no_grad():
        clean_triplet = tuple(embeddings[rows] for rows in triplets)
        clean_ap = loss.pair_distances(clean_triplet[0], clean_triplet[1])
        clean_an = loss.pair_distances(clean_triplet[0], clean_triplet[2])
        adv_ap = loss.pair_distances(adversarial_triplet[0], adversarial_triplet[1])
        adv_an = loss.pair_distances(adversarial_triplet[0], adversarial_triplet[2])
        loss.record_clean_diagnostics(embeddings, clean_ap, clean_an)
        loss.collapseness_clean = collapseness(clean_ap, clean_an, lam=DIAGNOSTIC_LAM).item()
        loss.collapseness_adv = collapseness(adv_ap, adv_an, lam=DIAGNOSTIC_LAM).item()
        loss.hardness_clean = hardness(clean_ap, clean_an).item()
        loss.hardness_adv = hardness(adv_ap, adv_an).item()
        loss.pgd_steps = result.steps_taken
        loss.num_perturbed = len(perturbation)
        loss.max_perturbation = (result.adversarial - inputs[perturbation.source_rows]).abs().max().item()
        loss.embedding_shift = loss.pair_distances(adversarial, embeddings[perturbation.source_rows]).mean().item()
        shifts: Dict[str, torch.Tensor] = {
            role: loss.pair_distances(adversarial_triplet[index], clean_triplet[index]).mean()
            for index, role in enumerate(ROLES)
        }
        for role in perturbed_roles:
            setattr(loss, f"embedding_shift_{role}", shifts[role].item())
