"""TrainerCheckpoints: the complete, exactly resumable checkpoints of :class:`~pml_tride.trainers.TrideTrainer`."""

from __future__ import annotations

import logging
from typing import Any, Dict, Sequence

import torch

from ..checkpoint_io import atomic_save, load_state
from ..distributed import all_gather_objects, barrier, get_rank, unwrap_model
from ..random_state import global_rng_state, set_global_rng_state
from .training_diverged_error import TrainingDivergedError

__all__ = ["TrainerCheckpoints", "CHECKPOINT_FORMAT", "LATEST_CHECKPOINT"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
LATEST_CHECKPOINT = "latest.pt"


class TrainerCheckpoints:
    """Writing and reading the checkpoints of a PML trainer that draws its batches from a
    :class:`~pml_tride.trainers.batch_plan.BatchPlan` (a base class of :class:`~pml_tride.trainers.TrideTrainer`).

    A checkpoint holds the models, optimizers, LR schedulers, losses and miners, the batch plan, every rank's
    random state and history, the epoch and iteration, and the run's ``run_info``; it is written atomically and read
    with ``torch.load(weights_only=True)``. The trainer provides PML's ``models``, ``optimizers``, ``lr_schedulers``,
    ``loss_funcs``, ``mining_funcs``, ``dataset``, ``epoch``, ``iteration`` and ``iterations_per_epoch``, and
    ``batch_plan``, ``history``, ``run_info``, ``total_epochs``, ``last_checkpoint``, ``_in_epoch``,
    ``_resume_epoch`` and ``_resume_iteration``.
    """

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
        (the same epoch after a mid-epoch checkpoint, whose remaining iterations ``train`` then runs). A checkpoint
        of another number of processes re-deals the rest of its pass over this run's ranks and logs the rule (see
        :class:`~pml_tride.trainers.batch_plan.BatchPlan`; an epoch that is one pass then ends with the pass)."""
        state = load_state(path)
        known = isinstance(state, dict) and state.get("pml_tride_checkpoint") == CHECKPOINT_FORMAT
        if not known or "models" not in state:
            raise ValueError(f"{path!r} is not a TrideTrainer checkpoint (format {CHECKPOINT_FORMAT})")
        rank_state = state["ranks"][get_rank() % len(state["ranks"])]  # new ranks: the state of rank r mod N
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
        iteration = state["iteration"]
        if self.batch_plan.redealt_from is not None and not state["epoch_complete"] and not self.iterations_per_epoch:
            # an epoch is one pass: the resumed epoch ends with the re-dealt rest of the pass
            iteration = len(self.batch_plan) - self.batch_plan.steps_left_in_pass
        if self.batch_plan.redealt_from is not None:
            self._log_redeal(path, state, iteration)
        if state["epoch_complete"]:
            return state["epoch"] + 1
        self._resume_epoch, self._resume_iteration = state["epoch"], iteration
        return state["epoch"]

    def _log_redeal(self, path: str, state: Dict[str, Any], iteration: int) -> None:
        """Say, once, how a checkpoint of another number of processes is continued (docs/scaling-out.md)."""
        if get_rank() != 0:
            return
        plan, old = self.batch_plan, self.batch_plan.redealt_from
        new = plan.world_size
        left = (plan.pass_length or 0) - plan.offset
        where = (f"epoch {state['epoch'] + 1} starts at iteration 0" if state["epoch_complete"] else
                 f"epoch {state['epoch']} resumes at iteration {iteration} (was {state['iteration']})")
        if plan.pass_length is None:
            rest = "no batch was drawn yet, nothing is re-dealt"
        elif left:
            rest = (f"the {left} batches of pass {plan.passes_drawn} not trained yet (0-based batches {plan.offset} "
                    f"to {plan.pass_length - 1} of {plan.pass_length}) are re-dealt, step s of rank r taking batch "
                    f"{plan.offset} + s*{new} + r ({left % new} left over skipped)")
        else:
            rest = f"pass {plan.passes_drawn} was finished, nothing is re-dealt"
        logger.warning(
            "%s was written by %d process(es), this run has %d: the world size changed from %d to %d. Rule: %s; "
            "later passes are dealt to the %d ranks as usual; rank r continues the random state of old rank r mod "
            "%d; %s.", path, old, new, old, new, rest, new, old, where,
        )

    def _check_finite_weights(self, path: str) -> None:
        for name, model in self.models.items():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise TrainingDivergedError(
                        f"not writing {path!r}: the weights of models[{name!r}] contain NaN or Inf (the last good "
                        f"checkpoint, {self.last_checkpoint}, is kept)"
                    )
