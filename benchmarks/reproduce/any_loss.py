"""The any-loss study: PML losses with their usual miners, trained plain and wrapped in ``AdversarialLoss`` (awareness
"none" and "collapse") on the digits study's and the entangled study's data, through ``TrideTrainer``; and its
section of the page (one table per data set)."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Tuple

import torch
from pytorch_metric_learning import losses, miners

from pml_tride import AdversarialLoss
from pml_tride.evaluation import COLLAPSE_LIFT, DEGRADED_POINTS
from pml_tride.random_state import seed_global_rng
from pml_tride.samplers import SPC2Sampler
from pml_tride.trainers import TrideTrainer

from .plan import ANY_LOSS, ANY_LOSS_NAMES, COMMAND, PLAIN, Job, LossSpec, StudySettings, any_loss_models
from .records import ars_of, base_r1, collapsed, ers_of, pgd_images, r1
from .report import Part, runs_lines, shown_path

# PairMarginMiner's margins for ContrastiveLoss (as examples/digits_any_loss.py): every positive pair farther than
# 0 and every negative pair closer than 1, ContrastiveLoss's own margins.
CONTRASTIVE_MINER = {"pos_margin": 0.0, "neg_margin": 1.0}
# The PML loss and the miner of each loss of the study (keys of ANY_LOSS_NAMES), as a plain PML pipeline pairs them.
PML_LOSSES: Dict[str, Tuple[Callable[[], Any], Callable[[], Any]]] = {
    "multi-similarity": (losses.MultiSimilarityLoss, miners.MultiSimilarityMiner),
    "contrastive": (losses.ContrastiveLoss, lambda: miners.PairMarginMiner(**CONTRASTIVE_MINER)),
}
SECTION = "## Any PML loss: plain vs AdversarialLoss"
NOT_RUN = "not run yet"


def train_any_loss(job: Job, model: torch.nn.Module, train_set, settings: StudySettings, batch_size: int,
                   device: torch.device) -> Tuple[TrideTrainer, float]:
    """Train ``model`` with the job's PML loss and miner, plain or as ``AdversarialLoss(loss, model,
    awareness=...)`` (eps of the job, alpha = eps x train_alpha_ratio, progressive, default steps), with Adam on the
    model's and the loss's parameters and SPC-2 batches, through ``TrideTrainer`` (which calls ``set_epoch``)."""
    spec = job.model
    build_loss, build_miner = PML_LOSSES[spec.loss]
    seed_global_rng(job.seed)
    model.to(device)
    loss = build_loss()
    if spec.variant != PLAIN:
        loss = AdversarialLoss(loss, model, awareness=spec.variant, eps=job.eps,
                               alpha=job.eps * settings.train_alpha_ratio)
    optimizer = torch.optim.Adam([*model.parameters(), *loss.parameters()], lr=settings.lr)
    trainer = TrideTrainer(
        models={"trunk": model}, optimizers={"trunk_optimizer": optimizer}, batch_size=batch_size,
        loss_funcs={"metric_loss": loss}, mining_funcs={"tuple_miner": build_miner()}, dataset=train_set,
        sampler=SPC2Sampler(torch.as_tensor(train_set.labels), seed=job.seed),
        iterations_per_epoch=settings.iterations_per_epoch, data_device=device, seed=job.seed, disable_progress=True,
    )
    started = time.perf_counter()
    trainer.train(start_epoch=1, num_epochs=job.epochs)
    return trainer, time.perf_counter() - started


def degraded_against_plain(results, spec: LossSpec, cell) -> str:
    """Seeds where the variant's R@1 is more than DEGRADED_POINTS below the plain loss's of the same seed."""
    low, compared = results.degraded_seeds(spec, cell, reference=LossSpec("", spec.loss, PLAIN))
    return f"{low}/{compared}"


def any_loss_table(part: Part) -> List[str]:
    """One row per loss and variant of the part's cell: mean ± std over seeds; collapsed counts seeds, degraded
    the seeds more than DEGRADED_POINTS of R@1 below the plain loss's."""
    results = part.results()
    entangled = part.settings.entangled
    lines = ["| loss | variant | R@1 | " + ("digit R@1 | " if entangled else "") + "ERS | ARS | collapsed | degraded | "
             "PGD image passes | train s |", "|" + "---|" * (10 if entangled else 9)]
    for cell in part.settings.cells():
        for spec in any_loss_models():
            records = results.of(spec, cell)
            name = f"| {ANY_LOSS_NAMES[spec.loss]} | {spec.variant_label} | "
            if not records:
                lines.append(name + NOT_RUN + " |" + " |" * (7 if entangled else 6))
                continue
            values = [results.metric(spec, getter, cell) for getter in (r1,) + ((base_r1,) if entangled else ())
                      + (ers_of, ars_of)]
            lines.append(name + " | ".join(map(str, values)) + f" | {sum(map(collapsed, records))}/{len(records)} | "
                         f"{degraded_against_plain(results, spec, cell)} | "
                         f"{results.metric(spec, pgd_images, cell).mean:.3g} | "
                         f"{results.metric(spec, lambda r: r['train_seconds'], cell)} |")
    return lines


def any_loss_part(parts: List[Part]) -> List[str]:
    """The any-loss section: how the models are trained, then per data set its setup, runs and table."""
    quick = " --quick" if any(part.settings.quick for part in parts) else ""
    lines = [SECTION, "", "Two PML losses with their usual miners, `MultiSimilarityLoss` with `MultiSimilarityMiner` "
             "and `ContrastiveLoss` with `PairMarginMiner(pos_margin=0, neg_margin=1)`, each trained plain and "
             "wrapped in `AdversarialLoss(loss, model, awareness=...)` (docs/hardening-any-pml-loss.md) with "
             "`awareness=\"none\"` and `\"collapse\"`, through `TrideTrainer`; the model, batches, optimizer, attack "
             "budget and evaluation are those of the study named in each table. Collapsed (seeds): benign R@1 <= "
             f"chance + {COLLAPSE_LIFT:g} x (100 - chance) (`pml_tride.evaluation.is_collapsed`); digit R@1 "
             "(entangled digits): R@1 with the digit as the label; degraded (seeds): R@1 more than "
             f"{DEGRADED_POINTS:g} points below the plain loss's of the same seed "
             "(`pml_tride.evaluation.is_degraded`).",
             "",
             f"Command: `{' '.join(COMMAND)} --studies {ANY_LOSS}{quick} --workers 1`; records in "
             + ", ".join(f"`{shown_path(part.out)}`" for part in parts) + ".", ""]
    for part in parts:
        lines += [f"### {part.settings.dataset}", "", part.settings.describe() + ".", "", "Runs:", ""]
        lines += (runs_lines(part) or [NOT_RUN]) + [""]
        missing = part.missing()
        if missing:
            lines += [f"{len(missing)} of {len(part.jobs)} planned jobs have no record.", ""]
        lines += ["Mean ± std over seeds:", ""] + any_loss_table(part) + [""]
    return lines
