"""HMLoss: Hardness Manipulation (Zhou and Patel, 2022), robrank's HM defense, as a PML loss."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from pytorch_metric_learning.miners import BaseMiner, TripletMarginMiner
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from ..validation import check_choice, check_instance, check_number
from .adversarial_triplet_loss import AdversarialTripletLoss, PerturbationSet, Triplets
from .triplet_diagnostics import ROLES

__all__ = ["HMLoss", "DESTINATIONS", "saturation_stop"]

DESTINATIONS = ("gradual", "miner", "unbounded")
# robrank initialises the previous step's loss to 2.0 (amd.py:716-718): the first destination is -margin.
INITIAL_PREVIOUS_LOSS = 2.0
# robrank stops the attack once the loss changes by less than this between iterations (amd.py:348-352).
SATURATION_TOLERANCE = 1e-7


def saturation_stop(tolerance: float) -> Callable[[torch.Tensor], bool]:
    """A fresh PGD ``stop_condition``: stop when the (non-negative) ET loss is 0, or when it changed by less than
    ``tolerance`` since the previous iterate (robrank's saturation stop). At 0 the ET gradient is exactly 0, so
    stopping there changes no result; it only saves the pass robrank spends on a zero step."""
    previous: list = []

    def stop(loss: torch.Tensor) -> bool:
        value = loss.item()
        saturated = value <= 0 or (bool(previous) and abs(value - previous[0]) < tolerance)
        previous[:] = [value]
        return saturated

    return stop


class HMLoss(AdversarialTripletLoss):
    """Hardness Manipulation: perturb each source triplet (A, P, N) to a destination hardness, train on
    (A', P', N') (Zhou and Patel, CVPR 2022, arXiv:2203.01439: hardness manipulation, gradual adversary, intra-class
    structure loss; robrank defenses/amd.py:194-359 and 685-791, config ``ghmetsmi``).

    Source triplets are the caller's ``indices_tuple`` (the PML miner of the training loop; robrank's default
    source is soft-hard). All three members are perturbed. With the source hardness H_i = d(a'_i, p'_i) -
    d(a'_i, n'_i) and a destination hardness D_i, the attack minimises the ET loss mean_i min(H_i - D_i, 0)^2,
    a one-sided push of each triplet up to at least its destination hardness (amd.py:325-327), and stops when the
    loss saturates. ``destination`` chooses D:

    * ``"gradual"`` (default, the linear gradual adversary LGA): D = -clip(L_prev, 0, margin), one scalar from
      the previous call's adversarial triplet loss L_prev (initially 2.0, so D starts at -margin, the semi-hard
      boundary, and tends to 0, the hard boundary, as the loss falls; amd.py:245-270). robrank writes
      -0.2 clip(L, 0, 0.2) / 0.2 with 0.2 its triplet margin. L_prev is saved in ``state_dict()``.
    * ``"miner"``: D from destination triplets that ``destination_miner`` (default: PML's semi-hard
      ``TripletMarginMiner(margin)``, robrank's default destination) mines on the caller's detached embeddings;
      each source triplet takes the mean hardness of the destination triplets with its anchor (robrank pairs
      one random destination triplet per anchor), and a source triplet whose anchor has none is left as it is.
    * ``"unbounded"``: no destination; the attack maximises the mean hardness for all ``steps`` (minimises
      -mean_i H_i), with no stop: the naive, collapse-unaware adversary on (A, P, N) ("naive-at").

    The training loss is the triplet loss of (A', P', N') plus the intra-class structure term (ICS)
    ``ics_weight`` * max(d(A, A') - d(A, P), 0) per triplet (amd.py:771-779), A and P the caller's clean
    embeddings (with grad).

    Args:
        model: maps images in ``input_range`` to embeddings; held by reference (see the base class).
        destination: "gradual", "miner" or "unbounded" (see above).
        destination_miner: a PML miner for ``destination="miner"`` (an error with the other destinations).
        ics_weight: weight of ICS (robrank: 0.5, or 0.05); 0 turns ICS off.
        saturation_tolerance: the saturation stop's |change of the loss| threshold; 0 stops only at a zero loss.
        initial_previous_loss: L_prev before the first call (robrank: 2.0).
        **kwargs: the shared arguments (see :class:`AdversarialTripletLoss`); defaults here: steps=32 (the
            maximum number of steps), progressive_alpha=False (robrank's constant step size); margin 0.2 (also the
            LGA bound), eps 8/255, alpha 1/255 as robrank. ``perturb``: "unique" (one delta per image across the
            three roles) or "per_triplet" (robrank: copies of A, P and N per triplet, each with its own delta).
    """

    default_overrides = MappingProxyType({"steps": 32, "progressive_alpha": False})
    diagnosed_roles = ROLES

    def __init__(
        self,
        model: nn.Module,
        *,
        destination: str = "gradual",
        destination_miner: Optional[BaseMiner] = None,
        ics_weight: float = 0.5,
        saturation_tolerance: float = SATURATION_TOLERANCE,
        initial_previous_loss: float = INITIAL_PREVIOUS_LOSS,
        **kwargs: Any,
    ) -> None:
        check_choice("destination", destination, DESTINATIONS)
        if destination_miner is not None and destination != "miner":
            raise ValueError(
                f"destination_miner is used only with destination='miner', got destination={destination!r}"
            )
        check_instance("destination_miner", destination_miner, BaseMiner, "a pytorch_metric_learning BaseMiner",
                       optional=True)
        for name, value in (("ics_weight", ics_weight), ("saturation_tolerance", saturation_tolerance),
                            ("initial_previous_loss", initial_previous_loss)):
            check_number(name, value, minimum=0)
        self.ics_weight = ics_weight  # read by _sub_loss_names during PML's constructor
        super().__init__(model, **kwargs)
        if destination == "miner" and destination_miner is None:
            destination_miner = TripletMarginMiner(margin=self.margin, type_of_triplets="semihard",
                                                   distance=self.distance)
        self.destination, self.destination_miner = destination, destination_miner
        self.saturation_tolerance = saturation_tolerance
        self.previous_loss = float(initial_previous_loss)
        self._labels: Optional[torch.Tensor] = None
        self.add_to_recordable_attributes(list_of_names=["ics_weight"], is_stat=False)
        if destination != "unbounded":
            self.register_stats(["hardness_destination"])

    def _sub_loss_names(self):
        return ["loss", "ics_loss"] if self.ics_weight > 0 else ["loss"]

    def get_extra_state(self) -> Dict[str, Any]:
        return {**super().get_extra_state(), "previous_loss": self.previous_loss}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.previous_loss = state["previous_loss"]

    # ----------------------------------------------------------------- the adversarial objective
    def gradual_destination_hardness(self) -> float:
        """LGA: D = -clip(L_prev, 0, margin) (robrank amd.py:245-270)."""
        return -min(max(self.previous_loss, 0.0), self.margin)

    def mined_destination_hardness(
        self, embeddings: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per source triplet: the mean hardness d(a, p) - d(a, n) of the destination triplets sharing its anchor,
        and whether there is one."""
        with torch.no_grad():
            clean = embeddings.detach()
            mined = self.destination_miner(clean, labels)
            rows = lmu.convert_to_triplets(mined, labels, t_per_anchor=self.triplets_per_anchor)
            dest_anchors, dest_positives, dest_negatives = (c_f.to_device(index, clean) for index in rows)
            hardness = self.triplet_hardness(clean[dest_anchors], clean[dest_positives], clean[dest_negatives])
            zeros = torch.zeros(len(clean), dtype=hardness.dtype, device=clean.device)
            sums = zeros.index_add(0, dest_anchors, hardness)
            counts = zeros.index_add(0, dest_anchors, torch.ones_like(hardness))
            return sums[anchors] / counts[anchors].clamp(min=1), counts[anchors] > 0

    def destination_hardness(
        self, embeddings: torch.Tensor, labels: Optional[torch.Tensor], anchors: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """D per source triplet and a mask of the triplets that have a destination (``"gradual"``/``"miner"``)."""
        if self.destination == "miner":
            if labels is None:
                raise ValueError("HMLoss(destination='miner') mines destination triplets and needs labels")
            return self.mined_destination_hardness(embeddings, labels, anchors)
        value = torch.full((len(anchors),), self.gradual_destination_hardness(), dtype=embeddings.dtype,
                           device=embeddings.device)
        return value, torch.ones(len(anchors), dtype=torch.bool, device=embeddings.device)

    @staticmethod
    def et_loss(source_hardness: torch.Tensor, destination_hardness: torch.Tensor) -> torch.Tensor:
        """ET: mean_i min(H_i - D_i, 0)^2 (robrank amd.py:325-327)."""
        return torch.clamp(source_hardness - destination_hardness, max=0).pow(2).mean()

    def source_hardness(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """H_i = d(a_i, p_i) - d(a_i, n_i) per triplet (:meth:`triplet_hardness`)."""
        return self.triplet_hardness(anchors, positives, negatives)

    def ics_losses(
        self, anchors: torch.Tensor, adversarial_anchors: torch.Tensor, positives: torch.Tensor
    ) -> torch.Tensor:
        """ICS per triplet: ics_weight * max(d(A, A') - d(A, P), 0) (robrank amd.py:771-779)."""
        return self.ics_weight * torch.relu(
            self.pair_distances(anchors, adversarial_anchors) - self.pair_distances(anchors, positives)
        )

    def _objective(self, role_rows, destination, has_destination):
        anchor_rows, positive_rows, negative_rows = role_rows

        def objective(adversarial: torch.Tensor) -> torch.Tensor:
            hardness = self.source_hardness(adversarial[anchor_rows], adversarial[positive_rows],
                                            adversarial[negative_rows])
            if self.destination == "unbounded":
                return -hardness.mean()
            return self.et_loss(hardness, torch.where(has_destination, destination, hardness.detach()))

        return objective

    # ----------------------------------------------------------------- one mini-batch
    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Dict[str, Dict[str, Any]]:
        self._labels = labels
        try:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        finally:
            self._labels = None

    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        anchors, positives, _ = triplets
        perturbation = PerturbationSet(triplets, self.perturb)
        destination = has_destination = None
        if self.destination != "unbounded":
            destination, has_destination = self.destination_hardness(embeddings, self._labels, anchors)
        stop = None if self.destination == "unbounded" else saturation_stop(self.saturation_tolerance)
        batch = self.attacked_batch(
            embeddings, inputs, triplets, perturbation,
            lambda: self._objective(perturbation.role_positions, destination, has_destination), stop,
        )
        adversarial_triplet = tuple(batch.adversarial[rows] for rows in perturbation.role_positions)
        triplet_losses = self.triplet_losses(*adversarial_triplet)
        self.previous_loss = triplet_losses.detach().mean().item()
        extra_losses = {}
        if self.ics_weight > 0:
            ics = self.ics_losses(embeddings[anchors], adversarial_triplet[0], embeddings[positives])
            extra_losses["ics_loss"] = self.triplet_entry(ics, triplets)
        if self.collect_stats and destination is not None and bool(has_destination.any()):
            self.hardness_destination = destination[has_destination].mean().item()
        return self.adversarial_loss_dict(batch, adversarial_triplet, triplet_losses, extra_losses)
