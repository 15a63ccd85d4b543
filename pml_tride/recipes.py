"""Ready-made training recipes: a defense by name, trained with its miner, its loss and TrideTrainer.

Used by ``pml-tride train`` and ``pml-tride demo``; ``examples/cub_resnet18.py`` spells the same steps out.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Tuple

import numpy as np
import torch
from pytorch_metric_learning import samplers
from pytorch_metric_learning.miners import BaseMiner
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import losses, miners
from .distributed import wrap_model
from .loader_options import loader_options, resolve_num_workers
from .losses import AdversarialTripletLoss
from .miners import SPC2Miner
from .pgd import frozen_model
from .random_state import seed_global_rng
from .samplers import SPC2Sampler
from .trainers import TrideTrainer
from .trainers.tride_trainer import LATEST_CHECKPOINT

__all__ = [
    "DefenseSpec", "DEFENSES", "REFERENCE_MINER_KWARGS", "defense_loss", "defense_miner", "train_embedder",
    "PAIRS_PER_CLASS", "SHARED_MINER_ARGUMENTS", "needs_spc2_batches", "embed_dataset",
]


@dataclass(frozen=True)
class DefenseSpec:
    """A defense: the loss class (its name in :mod:`pml_tride.losses`), the miner class that selects its triplets
    (its name in :mod:`pml_tride.miners`) and the arguments that define the defense, for the loss and for the
    miner (all read-only)."""

    loss: str
    loss_kwargs: Mapping[str, Any] = field(default_factory=dict)
    miner_kwargs: Mapping[str, Any] = field(default_factory=dict)
    miner: str = "TrideMiner"

    def __post_init__(self) -> None:
        if not isinstance(getattr(losses, self.loss, None), type):
            raise ValueError(f"DefenseSpec.loss must name a loss class in pml_tride.losses, got {self.loss!r}")
        miner_class = getattr(miners, self.miner, None)
        if not (isinstance(miner_class, type) and issubclass(miner_class, BaseMiner)):
            raise ValueError(f"DefenseSpec.miner must name a miner class in pml_tride.miners, got {self.miner!r}")
        object.__setattr__(self, "loss_kwargs", MappingProxyType(dict(self.loss_kwargs)))
        object.__setattr__(self, "miner_kwargs", MappingProxyType(dict(self.miner_kwargs)))


# TrideMiner arguments of "ca-tride-reference": the released miner's band schedule and SPC-2 anchors (rows 2i, one
# triplet per pair); these need SPC-2 batches (train_embedder uses MPerClassSampler(m=2) when classes allow).
REFERENCE_MINER_KWARGS: Mapping[str, Any] = MappingProxyType({"schedule": "reference", "anchors": "spc2"})

# "none" is the plain triplet loss: TrideLoss without an attack, which records the same collapse diagnostics.
# The baselines (est, act, hm) and naive-at use their classes' defaults: robrank's settings (32 steps, constant
# step size) and, for hm, the paper's configuration (LGA, ET, ICS 0.5). naive-at is the collapse-unaware
# adversary perturbing A, P and N jointly for all steps and training on (A', P', N'): HMLoss maximising hardness.
# The baselines select triplets as robrank does: spc2-random for est and act, spc2-softhard source triplets for hm
# (its destination is the gradual adversary, so robrank's semi-hard destination miner is not used). est does not
# re-mine on the adversarial embeddings: spc2-random depends on the labels only and every row of an SPC-2 batch
# is an anchor or a positive, so mining on the clean batch perturbs the same images and draws the same triplets.
DEFENSES: Mapping[str, DefenseSpec] = MappingProxyType({
    "none": DefenseSpec("TrideLoss", {"steps": 0, "top_rank": False}),
    "ca-tride": DefenseSpec("TrideLoss", {"phase": "tride"}),
    "ca-cap": DefenseSpec("TrideLoss", {"phase": "cap"}),
    "ca-anp": DefenseSpec("TrideLoss", {"phase": "anp"}),
    "ca-tride-no-tpr": DefenseSpec("TrideLoss", {"phase": "tride", "top_rank": False}),
    "ca-tride-no-ltr": DefenseSpec("TrideLoss", {"phase": "tride", "gamma": 0.0}),
    # Figure 4 (right): the H-aware comparison runs without the progressive step size (Section 4.3)
    "hardness-tride": DefenseSpec("TrideLoss", {"phase": "tride", "awareness": "hardness", "progressive_alpha": False}),
    "naive-tride": DefenseSpec("TrideLoss", {"phase": "tride", "awareness": "none"}),
    "naive-cap": DefenseSpec("TrideLoss", {"phase": "cap", "awareness": "none"}),
    "naive-anp": DefenseSpec("TrideLoss", {"phase": "anp", "awareness": "none"}),
    # the released code: its equations, one perturbation per triplet, and its miner (band schedule, SPC-2 anchors)
    "ca-tride-reference": DefenseSpec(
        "TrideLoss", {"phase": "tride", "variant": "reference", "perturb": "per_triplet"}, REFERENCE_MINER_KWARGS
    ),
    # COLO-TRIDE (arXiv): the adversary assists instead of stopping, from epoch E/4 on
    "colo-tride": DefenseSpec("TrideLoss", {"phase": "tride", "orientation": "assist"}),
    "naive-at": DefenseSpec("HMLoss", {"destination": "unbounded", "ics_weight": 0.0}),
    "est": DefenseSpec("ESTLoss", miner="SPC2RandomMiner"),
    "act": DefenseSpec("ACTLoss", miner="SPC2RandomMiner"),
    "hm": DefenseSpec("HMLoss", miner="SPC2SoftHardMiner"),
})
# What train_embedder gives every defense's miner; a miner class without one of these parameters (the SPC-2 miners
# have no semi-hard band, so no margin or schedule) is built without it.
SHARED_MINER_ARGUMENTS = ("margin", "schedule", "seed")
# SPC-2 batches (two images per class), as the paper, when the data set has enough classes.
PAIRS_PER_CLASS = 2


def _spec(defense: str) -> DefenseSpec:
    if defense not in DEFENSES:
        raise ValueError(f"unknown defense {defense!r}; valid: {sorted(DEFENSES)}")
    return DEFENSES[defense]


def defense_loss(defense: str, model: nn.Module, **overrides: Any) -> AdversarialTripletLoss:
    """The loss of a named defense. ``overrides`` (margin, eps, alpha, steps, lam, ...) set the loss arguments
    the defense does not fix; the defense's own ``loss_kwargs`` (e.g. ``steps=0`` for "none") take precedence."""
    spec = _spec(defense)
    loss_class = getattr(losses, spec.loss)
    try:
        return loss_class(model, **{**overrides, **spec.loss_kwargs})
    except TypeError as error:
        raise ValueError(f"defense {defense!r} ({spec.loss}) does not take these arguments: {error}") from error


