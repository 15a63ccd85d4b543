"""AdversarialLoss: adversarial training of any PML loss (the embedding-shifted recipe of EST, generalised from the
triplet loss to the wrapped loss)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses.base_loss_wrapper import BaseLossWrapper
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from ..collapseness import check_lam, dissimilarity, embedding_shift, weighted_collapseness
from ..pgd import frozen_model
from ..validation import check_choice
from .adversarial_input_loss import ATTACK_ARGUMENTS, AdversarialInputLoss
from .adversarial_triplet_loss import SHARED_DEFAULTS
from .perturbation_set import AttackedBatch, Objective, PerturbationSet

__all__ = ["AdversarialLoss", "ADVERSARIAL_LOSS_AWARENESS", "ADVERSARIAL_LOSS_STAT_NAMES"]

ADVERSARIAL_LOSS_AWARENESS = ("none", "collapse")
# The statistics AdversarialLoss records (when ``collect_stats``); the collapseness ones are NaN when the batch has
# no positive or no negative pair.
ADVERSARIAL_LOSS_STAT_NAMES = ("pgd_steps", "num_perturbed", "max_perturbation", "embedding_shift",
                               "pgd_forward_images", "pgd_backward_images", "clean_loss", "adversarial_loss",
                               "collapseness_clean", "collapseness_adv")
# PML losses that compare the batch with a second view passed as ref_emb (no images behind it to perturb).
REFERENCE_BATCH_LOSSES = ("VICRegLoss",)
# The one PML loss argument the wrapper takes itself; the others (distance, reducer, regularizers) belong to the
# wrapped loss.
WRAPPER_PML_ARGUMENTS = ("collect_stats",)
# Eq. 7's attention factor for the collapse-aware stop, as TrideLoss's default.
DEFAULT_LAM = 10.0

Pairs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _check_wrappable(loss: Any) -> None:
    if isinstance(loss, AdversarialInputLoss):
        raise TypeError(
            f"AdversarialLoss wraps a plain PML loss, got {type(loss).__name__}, which attacks its inputs itself; "
            "use it directly"
        )
    if isinstance(loss, BaseLossWrapper):
        raise TypeError(
            f"AdversarialLoss cannot wrap {type(loss).__name__}: it feeds the wrapped loss reference embeddings "
            "(ref_emb: a memory queue or a second view) that have no images to perturb. Wrap the inner loss instead"
        )
    if not isinstance(loss, BaseMetricLossFunction):
        raise TypeError(
            "AdversarialLoss needs a pytorch_metric_learning loss (a BaseMetricLossFunction, e.g. "
            f"losses.MultiSimilarityLoss()), got {type(loss).__name__}"
        )
    for name in REFERENCE_BATCH_LOSSES:
        reference_class = getattr(pml_losses, name, None)
        if reference_class is not None and isinstance(loss, reference_class):
            raise TypeError(
                f"AdversarialLoss cannot wrap {name}: it compares the batch with a second view passed as ref_emb, "
                "which has no images to perturb"
            )


class AdversarialLoss(AdversarialInputLoss):
    """Adversarial training of any PML loss: ``AdversarialLoss(losses.MultiSimilarityLoss(), model)``.

    Each call (the embedding-shifted recipe of EST, generalised to the wrapped loss):

    1. the images of the tuples (each distinct image once; every image when ``indices_tuple`` is None, as the
       wrapped loss then uses all pairs or all rows) are perturbed by the one PGD engine, the model in eval mode,
       to maximise the wrapped loss, called with the same labels and ``indices_tuple``, on the batch whose
       perturbed rows are the iterate's embeddings and whose other rows are their clean embeddings (computed once,
       without grad, in eval mode);
    2. the returned loss is the wrapped loss on the adversarial embeddings of those rows (the model in its current
       mode, with grad) and the caller's embeddings elsewhere.

    The wrapped loss keeps its own parameters (proxies, class weights) unchanged by the attack (no ``.grad``, same
    values and ``requires_grad``); they are a submodule of this loss (in ``parameters()`` and ``state_dict()``)
    and are trained by the caller's optimizer through the returned loss, as in plain PML.

    ``awareness="collapse"`` (an extension of CA-TRIDE's collapse-aware stop to pair and tuple losses, off by
    default): before each step, the collapseness C = d_w(A, P) - d_w(A, N) (Eq. 5-7) of the iterate's batch over
    the tuples' positive and negative pairs (all pairs without ``indices_tuple``) is computed with the wrapped
    loss's distance; the attack stops once C >= 0. For a similarity s (``distance.is_inverted``) d is the
    dissimilarity 1 - s (:func:`pml_tride.collapseness.dissimilarity`, as in every defense). Without a positive or a
    negative pair the attack runs all its steps.

    Args:
        loss: the PML loss to harden (a ``BaseMetricLossFunction``; not a wrapper that feeds ``ref_emb``).
        model: maps images in ``input_range`` to embeddings; held by reference (see
            :class:`~pml_tride.losses.AdversarialInputLoss`).
        awareness: "none" (the attack runs all ``steps``) or "collapse" (see above).
        lam: attention factor lambda of d_w (Eq. 7) for ``awareness="collapse"``.
        eps, alpha, steps, progressive_alpha, input_range, attack_batch_size: the attack (see
            :class:`~pml_tride.losses.AdversarialInputLoss`); defaults as the triplet defenses' shared ones
            (8/255, 1/255, 16 steps, progressive step size, which needs :meth:`set_epoch`).
        collect_stats: PML's record-keeping of :data:`ADVERSARIAL_LOSS_STAT_NAMES`.
    """

    # each distinct image of the tuples is perturbed once (read by the attack's memory check)
    perturb = "unique"

    def __init__(
        self,
        loss: BaseMetricLossFunction,
        model: nn.Module,
        *,
        awareness: str = "none",
        lam: float = DEFAULT_LAM,
        **kwargs: Any,
    ) -> None:
        _check_wrappable(loss)
        check_choice("awareness", awareness, ADVERSARIAL_LOSS_AWARENESS)
        check_lam(lam)
        attack = {name: kwargs.pop(name, SHARED_DEFAULTS[name]) for name in ATTACK_ARGUMENTS}
        unknown = sorted(set(kwargs) - set(WRAPPER_PML_ARGUMENTS))
        if unknown:
            raise TypeError(
                f"AdversarialLoss got unknown keyword arguments {unknown}; its own: awareness, lam, "
                f"{', '.join(ATTACK_ARGUMENTS)}, {', '.join(WRAPPER_PML_ARGUMENTS)}. The wrapped loss's arguments "
                "(distance, reducer, margins, regularizers) go to the wrapped loss"
            )
        super().__init__(model, **attack, **kwargs)
        self.loss = loss
        self.awareness, self.lam = awareness, lam
        self.add_to_recordable_attributes(list_of_names=["eps", "alpha", "steps"], is_stat=False)
        self.register_stats(ADVERSARIAL_LOSS_STAT_NAMES)

    # ----------------------------------------------------------------- the rows and pairs of a call
    @staticmethod
    def perturbed_rows(embeddings: torch.Tensor, indices_tuple: Optional[Tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """The distinct batch rows the tuples use (sorted); every row without ``indices_tuple``."""
        if indices_tuple is None:
            return torch.arange(len(embeddings), device=embeddings.device)
        if len(indices_tuple) not in (3, 4):
            raise ValueError(
                "indices_tuple must be triplets (anchors, positives, negatives) or pairs (a1, p, a2, n), got a "
                f"tuple of {len(indices_tuple)}"
            )
        return torch.unique(torch.cat([c_f.to_device(index, embeddings).long() for index in indices_tuple]))

    def pair_distances(self, embeddings: torch.Tensor, pairs: Pairs) -> Tuple[torch.Tensor, torch.Tensor]:
        """(d(a1, p), d(a2, n)) of the positive and negative pairs with the wrapped loss's distance; for a
        similarity s, the dissimilarity 1 - s (larger = farther, as Eq. 5-7 read it; as every defense)."""
        distance = self.loss.distance
        normalized = distance.maybe_normalize(embeddings)
        anchors1, positives, anchors2, negatives = pairs
        ap = distance.pairwise_distance(normalized[anchors1], normalized[positives])
        an = distance.pairwise_distance(normalized[anchors2], normalized[negatives])
        return dissimilarity(ap, distance), dissimilarity(an, distance)

    def pair_collapseness(self, embeddings: torch.Tensor, pairs: Optional[Pairs]) -> Optional[torch.Tensor]:
        """C = d_w(A, P) - d_w(A, N) (Eq. 5-7, the paper's weighting) over the pairs; None without a positive or a
        negative pair."""
        if pairs is None:
            return None
        return weighted_collapseness(*self.pair_distances(embeddings, pairs), self.lam, "paper")

    @staticmethod
    def tuple_pairs(labels: Optional[torch.Tensor], indices_tuple, embeddings: torch.Tensor) -> Optional[Pairs]:
        """The positive and negative pairs of the tuples (all pairs without ``indices_tuple``); None when either
        kind is missing."""
        if indices_tuple is None and labels is None:
            return None
        pairs = lmu.convert_to_pairs(indices_tuple, labels)
        pairs = tuple(c_f.to_device(index, embeddings).long() for index in pairs)
        if len(pairs[0]) == 0 or len(pairs[2]) == 0:
            return None
        return pairs

    # ----------------------------------------------------------------- one mini-batch
    def _objective(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, rows: torch.Tensor, labels, indices_tuple,
        pairs: Optional[Pairs], collapseness: List[torch.Tensor],
    ) -> Objective:
        """-L(batch) with the iterate's embeddings in ``rows`` and the clean eval-mode embeddings elsewhere
        (the engine minimises it); with the collapse-aware stop, appends each iterate's C to ``collapseness``."""
        clean = torch.zeros_like(embeddings.detach())
        kept = torch.ones(len(embeddings), dtype=torch.bool, device=embeddings.device)
        kept[rows] = False
        if kept.any():
            clean[kept] = self.constant_embeddings(inputs[kept]).to(clean.dtype)

        def objective(adversarial: torch.Tensor) -> torch.Tensor:
            batch = clean.index_copy(0, rows, adversarial)
            if self.awareness == "collapse" and pairs is not None:
                with torch.no_grad():
                    collapseness.append(self.pair_collapseness(batch, pairs))
            return -self.loss(batch, labels, indices_tuple)

        return objective

    def _stop_condition(self, pairs: Optional[Pairs], collapseness: List[torch.Tensor]):
        if self.awareness == "none" or pairs is None:
            return None
        return lambda loss: collapseness[-1].item() >= 0

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Dict[str, Dict[str, Any]]:
        inputs = self._resolve_inputs(embeddings).to(embeddings.device)
        rows = self.perturbed_rows(embeddings, indices_tuple)
        if len(rows) == 0:
            return self._clean_losses(embeddings, inputs, labels, indices_tuple)
        pairs = self.tuple_pairs(labels, indices_tuple, embeddings) if self.awareness == "collapse" else None
        perturbation = PerturbationSet((rows,), "unique")
        collapseness: List[torch.Tensor] = []
        self._batch_rows = len(embeddings)
        try:
            with frozen_model(self.loss):
                batch = self.attacked_batch(
                    embeddings, inputs, None, perturbation,
                    lambda: self._objective(embeddings, inputs, rows, labels, indices_tuple, pairs, collapseness),
                    self._stop_condition(pairs, collapseness),
                )
        finally:
            self._batch_rows = None
        training = embeddings.index_copy(0, rows, batch.adversarial.to(embeddings.dtype))
        if self.collect_stats:  # before the training call, whose statistics the wrapped loss keeps
            self.record_stats(batch, training, labels, indices_tuple)
        value = self.loss(training, labels, indices_tuple)
        if self.collect_stats:
            self.adversarial_loss = value.item()
        return {"loss": {"losses": value, "indices": None, "reduction_type": "already_reduced"}}

    def _clean_losses(self, embeddings, inputs, labels, indices_tuple) -> Dict[str, Dict[str, Any]]:
        """No tuple: the wrapped loss of the clean batch (0 for tuple losses); under DDP the rank still makes the
        training forward the other ranks make (same collective calls)."""
        value = self.loss(embeddings, labels, indices_tuple)
        if self._wrapped:
            value = value + self._idle_losses(inputs)["loss"]["losses"]
        return {"loss": {"losses": value, "indices": None, "reduction_type": "already_reduced"}}

    # ----------------------------------------------------------------- statistics
    def record_stats(self, batch: AttackedBatch, training: torch.Tensor, labels, indices_tuple) -> None:
        """Fill :data:`ADVERSARIAL_LOSS_STAT_NAMES` (no grad), but ``adversarial_loss``: the training call's value."""
        rows, result = batch.perturbation.source_rows, batch.result
        with torch.no_grad():
            self.pgd_steps = result.steps_taken
            self.num_perturbed = len(rows)
            self.max_perturbation = (result.adversarial - batch.inputs[rows]).abs().max().item()
            self.embedding_shift = embedding_shift(batch.embeddings[rows], batch.adversarial).item()
            self.clean_loss = self.loss(batch.embeddings, labels, indices_tuple).item()
            pairs = self.tuple_pairs(labels, indices_tuple, training)
            for name, embeddings in (("collapseness_clean", batch.embeddings), ("collapseness_adv", training)):
                value = self.pair_collapseness(embeddings, pairs)
                setattr(self, name, math.nan if value is None else value.item())
