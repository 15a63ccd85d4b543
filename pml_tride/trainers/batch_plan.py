"""BatchPlan: the resumable, rank-aware stream of training batches of a TrideTrainer.

The plan draws one pass of the sampler at a time (PML's ``MPerClassSampler``, any index sampler, a
``BatchSampler``, or shuffled batches when there is none) into batches of ``batch_size`` indices. Each pass is
drawn under random generators seeded from ``(seed, pass number)`` only, so it is the same on every rank and in a
resumed run, whatever else has used the global generators. Under torch.distributed, consecutive batches of a
pass are dealt to the ranks (step ``s`` of rank ``r`` is batch ``s * world_size + r``): every rank trains on
whole batches exactly as the sampler made them (the SPC structure of ``MPerClassSampler``: ``batch_size / m``
classes of ``m`` images each), no batch is used twice, and one step covers ``world_size`` sampler batches.

The state (seed, passes drawn, the sampler's state before the current pass, position in the pass) is small
and rank-independent: a resumed run redraws the current pass and continues at the same batch.

Every item is loaded under torch's generator seeded from ``(seed, pass, batch, row)`` (and restored afterwards),
so a random transform (crop, flip: :class:`~pml_tride.datasets.ImageTransform`, torchvision's transforms) draws
the same values in the main process and in any loader worker: the batches, and so the trained weights, do not
depend on the number of worker processes. Transforms that draw from numpy's or Python's generator are not covered.
"""

from __future__ import annotations

import random
import warnings
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from pytorch_metric_learning import samplers
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from ..loader_options import loader_options

__all__ = ["BatchPlan", "SeededItems", "sampler_state", "load_sampler_state"]

SEED_WORDS = 4


def sampler_state(sampler: Any) -> Optional[Dict[str, Any]]:
    """A sampler's own mutable state: its ``state_dict()``, or the label order PML's MPerClassSampler shuffles
    in place every pass; ``None`` for stateless samplers."""
    if sampler is None:
        return None
    if hasattr(sampler, "state_dict"):
        return {"state_dict": sampler.state_dict()}
    if isinstance(sampler, samplers.MPerClassSampler):
        return {"labels": torch.tensor(np.array(sampler.labels))}  # a copy: the sampler shuffles in place
    return None


def load_sampler_state(sampler: Any, state: Optional[Dict[str, Any]]) -> None:
    if state is None:
        return
    if "state_dict" in state:
        sampler.load_state_dict(state["state_dict"])
    else:
        sampler.labels = state["labels"].numpy().astype(np.asarray(sampler.labels).dtype)


