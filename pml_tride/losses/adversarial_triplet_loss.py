"""Base class of every input-space adversarial triplet defense in pml-tride: the defense contract.

It owns what the triplet defenses share on top of :class:`~pml_tride.losses.AdversarialInputLoss` (the attack's
arguments, the model, the input capture, the epoch and state, the PML entry point, one attack and its training
forward): the shared arguments and their defaults, the triplets of a call, the per-triplet margin loss, the loss
dict and the statistics (:mod:`.defense_stats`). The perturbed set comes from :mod:`.perturbation_set`, and the
model passes (the one PGD engine, chunked forwards) from :mod:`.attack_passes`.
Subclasses implement :meth:`AdversarialTripletLoss.compute_adversarial_loss`.
"""

from __future__ import annotations

import inspect
from types import MappingProxyType
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from ..collapseness import dissimilarity, triplet_hinge
from ..validation import check_choice, check_number
from .adversarial_input_loss import ATTACK_ARGUMENTS, AdversarialInputLoss
from .attack_passes import DEFAULT_CHUNK_BATCHES
from .defense_stats import BASE_STAT_NAMES, DefenseStats
from .perturbation_set import PERTURB_MODES, AttackedBatch, Objective, PerturbationSet, Triplets
from .triplet_diagnostics import diagnostic_stat_names

__all__ = ["AdversarialTripletLoss", "AttackedBatch", "PerturbationSet", "PERTURB_MODES", "SHARED_DEFAULTS",
           "BASE_STAT_NAMES", "DEFAULT_CHUNK_BATCHES", "Objective", "Triplets"]

# The arguments every defense shares, with the base class's defaults; a subclass changes a default in its
# ``default_overrides`` and declares only its own arguments.
SHARED_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "margin": 0.2,
    "eps": 8 / 255,
    "alpha": 1 / 255,
    "steps": 16,
    "progressive_alpha": True,
    "perturb": "unique",
    "input_range": (0.0, 1.0),
    "triplets_per_anchor": "all",
    "attack_batch_size": None,
})


def _pml_loss_arguments() -> Tuple[str, ...]:
    """The keyword arguments PML's loss base classes take (``distance``, ``reducer``, ``collect_stats``, ...)."""
    names = []
    for klass in BaseMetricLossFunction.__mro__:
        if klass in (nn.Module, object) or "__init__" not in vars(klass):
            continue
        names += [parameter.name for parameter in inspect.signature(klass.__init__).parameters.values()
                  if parameter.name != "self" and parameter.kind is not parameter.VAR_KEYWORD]
    return tuple(names)


PML_LOSS_ARGUMENTS = _pml_loss_arguments()


