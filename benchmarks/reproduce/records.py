"""The records of a study (one JSON per job) and what is read from them: summaries over seeds, the collapse
diagnostics over training, and the states *collapsed* and *degraded*."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from pml_tride.evaluation import is_collapsed, is_degraded

from .plan import Cell, Job, LossSpec, ModelSpec, StudySettings, zoo_spec

REFERENCE_DEFENSE = "none"
# Perturbed roles of TrideLoss's phases: CAP perturbs positives and negatives, ANP anchors. A single-phase defense's
# roles are read from its history (one embedding_shift_<role> entry per perturbed role: HM and EST 3, ACT 2).
PHASE_ROLES = {"cap": 2, "anp": 1}
ROLE_SHIFT_KEYS = ("embedding_shift_anchor", "embedding_shift_positive", "embedding_shift_negative")


def load_records(out: str) -> Dict[str, Dict[str, Any]]:
    records = {}
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if name.endswith(".json") and not name.startswith("_"):
            with open(os.path.join(out, name)) as handle:
                record = json.load(handle)
            records[record["key"]] = record
    return records


def record_spec(record: Dict[str, Any]) -> Union[ModelSpec, LossSpec]:
    """The model of a record: a defense of the zoo, or a PML loss of the any-loss study."""
    model = record["model"]
    if "defense" not in model:
        return LossSpec(model["label"], model["loss"], model["variant"])
    return ModelSpec(model["label"], model["defense"], tuple(map(tuple, model["loss_overrides"])),
                     tuple(map(tuple, model["miner_overrides"])))


def canonical_key(record: Dict[str, Any]) -> str:
    """The record's job key under today's plan (a record made with a redundant override still matches)."""
    return Job(record_spec(record), record["seed"], record["eps"], record["epochs"],
               entanglement=record.get("entanglement")).key


@dataclass
class Summary:
    """Mean and sample standard deviation over seeds."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.1f} ± {self.std:.1f}" if self.n > 1 else f"{self.mean:.1f}"


def summarize(values: Sequence[Optional[float]]) -> Summary:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0, len(finite))


def fmt3(summary: Summary) -> str:
    if summary.n == 0:
        return "n/a"
    return f"{summary.mean:.3f} ± {summary.std:.3f}" if summary.n > 1 else f"{summary.mean:.3f}"


def last_epoch(record: Dict[str, Any], key: str) -> Optional[float]:
    rows = [row[key] for row in record["history"] if row.get("epoch") == record["epochs"] and key in row]
    return float(np.mean(rows)) if rows else None


def first_epoch(record: Dict[str, Any], key: str) -> Optional[float]:
    rows = [row[key] for row in record["history"] if row.get("epoch") == 1 and key in row]
    return float(np.mean(rows)) if rows else None


def hardness_of(row: Dict[str, Any]) -> Optional[float]:
    """H = d(a,p) - d(a,n) (Eq. 2) = -separability x mean distance."""
    if "separability" not in row or "mean_distance" not in row:
        return None
    return -row["separability"] * row["mean_distance"]


def final_hardness(record: Dict[str, Any]) -> Optional[float]:
    rows = [hardness_of(row) for row in record["history"] if row.get("epoch") == record["epochs"]]
    rows = [value for value in rows if value is not None]
    return float(np.mean(rows)) if rows else None


def shrink_ratio(record: Dict[str, Any]) -> Optional[float]:
    first, last = first_epoch(record, "mean_distance"), last_epoch(record, "mean_distance")
    return None if not first or last is None else last / first


def row_roles(row: Dict[str, Any]) -> int:
    """How many triplet roles an iteration perturbs (the Figure 5 'overall' weight)."""
    return PHASE_ROLES.get(row.get("phase"), sum(key in row for key in ROLE_SHIFT_KEYS))


def role_shift(row: Dict[str, Any]) -> Optional[Tuple[Any, float]]:
    """(phase, embedding shift / mean distance) of an attacked iteration (phase None for single-phase defenses);
    None for iterations without an attack."""
    if not row.get("pgd_steps") or "embedding_shift" not in row or not row.get("mean_distance"):
        return None
    phase = row.get("phase") if row.get("phase") in PHASE_ROLES else None
    return phase, row["embedding_shift"] / row["mean_distance"]


