"""RobustnessEvaluator: benign metrics, the ten ranking attacks, ERS and ARS for any embedding model."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..attacks import ATTACK_NAMES, AttackTrials, BaseRankingAttack, RetrievalPool, build_attacks
from ..pgd import frozen_model
from .benign import benign_metrics
from .robustness_report import RobustnessReport

__all__ = ["RobustnessEvaluator"]


class RobustnessEvaluator:
    """Evaluate an embedding model the way the literature does (Zhou et al., 2021; CA-TRIDE Section 3.4).

    The pool is the clean, L2-normalised embeddings of the whole test set; every test image is attacked once per
    attack (as the query, or as the candidate for CA), batch by batch in data set order; targets are drawn from a
    generator seeded from ``seed`` and the attack (:meth:`attack_seed`), so each attack draws the same targets
    whichever other attacks are evaluated with it. Only batch x pool distance blocks are built.

    Args:
        eps, alpha, steps: PGD budget, step size and steps (ERS setting: 8/255, 3/255, 32; no random start).
        attacks: "all" or measurement names (see :data:`pml_tride.attacks.ATTACK_NAMES`).
        batch_size: attacked images per batch (robrank: 112).
        seed: seed of the target selection.
        robrank_compat: reproduce robrank's quirks (GTM target, LTM positives, stale ES:D, self-targets of
            CA+/QA+/TMA).
        device: where the data and the pool go (default: the model's device); the model must already be there.
        input_range: valid pixel range.
        progress: show tqdm progress bars with a time estimate.
        benign: compute R@1/R@2/mAP/NMI (R@1 is needed for ARS).
        max_batches: attack only the first batches of each attack (a quick look; ERS/ARS then cover a subset).
        use_faiss: use faiss for k-means when installed.
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
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
            raise ValueError(f"max_batches must be None or a positive integer, got {max_batches!r}")
        self.attacks = build_attacks(attacks, eps=eps, alpha=alpha, steps=steps, input_range=input_range,
                                     robrank_compat=robrank_compat)
        self.eps, self.alpha, self.steps, self.batch_size, self.seed = eps, alpha, steps, batch_size, seed
        self.robrank_compat, self.device, self.input_range = robrank_compat, device, tuple(input_range)
        self.progress, self.benign, self.max_batches, self.use_faiss = progress, benign, max_batches, use_faiss

    def attack_seed(self, attack: BaseRankingAttack) -> int:
        """The seed of one attack's target selection, from ``seed`` and the attack's place in Table 2 (not its place
        among the attacks selected), so that an attack draws the same targets whatever else is evaluated."""
        position = ATTACK_NAMES.index(attack.measurements[0])
        return int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])

    @staticmethod
    def _model_device(model: nn.Module) -> Optional[torch.device]:
        parameter = next(model.parameters(), None)
        return None if parameter is None else parameter.device

    def _device(self, model: nn.Module) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return self._model_device(model) or torch.device("cpu")

    def _loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def _batches(self, loader: DataLoader, device: torch.device):
        for index, (images, labels) in enumerate(loader):
            if self.max_batches is not None and index >= self.max_batches:
                return
            yield index, images.to(device), torch.as_tensor(labels, device=device)

    def build_pool(self, model: nn.Module, dataset: Dataset) -> RetrievalPool:
        """Clean, L2-normalised embeddings of the whole data set (model in eval mode, state restored)."""
        device = self._device(model)
        embeddings, labels = [], []
        with frozen_model(model), torch.no_grad():
            for images, batch_labels in tqdm(self._loader(dataset), desc="embedding the pool", leave=False,
                                             disable=not self.progress):
                embeddings.append(F.normalize(model(images.to(device)), dim=1))
                labels.append(torch.as_tensor(batch_labels, device=device))
        return RetrievalPool(torch.cat(embeddings), torch.cat(labels))

    def evaluate(self, model: nn.Module, dataset: Dataset) -> RobustnessReport:
        """Benign metrics, every attack on every test image, ERS and ARS."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if len(dataset) < 2:
            raise ValueError(f"the data set needs at least 2 images, got {len(dataset)}")
        device = self._device(model)
        model_device = self._model_device(model)
        if model_device is not None and model_device.type != device.type:
            raise ValueError(f"the model is on {model_device} but device={self.device!r}: move it first, "
                             "model.to(device)")
        started = time.perf_counter()
        pool = self.build_pool(model, dataset)
        benign = benign_metrics(pool.embeddings, pool.labels, use_faiss=self.use_faiss) if self.benign else {}
        loader = self._loader(dataset)
        batches = len(loader) if self.max_batches is None else min(len(loader), self.max_batches)
        collected: Dict[str, List[AttackTrials]] = {}
        timings: Dict[str, float] = {}
        with tqdm(total=batches * len(self.attacks), desc="attacks", disable=not self.progress) as bar:
            for attack in self.attacks:
                generator = torch.Generator().manual_seed(self.attack_seed(attack))
                attack_started = time.perf_counter()
                bar.set_postfix_str("/".join(attack.measurements))
                for index, images, _ in self._batches(loader, device):
                    pool_indices = torch.arange(index * self.batch_size, index * self.batch_size + len(images),
                                                device=device)
                    for name, trials in attack(model, images, pool, pool_indices, generator).items():
                        collected.setdefault(name, []).append(trials)
                    bar.update(1)
                timings["/".join(attack.measurements)] = time.perf_counter() - attack_started
        trials = {name: self._concatenate(name, parts) for name, parts in collected.items()}
        settings: Dict[str, Any] = {
            "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "seed": self.seed,
            "robrank_compat": self.robrank_compat, "batch_size": self.batch_size, "pool_size": len(pool),
            "attacked_batches": batches, "attack_seconds": timings,
            "total_seconds": time.perf_counter() - started,
        }
        return RobustnessReport.from_trials(benign, trials, settings)

    @staticmethod
    def _concatenate(name: str, parts: List[AttackTrials]) -> AttackTrials:
        return AttackTrials(
            name=name,
            query_index=torch.cat([p.query_index for p in parts]),
            target_index=torch.cat([p.target_index for p in parts]),
            before=torch.cat([p.before for p in parts]),
            after=torch.cat([p.after for p in parts]),
        )
