"""TrideTrainer: PML's ``MetricLossOnly`` with epoch schedules, explicit inputs, diagnostics and exact resume."""

from __future__ import annotations

import os
import random
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from pytorch_metric_learning import samplers, trainers
from pytorch_metric_learning.utils import common_functions as c_f

from ..losses.adversarial_triplet_loss import AdversarialTripletLoss
from ..progress import progress_bar

__all__ = ["TrideTrainer", "CHECKPOINT_FORMAT", "TRACKED_STATS"]

CHECKPOINT_FORMAT = 1
TRACKED_STATS = (
    "collapseness_clean",
    "collapseness_adv",
    "separability",
    "mean_distance",
    "embedding_shift",
    "pgd_steps",
    "num_perturbed",
    "max_perturbation",
)


def _rng_state() -> Dict[str, Any]:
    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "algorithm": algorithm,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["algorithm"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(state["python"])


def _sampler_state(sampler: Any) -> Optional[Dict[str, Any]]:
    """A sampler's own mutable state: its ``state_dict()``, or the label order PML's MPerClassSampler shuffles
    in place every epoch; ``None`` for stateless samplers."""
    if sampler is None:
        return None
    if hasattr(sampler, "state_dict"):
        return {"state_dict": sampler.state_dict()}
    if isinstance(sampler, samplers.MPerClassSampler):
        return {"labels": torch.as_tensor(np.asarray(sampler.labels))}
    warnings.warn(
        f"{type(sampler).__name__} has no state_dict(): if it keeps state between epochs, a resumed run may "
        "draw different batches",
        stacklevel=3,
    )
    return None


def _load_sampler_state(sampler: Any, state: Optional[Dict[str, Any]]) -> None:
    if state is None:
        return
    if "state_dict" in state:
        sampler.load_state_dict(state["state_dict"])
    else:
        sampler.labels = state["labels"].numpy().astype(np.asarray(sampler.labels).dtype)


class TrideTrainer(trainers.MetricLossOnly):
    """PML's ``MetricLossOnly`` for adversarial triplet losses such as :class:`~pml_tride.TrideLoss`.

    Same constructor as ``MetricLossOnly``, plus ``checkpoint_dir`` (write ``epoch_<k>.pt`` and ``latest.pt``
    after every epoch) and ``disable_progress`` (hide the bar over epochs, with its time estimate, that
    complements PML's bar over one epoch's iterations). ``models["embedder"]`` is optional: without it PML
    adds an identity, as usual, but does not warn. On top of the PML trainer it

    * calls ``set_epoch(epoch, total_epochs)`` (0-based) on the metric loss and the tuple miner at the start of
      every epoch (progressive alpha, Appendix C; semi-hard band, Eq. 32);
    * passes the batch's images to the loss explicitly (``inputs=``), so no forward hook is relied on;
    * collects the loss's statistics (collapseness, separability, mean distance, embedding shift, PGD steps)
      for PML's record-keeper (``HookContainer`` logs ``loss_funcs``) and in :attr:`history`, one row per
      iteration;
    * saves and loads complete checkpoints (:meth:`save_checkpoint`, :meth:`load_checkpoint`) read with
      ``torch.load(weights_only=True)``: a run resumed after epoch k gives the same weights as an uninterrupted
      one (with the default ``iterations_per_epoch``, one full pass of the data loader per epoch).

    The attack runs the model in eval mode with frozen BatchNorm statistics (see :mod:`pml_tride.pgd`), so
    only the training forward passes update them.
    """

    def __init__(self, *args: Any, checkpoint_dir: Optional[str] = None, disable_progress: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoint_dir = checkpoint_dir
        self.disable_progress = disable_progress
        self.total_epochs: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        metric_loss = self.loss_funcs.get("metric_loss")
        if isinstance(metric_loss, AdversarialTripletLoss):
            if metric_loss.model is self.models["trunk"] and not isinstance(self.models["embedder"], torch.nn.Identity):
                raise ValueError(
                    "the metric loss attacks models['trunk'] but the trainer's embeddings come from "
                    "models['embedder'](models['trunk'](x)): build the loss on the whole network, e.g. "
                    "TrideLoss(torch.nn.Sequential(trunk, embedder))"
                )
            if not metric_loss.collect_stats:
                metric_loss.enable_stats()
        user_hook = self.end_of_epoch_hook
        self.end_of_epoch_hook = self._end_of_epoch_wrapper(user_hook)

    def modify_schema(self) -> None:
        """The embedder is optional (the loss attacks the whole network): no 'models is missing "embedder"'."""
        self.schema["models"].important = []

    # ------------------------------------------------------------------ epochs
    def train(self, start_epoch: int = 1, num_epochs: int = 1) -> None:
        """Train epochs ``start_epoch .. num_epochs`` (1-based and inclusive, as PML)."""
        if self.iterations_per_epoch and self.dataset is not None:
            loader_length = len(c_f.get_train_dataloader(self.dataset, self.batch_size, self.sampler, 0, self.collate_fn))
            if self.iterations_per_epoch != loader_length and self.checkpoint_dir is not None:
                warnings.warn(
                    f"iterations_per_epoch={self.iterations_per_epoch} differs from one pass of the data loader "
                    f"({loader_length} batches): a run resumed from a checkpoint will not repeat the uninterrupted "
                    "run's batches exactly",
                    stacklevel=2,
                )
        self.total_epochs = num_epochs
        self._train_epochs(start_epoch, num_epochs)

    def _train_epochs(self, start_epoch: int, num_epochs: int) -> None:
        """PML's ``BaseTrainer.train`` loop, with a bar over the epochs and one over each epoch's iterations."""
        self.initialize_dataloader()
        with progress_bar(total=max(num_epochs - start_epoch + 1, 0), desc="epochs", unit="epoch",
                          disable_progress=self.disable_progress) as epoch_bar:
            for self.epoch in range(start_epoch, num_epochs + 1):
                self.set_to_train()
                c_f.LOGGER.info("TRAINING EPOCH %d", self.epoch)
                with progress_bar(range(self.iterations_per_epoch), desc=f"epoch {self.epoch}", leave=False,
                                  disable_progress=self.disable_progress) as iteration_bar:
                    for self.iteration in iteration_bar:
                        self.forward_and_backward()
                        self.end_of_iteration_hook(self)
                        total_loss = self.losses["total_loss"]
                        iteration_bar.set_postfix(total_loss=float(torch.as_tensor(total_loss).detach()))
                        self.step_lr_schedulers(end_of_epoch=False)
                self.step_lr_schedulers(end_of_epoch=True)
                self.zero_losses()
                keep_training = self.end_of_epoch_hook(self) is not False
                epoch_bar.update(1)
                if not keep_training:
                    break

    def _schedulable(self) -> List[Any]:
        return [f for f in (self.loss_funcs.get("metric_loss"), self.mining_funcs.get("tuple_miner"))
                if hasattr(f, "set_epoch")]

    def forward_and_backward(self) -> None:
        if self.iteration == 0:
            for function in self._schedulable():
                function.set_epoch(self.epoch - 1, self.total_epochs)
        super().forward_and_backward()

    def calculate_loss(self, curr_batch) -> None:
        data, labels = curr_batch
        data = c_f.to_device(data, device=self.data_device, dtype=self.dtype)
        embeddings = self.compute_embeddings(data)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        metric_loss = self.loss_funcs["metric_loss"]
        if self.loss_weights.get("metric_loss", 0) <= 0:
            self.losses["metric_loss"] = 0
            return
        if isinstance(metric_loss, AdversarialTripletLoss):
            value = metric_loss(embeddings, labels, indices_tuple, inputs=data)
        else:
            value = metric_loss(embeddings, labels, indices_tuple)
        self.losses["metric_loss"] = value
        self._record_iteration(metric_loss, value)

    def _record_iteration(self, metric_loss: Any, value: torch.Tensor) -> None:
        row: Dict[str, Any] = {"epoch": self.epoch, "iteration": self.iteration, "loss": float(value.detach())}
        row["phase"] = getattr(metric_loss, "last_phase", None)
        for name in TRACKED_STATS:
            if hasattr(metric_loss, name):
                row[name] = float(getattr(metric_loss, name))
        self.history.append(row)

    def _end_of_epoch_wrapper(self, user_hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def end_of_epoch(trainer: "TrideTrainer") -> Any:
            result = user_hook(trainer)
            if self.checkpoint_dir is not None:
                os.makedirs(self.checkpoint_dir, exist_ok=True)
                path = os.path.join(self.checkpoint_dir, f"epoch_{self.epoch}.pt")
                self.save_checkpoint(path)
                self.save_checkpoint(os.path.join(self.checkpoint_dir, "latest.pt"))
            return result

        return end_of_epoch

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> Dict[str, Any]:
        """Everything needed to resume after the current epoch."""
        state: Dict[str, Any] = {
            "pml_tride_checkpoint": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "total_epochs": self.total_epochs,
            "models": {name: model.state_dict() for name, model in self.models.items()},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "lr_schedulers": {name: scheduler.state_dict() for name, scheduler in self.lr_schedulers.items()},
            "loss_funcs": {name: loss.state_dict() for name, loss in self.loss_funcs.items()},
            "mining_funcs": {name: miner.state_dict() for name, miner in self.mining_funcs.items()},
            "rng": _rng_state(),
            "sampler": _sampler_state(self.sampler),
            "history": self.history,
            "data": {"image_size": getattr(self.dataset, "image_size", None)},
        }
        trunk = self.models["trunk"]
        config = getattr(trunk, "config", None)
        if config is not None and isinstance(self.models["embedder"], torch.nn.Identity):
            state["model"] = {"name": config["name"], "kwargs": config["kwargs"], "state_dict": trunk.state_dict()}
        return state

    def save_checkpoint(self, path: str) -> None:
        torch.save(self.checkpoint(), path)

    def load_checkpoint(self, path: str) -> int:
        """Restore a checkpoint written by :meth:`save_checkpoint`; returns the epoch to resume from."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint at {path!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("pml_tride_checkpoint") != CHECKPOINT_FORMAT or "models" not in state:
            raise ValueError(f"{path!r} is not a TrideTrainer checkpoint (format {CHECKPOINT_FORMAT})")
        for group_name, group in (("models", self.models), ("optimizers", self.optimizers),
                                  ("lr_schedulers", self.lr_schedulers), ("loss_funcs", self.loss_funcs),
                                  ("mining_funcs", self.mining_funcs)):
            missing = set(group) - set(state[group_name])
            if missing:
                raise ValueError(f"checkpoint {path!r} has no {group_name} entry for {sorted(missing)}")
            for name, item in group.items():
                item.load_state_dict(state[group_name][name])
        _set_rng_state(state["rng"])
        _load_sampler_state(self.sampler, state["sampler"])
        self.history = list(state["history"])
        self.epoch = state["epoch"]
        return state["epoch"] + 1
