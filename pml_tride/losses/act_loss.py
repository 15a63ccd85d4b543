"""ACTLoss: Anti-Collapse Triplet (Zhou et al., 2021), robrank's ACT defense, as a PML loss."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Dict

import torch

from .adversarial_triplet_loss import AdversarialTripletLoss, PerturbationSet, Triplets

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
        **kwargs: the shared arguments (see :class:`AdversarialTripletLoss`); defaults here: steps=32,
            progressive_alpha=False (robrank's constant step size); margin 0.2, eps 8/255, alpha 1/255 as robrank.
            ``perturb``: "unique" (one delta per image, shared by every triplet using it in that role set) or
            "per_triplet" (robrank: a copy of P and of N per triplet, each with its own delta).
    """

    default_overrides = MappingProxyType({"steps": 32, "progressive_alpha": False})
    diagnosed_roles = PERTURBED_ROLES

    def collapse_loss(self, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """mean_i d(f(P'_i), f(N'_i)) (ACT's attack objective; robrank pnp.py:77-79), minimised by the attack."""
        return self.pair_distances(positives, negatives).mean()

    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        anchors, positives, negatives = triplets
        perturbation = PerturbationSet((positives, negatives), self.perturb)
        positive_rows, negative_rows = perturbation.role_positions

        def objective(adversarial: torch.Tensor) -> torch.Tensor:
            return self.collapse_loss(adversarial[positive_rows], adversarial[negative_rows])

        batch = self.attacked_batch(embeddings, inputs, triplets, perturbation, lambda: objective)
        return self.adversarial_loss_dict(
            batch, (embeddings[anchors], batch.adversarial[positive_rows], batch.adversarial[negative_rows])
        )
