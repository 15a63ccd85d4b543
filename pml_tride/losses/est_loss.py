"""ESTLoss: Embedding-Shifted Triplet (Zhou et al., ECCV 2020), robrank's EST defense, as a PML loss."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from ..pgd import PGDResult
from .adversarial_triplet_loss import AdversarialTripletLoss, PerturbationSet, Triplets
from .triplet_diagnostics import ROLES, diagnostic_stat_names, record_triplet_diagnostics

__all__ = ["ESTLoss"]


class ESTLoss(AdversarialTripletLoss):
    """Embedding-Shifted Triplet: L_EST = L_T(a~, p~, n~) with x~ = phi(x + r*), r* = argmax_r d(phi(x + r), phi(x))
    (as restated by Zhou and Patel, CVPR 2022, arXiv:2203.01439; robrank defenses/est.py, attack
    ``AdvRank.embShift``).

    Every image a triplet uses (anchor, positive and negative) is perturbed to move its own embedding as far as
    possible from its clean embedding: the attack minimises -mean_j d(f(x'_j), f(x_j)) over the perturbed images,
    f(x_j) embedded once in eval mode. The model is then trained on the triplet loss of the adversarial
    embeddings of all three members.

    What is trained on (the re-mining decision):

    * ``miner=None`` (default, the PML drop-in): the caller's triplets (``indices_tuple``, mined on the clean
      embeddings) are kept; only their members are perturbed.
    * ``miner=<PML miner>`` (robrank's semantics, which re-mines spc2-random triplets on the adversarial
      embeddings, est.py:63-68): every image of the batch is perturbed, and the triplets are mined by ``miner`` on
      the (detached) adversarial embeddings with the batch labels; the caller's ``indices_tuple`` is then ignored.

    Args:
        model: maps images in ``input_range`` to embeddings; held by reference (see the base class).
        margin: triplet margin (robrank: 0.2).
        eps, alpha, steps: PGD radius, step size and number of steps (robrank: 8/255, 1/255, 32).
        progressive_alpha: off by default: robrank uses a constant step size for its baselines.
        perturb: "unique" (one delta per image, robrank's EST) or "per_triplet" (one copy per triplet and role).
        miner: re-mine on the adversarial embeddings (see above); needs ``perturb="unique"``.
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
        miner: Optional[BaseMiner] = None,
        input_range: Tuple[float, float] = (0.0, 1.0),
        **kwargs: Any,
    ) -> None:
        if miner is not None and not isinstance(miner, BaseMiner):
            raise TypeError(f"miner must be a pytorch_metric_learning BaseMiner or None, got {type(miner).__name__}")
        if miner is not None and perturb != "unique":
            raise ValueError(
                f"perturb must be 'unique' when a miner re-mines the adversarial batch (every image is perturbed "
                f"once), got perturb={perturb!r}"
            )
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
        self.miner = miner
        self.register_stats(diagnostic_stat_names(ROLES))

    # ----------------------------------------------------------------- the adversarial objective
    def embedding_shift_loss(self, adversarial: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """-mean_j d(f(x'_j), f(x_j)): minimised, it maximises the embedding shift (robrank advrank_loss.py)."""
        return -self.pair_distances(adversarial, clean).mean()

    def _attack(self, inputs: torch.Tensor, perturbation: PerturbationSet) -> PGDResult:
        images = inputs[perturbation.source_rows]
        if not self.attack_enabled:
            return PGDResult(adversarial=images, steps_taken=0, stopped_early=False, last_loss=None)
        unique_rows, positions = torch.unique(perturbation.source_rows, return_inverse=True)
        clean = self.constant_embeddings(inputs[unique_rows])[positions]
        return self.attack(images, lambda adversarial: self.embedding_shift_loss(adversarial, clean))

    # ----------------------------------------------------------------- one mini-batch
    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Dict[str, Dict[str, Any]]:
        if self.miner is None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if labels is None:
            raise ValueError("ESTLoss(miner=...) re-mines the adversarial batch and needs labels")
        inputs = self._resolve_inputs(embeddings).to(embeddings.device)
        perturbation = PerturbationSet((torch.arange(len(embeddings), device=embeddings.device),), "unique")
        result = self._attack(inputs, perturbation)
        adversarial = self.training_embeddings(result, perturbation, embeddings)
        mined = self.miner(adversarial.detach(), labels)
        triplets = lmu.convert_to_triplets(mined, labels, t_per_anchor=self.triplets_per_anchor)
        triplets = tuple(c_f.to_device(index, embeddings) for index in triplets)
        if len(triplets[0]) == 0:
            return self.zero_losses()
        return self._loss_dict(embeddings, inputs, triplets, perturbation, result, adversarial, triplets)

    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        perturbation = PerturbationSet(triplets, self.perturb)
        result = self._attack(inputs, perturbation)
        adversarial = self.training_embeddings(result, perturbation, embeddings)
        return self._loss_dict(embeddings, inputs, triplets, perturbation, result, adversarial,
                               perturbation.role_positions)

    def _loss_dict(self, embeddings, inputs, triplets, perturbation, result, adversarial, role_positions):
        """The triplet loss on the adversarial embeddings; ``role_positions`` index ``adversarial`` per role."""
        adversarial_triplet = tuple(adversarial[rows] for rows in role_positions)
        loss_dict = {
            "loss": {
                "losses": self.triplet_losses(*adversarial_triplet),
                "indices": triplets,
                "reduction_type": "triplet",
            }
        }
        if self.collect_stats:
            record_triplet_diagnostics(self, embeddings, inputs, triplets, perturbation, result, adversarial,
                                       adversarial_triplet, ROLES)
        return loss_dict
