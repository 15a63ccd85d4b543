"""Base class of every PML loss in pml-tride that attacks its inputs: what a triplet defense
(:class:`~pml_tride.losses.AdversarialTripletLoss`) and the wrapper of any PML loss
(:class:`~pml_tride.losses.AdversarialLoss`) share.

It owns the attack's arguments and their validation, the model held by reference, the images behind the
embeddings (:mod:`.input_capture`), the epoch and the progressive step size, the state a resumed run needs, the
PML entry point (``forward`` with ``inputs=``), the registration of statistics and one attack of a set of images
followed by the training forward of the result (:meth:`AdversarialInputLoss.attacked_batch`, through the model
passes of :mod:`.attack_passes`). Subclasses implement PML's ``compute_loss``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.utils import common_functions as c_f
from torch import nn

from ..pgd import PGDResult
from ..schedules import check_epoch, progressive_alpha
from ..validation import check_instance, check_number
from .attack_passes import AttackPasses
from .input_capture import InputCapture, ModelReference
from .perturbation_set import AttackedBatch, Objective, PerturbationSet, Triplets

__all__ = ["AdversarialInputLoss", "ATTACK_ARGUMENTS"]

# The keyword arguments of the attack, which every subclass passes to this base.
ATTACK_ARGUMENTS = ("eps", "alpha", "steps", "progressive_alpha", "input_range", "attack_batch_size")


class AdversarialInputLoss(AttackPasses, BaseMetricLossFunction):
    """A PML loss that perturbs the images behind its embeddings with the one PGD engine.

    Args:
        model: the ``nn.Module`` that maps images in ``input_range`` to embeddings. It is held by reference,
            not registered as a submodule (not saved in ``state_dict()``, not moved by ``.to()``).
        eps, alpha, steps: L-inf PGD radius, step size and number of steps (pixel units).
        progressive_alpha: multiply alpha by epoch / total_epochs (Appendix C); needs :meth:`set_epoch`.
        input_range: the valid pixel range of the inputs.
        attack_batch_size: most images pushed through the model at once by the attack, the clean embeddings it
            needs and the training forward (None: ``DEFAULT_CHUNK_BATCHES`` times the caller's batch).
        **kwargs: PML's loss arguments (``distance``, ``reducer``, ``collect_stats``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float,
        steps: int,
        progressive_alpha: bool,
        input_range: Tuple[float, float],
        attack_batch_size: Optional[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_instance("model", model, nn.Module, "a torch.nn.Module mapping images to embeddings")
        for name, value in (("eps", eps), ("alpha", alpha)):
            check_number(name, value, minimum=0)
        check_number("steps", steps, minimum=0, integer=True)
        if len(input_range) != 2 or not input_range[0] < input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low < high, got {input_range!r}")
        check_number("attack_batch_size", attack_batch_size, minimum=1, integer=True, optional=True)
        self._model_reference = ModelReference(model)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.progressive_alpha = progressive_alpha
        self.input_range = tuple(input_range)
        self.attack_batch_size = attack_batch_size
        self._batch_rows: Optional[int] = None
        self._num_triplets: Optional[int] = None
        self.epoch: Optional[int] = None
        self.total_epochs: Optional[int] = None
        self._warned_no_epoch = False
        self._stat_names: Tuple[str, ...] = ()
        self._capture = InputCapture(model)

    @property
    def model(self) -> nn.Module:
        """The model the loss attacks (held by reference, see :class:`ModelReference`)."""
        return self._model_reference.module

    # ----------------------------------------------------------------- statistics
    @property
    def stat_names(self) -> Tuple[str, ...]:
        """The names of the statistics this loss records (attributes, filled on each call when ``collect_stats``),
        in registration order."""
        return self._stat_names

    def register_stats(self, names: Sequence[str]) -> None:
        """Declare per-call statistics (PML record-keeping); they are filled only when ``collect_stats``."""
        self._stat_names = self._stat_names + tuple(names)
        self.add_to_recordable_attributes(list_of_names=list(names), is_stat=True)

    def enable_stats(self) -> None:
        """Turn statistics collection on after construction (as ``collect_stats=True`` would have)."""
        self.collect_stats = True
        self.add_to_recordable_attributes(list_of_names=list(self._stat_names), is_stat=True)

    # ----------------------------------------------------------------- epoch and state
    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        """Set the 0-based epoch used by the progressive step size (Appendix C)."""
        check_epoch(epoch, total_epochs)
        self.epoch, self.total_epochs = epoch, total_epochs

    @property
    def current_alpha(self) -> float:
        """The PGD step size in effect: alpha * epoch / total_epochs when progressive (Appendix C)."""
        if not self.progressive_alpha:
            return self.alpha
        if self.epoch is None:
            if not self._warned_no_epoch:
                warnings.warn(
                    f"{type(self).__name__}(progressive_alpha=True) was never told the epoch: call "
                    "loss.set_epoch(epoch, total_epochs) every epoch for the progressive step size of Appendix C. "
                    "Using the full alpha until then.",
                    stacklevel=3,
                )
                self._warned_no_epoch = True
            return self.alpha
        return progressive_alpha(self.alpha, self.epoch, self.total_epochs)

    @property
    def attack_enabled(self) -> bool:
        """False when no step can move the inputs (eps, steps or the current alpha is 0)."""
        return self.eps > 0 and self.steps > 0 and self.current_alpha > 0

    def get_extra_state(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "total_epochs": self.total_epochs}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.epoch, self.total_epochs = state["epoch"], state["total_epochs"]

    # ----------------------------------------------------------------- input capture
    def remove_hook(self) -> None:
        """Detach the input-capturing hook from the model (pass ``inputs=`` explicitly afterwards)."""
        self._capture.remove()

    def _resolve_inputs(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self._capture.resolve(embeddings, type(self).__name__, self.input_range)

    # ----------------------------------------------------------------- PML entry point
    def forward(
        self,
        embeddings: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        indices_tuple: Optional[Tuple[torch.Tensor, ...]] = None,
        ref_emb: Optional[torch.Tensor] = None,
        ref_labels: Optional[torch.Tensor] = None,
        *,
        inputs: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """PML's loss call; ``inputs`` are the images behind ``embeddings`` (else taken from the model hook)."""
        if ref_emb is not None or ref_labels is not None:
            raise ValueError(
                f"{type(self).__name__} does not support ref_emb/ref_labels: reference embeddings have no images "
                "to perturb. Concatenate the reference batch into embeddings (and inputs) instead"
            )
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
            shape = getattr(embeddings, "shape", embeddings)
            raise ValueError(f"embeddings must be a 2-D tensor (batch, dim), got {shape}")
        if not torch.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or Inf values")
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        self._capture.explicit_inputs = inputs
        try:
            return super().forward(embeddings, labels, indices_tuple)
        finally:
            self._capture.explicit_inputs = None

    # ----------------------------------------------------------------- one attack and its training forward
    def attacked_batch(
        self,
        embeddings: torch.Tensor,
        inputs: torch.Tensor,
        triplets: Optional[Triplets],
        perturbation: PerturbationSet,
        build_objective: Callable[[], Objective],
        stop_condition: Optional[Callable[[torch.Tensor], bool]] = None,
    ) -> AttackedBatch:
        """Attack ``perturbation``'s images with the objective ``build_objective()`` (built only when an attack
        runs) and embed the result for training (:meth:`training_embeddings`). When no step can move the images
        (:attr:`attack_enabled` is False) the result is the clean images, 0 steps, and no objective is built."""
        if self.attack_enabled:
            self.check_attack_memory(len(perturbation), inputs)
        images = inputs[perturbation.source_rows]
        if self.attack_enabled:
            result = self.attack(images, build_objective(), stop_condition)
        else:
            result = PGDResult(adversarial=images, steps_taken=0, stopped_early=False, last_loss=None)
        adversarial = self.training_embeddings(result, perturbation, embeddings)
        return AttackedBatch(embeddings, inputs, triplets, perturbation, result, adversarial)
