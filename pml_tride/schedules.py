"""Epoch schedules of CA-TRIDE (Appendix C) and the CAP/ANP phase cycle (Algorithm 1, Figure 2).

Epochs are 0-based: ``epoch`` runs over ``0 .. total_epochs - 1`` as in the released code.
"""

from __future__ import annotations

from typing import Dict

from .validation import check_choice, check_number

__all__ = ["SCHEDULES", "PHASES", "check_epoch", "semi_hard_band", "progressive_alpha", "PhaseCycle"]

SCHEDULES = ("paper", "reference")
PHASES = ("cap", "anp")


def check_epoch(epoch: int, total_epochs: int) -> None:
    """Raise a ValueError unless ``0 <= epoch <= total_epochs`` and ``total_epochs >= 1`` are integers."""
    check_number("epoch", epoch, integer=True)
    check_number("total_epochs", total_epochs, minimum=1, integer=True)
    if not 0 <= epoch <= total_epochs:
        raise ValueError(f"epoch must lie in [0, total_epochs={total_epochs}] (0-based), got {epoch}")


def semi_hard_band(epoch: int, total_epochs: int, eta0: float = 0.2, schedule: str = "paper") -> float:
    """Width eta of the semi-hard band d(a,p) < d(a,n) < d(a,p) + eta at an epoch.

    ``schedule="paper"``: eta = eta0 (1 - (e / 2E)^2) (Eq. 32).
    ``schedule="reference"``: eta = eta0 (1 - e / 2E)^2, the released miner (reference doc, section 1.2).
    """
    check_epoch(epoch, total_epochs)
    check_choice("schedule", schedule, SCHEDULES)
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
        check_choice("phase", mode, self.MODES)
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
