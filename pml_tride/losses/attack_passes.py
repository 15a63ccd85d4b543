"""The passes a defense makes through its model besides the caller's forward: the attack (the one PGD engine),
the clean embeddings the attack needs, and the training forward of the adversarial images, chunked by
:func:`~pml_tride.chunks.chunk_slices`, and what a rank makes under ``DistributedDataParallel``.

Memory does not grow with the number of triplets beyond the images themselves: these passes run in chunks of
``attack_batch_size`` images (by default ``DEFAULT_CHUNK_BATCHES`` times the size of the caller's batch), and an
attack whose images cannot fit at all is refused before the engine allocates its copies.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.utils.checkpoint
from torch import nn

from .. import pgd
from ..chunks import chunk_slices
from ..distributed import chunks_every_rank_forwards
from ..pgd import PGDResult, frozen_model, projected_gradient_descent
from .input_capture import InputCapture
from .perturbation_set import PerturbationSet

__all__ = ["AttackPasses", "DEFAULT_CHUNK_BATCHES"]

# Without attack_batch_size, a pass holds at most this many of the caller's batches: a per-triplet copy set of a
# mined batch (at most 3 copies per triplet, one triplet per anchor) runs unchunked, dense miners' sets in chunks.
DEFAULT_CHUNK_BATCHES = 4


class AttackPasses:
    """Mixin of :class:`~pml_tride.losses.AdversarialInputLoss`: the model passes of an attack and of the
    training forward of its result. Reads the loss's ``model``, attack settings, ``attack_batch_size``,
    ``collect_stats`` and the per-call ``_batch_rows`` / ``_num_triplets``."""

    model: nn.Module
    eps: float
    steps: int
    perturb: str
    input_range: Tuple[float, float]
    attack_batch_size: Optional[int]
    collect_stats: bool
    current_alpha: float
    _capture: InputCapture
    _batch_rows: Optional[int]
    _num_triplets: Optional[int]

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
        with self._capture.paused():
            output = self._training_forward(inputs, self.chunk_size or len(inputs))
        return self.zero_losses_through(output)

    def zero_losses_through(self, output: torch.Tensor) -> Dict[str, Dict[str, Any]]:
        """Zero losses whose backward still runs through ``output``, a training forward already made through the
        DDP wrapper: its recomputation and gradient all-reduce are collective calls every rank must make."""
        losses = self.zero_losses()
        losses["loss"] = {"losses": (output * 0).sum(), "indices": None, "reduction_type": "already_reduced"}
        return losses

    # ----------------------------------------------------------------- chunks and counters
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
        with self._capture.paused(), frozen_model(self.attacked_module), torch.no_grad():
            embeddings = torch.cat(
                [self.attacked_module(images[part]) for part in chunk_slices(len(images), self.chunk_size)]
            )
        self._count_passes(len(images), 0)
        return embeddings

    # ----------------------------------------------------------------- the attack
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
        try:
            with self._capture.paused():
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
        self._count_passes(result.forward_images, result.backward_images)
        return result

    # ----------------------------------------------------------------- the training forward
    @contextlib.contextmanager
    def _recomputation(self) -> Iterator[None]:
        """Around a checkpointed chunk's recomputation: no input capture, buffers (BatchNorm running statistics)
        left as the first forward made them."""
        buffers = [(buffer, buffer.detach().clone()) for buffer in self.model.buffers()]
        try:
            with self._capture.paused():
                yield
        finally:
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
        with self._capture.paused():
            return self._training_forward(images, self.chunk_size or len(images))

    def _training_forward(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """``self.model(images)`` with grad, in checkpointed chunks of ``size`` images when there are more, padded
        with empty chunks to the chunk count of the rank with the most under DDP (see :meth:`training_embeddings`)."""
        if not torch.is_grad_enabled():
            return self.model(images)
        parts = list(chunk_slices(len(images), max(size, 1)))
        chunks = chunks_every_rank_forwards(len(parts), images.device) if self._wrapped else len(parts)
        if chunks <= 1:
            return self.model(images)
        contexts = [self._checkpoint_contexts] * len(parts) + [self._padding_contexts] * (chunks - len(parts))
        parts += [slice(0, 0)] * (chunks - len(parts))
        return torch.cat([
            torch.utils.checkpoint.checkpoint(self.model, images[part], use_reentrant=False, context_fn=context_fn)
            for part, context_fn in zip(parts, contexts)
        ])

    def _padding_contexts(self) -> Tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """A padding chunk leaves the buffers as they were, in its forward and in its recomputation."""
        return self._recomputation(), self._recomputation()
