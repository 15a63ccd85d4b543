"""Ready-made training recipes: a defense by name, trained with TrideMiner, TrideLoss and TrideTrainer.

Used by ``pml-tride train`` and ``pml-tride demo``; ``examples/cub_resnet18.py`` spells the same steps out.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from pytorch_metric_learning import samplers
from torch import nn
from torch.utils.data import Dataset

from .losses import TrideLoss
from .miners import TrideMiner
from .trainers import TrideTrainer

__all__ = ["DEFENSES", "defense_loss", "train_embedder", "PAIRS_PER_CLASS"]

# Defense name -> TrideLoss arguments. "none" is the plain triplet loss: TrideLoss without an attack, which
# records the same collapse diagnostics.
DEFENSES: Dict[str, Dict[str, Any]] = {
    "none": {"steps": 0, "top_rank": False},
    "ca-tride": {"phase": "tride"},
    "ca-cap": {"phase": "cap"},
    "ca-anp": {"phase": "anp"},
    "ca-tride-no-tpr": {"phase": "tride", "top_rank": False},
    "hardness-tride": {"phase": "tride", "awareness": "hardness"},
    "naive-tride": {"phase": "tride", "awareness": "none"},
    "ca-tride-reference": {"phase": "tride", "variant": "reference"},
}
# SPC-2 batches (two images per class), as the paper, when the data set has enough classes.
PAIRS_PER_CLASS = 2


def defense_loss(defense: str, model: nn.Module, **kwargs: Any) -> TrideLoss:
    """The TrideLoss of a named defense; ``kwargs`` (margin, eps, alpha, steps, lam, ...) override defaults."""
    if defense not in DEFENSES:
        raise ValueError(f"unknown defense {defense!r}; valid: {sorted(DEFENSES)}")
    return TrideLoss(model, **{**kwargs, **DEFENSES[defense]})


def train_embedder(
    model: nn.Module,
    dataset: Dataset,
    *,
    defense: str = "ca-tride",
    epochs: int = 100,
    batch_size: int = 112,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    margin: float = 0.2,
    eps: float = 8 / 255,
    alpha: float = 1 / 255,
    steps: int = 16,
    lam: float = 10.0,
    miner_schedule: str = "paper",
    seed: int = 0,
    device: Optional[torch.device] = None,
    checkpoint_dir: Optional[str] = None,
    resume: Optional[str] = None,
    iterations_per_epoch: Optional[int] = None,
    end_of_epoch_hook: Optional[Callable[[TrideTrainer], Any]] = None,
    disable_progress: bool = False,
) -> Tuple[TrideTrainer, float]:
    """Train ``model`` on ``dataset`` with a named defense; returns the trainer and the training seconds.

    Adam (lr, weight decay), TrideMiner(margin, schedule), SPC-2 batches through PML's MPerClassSampler when the
    data set has at least batch_size / 2 classes (else shuffled batches), one checkpoint per epoch in
    ``checkpoint_dir``, and ``resume`` from a checkpoint of the same run. ``end_of_epoch_hook`` (e.g.
    ``RobustnessTester.end_of_epoch_hook``) runs after every epoch; ``disable_progress`` hides the progress bars.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError("the data set needs a 'labels' attribute (one label per item)")
    classes = len(torch.unique(torch.as_tensor(labels)))
    sampler = None
    if classes * PAIRS_PER_CLASS >= batch_size and batch_size % PAIRS_PER_CLASS == 0:
        sampler = samplers.MPerClassSampler(torch.as_tensor(labels), m=PAIRS_PER_CLASS, batch_size=batch_size,
                                            length_before_new_iter=len(dataset))
    trainer = TrideTrainer(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)},
        batch_size=batch_size,
        loss_funcs={"metric_loss": defense_loss(defense, model, margin=margin, eps=eps, alpha=alpha, steps=steps,
                                                lam=lam)},
        mining_funcs={"tuple_miner": TrideMiner(margin=margin, schedule=miner_schedule, seed=seed)},
        dataset=dataset,
        sampler=sampler,
        iterations_per_epoch=iterations_per_epoch,
        dataloader_num_workers=0,
        data_device=device,
        checkpoint_dir=checkpoint_dir,
        end_of_epoch_hook=end_of_epoch_hook,
        disable_progress=disable_progress,
    )
    start_epoch = trainer.load_checkpoint(resume) if resume else 1
    started = time.perf_counter()
    if start_epoch <= epochs:
        trainer.train(start_epoch=start_epoch, num_epochs=epochs)
    return trainer, time.perf_counter() - started
