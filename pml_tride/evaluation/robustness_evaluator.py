"""RobustnessEvaluator: benign metrics, the ten ranking attacks, ERS and ARS for any embedding model."""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..attacks import AttackContext, AttackTrials, BaseRankingAttack, RetrievalPool, build_attacks
from ..chunks import chunk_slices
from ..distributed import all_gather_objects, broadcast_object, get_rank, get_world_size, unwrap_model
from ..loader_options import loader_options, resolve_num_workers
from ..pgd import frozen_model
from ..progress import progress_bar
from ..random_state import preserved_global_rng
from ..validation import check_number
from .benign import (
    BASE_RECALL,
    ClassMembers,
    benign_metrics,
    pool_entanglement,
    retrieval_block,
    retrieval_metrics,
)
from .collapse import chance_recall_at_1
from .robustness_report import RobustnessReport

__all__ = ["RobustnessEvaluator", "clean_recall_at_1"]

logger = logging.getLogger(__name__)


# Query rows per block of distances in clean_recall_at_1.
RECALL_BLOCK_ROWS = 256


def clean_recall_at_1(pool: RetrievalPool, rows: torch.Tensor) -> float:
    """Clean R@1 (percent) of the pool items ``rows`` as queries against the rest of the pool (own entry excluded,
    ties by index as a stable sort), the definition of the benign R@1 restricted to these queries; counted in
    blocks of rows with :func:`~pml_tride.evaluation.benign.retrieval_block` (no row sorted)."""
    members = ClassMembers(pool.labels)
    rows = rows.to(pool.embeddings.device)
    hits = sum(retrieval_block(pool.embeddings, members, rows[part])[0]
               for part in chunk_slices(len(rows), RECALL_BLOCK_ROWS))
    return 100 * float(hits) / len(rows)


