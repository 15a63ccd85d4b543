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

Every item is loaded under torch's generator seeded from ``(seed, pass, batch of the pass, row)`` (and restored
afterwards), so a random transform (crop, flip: :class:`~pml_tride.datasets.ImageTransform`, torchvision's
transforms) draws the same values in the main process and in any loader worker: the batches, and so the trained
weights, do not depend on the number of worker processes, and a batch is loaded the same whichever rank takes it.
Transforms that draw from numpy's or Python's generator are not covered.

A run may resume on another number of processes (e.g. fewer GPUs after a preemption). Then the batches of the
current pass that no rank has trained yet are re-dealt to the new ranks: if ``g`` of the pass's batches were
trained (``g = position * old_world_size`` after the batches dealt before), step ``s`` of rank ``r`` takes batch
``g + s * world_size + r``; fewer than ``world_size`` batches left over at the end are skipped, as at the end of
every pass. A pass that the old run had finished is not reopened: the next pass begins as usual. Later passes are
dealt to the new ranks from their first batch.
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
        return self._keyed(plan.seed, plan.passes_drawn, plan.batches, plan.position,
                           lambda step: plan.offset + step * plan.world_size + plan.rank)

    @staticmethod
    def _keyed(seed: int, pass_number: int, batches: List[List[int]], start: int,
               batch_of_pass: Callable[[int], int]) -> Iterator[List[Tuple[int, int]]]:
        """Each item with its seed, from the batch's number in the whole pass (not in this rank's share): a batch
        is loaded the same whichever rank takes it, also after a resume on another number of processes."""
        for step in range(start, len(batches)):
            key = [seed, pass_number, batch_of_pass(step)]
            seeds = np.random.SeedSequence(key).generate_state(len(batches[step]))
            yield [(index, int(item_seed)) for index, item_seed in zip(batches[step], seeds)]


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
        self.offset = 0
        self.pass_length: Optional[int] = None
        self.redealt_from: Optional[int] = None
        self.batches: List[List[int]] = []
        self.sampler_before_pass: Optional[Dict[str, Any]] = None
        self._iterator: Optional[Any] = None

    # ----------------------------------------------------------------- drawing passes
    def _all_batches(self) -> List[List[int]]:
        if isinstance(self.sampler, BatchSampler):
            return [list(batch) for batch in self.sampler]
        index_sampler = self.sampler if self.sampler is not None else RandomSampler(self.dataset)
        return [list(batch) for batch in BatchSampler(index_sampler, self.batch_size, drop_last=True)]

    def _pass_batches(self, number: int) -> List[List[int]]:
        """All batches of pass ``number`` (0-based), the same on every rank."""
        with _seeded_generators([self.seed, number]):
            batches = self._all_batches()
        if len(batches) < self.world_size:
            raise ValueError(
                f"one pass of the sampler gives {len(batches)} batches of {self.batch_size}, fewer than the "
                f"{self.world_size} ranks: use a smaller batch size or fewer processes"
            )
        return batches

    def _draw_pass(self, number: int) -> None:
        """Draw pass ``number`` and keep this rank's batches."""
        self._deal(self._pass_batches(number), 0)

    def _deal(self, batches: List[List[int]], offset: int) -> None:
        """Keep this rank's batches of a pass among those from batch ``offset`` on."""
        steps = max(len(batches) - offset, 0) // self.world_size
        self.pass_length, self.offset = len(batches), offset
        self.batches = [batches[offset + step * self.world_size + self.rank] for step in range(steps)]
        self._iterator = None

    def __len__(self) -> int:
        """Steps per whole pass (a pass is drawn once to count when none was drawn yet)."""
        if self.pass_length is None:
            saved = sampler_state(self.sampler)
            self.pass_length = len(self._pass_batches(self.passes_drawn))
            load_sampler_state(self.sampler, saved)
        return self.pass_length // self.world_size

    @property
    def steps_left_in_pass(self) -> int:
        """Steps of this rank still to take in the current pass."""
        return len(self.batches) - self.position

    def _begin_pass(self) -> None:
        self.sampler_before_pass = sampler_state(self.sampler)
        self._draw_pass(self.passes_drawn)
        self.redealt_from = None
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
        if self.passes_drawn == 0 or self.position >= len(self.batches):
            self._begin_pass()
        if self._iterator is None:
            self._iterator = iter(self.loader())
        self.position += 1
        return next(self._iterator)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "passes_drawn": self.passes_drawn, "position": self.position,
                "offset": self.offset, "sampler_before_pass": self.sampler_before_pass,
                "world_size": self.world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue where ``state`` was taken; written by another number of processes, re-deal the rest of the
        current pass (see the module docstring; :attr:`redealt_from` then holds the old number)."""
        self.seed, self.passes_drawn, self.position = state["seed"], state["passes_drawn"], state["position"]
        offset, old_world_size = state.get("offset", 0), state["world_size"]
        self.sampler_before_pass = state["sampler_before_pass"]
        self.batches, self._iterator, self.pass_length, self.offset = [], None, None, 0
        self.redealt_from = None if old_world_size == self.world_size else old_world_size
        if self.passes_drawn == 0:
            return
        load_sampler_state(self.sampler, self.sampler_before_pass)
        batches = self._pass_batches(self.passes_drawn - 1)
        if self.redealt_from is None:
            self._deal(batches, offset)
            return
        old_steps = (len(batches) - offset) // old_world_size
        finished = self.position >= old_steps  # the old run had trained its whole share of this pass
        self._deal(batches, len(batches) if finished else offset + self.position * old_world_size)
        self.position = 0