class _seeded_generators:
    """Context manager: torch, numpy and Python's global generators seeded from ``words``, restored on exit."""

    def __init__(self, words: List[int]) -> None:
        self.words = words

    def __enter__(self) -> None:
        self.saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        seeds = np.random.SeedSequence(self.words).generate_state(SEED_WORDS)
        torch.manual_seed(int(seeds[0]))
        np.random.seed(int(seeds[1]))
        random.seed(int(seeds[2]))

    def __exit__(self, *exc: Any) -> None:
        torch_state, numpy_state, python_state = self.saved
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class SeededItems(Dataset):
    """``dataset`` indexed by ``(index, seed)``: the item under torch's default generator seeded with ``seed``, the
    generator's state restored afterwards (the same item in any process, and the caller's random stream untouched)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        index, seed = key
        generator = torch.random.default_generator
        saved = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(saved)


class _RemainingBatches:
    """The batch sampler of the plan's loader: the rest of the current pass, from the position at ``iter`` time,
    each index paired with its item seed."""

    def __init__(self, plan: "BatchPlan") -> None:
        self.plan = weakref.proxy(plan)  # no cycle: a dropped plan stops its workers at once

    def __len__(self) -> int:
        return len(self.plan.batches) - self.plan.position

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        plan = self.plan  # the pass and the position now, not when the loader first asks for a batch
        return self._keyed(plan.seed, plan.passes_drawn, plan.rank, plan.batches, plan.position)

    @staticmethod
    def _keyed(seed: int, pass_number: int, rank: int, batches: List[List[int]], start: int
               ) -> Iterator[List[Tuple[int, int]]]:
        for number in range(start, len(batches)):
            seeds = np.random.SeedSequence([seed, pass_number, rank, number]).generate_state(len(batches[number]))
            yield [(index, int(item_seed)) for index, item_seed in zip(batches[number], seeds)]


class BatchPlan:
    """The batches one rank trains on, pass after pass (see the module docstring).

    Args:
        dataset: the training data set.
        batch_size: images per rank and step (ignored when ``sampler`` is a ``BatchSampler``).
        sampler: an index sampler (e.g. ``MPerClassSampler``), a ``BatchSampler``, or None (shuffled batches).
        seed: seeds every pass; the same on all ranks.
        rank, world_size: this process's place in the process group.
        num_workers, collate_fn: how batches are loaded (one ``DataLoader`` over the passes' batches, whose worker
            processes, if any, persist from pass to pass).
        pin_memory: load batches into pinned memory (for a CUDA device).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: Any = None,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        collate_fn: Optional[Callable] = None,
        pin_memory: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        if sampler is not None and not hasattr(sampler, "__iter__"):
            raise ValueError(f"sampler must be an index or batch sampler, got {type(sampler).__name__}")
        stateless = sampler is not None and sampler_state(sampler) is None
        if stateless and not isinstance(sampler, (samplers.MPerClassSampler, BatchSampler)):
            warnings.warn(
                f"{type(sampler).__name__} has no state_dict(): if it keeps state between passes, a resumed run "
                "may draw different batches",
                stacklevel=3,
            )
        self.dataset, self.batch_size, self.sampler = dataset, int(batch_size), sampler
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.num_workers, self.collate_fn, self.pin_memory = num_workers, collate_fn, pin_memory
        self._loader: Optional[DataLoader] = None
        self.passes_drawn = 0
        self.position = 0
        self.batches: List[List[int]] = []
        self.sampler_before_pass: Optional[Dict[str, Any]] = None
        self._iterator: Optional[Any] = None

    # ----------------------------------------------------------------- drawing passes
    def _all_batches(self) -> List[List[int]]:
        if isinstance(self.sampler, BatchSampler):
            return [list(batch) for batch in self.sampler]
        index_sampler = self.sampler if self.sampler is not None else RandomSampler(self.dataset)
        return [list(batch) for batch in BatchSampler(index_sampler, self.batch_size, drop_last=True)]

    def _draw_pass(self, number: int) -> None:
        """Draw pass ``number`` (0-based) and keep this rank's batches."""
        with _seeded_generators([self.seed, number]):
            batches = self._all_batches()
        steps = len(batches) // self.world_size
        if steps == 0:
            raise ValueError(
                f"one pass of the sampler gives {len(batches)} batches of {self.batch_size}, fewer than the "
                f"{self.world_size} ranks: use a smaller batch size or fewer processes"
            )
        self.batches = [batches[step * self.world_size + self.rank] for step in range(steps)]
        self._iterator = None

    def __len__(self) -> int:
        """Steps per pass (drawn once to count when no pass was drawn yet)."""
        if not self.batches:
            saved = sampler_state(self.sampler)
            self._draw_pass(self.passes_drawn)
            count, self.batches = len(self.batches), []
            load_sampler_state(self.sampler, saved)
            return count
        return len(self.batches)

    def _begin_pass(self) -> None:
        self.sampler_before_pass = sampler_state(self.sampler)
        self._draw_pass(self.passes_drawn)
        self.passes_drawn += 1
        self.position = 0

    def loader(self) -> DataLoader:
        """The plan's DataLoader (built once): the rest of the current pass, every item seeded (:class:`SeededItems`);
        its generator is the plan's own, so loading never draws from the global one."""
        if self._loader is None:
            options = loader_options(self.num_workers, None, persistent=True)
            self._loader = DataLoader(SeededItems(self.dataset), batch_sampler=_RemainingBatches(self),
                                      collate_fn=self.collate_fn, generator=torch.Generator().manual_seed(self.seed),
                                      **{**options, "pin_memory": self.pin_memory})
        return self._loader

    def close(self) -> None:
        """Stop the loader's worker processes (the next batch starts them again, at the same place)."""
        self._iterator, self._loader = None, None

    def next_batch(self) -> Any:
        """The next batch, loaded and collated by :meth:`loader`."""
        if not self.batches or self.position >= len(self.batches):
            self._begin_pass()
        if self._iterator is None:
            self._iterator = iter(self.loader())
        self.position += 1
        return next(self._iterator)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "passes_drawn": self.passes_drawn, "position": self.position,
                "sampler_before_pass": self.sampler_before_pass, "world_size": self.world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"the checkpoint was written by {state['world_size']} processes, this run has {self.world_size}: "
                "resume with the same number of processes (the batches of a step depend on it)"
            )
        self.seed, self.passes_drawn, self.position = state["seed"], state["passes_drawn"], state["position"]
        self.sampler_before_pass = state["sampler_before_pass"]
        self.batches, self._iterator = [], None
        if self.passes_drawn > 0:
            load_sampler_state(self.sampler, self.sampler_before_pass)
            self._draw_pass(self.passes_drawn - 1)
