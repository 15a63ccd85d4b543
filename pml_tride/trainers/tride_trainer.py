"""TrideTrainer: PML's ``MetricLossOnly`` with epoch schedules, explicit inputs, diagnostics and exact resume."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from pytorch_metric_learning import trainers
from pytorch_metric_learning.utils import common_functions as c_f

from ..checkpoint_io import atomic_save, load_state
from ..distributed import (
    all_gather_objects,
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    is_distributed,
    unwrap_model,
)
from ..losses.adversarial_input_loss import AdversarialInputLoss
from ..progress import progress_bar
from ..random_state import global_rng_state, set_global_rng_state
from ..validation import check_number
from .batch_plan import BatchPlan

__all__ = ["TrideTrainer", "TrainingDivergedError", "CHECKPOINT_FORMAT", "LATEST_CHECKPOINT"]

CHECKPOINT_FORMAT = 2
LATEST_CHECKPOINT = "latest.pt"
# Upper bound of the batch-plan seed drawn from torch's generator when none is given.
MAX_PLAN_SEED = 2**31 - 1


class TrainingDivergedError(FloatingPointError):
    """The loss, a gradient or the embeddings became NaN or Inf; the weights were not updated."""


class TrideTrainer(trainers.MetricLossOnly):
    """PML's ``MetricLossOnly`` for adversarial triplet losses such as :class:`~pml_tride.TrideLoss`.

    Same constructor as ``MetricLossOnly``, plus ``checkpoint_dir`` (write ``epoch_<k>.pt`` and ``latest.pt``
    after every epoch), ``checkpoint_every`` (also write ``latest.pt`` every that many iterations, mid-epoch),
    ``seed`` (of the batch order; default: drawn from torch's generator) and ``disable_progress`` (hide the bars over
    epochs and iterations, with their time estimates), ``run_info`` (what the run is, e.g. ``{"defense": "hm",
    "dataset": "cub"}``, stored as the checkpoints' ``run`` entry so that a resume can check it continues the same
    run). ``models["embedder"]`` is optional: without it PML adds an
    identity, as usual, but does not warn. On top of the PML trainer it

    * calls ``set_epoch(epoch, total_epochs)`` (0-based) on the metric loss and the tuple miner at the start of
      every epoch (progressive alpha, Appendix C; semi-hard band, Eq. 32);
    * passes the batch's images to the loss explicitly (``inputs=``), so no forward hook is relied on;
    * collects the loss's statistics (collapseness, separability, mean distance, embedding shift, PGD steps)
      for PML's record-keeper (``HookContainer`` logs ``loss_funcs``) and in :attr:`history`, one row per
      iteration;
    * draws its batches from a :class:`~pml_tride.trainers.batch_plan.BatchPlan`: pass after pass of the
      sampler, seeded from ``seed`` and the pass number, dealt to the ranks under torch.distributed;
    * saves and loads complete checkpoints (:meth:`save_checkpoint`, :meth:`load_checkpoint`), written atomically
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
        **kwargs: Any,
    ) -> None:
        check_number("checkpoint_every", checkpoint_every, minimum=1, integer=True, optional=True)
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("checkpoint_every needs a checkpoint_dir to write to")
        super().__init__(*args, **kwargs)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.disable_progress = disable_progress
        self.run_info = dict(run_info or {})
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
                                    num_workers=self.dataloader_num_workers, collate_fn=self.collate_fn)
        user_hook = self.end_of_epoch_hook
        self.end_of_epoch_hook = self._end_of_epoch_wrapper(user_hook)

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
        embeddings = self.compute_embeddings(data)
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

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, epoch_complete: bool = True) -> Dict[str, Any]:
        """Everything needed to resume after the current epoch (or, with ``epoch_complete=False``, after the
        current iteration). Under torch.distributed every rank must call it (it gathers the ranks' states)."""
        rank_state = {
            "rng": global_rng_state(),
            "mining_funcs": {name: miner.state_dict() for name, miner in self.mining_funcs.items()},
            "history": self.history,
        }
        models = {name: unwrap_model(model) for name, model in self.models.items()}
        state: Dict[str, Any] = {
            "pml_tride_checkpoint": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "epoch_complete": epoch_complete,
            "iteration": self.iterations_per_epoch if epoch_complete else self.iteration + 1,
            "total_epochs": self.total_epochs,
            "models": {name: model.state_dict() for name, model in models.items()},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "lr_schedulers": {name: scheduler.state_dict() for name, scheduler in self.lr_schedulers.items()},
            "loss_funcs": {name: loss.state_dict() for name, loss in self.loss_funcs.items()},
            "batch_plan": self.batch_plan.state_dict(),
            "ranks": all_gather_objects(rank_state),
            "data": {"image_size": getattr(self.dataset, "image_size", None)},
        }
        if self.run_info:
            state["run"] = dict(self.run_info)
        trunk = models["trunk"]
        config = getattr(trunk, "config", None)
        if config is not None and isinstance(self.models["embedder"], torch.nn.Identity):
            state["model"] = {"name": config["name"], "kwargs": config["kwargs"], "state_dict": trunk.state_dict()}
        return state

    def _check_finite_weights(self, path: str) -> None:
        for name, model in self.models.items():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise TrainingDivergedError(
                        f"not writing {path!r}: the weights of models[{name!r}] contain NaN or Inf (the last good "
                        f"checkpoint, {self.last_checkpoint}, is kept)"
                    )

    def _write_checkpoint(self, paths: Sequence[str], epoch_complete: bool) -> None:
        """Gather the state on every rank; rank 0 writes each path atomically; all ranks then wait."""
        self._check_finite_weights(paths[0])
        state = self.checkpoint(epoch_complete=epoch_complete)
        if get_rank() == 0:
            for path in paths:
                atomic_save(state, path)
        barrier()
        self.last_checkpoint = paths[-1]

    def save_checkpoint(self, path: str) -> None:
        """Write :meth:`checkpoint` to ``path`` atomically (rank 0 writes; every rank must call it). Called from an
        end-of-iteration hook, it is a mid-epoch checkpoint that resumes at the next iteration (PML steps per-iteration
        LR schedulers after that hook: with those, use ``checkpoint_every``, written after the step)."""
        self._write_checkpoint([path], epoch_complete=not self._in_epoch)

    def load_checkpoint(self, path: str) -> int:
        """Restore a checkpoint written by a TrideTrainer; returns the epoch to pass to ``train(start_epoch=)``
        (the same epoch after a mid-epoch checkpoint, whose remaining iterations ``train`` then runs)."""
        state = load_state(path)
        known = isinstance(state, dict) and state.get("pml_tride_checkpoint") == CHECKPOINT_FORMAT
        if not known or "models" not in state:
            raise ValueError(f"{path!r} is not a TrideTrainer checkpoint (format {CHECKPOINT_FORMAT})")
        if len(state["ranks"]) != get_world_size():
            raise ValueError(
                f"checkpoint {path!r} was written by {len(state['ranks'])} processes, this run has "
                f"{get_world_size()}: resume with the same number of processes"
            )
        rank_state = state["ranks"][get_rank()]
        groups = (("models", {name: unwrap_model(model) for name, model in self.models.items()}, state["models"]),
                  ("optimizers", self.optimizers, state["optimizers"]),
                  ("lr_schedulers", self.lr_schedulers, state["lr_schedulers"]),
                  ("loss_funcs", self.loss_funcs, state["loss_funcs"]),
                  ("mining_funcs", self.mining_funcs, rank_state["mining_funcs"]))
        for group_name, group, saved in groups:
            missing = set(group) - set(saved)
            if missing:
                raise ValueError(f"checkpoint {path!r} has no {group_name} entry for {sorted(missing)}")
            for name, item in group.items():
                item.load_state_dict(saved[name])
        self.batch_plan.load_state_dict(state["batch_plan"])
        set_global_rng_state(rank_state["rng"])
        self.history = list(rank_state["history"])
        self.epoch = state["epoch"]
        self.last_checkpoint = path
        if state["epoch_complete"]:
            return state["epoch"] + 1
        self._resume_epoch, self._resume_iteration = state["epoch"], state["iteration"]
        return state["epoch"]