def defense_miner(defense: str, **overrides: Any) -> BaseMiner:
    """The miner of a named defense (``DefenseSpec.miner``); ``overrides`` (margin, schedule, seed, ...) set what
    the defense leaves open, the defense's own ``miner_kwargs`` take precedence. Of SHARED_MINER_ARGUMENTS, those
    the miner class has no parameter for are left out (e.g. ``margin`` for SPC2RandomMiner); any other argument
    the class does not take is an error."""
    spec = _spec(defense)
    miner_class = getattr(miners, spec.miner)
    parameters = inspect.signature(miner_class).parameters
    kept = {name: value for name, value in overrides.items()
            if name in parameters or name not in SHARED_MINER_ARGUMENTS}
    try:
        return miner_class(**{**kept, **spec.miner_kwargs})
    except TypeError as error:
        raise ValueError(f"defense {defense!r} ({spec.miner}) does not take these arguments: {error}") from error


def needs_spc2_batches(miner: BaseMiner) -> bool:
    """Whether ``miner`` takes its anchors from SPC-2 batches (rows 2i and 2i + 1 of one class)."""
    return isinstance(miner, SPC2Miner) or getattr(miner, "anchors", None) == "spc2"


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
    steps: Optional[int] = None,
    lam: Optional[float] = None,
    miner_schedule: str = "paper",
    seed: int = 0,
    device: Optional[torch.device] = None,
    checkpoint_dir: Optional[str] = None,
    resume: Optional[str] = None,
    iterations_per_epoch: Optional[int] = None,
    loss_overrides: Optional[Mapping[str, Any]] = None,
    miner_overrides: Optional[Mapping[str, Any]] = None,
    sampler: Optional[Sampler] = None,
    checkpoint_every: Optional[int] = None,
    end_of_epoch_hook: Optional[Callable[[TrideTrainer], Any]] = None,
    disable_progress: bool = False,
    run_info: Optional[Mapping[str, Any]] = None,
    num_workers: Optional[int] = None,
    precision: str = "fp32",
    channels_last: bool = False,
) -> Tuple[TrideTrainer, float]:
    """Train ``model`` on ``dataset`` with a named defense; returns the trainer and the training seconds.

    Adam (lr, weight decay), the defense's miner (``defense_miner``: margin and schedule for TrideMiner, seed),
    SPC-2 batches through PML's MPerClassSampler when the data set has at least batch_size / 2 classes (else
    shuffled batches, or, for a defense whose miner needs SPC-2 batches, :class:`~pml_tride.samplers.SPC2Sampler`
    pairs with classes repeating within a batch), one checkpoint per epoch in ``checkpoint_dir`` (and
    ``latest.pt`` every ``checkpoint_every`` iterations), and ``resume`` from a checkpoint of the same run
    (``"auto"``: ``checkpoint_dir/latest.pt`` when it exists). The run is a function of ``seed`` and the model's
    initial weights: seed torch before building the model (``pml-tride train`` does). ``steps`` and ``lam`` are
    passed to the loss only when given (None: the loss class's default, e.g. 16 steps for TrideLoss, 32 for the
    baselines). ``loss_overrides`` and ``miner_overrides`` pass further arguments to ``defense_loss`` and
    ``defense_miner`` (e.g. ``perturb``, ``progressive_alpha``; ``anchors``) for ablations of a named defense; the
    defense's own arguments still take precedence. ``sampler`` replaces the automatic choice of batches.

    Inside a torch.distributed process group (torchrun) the model is wrapped in ``DistributedDataParallel``
    and every rank trains on its own ``batch_size`` images per step (see docs/scaling-out.md).
    ``end_of_epoch_hook`` (e.g. ``RobustnessTester.end_of_epoch_hook``) runs after every epoch;
    ``disable_progress`` hides the progress bars; ``run_info`` goes into every checkpoint as its ``run`` entry
    (see :class:`TrideTrainer`).
    ``disable_progress`` hides the progress bars. ``num_workers``: data loader worker processes (None:
    :func:`~pml_tride.loader_options.default_num_workers` of the device, 0 on CPU); the weights do not depend on it.
    ``precision`` ("fp32", "bf16") and ``channels_last``: see :class:`~pml_tride.trainers.TrideTrainer`.
    """
    optional = {name: value for name, value in (("steps", steps), ("lam", lam)) if value is not None}
    miner = defense_miner(defense, **{"margin": margin, "schedule": miner_schedule, "seed": seed,
                                      **(miner_overrides or {})})
    seed_global_rng(seed)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    if resume == "auto":
        latest = os.path.join(checkpoint_dir or "", LATEST_CHECKPOINT)
        resume = latest if checkpoint_dir is not None and os.path.isfile(latest) else None
    trained = wrap_model(model, device)
    loss = defense_loss(defense, trained, **{"margin": margin, "eps": eps, "alpha": alpha, **optional,
                                             **(loss_overrides or {})})
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError("the data set needs a 'labels' attribute (one label per item)")
    classes = len(torch.unique(torch.as_tensor(labels)))
    if sampler is None and classes * PAIRS_PER_CLASS >= batch_size and batch_size % PAIRS_PER_CLASS == 0:
        sampler = samplers.MPerClassSampler(torch.as_tensor(labels), m=PAIRS_PER_CLASS, batch_size=batch_size,
                                            length_before_new_iter=len(dataset))
    elif sampler is None and needs_spc2_batches(miner):
        if batch_size % PAIRS_PER_CLASS != 0:
            raise ValueError(
                f"defense {defense!r} mines with {type(miner).__name__}, which needs SPC-2 batches (same-class pairs "
                f"in rows 2i and 2i + 1): batch_size must be even, got {batch_size}"
            )
        sampler = SPC2Sampler(torch.as_tensor(labels), seed=seed)
    trainer = TrideTrainer(
        models={"trunk": trained},
        optimizers={"trunk_optimizer": torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)},
        batch_size=batch_size,
        loss_funcs={"metric_loss": loss},
        mining_funcs={"tuple_miner": miner},
        dataset=dataset,
        sampler=sampler,
        iterations_per_epoch=iterations_per_epoch,
        dataloader_num_workers=resolve_num_workers(num_workers, device),
        data_device=device,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        seed=seed,
        end_of_epoch_hook=end_of_epoch_hook,
        disable_progress=disable_progress,
        run_info=dict(run_info or {}),
        precision=precision,
        channels_last=channels_last,
    )
    start_epoch = trainer.load_checkpoint(resume) if resume else 1
    started = time.perf_counter()
    if start_epoch <= epochs:
        trainer.train(start_epoch=start_epoch, num_epochs=epochs)
    return trainer, time.perf_counter() - started


def embed_dataset(model: nn.Module, dataset: Dataset, *, batch_size: int = 112, device: Optional[torch.device] = None,
                  num_workers: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The model's embeddings of every item of ``dataset``, in data set order: an (N, dim) float32 array (the model's
    output as it is, not re-normalised) and the (N,) int64 labels. The model runs in eval mode without gradients
    (its state is restored afterwards) on ``device`` (default: where its parameters are); ``num_workers`` loader
    processes (None: :func:`~pml_tride.loader_options.default_num_workers` of the device)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    parameter = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (parameter.device if parameter is not None
                                                              else torch.device("cpu"))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        **loader_options(resolve_num_workers(num_workers, device), device))
    embeddings, labels = [], []
    with frozen_model(model), torch.no_grad():
        for images, batch_labels in loader:
            embeddings.append(model(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(batch_labels).long())
    return torch.cat(embeddings).numpy(), torch.cat(labels).numpy()
