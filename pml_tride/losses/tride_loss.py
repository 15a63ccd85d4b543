"""TrideLoss: collapse-aware triplet decoupling (CA-TRIDE, Tian et al., ICML 2024) as a PML loss."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..adaptive_lambda import AdaptiveLambda, resolve_lam
from ..collapseness import mean_hardness, triplet_hinge
from ..reducers import CollapsenessReducer
from ..schedules import PhaseCycle
from ..validation import check_bool, check_choice, check_instance, check_number
from .adversarial_triplet_loss import AdversarialTripletLoss, AttackedBatch, PerturbationSet, Triplets

__all__ = ["TrideLoss", "AWARENESS", "VARIANTS", "ORIENTATIONS"]

AWARENESS = ("collapse", "hardness", "none")
VARIANTS = ("paper", "reference")
ORIENTATIONS = ("stop", "assist")
# COLO-TRIDE (arXiv): assisting is disabled for the first quarter of the epochs.
ASSIST_WARMUP_FRACTION = 0.25
# The released code stops an attack once its loss falls below this value (pnp.py); the paper stops at 0.
REFERENCE_STOP_TOLERANCE = 1e-5


def top_half_mean(dists: torch.Tensor) -> torch.Tensor:
    """Mean of the nearest half of the distances (at least one): d(A, N_v), d(A, P_v) of Eq. 12-13."""
    count = max(1, len(dists) // 2)
    return torch.topk(dists, count, largest=False).values.mean()


class TrideLoss(AdversarialTripletLoss):
    """CA-TRIDE adversarial triplet loss; a drop-in replacement for PML's ``TripletMarginLoss``.

    Each call is one mini-batch of Algorithm 1: the phase alternates CAP, ANP, CAP, ... (``phase="tride"``).
    CAP perturbs the positives and negatives with the anchors clean and maximises collapseness C with
    L_CAP = max(-C, 0) (Eq. 10); ANP perturbs the anchors with L_ANP = max(-C + Delta_TR, 0) (Eq. 11-12). The
    model is then trained on the decoupled adversarial triplet, plus the top-rank triplet L_TR in ANP (Eq. 14).
    With ``orientation="assist"`` (COLO-TRIDE, the arXiv version) the adversary does not stop when collapse looms
    but assists the model, minimising |g| where the paper's loss is max(g, 0) (docs: "COLO-TRIDE").

    Args:
        model: maps images in ``input_range`` to embeddings; held by reference (see the base class).
        lam: attention factor lambda of collapseness (Eq. 7), a number >= 0, or "auto" (or an
            :class:`~pml_tride.adaptive_lambda.AdaptiveLambda`): set after each batch from the distance gap of
            the attacked triplets; a number is ignored when ``collapseness_reducer`` is given, "auto" sets its lambda.
        phase: "tride" (CAP, ANP, CAP, ...), or a fixed "cap" or "anp" (Table 3).
        awareness: "collapse" (C, Eq. 8), "hardness" (H of Eq. 2 with the same clipping), or "none" (a naive
            adversary maximising H for all steps, no clipping and no early stop).
        top_rank: use the top-rank pair Delta_TR and L_TR (Table 4: ``top_rank=False`` is "w/o TPR").
        gamma: weight of L_TR (Eq. 13); ``gamma=0`` keeps Delta_TR only (Table 4: "w/o L_TR").
        beta_tr: margin of L_TR (Eq. 13).
        variant: "paper" equations, or "reference" for the released code's choices (reference doc section 1.9):
            softmax weighting of d_w, L_ANP = max(C, 0) + e^{min(C,0)} max(Delta', 0) with a detached weight,
            its 1e-5 stopping tolerance, and L_TR added in every phase, CAP included (section 1.7).
        orientation: "stop" (ICML: the attack stops once its loss max(g, 0) is 0) or "assist" (COLO-TRIDE: from
            epoch total_epochs / 4 on, each step minimises g while g > 0 and -g once g <= 0, for all steps);
            needs :meth:`set_epoch`. Not defined for ``awareness="none"`` or ``variant="reference"``.
        collapseness_reducer: the :class:`CollapsenessReducer` computing d_w; defaults to one with ``lam`` and the
            variant's weighting. Its ``distance`` stays None: the loss hands it dissimilarities (1 - s when the
            loss's ``distance`` is a similarity).
        **kwargs: the shared arguments (see :class:`AdversarialTripletLoss`), with the base defaults (Section 4.1:
            eps 8/255, alpha 1/255, at most 16 steps; progressive alpha of Appendix C, which needs
            :meth:`set_epoch`; ``perturb="per_triplet"`` gives the released code's copies).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lam: Union[float, str, AdaptiveLambda] = 10.0,
        phase: str = "tride",
        awareness: str = "collapse",
        top_rank: bool = True,
        gamma: float = 0.5,
        beta_tr: float = 0.04,
        variant: str = "paper",
        orientation: str = "stop",
        collapseness_reducer: Optional[CollapsenessReducer] = None,
        **kwargs: Any,
    ) -> None:
        check_choice("awareness", awareness, AWARENESS)
        check_choice("variant", variant, VARIANTS)
        check_choice("orientation", orientation, ORIENTATIONS)
        if orientation == "assist" and (awareness == "none" or variant == "reference"):
            raise ValueError(
                "orientation='assist' (COLO-TRIDE) turns the aware adversary's stop into assisting; it needs "
                f"awareness 'collapse' or 'hardness' and variant='paper', got awareness={awareness!r}, "
                f"variant={variant!r} (the released code has no COLO, reference doc section 1.11)"
            )
        check_bool("top_rank", top_rank)
        check_number("gamma", gamma, minimum=0)
        check_number("beta_tr", beta_tr, minimum=0)
        check_instance("collapseness_reducer", collapseness_reducer, CollapsenessReducer, "a CollapsenessReducer",
                       optional=True)
        if collapseness_reducer is not None and collapseness_reducer.distance is not None:
            raise ValueError(
                "TrideLoss hands its collapseness_reducer dissimilarities already (1 - s for a similarity): build "
                "the reducer without a distance and pass the distance to TrideLoss"
            )
        self.with_top_rank_loss = top_rank and gamma > 0
        initial_lam, adaptive_lambda = resolve_lam(lam)
        super().__init__(model, **kwargs)
        self.phase_cycle = PhaseCycle(phase)
        if collapseness_reducer is None:
            collapseness_reducer = CollapsenessReducer(lam=initial_lam, weighting=variant)
        self.collapseness_reducer = collapseness_reducer
        self.adaptive_lambda = adaptive_lambda
        self._attacked_distances: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.awareness, self.top_rank, self.gamma, self.beta_tr = awareness, top_rank, gamma, beta_tr
        self.variant, self.orientation = variant, orientation
        self.stop_tolerance = REFERENCE_STOP_TOLERANCE if variant == "reference" else 0.0
        self.last_phase: Optional[str] = None
        self.add_to_recordable_attributes(list_of_names=["gamma", "beta_tr"], is_stat=False)
        self.register_stats(["collapseness_clean", "collapseness_adv", "assist_steps", "current_lam"])

    @property
    def lam(self) -> float:
        return self.collapseness_reducer.lam

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Dict[str, Dict[str, Any]]:
        if self.adaptive_lambda is not None:  # also after a resume, which restores the adaptive state only
            self.collapseness_reducer.lam = self.adaptive_lambda.lam
        if self.collect_stats:
            self.current_lam = self.lam
        self._attacked_distances = None
        losses = super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if self.adaptive_lambda is not None:  # every call (every rank), triplets or not: the update may all-reduce
            no_triplets = (embeddings.new_zeros(0), embeddings.new_zeros(0))
            self.collapseness_reducer.lam = self.adaptive_lambda.update(*(self._attacked_distances or no_triplets))
        return losses

    def _sub_loss_names(self):
        return ["loss", "top_rank_loss"] if self.with_top_rank_loss else ["loss"]

    def get_extra_state(self) -> Dict[str, Any]:
        return {**super().get_extra_state(), "phase": self.phase_cycle.state_dict(), "last_phase": self.last_phase}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.phase_cycle.load_state_dict(state["phase"])
        self.last_phase = state["last_phase"]

    # ----------------------------------------------------------------- the adversarial objectives
    def collapseness(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
        """C = d_w(A, P) - d_w(A, N) (Eq. 5) with the injected reducer's weighting."""
        return self.collapseness_reducer.collapseness(ap_dists, an_dists)

    def awareness_score(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
        """The quantity the adversary maximises: C for "collapse", H (Eq. 2) for "hardness" and "none"."""
        if self.awareness == "collapse":
            return self.collapseness(ap_dists, an_dists)
        return mean_hardness(ap_dists, an_dists)

    def candidate_perturbation_margin(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
        """g_CAP = -C (-H for hardness and the naive adversary), the term that Eq. 10 clips at 0."""
        return -self.awareness_score(ap_dists, an_dists)

    def candidate_perturbation_loss(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
        """L_CAP = max(-C, 0) (Eq. 10); -H for the naive adversary."""
        margin = self.candidate_perturbation_margin(ap_dists, an_dists)
        return margin if self.awareness == "none" else torch.relu(margin)

    def anchor_perturbation_margin(
        self, ap_dists: torch.Tensor, an_dists: torch.Tensor, anchor_shift: torch.Tensor
    ) -> torch.Tensor:
        """g_ANP = -C + Delta_TR with Delta_TR = e^{max(C,0)} (d(A, N_v) - d(A, A_0)) (Eq. 11-12), unclipped."""
        score = self.awareness_score(ap_dists, an_dists)
        return -score + torch.exp(torch.relu(score)) * self._top_rank_gap(an_dists, anchor_shift)

    def _top_rank_gap(self, an_dists: torch.Tensor, anchor_shift: torch.Tensor) -> torch.Tensor:
        """d(A, N_v) - d(A, A_0), or 0 without the top-rank pair."""
        if not self.top_rank:
            return torch.zeros((), dtype=an_dists.dtype, device=an_dists.device)
        return top_half_mean(an_dists) - anchor_shift.mean()

    def anchor_perturbation_loss(
        self, ap_dists: torch.Tensor, an_dists: torch.Tensor, anchor_shift: torch.Tensor
    ) -> torch.Tensor:
        """L_ANP = max(-C + Delta_TR, 0) (Eq. 11) with Delta_TR = e^{max(C,0)} (d(A, N_v) - d(A, A_0)) (Eq. 12).

        ``anchor_shift`` holds d(a_i, a0_i) for every triplet. With ``variant="reference"`` (and an aware
        adversary): max(C, 0) + e^{min(C,0)} max(d(A, N_v) - d(A, A_0), 0), the weight detached.
        """
        if self.awareness != "none" and self.variant == "reference":
            score = self.awareness_score(ap_dists, an_dists)
            weight = torch.exp(torch.clamp(score, max=0)).detach()
            return torch.relu(score) + weight * torch.relu(self._top_rank_gap(an_dists, anchor_shift))
        margin = self.anchor_perturbation_margin(ap_dists, an_dists, anchor_shift)
        return margin if self.awareness == "none" else torch.relu(margin)

    @staticmethod
    def oriented_loss(margin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """COLO (arXiv): minimise g while g > 0 (attack), -g once g <= 0 (assist); returns (loss, assisting).

        The orientation is read from the current iterate and not differentiated: the loss is |g|, with the
        assisting direction -grad g taken at g = 0, where the ICML adversary would stop. ``assisting`` is a
        boolean tensor on the device (choosing the direction there reads nothing back to the host).
        """
        assisting = margin.detach() <= 0
        return torch.where(assisting, -margin, margin), assisting

    @property
    def assisting(self) -> bool:
        """Whether this call's adversary may assist: ``orientation="assist"`` and epoch >= total_epochs / 4."""
        if self.orientation != "assist":
            return False
        if self.epoch is None:
            raise RuntimeError(
                "TrideLoss(orientation='assist') disables assisting for the first quarter of the epochs, so it needs "
                "the epoch: call loss.set_epoch(epoch, total_epochs) (0-based) every epoch; TrideTrainer does it"
            )
        return self.epoch >= ASSIST_WARMUP_FRACTION * self.total_epochs

    def top_rank_loss(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
        """L_TR = gamma max(d(A, P_v) - d(A, N_v) + beta_TR, 0) (Eq. 13), nearest halves chosen independently."""
        return self.gamma * triplet_hinge(top_half_mean(ap_dists), top_half_mean(an_dists), self.beta_tr)

    def _stop_condition(self, assisting: bool):
        if self.awareness == "none" or assisting:
            return None
        tolerance = self.stop_tolerance
        return lambda loss: loss.item() <= tolerance

    def _objective(
        self, phase: str, inputs: torch.Tensor, triplets: Triplets, perturbation: PerturbationSet,
        assist_steps: Optional[list],
    ):
        """The attack objective of a phase; the images that stay clean are embedded (and normalised) once,
        without grad, and the iterate's embeddings are normalised once per step.

        With ``assist_steps`` (a list) the objective is COLO's oriented loss, and each step appends whether it
        assisted (a boolean tensor, summed once when the statistics are recorded).
        """
        anchors, positives, negatives = triplets

        def finish(margin_or_loss: torch.Tensor) -> torch.Tensor:
            if assist_steps is None:
                return margin_or_loss
            loss, assisting = self.oriented_loss(margin_or_loss)
            assist_steps.append(assisting)
            return loss

        cap_term = self.candidate_perturbation_loss if assist_steps is None else self.candidate_perturbation_margin
        anp_term = self.anchor_perturbation_loss if assist_steps is None else self.anchor_perturbation_margin
        distances = self.normalized_pair_distances
        if phase == "cap":
            positive_rows, negative_rows = perturbation.role_positions
            anchor_set = PerturbationSet((anchors,), "unique")
            clean_anchors = self.normalized(self.constant_embeddings(inputs[anchor_set.source_rows]))[
                anchor_set.role_positions[0]
            ]

            def objective(adversarial: torch.Tensor) -> torch.Tensor:
                adversarial = self.normalized(adversarial)
                return finish(cap_term(
                    distances(clean_anchors, adversarial[positive_rows]),
                    distances(clean_anchors, adversarial[negative_rows]),
                ))

            return objective
        (anchor_rows,) = perturbation.role_positions
        clean_set = PerturbationSet((anchors, positives, negatives), "unique")
        clean = self.normalized(self.constant_embeddings(inputs[clean_set.source_rows]))
        clean_anchors, clean_positives, clean_negatives = (clean[rows] for rows in clean_set.role_positions)

        def objective(adversarial: torch.Tensor) -> torch.Tensor:
            adversarial_anchors = self.normalized(adversarial)[anchor_rows]
            return finish(anp_term(
                distances(adversarial_anchors, clean_positives),
                distances(adversarial_anchors, clean_negatives),
                distances(adversarial_anchors, clean_anchors),
            ))

        return objective

    # ----------------------------------------------------------------- one mini-batch (Algorithm 1, Eq. 14)
    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        anchors, positives, negatives = triplets
        phase = self.phase_cycle.next()
        self.last_phase = phase
        roles = (positives, negatives) if phase == "cap" else (anchors,)
        perturbation = PerturbationSet(roles, self.perturb)
        assist_steps = [] if self.assisting else None
        batch = self.attacked_batch(
            embeddings, inputs, triplets, perturbation,
            lambda: self._objective(phase, inputs, triplets, perturbation, assist_steps),
            self._stop_condition(assist_steps is not None),
        )
        adversarial = batch.adversarial
        if phase == "cap":
            positive_rows, negative_rows = perturbation.role_positions
            adversarial_triplet = (embeddings[anchors], adversarial[positive_rows], adversarial[negative_rows])
        else:
            (anchor_rows,) = perturbation.role_positions
            adversarial_triplet = (adversarial[anchor_rows], embeddings[positives], embeddings[negatives])
        triplet_losses = self.triplet_losses(*adversarial_triplet)  # before L_TR: the graph's order stays as it was
        if self.adaptive_lambda is not None:
            with torch.no_grad():  # the distances Eq. 7 weighed, for the next batch's lambda
                anchor_emb, positive_emb, negative_emb = adversarial_triplet
                self._attacked_distances = (self.pair_distances(anchor_emb, positive_emb),
                                            self.pair_distances(anchor_emb, negative_emb))
        extra_losses = {}
        if self.with_top_rank_loss:
            # the paper adds L_TR in ANP (Eq. 14); the released code on every adversarial step (section 1.7)
            if phase == "anp" or self.variant == "reference":
                anchor_emb, positive_emb, negative_emb = adversarial_triplet
                top_rank = self.top_rank_loss(
                    self.pair_distances(anchor_emb, positive_emb), self.pair_distances(anchor_emb, negative_emb)
                )
                extra_losses["top_rank_loss"] = {"losses": top_rank, "indices": None,
                                                 "reduction_type": "already_reduced"}
            else:
                extra_losses["top_rank_loss"] = self.zero_loss()
        if self.collect_stats:
            self.assist_steps = int(torch.stack(assist_steps).sum()) if assist_steps else 0
        return self.adversarial_loss_dict(batch, adversarial_triplet, triplet_losses, extra_losses)

    def record_defense_stats(
        self, batch: AttackedBatch, clean: Tuple[torch.Tensor, torch.Tensor],
        adversarial: Tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """C of the clean and the adversarial triplets (Eq. 5) with the loss's own weighting."""
        self.collapseness_clean = self.collapseness(*clean).item()
        self.collapseness_adv = self.collapseness(*adversarial).item()
