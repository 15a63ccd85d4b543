"""Base class of every input-space adversarial triplet defense in pml-tride.

It owns what all defenses share: holding the model without registering it, capturing the batch inputs through
a forward hook (so ``loss(embeddings, labels, indices_tuple)`` stays a drop-in PML call), validating inputs,
building the set of images to perturb, calling the one PGD engine, the training forward of the adversarial
images, the per-triplet margin loss, the epoch, and the state that a resumed run needs.
Subclasses implement :meth:`compute_adversarial_loss`.

Memory does not grow with the number of triplets beyond the images themselves: the attack, the clean embeddings
it needs and the training forward of the adversarial images run in chunks of ``attack_batch_size`` images (by
default the size of the caller's batch, so no pass holds activations for more images than the caller's own
forward), and an attack whose images cannot fit at all is refused before the engine allocates its copies.
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import torch
import torch.utils.checkpoint
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from .. import pgd
from ..collapseness import mean_pairwise_distance, separability
from ..distributed import chunks_every_rank_forwards
from ..pgd import PGDResult, check_input_range, frozen_model, projected_gradient_descent
from ..schedules import check_epoch, progressive_alpha

__all__ = ["AdversarialTripletLoss", "PerturbationSet", "PERTURB_MODES"]

PERTURB_MODES = ("unique", "per_triplet")
# Without attack_batch_size, a pass holds at most this many of the caller's batches: a per-triplet copy set of a
# mined batch (at most 3 copies per triplet, one triplet per anchor) runs unchunked, dense miners' sets in chunks.
DEFAULT_CHUNK_BATCHES = 4

Triplets = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ModelReference:
    """Holds the attacked model by reference: not a submodule (not in ``state_dict()``, not moved by ``.to()``),
    and not an ``nn.Module`` attribute that record-keeper's recursive walk of ``loss_funcs`` would descend into
    (it names tables after the model's children, which sqlite rejects)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class PerturbationSet:
    """The images one phase perturbs: ``source_rows`` index the batch; ``positions(rows)`` maps batch rows
    of a triplet role to rows of the perturbed set.

    ``perturb="unique"`` perturbs each distinct image of the role once (one delta shared by every triplet that
    uses it); ``"per_triplet"`` gives every triplet its own copy (the reference code's semantics).
    """

    def __init__(self, role_rows: Tuple[torch.Tensor, ...], perturb: str) -> None:
        stacked = torch.cat(role_rows)
        if perturb == "unique":
            self.source_rows, inverse = torch.unique(stacked, return_inverse=True)
        else:
            self.source_rows = stacked
            inverse = torch.arange(len(stacked), device=stacked.device)
        self.role_positions = torch.split(inverse, [len(rows) for rows in role_rows])

    def __len__(self) -> int:
        return len(self.source_rows)


class AdversarialTripletLoss(BaseMetricLossFunction):
    """Adversarial training on mined triplets, as a PML loss.

    Args:
        model: the ``nn.Module`` that maps images in ``input_range`` to embeddings. It is held by reference,
            not registered as a submodule (not saved in ``state_dict()``, not moved by ``.to()``).
        margin: triplet margin beta_T (Eq. 1).
        eps, alpha, steps: L-inf PGD radius, step size and number of steps (pixel units).
        progressive_alpha: multiply alpha by epoch / total_epochs (Appendix C); needs :meth:`set_epoch`.
        perturb: "unique" images per role, or "per_triplet" copies (reference semantics).
        input_range: the valid pixel range of the inputs.
        triplets_per_anchor: used when the loss builds triplets itself (no indices_tuple or pairs), as in
            PML's ``TripletMarginLoss``.
        attack_batch_size: most images pushed through the model at once by the attack, the clean embeddings it
            needs and the training forward of the adversarial images (None: ``DEFAULT_CHUNK_BATCHES`` times the
            size of the caller's batch, so the per-triplet copies of a mined batch, e.g. HM's 3 x 56 for 112
            images, run in one pass, and only dense miners' tens of thousands of copies are chunked).
            The attack's result does not depend on it; see :meth:`training_embeddings` for BatchNorm.
        **kwargs: PML loss arguments (``distance``, ``reducer``, ``collect_stats``, ``embedding_regularizer``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        margin: float = 0.2,
        eps: float = 8 / 255,
        alpha: float = 1 / 255,
        steps: int = 16,
        progressive_alpha: bool = True,
        perturb: str = "unique",
        input_range: Tuple[float, float] = (0.0, 1.0),
        triplets_per_anchor: Union[str, int] = "all",
        attack_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module mapping images to embeddings, got {type(model).__name__}")
        self._check_number("margin", margin, minimum=0.0)
        self._check_number("eps", eps, minimum=0.0)
        self._check_number("alpha", alpha, minimum=0.0)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        if perturb not in PERTURB_MODES:
            raise ValueError(f"perturb must be one of {PERTURB_MODES}, got {perturb!r}")
        if len(input_range) != 2 or not input_range[0] < input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low < high, got {input_range!r}")
        if attack_batch_size is not None and (
            isinstance(attack_batch_size, bool) or not isinstance(attack_batch_size, int) or attack_batch_size < 1
        ):
            raise ValueError(f"attack_batch_size must be None or an integer >= 1, got {attack_batch_size!r}")
        if self.distance.is_inverted:
            raise ValueError(
                f"{type(self).__name__} needs a distance (smaller = closer), got the similarity "
                f"{type(self.distance).__name__}; use e.g. LpDistance(normalize_embeddings=True, p=2)"
            )
        self._model_reference = ModelReference(model)
        self.margin, self.eps, self.alpha, self.steps = margin, eps, alpha, steps
        self.progressive_alpha = progressive_alpha
        self.perturb = perturb
        self.input_range = tuple(input_range)
        self.triplets_per_anchor = triplets_per_anchor
        self.attack_batch_size = attack_batch_size
        self._batch_rows: Optional[int] = None
        self._num_triplets: Optional[int] = None
        self.epoch: Optional[int] = None
        self.total_epochs: Optional[int] = None
        self._warned_no_epoch = False
        self._attacking = False
        self._captured: Optional[Tuple[torch.Tensor, "weakref.ReferenceType[torch.Tensor]"]] = None
        self._explicit_inputs: Optional[torch.Tensor] = None
        self._hook = model.register_forward_hook(self._capture_forward)
        self.add_to_recordable_attributes(list_of_names=["margin", "eps", "alpha", "steps"], is_stat=False)
        self._stat_names: list = []
        self.register_stats(
            ["pgd_steps", "num_perturbed", "max_perturbation", "embedding_shift", "separability", "mean_distance",
             "pgd_forward_images", "pgd_backward_images"]
        )

    @property
    def model(self) -> nn.Module:
        """The model the loss attacks (held by reference, see :class:`ModelReference`)."""
        return self._model_reference.module

    @staticmethod
    def _check_number(name: str, value: float, minimum: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")

    def register_stats(self, names: list) -> None:
        """Declare per-call statistics (PML record-keeping); they are filled only when ``collect_stats``."""
        self._stat_names = self._stat_names + list(names)
        self.add_to_recordable_attributes(list_of_names=names, is_stat=True)

    def enable_stats(self) -> None:
        """Turn statistics collection on after construction (as ``collect_stats=True`` would have)."""
        self.collect_stats = True
        self.add_to_recordable_attributes(list_of_names=self._stat_names, is_stat=True)

    def record_clean_diagnostics(
        self, embeddings: torch.Tensor, ap_dists: torch.Tensor, an_dists: torch.Tensor
    ) -> None:
        """Separability and mean pairwise distance of the clean batch (Section 4.3), as stats."""
        with torch.no_grad():
            mean_distance = mean_pairwise_distance(embeddings, self.distance)
            self.mean_distance = mean_distance.item()
            self.separability = separability(ap_dists, an_dists, mean_distance).item()

    def get_default_reducer(self) -> MeanReducer:
        """Mean over all triplets, zero-loss ones included, as the released CA-TRIDE and robrank code."""
        return MeanReducer()

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
    def _capture_forward(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        if self._attacking or not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        self._captured = (args[0].detach(), weakref.ref(output))

    def remove_hook(self) -> None:
        """Detach the input-capturing hook from the model (pass ``inputs=`` explicitly afterwards)."""
        self._hook.remove()
        self._captured = None

    def _resolve_inputs(self, embeddings: torch.Tensor) -> torch.Tensor:
        inputs = self._explicit_inputs
        if inputs is None:
            captured_output = self._captured[1]() if self._captured is not None else None
            if captured_output is not embeddings:
                raise ValueError(
                    f"{type(self).__name__} could not find the images behind these embeddings: they are not the "
                    "output of the model's last forward call (a different batch, a detached or transformed copy, "
                    "or another model). Pass the images explicitly: "
                    "loss(embeddings, labels, indices_tuple, inputs=images)"
                )
            inputs = self._captured[0]
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] != embeddings.shape[0]:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(
                f"inputs must be a tensor of images with one row per embedding ({embeddings.shape[0]}), got {shape}"
            )
        check_input_range(inputs, self.input_range, name="inputs")
        return inputs.detach()

    # ----------------------------------------------------------------- PML entry points
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
        self._explicit_inputs = inputs
        try:
            return super().forward(embeddings, labels, indices_tuple)
        finally:
            self._explicit_inputs = None

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
        """Attack, then return the PML loss dict of the adversarial training objective."""
        raise NotImplementedError

    # ----------------------------------------------------------------- DistributedDataParallel
    @property
    def _wrapped(self) -> bool:
        return isinstance(self.model, nn.parallel.DistributedDataParallel)

    @property
    def attacked_module(self) -> nn.Module:
        """The module the attack runs on: the model itself, or the module inside a ``DistributedDataParallel``
        wrapper, so that attack passes make no collective call and leave the gradient reducer untouched. The
        training forward of the adversarial images goes through the wrapper (gradients synchronised once)."""
        return self.model.module if self._wrapped else self.model

    def _idle_losses(self, inputs: torch.Tensor) -> Dict[str, Dict[str, Any]]:
        """Zero losses of a batch without triplets under DDP: the rank still makes the training forward through
        the wrapper that the other ranks make for their adversarial images, in as many chunks as the rank with the
        most (same collective calls on every rank, see :meth:`training_embeddings`)."""
        self._attacking = True
        try:
            output = self._training_forward(inputs, self.chunk_size or len(inputs))
        finally:
            self._attacking = False
        losses = self.zero_losses()
        losses["loss"] = {"losses": (output * 0).sum(), "indices": None, "reduction_type": "already_reduced"}
        return losses

    # ----------------------------------------------------------------- shared machinery for subclasses
    def pair_distances(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Row-wise distances d(first_i, second_i) with the injected PML distance."""
        return self.normalized_pair_distances(self.normalized(first), self.normalized(second))

    def normalized(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``embeddings`` as the injected distance compares them (normalised if it normalises). Attack objectives
        normalise the embeddings that stay clean once, and the iterate's once per step, not once per use."""
        return self.distance.maybe_normalize(embeddings)

    def normalized_pair_distances(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Row-wise distances of embeddings already passed through :meth:`normalized`."""
        return self.distance.pairwise_distance(first, second)

    def triplet_losses(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """Per-triplet hinge max(d(a, p) - d(a, n) + margin, 0) (Eq. 1)."""
        gap = self.pair_distances(anchors, positives) - self.pair_distances(anchors, negatives)
        return torch.relu(gap + self.margin)

    @property
    def chunk_size(self) -> Optional[int]:
        """Images per pass in the current call: ``attack_batch_size``, else DEFAULT_CHUNK_BATCHES caller's batches."""
        if self.attack_batch_size is not None:
            return self.attack_batch_size
        return None if self._batch_rows is None else DEFAULT_CHUNK_BATCHES * self._batch_rows

    def _count_passes(self, forward_images: int, backward_images: int) -> None:
        if self.collect_stats:
            self.pgd_forward_images += forward_images
            self.pgd_backward_images += backward_images

    def constant_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Eval-mode embeddings without grad of images that stay clean during an attack (computed once, in
        chunks; counted in the ``pgd_forward_images`` statistic)."""
        size = self.chunk_size or max(len(images), 1)
        self._attacking = True
        try:
            with frozen_model(self.attacked_module), torch.no_grad():
                embeddings = torch.cat(
                    [self.attacked_module(images[start:start + size]) for start in range(0, len(images), size)]
                )
        finally:
            self._attacking = False
        self._count_passes(len(images), 0)
        return embeddings

    def check_attack_memory(self, num_images: int, batch: torch.Tensor) -> None:
        """Refuse an attack on ``num_images`` images shaped like the rows of ``batch`` whose copies cannot fit in
        memory, before anything is allocated for it."""
        needed = pgd.attack_memory_bytes((num_images, *batch.shape[1:]), batch.dtype)
        available = pgd.available_memory(batch.device)
        if needed > available:
            triplets = "" if self._num_triplets is None else f"{self._num_triplets} triplets, "
            raise MemoryError(
                f"{type(self).__name__}(perturb={self.perturb!r}) would attack {num_images} images ({triplets}"
                f"{self.perturb} perturbation): the attack needs about {needed:,} bytes "
                f"({needed / 2**30:.2f} GiB) for {pgd.ENGINE_IMAGE_COPIES} copies of them but only {available:,} bytes "
                f"({available / 2**30:.2f} GiB) are available on "
                f"{batch.device}. Use perturb='unique' (each image once), fewer triplets per anchor, or a sparser "
                "miner (e.g. TrideMiner instead of a dense TripletMarginMiner)"
            )

    def attack(
        self,
        images: torch.Tensor,
        objective: Callable[[torch.Tensor], torch.Tensor],
        stop_condition: Optional[Callable[[torch.Tensor], bool]] = None,
    ) -> PGDResult:
        """Run the PGD engine on ``images`` with the current step size, ``chunk_size`` images per pass."""
        self.check_attack_memory(len(images), images)
        self._attacking = True
        try:
            result = projected_gradient_descent(
                self.attacked_module,
                images,
                objective,
                eps=self.eps,
                alpha=self.current_alpha,
                steps=self.steps,
                input_range=self.input_range,
                stop_condition=stop_condition,
                chunk_size=self.chunk_size,
            )
        except FloatingPointError:
            if not self._wrapped:
                raise
            # under DDP the other ranks go on to their training forward and the gradient all-reduce: raising here
            # alone would hang them. Carry on with NaN images instead; the NaN loss reaches every rank through the
            # all-reduced gradients, where TrideTrainer's divergence guard stops them all
            result = PGDResult(adversarial=torch.full_like(images, math.nan), steps_taken=0, stopped_early=False,
                               last_loss=None)
        finally:
            self._attacking = False
        self._count_passes(result.forward_images, result.backward_images)
        return result

    @contextlib.contextmanager
    def _recomputation(self) -> Iterator[None]:
        """Around a checkpointed chunk's recomputation: no input capture, buffers (BatchNorm running statistics)
        left as the first forward made them."""
        buffers = [(buffer, buffer.detach().clone()) for buffer in self.model.buffers()]
        attacking, self._attacking = self._attacking, True
        try:
            yield
        finally:
            self._attacking = attacking
            for buffer, saved in buffers:
                buffer.data.copy_(saved)

    def _checkpoint_contexts(self) -> Tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), self._recomputation()

    def training_embeddings(
        self, result: PGDResult, perturbation: PerturbationSet, embeddings: torch.Tensor
    ) -> torch.Tensor:
        """Embeddings of the adversarial images in the model's current mode, with grad, for the training loss.

        When no step was taken the adversarial images equal the clean ones, so the caller's embeddings of
        those rows are reused instead of a second forward pass, except under ``DistributedDataParallel``, where
        every rank makes this forward through the wrapper whatever its own attack did (same collective calls).
        When there are more adversarial images than ``chunk_size`` (``perturb="per_triplet"`` with many
        triplets), they are forwarded in chunks under ``torch.utils.checkpoint``: only the chunk inputs are kept,
        and each chunk's activations are recomputed in the backward pass (dropout draws the same masks; running
        statistics are updated once per chunk, not again by the recomputation). Each chunk is one batch for the
        model, so BatchNorm in train mode normalises a chunk with that chunk's statistics.

        Under ``DistributedDataParallel`` every rank makes the same number of chunked forwards: the ranks'
        triplet counts differ (with ``perturb="per_triplet"``, so do their numbers of images and of chunks), but
        every forward through the wrapper, and its recomputation in the backward pass, makes collective calls
        (the buffer broadcast, ``SyncBatchNorm``'s all-gathers), so a rank with fewer chunks would leave the others
        waiting in one of them for ever. The ranks agree on the largest chunk count (one all-reduce), and a rank
        with fewer chunks forwards empty padding chunks: they add no row and no gradient, make the same calls,
        and leave the buffers as they were.
        """
        if result.steps_taken == 0 and not self._wrapped:
            return embeddings[perturbation.source_rows]
        images = result.adversarial
        self._attacking = True
        try:
            return self._training_forward(images, self.chunk_size or len(images))
        finally:
            self._attacking = False

    def _training_forward(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """``self.model(images)`` with grad, in checkpointed chunks of ``size`` images when there are more, padded
        with empty chunks to the chunk count of the rank with the most under DDP (see :meth:`training_embeddings`)."""
        if not torch.is_grad_enabled():
            return self.model(images)
        chunks = math.ceil(len(images) / max(size, 1))
        if self._wrapped:
            chunks = chunks_every_rank_forwards(chunks, images.device)
        if chunks <= 1:
            return self.model(images)
        parts = list(torch.split(images, size))
        contexts = [self._checkpoint_contexts] * len(parts) + [self._padding_contexts] * (chunks - len(parts))
        parts += [images[:0]] * (chunks - len(parts))
        return torch.cat([
            torch.utils.checkpoint.checkpoint(self.model, part, use_reentrant=False, context_fn=context_fn)
            for part, context_fn in zip(parts, contexts)
        ])

    def _padding_contexts(self) -> Tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """A padding chunk leaves the buffers as they were, in its forward and in its recomputation."""
        return self._recomputation(), self._recomputation()
