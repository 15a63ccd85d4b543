"""Epoch schedules of CA-TRIDE (Appendix C) and the CAP/ANP phase cycle (Algorithm 1, Figure 2).

Epochs are 0-based: ``epoch`` runs over ``0 .. total_epochs - 1`` as in the released code.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["SCHEDULES", "PHASES", "check_epoch", "semi_hard_band", "progressive_alpha", "PhaseCycle"]

SCHEDULES = ("paper", "reference")
PHASES = ("cap", "anp")


def check_epoch(epoch: int, total_epochs: int) -> None:
    """Raise a ValueError unless ``0 <= epoch <= total_epochs`` and ``total_epochs >= 1`` are integers."""
    for name, value in (("epoch", epoch), ("total_epochs", total_epochs)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    if not 0 <= epoch <= total_epochs:
        raise ValueError(f"epoch must lie in [0, total_epochs={total_epochs}] (0-based), got {epoch}")


def semi_hard_band(epoch: int, total_epochs: int, eta0: float = 0.2, schedule: str = "paper") -> float:
    """Width eta of the semi-hard band d(a,p) < d(a,n) < d(a,p) + eta at an epoch.

    ``schedule="paper"``: eta = eta0 (1 - (e / 2E)^2) (Eq. 32).
    ``schedule="reference"``: eta = eta0 (1 - e / 2E)^2, the released miner (reference doc, section 1.2).
    """
    check_epoch(epoch, total_epochs)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    fraction = epoch / (2 * total_epochs)
    if schedule == "paper":
        return eta0 * (1 - fraction**2)
    return eta0 * (1 - fraction) ** 2


def progressive_alpha(alpha: float, epoch: int, total_epochs: int) -> float:
    """Progressive PGD step size alpha * e / E (Appendix C); 0 at epoch 0."""
    check_epoch(epoch, total_epochs)
    return alpha * epoch / total_epochs


class PhaseCycle:
    """The CAP/ANP alternation of TRIDE: one phase per mini-batch, starting with CAP.

    ``mode="tride"`` alternates CAP, ANP, CAP, ...; ``"cap"`` and ``"anp"`` fix the phase. The call
    counter is the whole state, so :meth:`state_dict` / :meth:`load_state_dict` resume the alternation
    exactly.
    """

    MODES = ("tride",) + PHASES

    def __init__(self, mode: str = "tride") -> None:
        if mode not in self.MODES:
            raise ValueError(f"phase must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.calls = 0

    def peek(self) -> str:
        """The phase the next call to :meth:`next` returns."""
        if self.mode == "tride":
            return PHASES[self.calls % len(PHASES)]
        return self.mode

    def next(self) -> str:
        phase = self.peek()
        self.calls += 1
        return phase

    def state_dict(self) -> Dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.calls = int(state["calls"])
