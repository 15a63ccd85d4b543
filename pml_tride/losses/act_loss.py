"""ACTLoss: Anti-Collapse Triplet (Zhou et al., 2021), robrank's ACT defense, as a PML loss."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from ..pgd import PGDResult
from .adversarial_triplet_loss import AdversarialTripletLoss, PerturbationSet, Triplets
from .triplet_diagnostics import diagnostic_stat_names, record_triplet_diagnostics

__all__ = ["ACTLoss"]

PERTURBED_ROLES = ("positive", "negative")


class ACTLoss(AdversarialTripletLoss):
    """Anti-Collapse Triplet: L_ACT = L_T(a, p~, n~) with [r_p*, r_n*] = argmin d(phi(P + r_p), phi(N + r_n))
    (as restated by Zhou and Patel, CVPR 2022, arXiv:2203.01439; robrank defenses/pnp.py, attack ``pncollapse``).

    The positives and negatives of the caller's triplets are perturbed to collapse each positive onto its
    negative, minimising mean_i d(f(P'_i), f(N'_i)) for ``steps`` signed steps (no early stop); the anchors stay
    clean. The model is trained on the triplet loss of (A, P', N'): A is the caller's embedding (its gradient
    flows to the model through the caller's forward), P' and N' come from a training-mode forward of the
    adversarial images.

    Args:
        model: maps images in ``input_range`` to embeddings; held by reference (see the base class).
        margin: triplet margin (robrank: 0.2).
        eps, alpha, steps: PGD radius, step size and number of steps (robrank: 8/255, 1/255, 32).
        progressive_alpha: off by default: robrank uses a constant step size for its baselines.
        perturb: "unique" (one delta per image, shared by every triplet using it in that role set) or
            "per_triplet" (robrank: a copy of P and of N per triplet, each with its own delta).
        input_range: valid pixel range of the inputs.
        **kwargs: PML loss arguments (``distance``, ``reducer``, ``collect_stats``, ``triplets_per_anchor``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        margin: float = 0.2,
        eps: float = 8 / 255,
        alpha: float = 1 / 255,
        steps: int = 32,
        progressive_alpha: bool = False,
        perturb: str = "unique",
        input_range: Tuple[float, float] = (0.0, 1.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model,
            margin=margin,
            eps=eps,
            alpha=alpha,
            steps=steps,
            progressive_alpha=progressive_alpha,
            perturb=perturb,
            input_range=input_range,
            **kwargs,
        )
        self.register_stats(diagnostic_stat_names(PERTURBED_ROLES))

    def collapse_loss(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """mean_i d(f(P'_i), f(N'_i)) (ACT's attack objective; robrank pnp.py:77-79), minimised by the attack."""
        return self.pair_distances(positives, negatives).mean()

    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        anchors, positives, negatives = triplets
        perturbation = PerturbationSet((positives, negatives), self.perturb)
        positive_rows, negative_rows = perturbation.role_positions
        images = inputs[perturbation.source_rows]
        if self.attack_enabled:
            result = self.attack(
                images, lambda adversarial: self.collapse_loss(adversarial[positive_rows], adversarial[negative_rows])
            )
        else:
            result = PGDResult(adversarial=images, steps_taken=0, stopped_early=False, last_loss=None)
        adversarial = self.training_embeddings(result, perturbation, embeddings)
        adversarial_triplet = (embeddings[anchors], adversarial[positive_rows], adversarial[negative_rows])
        loss_dict = {
            "loss": {
                "losses": self.triplet_losses(*adversarial_triplet),
                "indices": triplets,
                "reduction_type": "triplet",
            }
        }
        if self.collect_stats:
            record_triplet_diagnostics(self, embeddings, inputs, triplets, perturbation, result, adversarial,
                                       adversarial_triplet, PERTURBED_ROLES)
        return loss_dict