class RobustnessEvaluator:
    """Evaluate an embedding model the way the literature does (Zhou et al., 2021; CA-TRIDE Section 3.4).

    The pool is the clean, L2-normalised embeddings of the whole test set; every test image is attacked once per
    attack (as the query, or as the candidate for CA), batch by batch in data set order; targets are drawn from a
    generator seeded from ``seed`` and the attack (:meth:`attack_seed`), so each attack draws the same targets
    whichever other attacks are evaluated with it. Only batch x pool distance blocks are built.

    Under torch.distributed (torchrun) the batches are dealt to the ranks (batch ``i`` to rank ``i % world_size``):
    each rank embeds its batches of the pool, which is all-gathered; each rank attacks its batches, after replaying
    the target selection of the others' batches on their clean pool embeddings so that its target generator is where
    a single process would have it; the per-trial records are gathered. The report, on every rank, equals the
    single-process report exactly (timings aside). A ``DistributedDataParallel`` model is evaluated unwrapped.

    Args:
        eps, alpha, steps: PGD budget, step size and steps (ERS setting: 8/255, 3/255, 32; no random start).
        attacks: "all", measurement names (see :data:`pml_tride.attacks.ATTACK_NAMES`), or "none" / an empty
            tuple: a benign-only evaluation (benign metrics, chance R@1, collapse flag, entanglement; no attack
            built, ERS and ARS not measured).
        batch_size: attacked images per batch (robrank: 112).
        seed: seed of the target selection.
        robrank_compat: reproduce robrank's quirks (GTM target, LTM positives, stale ES:D, self-targets of
            CA+/QA+/TMA).
        device: where the data and the pool go (default: the model's device); the model must already be there.
        input_range: valid pixel range.
        progress: show tqdm progress bars with a time estimate.
        benign: compute R@1/R@2/mAP/NMI (R@1 is needed for ARS and the collapse flag) and the entanglement
            d_intra/d_inter of the pool (on a fixed subsample of
            :data:`~pml_tride.evaluation.benign.ENTANGLEMENT_SAMPLE` items when larger). A data set with a
            ``base_labels`` attribute (coarser classes, e.g. the digit of
            :class:`~pml_tride.datasets.EntangledDigits`) also gets ``"base R@1"``: R@1 with those labels.
        max_batches: attack only the first batches of each attack (a quick look; ERS/ARS then cover a subset).
        use_faiss: use faiss for k-means when installed.
        queries: attack only this many test images, a random subset drawn from ``seed`` that is the same in every
            call on a data set of the same size (monitoring during training); ``None``: all of them. The pool
            and the benign metrics still cover the whole test set.
        num_workers: data loader worker processes (None: :func:`~pml_tride.loader_options.default_num_workers` of
            the device, 0 on CPU); the report does not depend on it.
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        alpha: float = 3 / 255,
        steps: int = 32,
        attacks: Union[str, Iterable[str]] = "all",
        batch_size: int = 112,
        seed: int = 0,
        robrank_compat: bool = False,
        device: Optional[Union[str, torch.device]] = None,
        input_range: Tuple[float, float] = (0.0, 1.0),
        progress: bool = True,
        benign: bool = True,
        max_batches: Optional[int] = None,
        use_faiss: bool = True,
        queries: Optional[int] = None,
        num_workers: Optional[int] = None,
    ) -> None:
        check_number("batch_size", batch_size, minimum=1, integer=True)
        check_number("max_batches", max_batches, minimum=1, integer=True, optional=True)
        check_number("queries", queries, minimum=1, integer=True, optional=True)
        self.attacks = build_attacks(attacks, eps=eps, alpha=alpha, steps=steps, input_range=input_range,
                                     robrank_compat=robrank_compat)
        if not self.attacks and not benign:
            raise ValueError("nothing to evaluate: attacks='none' and benign=False; select attacks or benign=True")
        self.eps, self.alpha, self.steps, self.batch_size, self.seed = eps, alpha, steps, batch_size, seed
        self.robrank_compat, self.device, self.input_range = robrank_compat, device, tuple(input_range)
        self.progress, self.benign, self.max_batches, self.use_faiss = progress, benign, max_batches, use_faiss
        self.queries = queries
        if num_workers is not None:
            resolve_num_workers(num_workers, None)  # checked now, resolved for the device in evaluate
        self.num_workers = num_workers

    def attack_seed(self, attack: BaseRankingAttack) -> int:
        """The seed of one attack's target selection, from ``seed`` and a stable hash (CRC-32) of the attack's
        first measurement name (not its place among the attacks, selected or registered), so that an attack draws
        the same targets whatever else is evaluated and whatever attacks are added to the package."""
        name_hash = zlib.crc32(attack.measurements[0].encode("utf-8"))
        return int(np.random.SeedSequence([self.seed, name_hash]).generate_state(1)[0])

    @staticmethod
    def _model_device(model: nn.Module) -> Optional[torch.device]:
        parameter = next(model.parameters(), None)
        return None if parameter is None else parameter.device

    def _device(self, model: nn.Module) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return self._model_device(model) or torch.device("cpu")

    def _batch_rows(self, rows: List[int]) -> List[List[int]]:
        """``rows`` (data set rows, in order) cut into batches of ``batch_size``."""
        return [rows[part] for part in chunk_slices(len(rows), self.batch_size)]

    def _own_batches(self, dataset: Dataset, batch_rows: List[List[int]], device: torch.device):
        """This rank's batches ``(index, images, labels)``: every ``world_size``-th batch from its rank."""
        rank, world_size = get_rank(), get_world_size()
        own = list(range(rank, len(batch_rows), world_size))
        loader = DataLoader(dataset, batch_sampler=[batch_rows[index] for index in own],
                            **loader_options(resolve_num_workers(self.num_workers, device), device))
        for index, (images, labels) in zip(own, loader):
            yield index, images.to(device), torch.as_tensor(labels, device=device)

    def attacked_indices(self, size: int) -> torch.Tensor:
        """Pool indices of the attacked test images, in increasing order: all ``size`` of them, or the seeded
        random subset of ``queries``; then cut to the first ``max_batches`` batches."""
        if self.queries is None or self.queries >= size:
            indices = torch.arange(size, device="cpu")
        else:
            seed = int(np.random.SeedSequence([self.seed, size]).generate_state(1)[0])
            generator = torch.Generator().manual_seed(seed)
            indices = torch.randperm(size, generator=generator, device="cpu")[: self.queries].sort().values
        if self.max_batches is not None:
            indices = indices[: self.max_batches * self.batch_size]
        return indices

    def build_pool(self, model: nn.Module, dataset: Dataset) -> RetrievalPool:
        """Clean, L2-normalised embeddings of the whole data set (model in eval mode, state restored); under
        torch.distributed each rank embeds its batches and the pool is all-gathered."""
        model = unwrap_model(model)
        device = self._device(model)
        batch_rows = self._batch_rows(list(range(len(dataset))))
        parts = []
        with frozen_model(model), torch.no_grad():
            for index, images, labels in progress_bar(self._own_batches(dataset, batch_rows, device),
                                                      desc="embedding the pool", leave=False,
                                                      disable_progress=not self.progress or get_rank() != 0):
                parts.append((index, F.normalize(model(images), dim=1), labels))
        if get_world_size() > 1:
            shards = all_gather_objects([(index, emb.cpu(), lab.cpu()) for index, emb, lab in parts])
            gathered = [part for rank_parts in shards for part in rank_parts]
            parts = [(index, embeddings.to(device), labels.to(device))
                     for index, embeddings, labels in sorted(gathered, key=lambda part: part[0])]
        return RetrievalPool(torch.cat([part[1] for part in parts]), torch.cat([part[2] for part in parts]))

    def _benign(self, pool: RetrievalPool, dataset: Dataset) -> Dict[str, float]:
        """The benign metrics of the pool, plus ``BASE_RECALL`` for a data set with coarser ``base_labels``."""
        benign = benign_metrics(pool.embeddings, pool.labels, use_faiss=self.use_faiss)
        base_labels = getattr(dataset, "base_labels", None)
        if base_labels is not None:
            benign[BASE_RECALL] = retrieval_metrics(pool.embeddings, torch.as_tensor(base_labels).to(
                pool.embeddings.device))["R@1"]
        return benign

    @staticmethod
    def _replay_selection(attack: BaseRankingAttack, pool: RetrievalPool, rows: List[int],
                          generator: torch.Generator) -> None:
        """Advance ``generator`` past another rank's batch: its target selection on the batch's clean embeddings
        (the pool's rows), whose draws are those the single-process run makes there."""
        pool_indices = torch.tensor(rows, device=pool.embeddings.device)
        context = AttackContext(clean=pool.embeddings[pool_indices], pool=pool, pool_indices=pool_indices,
                                target_index=torch.full((len(rows),), -1, dtype=torch.long, device=pool_indices.device))
        attack.select(context, generator)

    def evaluate(self, model: nn.Module, dataset: Dataset) -> RobustnessReport:
        """Benign metrics, every attack on every test image, ERS and ARS.

        The global random states (torch, CUDA, numpy, Python) are restored afterwards, so evaluating during
        training (:class:`~pml_tride.evaluation.RobustnessTester`) does not change the training run.
        """
        with preserved_global_rng():
            return self._evaluate(model, dataset)

    def _evaluate(self, model: nn.Module, dataset: Dataset) -> RobustnessReport:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_model(model)
        if len(dataset) < 2:
            raise ValueError(f"the data set needs at least 2 images, got {len(dataset)}")
        device = self._device(model)
        model_device = self._model_device(model)
        if model_device is not None and model_device.type != device.type:
            raise ValueError(f"the model is on {model_device} but device={self.device!r}: move it first, "
                             "model.to(device)")
        started = time.perf_counter()
        pool = self.build_pool(model, dataset)
        benign, entanglement = {}, (None, None)
        if self.benign:  # computed once, on rank 0
            benign, entanglement = broadcast_object(
                (self._benign(pool, dataset), pool_entanglement(pool.embeddings, pool.labels))
                if get_rank() == 0 else None)
        attacked = self.attacked_indices(len(dataset)) if self.attacks else torch.zeros(0, dtype=torch.long)
        batch_rows = self._batch_rows(attacked.tolist())
        batches = len(batch_rows)
        rank, world_size = get_rank(), get_world_size()
        collected: Dict[str, List[Tuple[int, AttackTrials]]] = {}
        timings: Dict[str, float] = {}
        own_count = len(range(rank, batches, world_size))
        with progress_bar(total=own_count * len(self.attacks), desc="attacks",
                          disable_progress=not self.progress or rank != 0) as bar:
            for attack in self.attacks:
                generator = torch.Generator().manual_seed(self.attack_seed(attack))
                attack_started = time.perf_counter()
                bar.set_postfix_str("/".join(attack.measurements))
                replayed = 0
                for index, images, _ in self._own_batches(dataset, batch_rows, device):
                    for other in range(replayed, index):  # the batches of other ranks before this one
                        self._replay_selection(attack, pool, batch_rows[other], generator)
                    replayed = index + 1
                    pool_indices = torch.tensor(batch_rows[index], device=device)
                    for name, trials in attack(model, images, pool, pool_indices, generator).items():
                        collected.setdefault(name, []).append((index, trials))
                    bar.update(1)
                timings["/".join(attack.measurements)] = time.perf_counter() - attack_started
        if world_size > 1:
            merged: Dict[str, List[Tuple[int, AttackTrials]]] = {}
            for rank_collected in all_gather_objects(collected):
                for name, parts in rank_collected.items():
                    merged.setdefault(name, []).extend(parts)
            collected = merged
        collected = {name: [trials for _, trials in sorted(parts, key=lambda part: part[0])]
                     for name, parts in collected.items()}
        trials = {name: self._concatenate(name, parts) for name, parts in collected.items()}
        settings: Dict[str, Any] = {
            "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "seed": self.seed,
            "robrank_compat": self.robrank_compat, "batch_size": self.batch_size, "pool_size": len(pool),
            "attacks": [name for attack in self.attacks for name in attack.measurements],
            "attacked_batches": batches, "attacked_queries": len(attacked), "queries": self.queries,
            "attack_seconds": timings, "processes": world_size, "total_seconds": time.perf_counter() - started,
        }
        clean_r1 = (None if not self.attacks or len(attacked) == len(pool)
                    else clean_recall_at_1(pool, attacked.to(pool.embeddings.device)))
        chance_r1 = chance_recall_at_1(pool.labels)
        report = RobustnessReport.from_trials(benign, trials, settings, clean_r1=clean_r1, chance_r1=chance_r1)
        report.entanglement, report.entanglement_items = entanglement
        if report.collapsed and get_rank() == 0:
            logger.warning("%s", report.notes()[0])
        return report

    @staticmethod
    def _concatenate(name: str, parts: List[AttackTrials]) -> AttackTrials:
        return AttackTrials(
            name=name,
            query_index=torch.cat([p.query_index for p in parts]),
            target_index=torch.cat([p.target_index for p in parts]),
            before=torch.cat([p.before for p in parts]),
            after=torch.cat([p.after for p in parts]),
        )