def normalized_shifts(record: Dict[str, Any]) -> Dict[Any, List[Tuple[float, int]]]:
    """(normalised embedding shift, perturbed roles) of every attacked iteration, by phase."""
    by_phase: Dict[Any, List[Tuple[float, int]]] = {}
    for row in record["history"]:
        shift = role_shift(row)
        if shift is not None:
            by_phase.setdefault(shift[0], []).append((shift[1], row_roles(row)))
    return by_phase


def shift_summary(record: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """(average, overall) normalised embedding shift over training; overall weighs by the perturbed roles."""
    pairs = [pair for rows in normalized_shifts(record).values() for pair in rows]
    if not pairs:
        return None, None
    return float(np.mean([v for v, _ in pairs])), float(np.mean([v * roles for v, roles in pairs]))


def collapsed(record: Dict[str, Any]) -> bool:
    """pml_tride's collapse rule (:func:`pml_tride.evaluation.is_collapsed`) on the record's benign R@1."""
    return is_collapsed(record["benign"]["R@1"], record["chance_r1"])


def r1(record: dict) -> float:
    return record["benign"]["R@1"]


def base_r1(record: dict) -> Optional[float]:
    """Benign R@1 with the base classes as labels (the digit of entangled digits); None where there are none."""
    return record.get("base_r1")


def test_entanglement(record: dict) -> Optional[float]:
    """d_intra / d_inter of the test embeddings (Table 5's entanglement); None in records made before it was kept."""
    return record.get("test_entanglement")


def ers_of(record: dict) -> Optional[float]:
    return record["ers"]


def ars_of(record: dict) -> Optional[float]:
    return record["ars"]


def pgd_images(record: dict) -> Optional[float]:
    forward, backward = record.get("pgd_forward_images"), record.get("pgd_backward_images")
    return None if forward is None or backward is None else forward + backward


class Results:
    """The records of one study, looked up by model, seed and cell (``cell`` defaults to the study's base cell)."""

    def __init__(self, settings: StudySettings, records: Dict[str, Dict[str, Any]],
                 cell: Optional[Cell] = None) -> None:
        self.settings, self.records = settings, records
        self.cell = cell or settings.cells()[0]
        self.by_key = {canonical_key(record): record for record in records.values()}

    def at(self, cell: Cell) -> "Results":
        return Results(self.settings, self.records, cell)

    def of(self, spec: Optional[Union[ModelSpec, LossSpec]], cell: Optional[Cell] = None) -> List[dict]:
        if spec is None:
            return []
        cell = cell or self.cell
        keys = [Job(spec, seed, cell.eps, cell.epochs, entanglement=cell.entanglement).key
                for seed in self.settings.seeds]
        return [self.by_key[key] for key in keys if key in self.by_key]

    def metric(self, spec: Optional[Union[ModelSpec, LossSpec]], getter: Callable[[dict], Optional[float]],
               cell: Optional[Cell] = None) -> Summary:
        return summarize([getter(record) for record in self.of(spec, cell)])

    def is_collapsed(self, spec: Union[ModelSpec, LossSpec], cell: Optional[Cell] = None) -> Optional[bool]:
        """Collapsed in more than half of the seeds; None when the model has no record."""
        records = self.of(spec, cell)
        return None if not records else sum(collapsed(r) for r in records) > len(records) / 2

    def degraded_seeds(self, spec: ModelSpec, cell: Optional[Cell] = None,
                       reference: Optional[ModelSpec] = None) -> Tuple[int, int]:
        """(seeds where R@1 is more than DEGRADED_POINTS below the reference's of the same seed, seeds compared);
        the reference is NT unless given."""
        reference = {record["seed"]: r1(record)
                     for record in self.of(reference or zoo_spec(REFERENCE_DEFENSE), cell)}
        compared = [record for record in self.of(spec, cell) if record["seed"] in reference]
        low = sum(is_degraded(r1(record), reference[record["seed"]]) for record in compared)
        return low, len(compared)

    def is_degraded(self, spec: ModelSpec, cell: Optional[Cell] = None) -> Optional[bool]:
        """Degraded in more than half of the seeds compared; None without NT or without the model."""
        low, compared = self.degraded_seeds(spec, cell)
        return None if not compared else low > compared / 2