class AdversarialTripletLoss(DefenseStats, AdversarialInputLoss):
    """Adversarial training on mined triplets, as a PML loss.

    The defense contract: a subclass declares only its own arguments and passes the shared ones below through
    ``**kwargs`` (as PML's ``TripletMarginLoss`` passes ``distance`` and ``reducer``); a default of its own for a
    shared argument goes in its ``default_overrides`` mapping (see :meth:`shared_defaults`). It implements
    :meth:`compute_adversarial_loss` with :meth:`attacked_batch` (the attack, or the clean images when no step can move
    them) and :meth:`adversarial_loss_dict` (the loss dict and the statistics), and names the roles whose
    embedding shift the baseline diagnostics record in ``diagnosed_roles`` (or records its own statistics in
    :meth:`record_defense_stats`). What a loss records is :attr:`stat_names`.

    Args:
        model: the ``nn.Module`` that maps images in ``input_range`` to embeddings. It is held by reference,
            not registered as a submodule (not saved in ``state_dict()``, not moved by ``.to()``).

    Shared arguments (keywords; the defaults here are :data:`SHARED_DEFAULTS`):
        margin: triplet margin beta_T (Eq. 1). Default 0.2.
        eps, alpha, steps: L-inf PGD radius, step size and number of steps (pixel units). Defaults 8/255, 1/255, 16.
        progressive_alpha: multiply alpha by epoch / total_epochs (Appendix C); needs :meth:`set_epoch`.
            Default True.
        perturb: "unique" images per role, or "per_triplet" copies (reference semantics). Default "unique".
        input_range: the valid pixel range of the inputs. Default (0.0, 1.0).
        triplets_per_anchor: used when the loss builds triplets itself (no indices_tuple or pairs), as in
            PML's ``TripletMarginLoss``. Default "all".
        attack_batch_size: most images pushed through the model at once by the attack, the clean embeddings it
            needs and the training forward of the adversarial images (None, the default: ``DEFAULT_CHUNK_BATCHES``
            times the size of the caller's batch, so the per-triplet copies of a mined batch, e.g. HM's 3 x 56 for
            112 images, run in one pass, and only dense miners' tens of thousands of copies are chunked).
            The attack's result does not depend on it; see :meth:`training_embeddings` for BatchNorm.
        distance, reducer, collect_stats, embedding_regularizer, embedding_reg_weight: PML's loss arguments.
            ``distance`` may be a similarity (``CosineSimilarity``, ``DotProductSimilarity``), as in PML's
            ``TripletMarginLoss``: see :meth:`pair_distances`.
    """

    # Defaults of shared arguments that differ from SHARED_DEFAULTS for this defense.
    default_overrides: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    # Roles (of "anchor", "positive", "negative") whose embedding shift the baseline diagnostics record; None: the
    # defense records no baseline diagnostics.
    diagnosed_roles: ClassVar[Optional[Tuple[str, ...]]] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        unknown = sorted(set(cls.default_overrides) - set(SHARED_DEFAULTS))
        if unknown:
            raise TypeError(f"{cls.__name__}.default_overrides names {unknown}, which are not shared arguments "
                            f"{tuple(SHARED_DEFAULTS)}")

    @classmethod
    def shared_defaults(cls) -> Dict[str, Any]:
        """The defaults of the shared arguments for this class: :data:`SHARED_DEFAULTS` with its
        ``default_overrides``."""
        return {**SHARED_DEFAULTS, **cls.default_overrides}

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        shared = self.shared_defaults()
        shared.update({name: kwargs.pop(name) for name in SHARED_DEFAULTS if name in kwargs})
        unknown = sorted(set(kwargs) - set(PML_LOSS_ARGUMENTS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown keyword arguments {unknown}; shared arguments: "
                f"{tuple(SHARED_DEFAULTS)}, PML loss arguments: {PML_LOSS_ARGUMENTS}, and the defense's own"
            )
        super().__init__(model, **{name: shared[name] for name in ATTACK_ARGUMENTS}, **kwargs)
        margin, perturb = shared["margin"], shared["perturb"]
        check_number("margin", margin, minimum=0)
        check_choice("perturb", perturb, PERTURB_MODES)
        self.margin = margin
        self.perturb = perturb
        self.triplets_per_anchor = shared["triplets_per_anchor"]
        self.add_to_recordable_attributes(list_of_names=["margin", "eps", "alpha", "steps"], is_stat=False)
        self.register_stats(BASE_STAT_NAMES)
        if self.diagnosed_roles is not None:
            self.register_stats(diagnostic_stat_names(self.diagnosed_roles))

    def get_default_reducer(self) -> MeanReducer:
        """Mean over all triplets, zero-loss ones included, as the released CA-TRIDE and robrank code."""
        return MeanReducer()

    # ----------------------------------------------------------------- PML entry point
    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels) -> Dict[str, Dict[str, Any]]:
        inputs = self._resolve_inputs(embeddings)
        triplets = lmu.convert_to_triplets(indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor)
        triplets = tuple(c_f.to_device(index, embeddings) for index in triplets)
        if len(triplets[0]) == 0:
            return self._idle_losses(inputs.to(embeddings.device)) if self._wrapped else self.zero_losses()
        self._batch_rows, self._num_triplets = len(embeddings), len(triplets[0])
        try:
            return self.compute_adversarial_loss(embeddings, inputs.to(embeddings.device), triplets)
        finally:
            self._batch_rows = self._num_triplets = None

    def compute_adversarial_loss(
        self, embeddings: torch.Tensor, inputs: torch.Tensor, triplets: Triplets
    ) -> Dict[str, Dict[str, Any]]:
        """Attack, then return the PML loss dict of the adversarial training objective (the defense's part:
        typically :meth:`attacked_batch`, then :meth:`adversarial_loss_dict`)."""
        raise NotImplementedError

    @staticmethod
    def triplet_entry(losses: torch.Tensor, triplets: Triplets) -> Dict[str, Any]:
        """A PML sub-loss of one value per triplet (reduced by the loss's reducer)."""
        return {"losses": losses, "indices": triplets, "reduction_type": "triplet"}

    def adversarial_loss_dict(
        self,
        batch: AttackedBatch,
        adversarial_triplet: Sequence[torch.Tensor],
        triplet_losses: Optional[torch.Tensor] = None,
        extra_losses: Optional[Dict[str, Dict[str, Any]]] = None,
    ) -> Dict[str, Dict[str, Any]]:
        """The PML loss dict: ``"loss"``, the triplet hinge (Eq. 1) of ``adversarial_triplet`` (the
        (anchor, positive, negative) embeddings trained on; ``triplet_losses`` when the defense computed it),
        then ``extra_losses``; records the statistics when ``collect_stats``."""
        if triplet_losses is None:
            triplet_losses = self.triplet_losses(*adversarial_triplet)
        losses = {"loss": self.triplet_entry(triplet_losses, batch.triplets), **(extra_losses or {})}
        if self.collect_stats:
            self.record_stats(batch, adversarial_triplet)
        return losses

    # ----------------------------------------------------------------- shared machinery for subclasses
    def pair_distances(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Row-wise distances d(first_i, second_i) with the injected PML distance; a similarity s (``is_inverted``)
        gives the dissimilarity 1 - s (:func:`pml_tride.collapseness.dissimilarity`), so that every equation of
        the defenses keeps its sign and the hinge is PML's ``distance.margin(ap, an) + margin``."""
        return self.normalized_pair_distances(self.normalized(first), self.normalized(second))

    def normalized(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``embeddings`` as the injected distance compares them (normalised if it normalises). Attack objectives
        normalise the embeddings that stay clean once, and the iterate's once per step, not once per use."""
        return self.distance.maybe_normalize(embeddings)

    def normalized_pair_distances(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Row-wise distances (1 - s for a similarity) of embeddings already passed through :meth:`normalized`."""
        return dissimilarity(self.distance.pairwise_distance(first, second), self.distance)

    def triplet_losses(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Per-triplet hinge max(d(a, p) - d(a, n) + margin, 0) (Eq. 1)."""
        return triplet_hinge(self.pair_distances(anchors, positives), self.pair_distances(anchors, negatives),
                             self.margin)

    def triplet_hardness(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Per-triplet hardness h_i = d(a_i, p_i) - d(a_i, n_i) (the terms of Eq. 2)."""
        return self.pair_distances(anchors, positives) - self.pair_distances(anchors, negatives)
