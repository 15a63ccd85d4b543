"""A benchmark run as named sections within a wall-clock budget (imported as ``budgeted_sections``, like
``bench_common``).

Each section gets the share of the time left that its weight is of the weights still to run, and measures as many
paired repeats as that share allows; a failing section becomes a row's ``failed: <reason>`` note and the rest still
runs; after each section a line goes to stderr and, with an output file, the JSON so far is written (a run killed at
its time limit keeps its rows).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
from bench_common import Budget, PairedTimes, time_pairs, write_json

# Characters of a failure's first line kept in its row's note.
FAILURE_NOTE_CHARACTERS = 200


class BudgetedSections:
    """Runs sections within ``budget_seconds``, shared out by the relative ``weights`` of the sections named in
    :meth:`plan`; collects one row per measurement. Subclasses give :meth:`result`, the JSON of the run so far."""

    def __init__(self, weights: Mapping[str, float], budget_seconds: float, device: torch.device, max_repeats: int,
                 out: Optional[str] = None) -> None:
        self.weights = weights
        self.started = time.perf_counter()
        self.budget = Budget(budget_seconds)
        self.device = device
        self.max_repeats = max_repeats
        self.out = out
        self.rows: List[Dict[str, Any]] = []
        self.remaining_weight = 0.0

    def plan(self, names: Iterable[str]) -> None:
        """The sections the run will go through (their weights share out the budget)."""
        self.remaining_weight = float(sum(self.weights[name] for name in names))

    def share(self, name: str) -> float:
        weight = self.weights[name]
        share = weight / max(self.remaining_weight, weight)
        self.remaining_weight -= weight
        return share

    def add_row(self, name: str, **values: Any) -> Dict[str, Any]:
        row = {"measurement": name, **values}
        self.rows.append(row)
        return row

    def section(self, name: str, label: str, function: Callable[[float], None]) -> None:
        """``function(share)`` unless the budget is spent; a failure is noted in a row labelled ``label``."""
        share = self.share(name)
        if self.budget.left() <= 0:
            self.add_row(label, note="skipped: budget spent")
        else:
            try:
                function(share)
            except Exception as error:  # one failure must not stop the other measurements
                reason = (str(error).splitlines() or [""])[0][:FAILURE_NOTE_CHARACTERS]
                self.add_row(label, note=f"failed: {type(error).__name__}: {reason}")
            finally:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.progress(label)

    def progress(self, label: str) -> None:
        """A line on stderr per section, and the JSON so far."""
        row = self.rows[-1] if self.rows else {}
        print(f"[{self.elapsed():6.1f} s] {label}: {row.get('note') or 'done'}", file=sys.stderr, flush=True)
        self.save()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def result(self) -> Dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define result(), the JSON of the run")

    def save(self, result: Optional[Dict[str, Any]] = None) -> None:
        """Write ``result`` (default: :meth:`result`), with its provenance, to the output file, if any."""
        if self.out:
            write_json(self.out, self.result() if result is None else result, self.device)

    def paired(self, step: Callable[[], Any], bound: Callable[[Any], None], share: float,
               max_repeats: Optional[int] = None, required: Optional[Callable[[Any], None]] = None) -> PairedTimes:
        """Warm-up once, then as many (step, bound) pairs as the share of the budget allows; with ``required``, a
        third timing per repeat (the bound plus the forwards the method requires). See :func:`time_pairs`."""
        started = time.perf_counter()
        time_pairs(step, bound, self.device, 1, required)
        repeats = self.budget.repeats(time.perf_counter() - started, share,
                                      min(self.max_repeats, max_repeats or self.max_repeats))
        return time_pairs(step, bound, self.device, repeats, required)
