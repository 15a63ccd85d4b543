"""TrideTrainer: PML's ``MetricLossOnly`` with epoch schedules, explicit inputs, diagnostics and exact resume."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from pytorch_metric_learning import trainers
from pytorch_metric_learning.utils import common_functions as c_f

from ..distributed import (
    broadcast_object,
    check_sync_batchnorm,
    convert_sync_batchnorm,
    get_rank,
    get_world_size,
    is_distributed,
)
from ..loader_options import resolve_num_workers
from ..losses.adversarial_input_loss import AdversarialInputLoss
from ..progress import progress_bar
from ..validation import check_number
from .batch_plan import BatchPlan
from .trainer_checkpoints import CHECKPOINT_FORMAT, LATEST_CHECKPOINT, TrainerCheckpoints
from .training_diverged_error import TrainingDivergedError

__all__ = ["TrideTrainer", "TrainingDivergedError", "CHECKPOINT_FORMAT", "LATEST_CHECKPOINT", "PRECISIONS"]

# Compute precision of the training forward passes and the attack's passes: autocast dtype (None: plain fp32).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
# Upper bound of the batch-plan seed drawn from torch's generator when none is given.
MAX_PLAN_SEED = 2**31 - 1


class TrideTrainer(TrainerCheckpoints, trainers.MetricLossOnly):
    """PML's ``MetricLossOnly`` for adversarial triplet losses such as :class:`~pml_tride.TrideLoss`.

    Same constructor as ``MetricLossOnly``, plus ``checkpoint_dir`` (write ``epoch_<k>.pt`` and ``latest.pt``
    after every epoch), ``checkpoint_every`` (also write ``latest.pt`` every that many iterations, mid-epoch),
    ``seed`` (of the batch order; default: drawn from torch's generator) and ``disable_progress`` (hide the bars over
    epochs and iterations, with their time estimates), ``run_info`` (what the run is, e.g. ``{"defense": "hm",
    "dataset": "cub"}``, stored as the checkpoints' ``run`` entry so that a resume can check it continues the same
    run), ``sync_batchnorm`` (replace the models' BatchNorm layers by ``SyncBatchNorm`` in place:
    several processes on GPUs only, refused otherwise). PML's ``dataloader_num_workers`` defaults to
    :func:`~pml_tride.loader_options.default_num_workers` of ``data_device`` (0 on CPU) instead of PML's 2; the
    weights do not depend on it (every item is loaded under its own seed, see
    :class:`~pml_tride.trainers.batch_plan.BatchPlan`), and the workers persist from pass to pass.
    ``precision`` ("fp32" or "bf16": ``torch.autocast`` around the training forward and the loss, the attack's
    passes included; the weights, the images and the adversarial perturbations stay fp32, the embeddings are cast
    back to fp32 for the miner and the loss) and ``channels_last`` (models and batches in channels-last memory
    format) are for GPUs.
    ``models["embedder"]`` is optional: without it PML adds an identity, as usual, but does not warn. On top
    of the PML trainer it

    * calls ``set_epoch(epoch, total_epochs)`` (0-based) on the metric loss and the tuple miner at the start of
      every epoch (progressive alpha, Appendix C; semi-hard band, Eq. 32);
    * passes the batch's images to the loss explicitly (``inputs=``), so no forward hook is relied on;
    * collects the loss's statistics (collapseness, separability, mean distance, embedding shift, PGD steps)
      for PML's record-keeper (``HookContainer`` logs ``loss_funcs``) and in :attr:`history`, one row per
      iteration;
    * draws its batches from a :class:`~pml_tride.trainers.batch_plan.BatchPlan`: pass after pass of the
      sampler, seeded from ``seed`` and the pass number, dealt to the ranks under torch.distributed;
    * saves and loads complete checkpoints (:meth:`save_checkpoint`, :meth:`load_checkpoint`, from
      :class:`~pml_tride.trainers.trainer_checkpoints.TrainerCheckpoints`), written atomically
      and read with ``torch.load(weights_only=True)``: a run resumed from any checkpoint, at the end of an epoch
      or in the middle of one, gives the same weights as an uninterrupted run;
    * stops with :class:`TrainingDivergedError` when the embeddings, the loss or a gradient is NaN or Inf, before
      the optimizer step, naming the iteration and the last good checkpoint.

    Under torchrun, wrap the model in ``DistributedDataParallel`` (give the loss the wrapper); rank 0 writes the
    checkpoints (with every rank's random state), every rank reads them.

    The attack runs the model in eval mode with frozen BatchNorm statistics (see :mod:`pml_tride.pgd`), so
    only the training forward passes update them.
    """

    def __init__(
        self,
        *args: Any,
        checkpoint_dir: Optional[str] = None,
        checkpoint_every: Optional[int] = None,
        seed: Optional[int] = None,
        disable_progress: bool = False,
        run_info: Optional[Dict[str, Any]] = None,
        precision: str = "fp32",
        channels_last: bool = False,
        sync_batchnorm: bool = False,
        **kwargs: Any,
    ) -> None:
        check_number("checkpoint_every", checkpoint_every, minimum=1, integer=True, optional=True)
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir to write to")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        kwargs.setdefault("dataloader_num_workers", None)
        super().__init__(*args, **kwargs)
        self.dataloader_num_workers = resolve_num_workers(self.dataloader_num_workers, self.data_device)
        if sync_batchnorm:
            self._convert_sync_batchnorm()
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.disable_progress = disable_progress
        self.run_info = dict(run_info or {})
        self.precision, self.channels_last = precision, bool(channels_last)
        if self.channels_last:
            for model in self.models.values():
                model.to(memory_format=torch.channels_last)
        self.total_epochs: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        self.last_checkpoint: Optional[str] = None
        self._resume_epoch: Optional[int] = None
        self._resume_iteration = 0
        self._in_epoch = False
        metric_loss = self.loss_funcs.get("metric_loss")
        if isinstance(metric_loss, AdversarialInputLoss):
            if metric_loss.model is self.models["trunk"] and not isinstance(self.models["embedder"], torch.nn.Identity):
                raise ValueError(
                    "the metric loss attacks models['trunk'] but the trainer's embeddings come from "
                    "models['embedder'](models['trunk'](x)): build the loss on the whole network, e.g. "
                    "TrideLoss(torch.nn.Sequential(trunk, embedder))"
                )
            if not metric_loss.collect_stats:
                metric_loss.enable_stats()
        if seed is None:
            seed = int(torch.randint(0, MAX_PLAN_SEED, ()).item())
        self.batch_plan = BatchPlan(self.dataset, self.batch_size, self.sampler, seed=broadcast_object(seed),
                                    rank=get_rank(), world_size=get_world_size(),
                                    num_workers=self.dataloader_num_workers, collate_fn=self.collate_fn,
                                    pin_memory=torch.device(self.data_device).type == "cuda")
        user_hook = self.end_of_epoch_hook
        self.end_of_epoch_hook = self._end_of_epoch_wrapper(user_hook)

    def _convert_sync_batchnorm(self) -> None:
        """``sync_batchnorm=True``: every model's BatchNorm layers become ``SyncBatchNorm`` (same tensors)."""
        parameters = [p for model in self.models.values() for p in model.parameters()]
        check_sync_batchnorm(get_world_size(), parameters[0].device if parameters else self.data_device)
        for model in self.models.values():
            convert_sync_batchnorm(model)

    # ------------------------------------------------------------------ epochs and batches
    def initialize_dataloader(self) -> None:
        """Batches come from :attr:`batch_plan`; one epoch is one pass unless ``iterations_per_epoch`` is set."""
        if not self.iterations_per_epoch:
            self.iterations_per_epoch = len(self.batch_plan)

    def get_batch(self):
        data, labels = self.data_and_label_getter(self.batch_plan.next_batch())
        labels = c_f.process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return self.maybe_do_batch_mining(data, labels)

    def modify_schema(self) -> None:
        """The embedder is optional (the loss attacks the whole network): no 'models is missing "embedder"'."""
        self.schema["models"].important = []

    def train(self, start_epoch: int = 1, num_epochs: int = 1) -> None:
        """Train epochs ``start_epoch .. num_epochs`` (1-based and inclusive, as PML); after
        :meth:`load_checkpoint` of a mid-epoch checkpoint, the first epoch continues at the next iteration."""
        self.initialize_dataloader()
        self.total_epochs = num_epochs
        try:
            self._train_epochs(start_epoch, num_epochs)
        finally:
            self.batch_plan.close()  # no loader worker outlives the training

    def _train_epochs(self, start_epoch: int, num_epochs: int) -> None:
        start_iteration = self._resume_iteration if start_epoch == self._resume_epoch else 0
        self._resume_epoch, self._resume_iteration = None, 0
        hidden = self.disable_progress or get_rank() != 0
        with progress_bar(total=max(num_epochs - start_epoch + 1, 0), desc="epochs", unit="epoch",
                          disable_progress=hidden) as epoch_bar:
            for self.epoch in range(start_epoch, num_epochs + 1):
                self.set_to_train()
                for function in self._schedulable():
                    function.set_epoch(self.epoch - 1, num_epochs)
                c_f.LOGGER.info("TRAINING EPOCH %d", self.epoch)
                self._in_epoch = True
                with progress_bar(range(start_iteration, self.iterations_per_epoch), desc=f"epoch {self.epoch}",
                                  leave=False, disable_progress=hidden) as iteration_bar:
                    for self.iteration in iteration_bar:
                        self.forward_and_backward()
                        self.end_of_iteration_hook(self)
                        total_loss = float(torch.as_tensor(self.losses["total_loss"]).detach())
                        iteration_bar.set_postfix(total_loss=total_loss)
                        self.step_lr_schedulers(end_of_epoch=False)
                        if self._mid_epoch_checkpoint_due():
                            self._write_checkpoint([os.path.join(self.checkpoint_dir, LATEST_CHECKPOINT)],
                                                   epoch_complete=False)
                start_iteration = 0
                self.step_lr_schedulers(end_of_epoch=True)
                self.zero_losses()
                self._in_epoch = False
                keep_training = self.end_of_epoch_hook(self) is not False
                epoch_bar.update(1)
                if not keep_training:
                    break

    def _mid_epoch_checkpoint_due(self) -> bool:
        if self.checkpoint_every is None or self.iteration == self.iterations_per_epoch - 1:
            return False  # the end-of-epoch checkpoint follows at once
        return (self.get_global_iteration() + 1) % self.checkpoint_every == 0

    def _schedulable(self) -> List[Any]:
        return [f for f in (self.loss_funcs.get("metric_loss"), self.mining_funcs.get("tuple_miner"))
                if hasattr(f, "set_epoch")]

    def calculate_loss(self, curr_batch) -> None:
        data, labels = curr_batch
        data = c_f.to_device(data, device=self.data_device, dtype=self.dtype)
        if self.channels_last and data.dim() == 4:
            data = data.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(data.device.type, dtype=dtype, enabled=dtype is not None):
            embeddings = self.compute_embeddings(data).float()
            if not torch.isfinite(embeddings).all():
                self._diverged("the embeddings of the batch")
            indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
            metric_loss = self.loss_funcs["metric_loss"]
            if self.loss_weights.get("metric_loss", 0) <= 0:
                self.losses["metric_loss"] = 0
                return
            if isinstance(metric_loss, AdversarialInputLoss):
                try:
                    value = metric_loss(embeddings, labels, indices_tuple, inputs=data)
                except FloatingPointError:  # raised by the PGD engine (chained as the cause's context)
                    self._diverged("the adversarial attack's objective or input gradient")
            else:
                value = metric_loss(embeddings, labels, indices_tuple)
        self.losses["metric_loss"] = value
        self._record_iteration(metric_loss, value)

    # ------------------------------------------------------------------ divergence guard
    def backward(self) -> None:
        """Backward pass, then the divergence guard: the loss and every gradient must be finite on every rank."""
        super().backward()
        total = self.losses["total_loss"]
        checks = [torch.isfinite(torch.as_tensor(total)).all()]
        for model in self.models.values():
            checks += [torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None]
        finite = torch.stack([check.to(checks[0].device) for check in checks]).all().to(torch.int32)
        if is_distributed():
            finite = finite.to(self.data_device)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            self._diverged("the loss or a gradient")

    def _diverged(self, what: str) -> None:
        checkpoint = self.last_checkpoint or "none (no checkpoint was written in this run)"
        raise TrainingDivergedError(
            f"training diverged at epoch {self.epoch}, iteration {self.iteration} (global iteration "
            f"{self.get_global_iteration()}): {what} is NaN or Inf. The weights were not updated; the last good "
            f"checkpoint is {checkpoint}. Lower the learning rate or check the data"
        )

    def _record_iteration(self, metric_loss: Any, value: torch.Tensor) -> None:
        row: Dict[str, Any] = {"epoch": self.epoch, "iteration": self.iteration, "loss": float(value.detach())}
        row["phase"] = getattr(metric_loss, "last_phase", None)
        for name in getattr(metric_loss, "stat_names", ()):
            row[name] = float(getattr(metric_loss, name))
        self.history.append(row)

    def _end_of_epoch_wrapper(self, user_hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def end_of_epoch(trainer: "TrideTrainer") -> Any:
            result = user_hook(trainer)
            if self.checkpoint_dir is not None:
                paths = [os.path.join(self.checkpoint_dir, f"epoch_{self.epoch}.pt"),
                         os.path.join(self.checkpoint_dir, LATEST_CHECKPOINT)]
                self._write_checkpoint(paths, epoch_complete=True)
            return result

        return end_of_epoch

