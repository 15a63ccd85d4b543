"""Measurement: what one attack measurement reports and how ERS and ARS score it, declared on the attack class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["Measurement", "PERCENT"]

PERCENT = 100.0


@dataclass(frozen=True)
class Measurement:
    """One measurement of an attack (a column of the paper's Table 2).

    Args:
        name: the measurement's name, e.g. ``"CA+"``.
        unit: what a raw result is, for people (e.g. ``"percentile rank (%)"``).
        percent: the raw result is 100 x the mean per-trial value (percent); else the mean itself.
        digits: decimals of the raw result in the report's tables.
        ers_worst, ers_best: the ERS normaliser (robrank's ``ersnormalize``): 100 (x - worst) / (best - worst), raw
            units, so a fully successful attack scores 0 and an untouched one 100.
        ars_goal: the attack's goal O_g in raw units (Eq. 15); None: the measurement takes no part in ARS.
        ars_initial: the nominal initial state O_i of table-mode ARS in raw units; None: the clean R@1 (Eq. 31).
        ars_trialwise: per-trial ARS applies Eq. 15 to each trial (rank attacks; trials starting at the goal are
            excluded) rather than to the means over the trials (recall attacks, Eq. 31).
    """

    name: str
    unit: str
    percent: bool = True
    digits: int = 1
    ers_worst: float = 0.0
    ers_best: float = PERCENT
    ars_goal: Optional[float] = None
    ars_initial: Optional[float] = None
    ars_trialwise: bool = False

    @property
    def scale(self) -> float:
        """Raw result per unit of the per-trial values: 100 for a percentage, else 1."""
        return PERCENT if self.percent else 1.0

    def ers_score(self, raw: float) -> float:
        """The raw result normalised to 0-100 (higher = more robust)."""
        return PERCENT * (raw - self.ers_worst) / (self.ers_best - self.ers_worst)

    def ars_score(self, raw: float, clean_r1: Optional[float] = None) -> float:
        """Table-mode ARS (Eq. 15 with the nominal initial state; ``clean_r1`` where that is the clean R@1)."""
        if self.ars_goal is None:
            raise ValueError(f"{self.name} takes no part in ARS")
        initial = clean_r1 if self.ars_initial is None else self.ars_initial
        if initial is None:
            raise ValueError(f"{self.name}: table-mode ARS divides by the clean R@1; pass clean_r1")
        return PERCENT * (1 - (raw - initial) / (self.ars_goal - initial))
