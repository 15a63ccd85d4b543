"""AdaptiveLambda: the attention factor lambda of collapseness (Eq. 7) set from the data during training.

An extension beyond the paper, which tunes lambda per data set by hand and notes (Section 4.4, Table 5) that its
choices follow the entanglement e = d_intra / d_inter of the trained models' embeddings: CUB e = 0.79, lambda 10;
CARS e = 0.79, lambda 9.5; SOP e = 0.66, lambda 2. The rule here:

* e is measured on every clean training batch (:func:`pml_tride.collapseness.entanglement`, with the loss's
  distance; averaged over the ranks of a process group) and smoothed by an exponential moving average,
  e_bar <- m e_bar + (1 - m) e, started at the first batch's value;
* lambda = clip(LAM_SOP + (e_bar - E_SOP) (LAM_CUB_CARS - LAM_SOP) / (E_CUB_CARS - E_SOP), min_lam, max_lam), the
  least-squares line through Table 5's three points (it passes through SOP's point and the mean of CUB's and
  CARS's, which share e = 0.79), clipped to [0, 10] by default: lambda = 0 is hardness (Eq. 2), and 10 is the
  largest lambda the paper used (it reports that a too large lambda harms robustness);
* before the first batch lambda is ``warm_start`` (10, the paper's CUB value and TrideLoss's default).

``AdaptiveLambda(line=..., min_lam=..., max_lam=...)`` recalibrates the rule (``TrideLoss(lam=AdaptiveLambda(...))``).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from pytorch_metric_learning.distances import BaseDistance
from torch import nn

from .collapseness import check_lam, entanglement
from .distributed import is_distributed

__all__ = ["AdaptiveLambda", "AUTO_LAM", "TABLE_5_LINE", "resolve_lam", "lam_for_entanglement"]

AUTO_LAM = "auto"
# Table 5: SOP's entanglement and lambda; CUB and CARS share e = 0.79, their lambdas 10 and 9.5 average to 9.75.
E_SOP, LAM_SOP = 0.66, 2.0
E_CUB_CARS, LAM_CUB_CARS = 0.79, 9.75
# Two (entanglement, lambda) points of the line: the least-squares line through Table 5.
TABLE_5_LINE = ((E_SOP, LAM_SOP), (E_CUB_CARS, LAM_CUB_CARS))
DEFAULT_MOMENTUM = 0.95  # about the last 20 batches
DEFAULT_WARM_START = 10.0
DEFAULT_MIN_LAM, DEFAULT_MAX_LAM = 0.0, 10.0


def lam_for_entanglement(value: float, min_lam: float = DEFAULT_MIN_LAM, max_lam: float = DEFAULT_MAX_LAM,
                         line: Sequence[Tuple[float, float]] = TABLE_5_LINE) -> float:
    """lambda at entanglement ``value`` on the line through the two (entanglement, lambda) points of ``line``
    (default: the least-squares line through Table 5), clipped to [min_lam, max_lam]."""
    (e_low, lam_low), (e_high, lam_high) = line
    slope = (lam_high - lam_low) / (e_high - e_low)
    return min(max(lam_low + slope * (value - e_low), min_lam), max_lam)


def _check_line(line: Sequence[Tuple[float, float]]) -> None:
    try:
        (e_low, lam_low), (e_high, lam_high) = line
        valid = all(math.isfinite(value) for value in (e_low, lam_low, e_high, lam_high)) and e_low != e_high
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"line must be two (entanglement, lambda) points with different entanglements, got {line!r}")


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


class AdaptiveLambda(nn.Module):
    """Sets lambda from the moving average of the clean batches' entanglement (see the module docstring).

    Call :meth:`update` once per training batch; ``lam`` is the current value, ``entanglement`` the moving average
    (None before the first batch), ``batches`` how many batches it has seen. The three are the module's extra
    state, so a checkpointed run resumes with them.

    Args:
        momentum: m of the moving average, in [0, 1); 0 follows the last batch only.
        warm_start: lambda before the first batch.
        min_lam, max_lam: the clipping range of lambda.
        line: two (entanglement, lambda) points the line passes through (default: Table 5's least-squares line),
            to recalibrate the rule, e.g. to the entanglement of training batches.
    """

    def __init__(self, momentum: float = DEFAULT_MOMENTUM, warm_start: float = DEFAULT_WARM_START,
                 min_lam: float = DEFAULT_MIN_LAM, max_lam: float = DEFAULT_MAX_LAM,
                 line: Sequence[Tuple[float, float]] = TABLE_5_LINE) -> None:
        super().__init__()
        _check_fraction("momentum", momentum)
        _check_line(line)
        for value in (warm_start, min_lam, max_lam):
            check_lam(value)
        if not min_lam <= warm_start <= max_lam:
            raise ValueError(f"need min_lam <= warm_start <= max_lam, got {min_lam}, {warm_start}, {max_lam}")
        self.momentum, self.warm_start, self.min_lam, self.max_lam = momentum, warm_start, min_lam, max_lam
        self.line = tuple((float(e), float(lam)) for e, lam in line)
        self.lam = float(warm_start)
        self.entanglement: Optional[float] = None
        self.batches = 0

    def batch_entanglement(
        self, embeddings: torch.Tensor, labels: torch.Tensor, distance: Optional[BaseDistance] = None
    ) -> Optional[float]:
        """d_intra / d_inter of one batch (the mean over the ranks of a process group); None when no rank's batch
        has both a same-class and a different-class pair."""
        counts = torch.unique(labels, return_counts=True)[1]
        usable = len(counts) >= 2 and bool(counts.max() >= 2)
        with torch.no_grad():
            value = entanglement(embeddings, labels, distance) if usable else embeddings.new_zeros(())
            if is_distributed():
                total = torch.stack([value, value.new_tensor(float(usable))])
                torch.distributed.all_reduce(total)
                value, usable = total[0] / total[1].clamp(min=1), bool(total[1] > 0)
        return float(value) if usable else None

    def update(
        self, embeddings: torch.Tensor, labels: Optional[torch.Tensor], distance: Optional[BaseDistance] = None
    ) -> float:
        """Fold one clean batch into the moving average and return the new lambda; a batch without a same-class
        or a different-class pair leaves both unchanged."""
        if labels is None:
            raise ValueError("lam='auto' measures the entanglement of each batch and needs its labels: call the loss "
                             "with labels, not with an indices_tuple alone")
        value = self.batch_entanglement(embeddings.detach(), labels, distance)
        if value is None:
            return self.lam
        if not math.isfinite(value):
            raise ValueError(f"the batch's entanglement d_intra / d_inter is {value}: are all embeddings equal?")
        previous = self.entanglement
        self.entanglement = value if previous is None else self.momentum * previous + (1 - self.momentum) * value
        self.batches += 1
        self.lam = lam_for_entanglement(self.entanglement, self.min_lam, self.max_lam, self.line)
        return self.lam

    def get_extra_state(self) -> Dict[str, Any]:
        return {"lam": self.lam, "entanglement": self.entanglement, "batches": self.batches}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.lam, self.entanglement, self.batches = state["lam"], state["entanglement"], state["batches"]

    def extra_repr(self) -> str:
        return (f"momentum={self.momentum}, warm_start={self.warm_start}, min_lam={self.min_lam}, "
                f"max_lam={self.max_lam}, line={self.line}")


def resolve_lam(lam: Union[float, str, AdaptiveLambda]) -> Tuple[float, Optional[AdaptiveLambda]]:
    """A loss's ``lam`` argument as (initial lambda, the AdaptiveLambda that sets it or None): a number >= 0 is
    fixed, ``"auto"`` adapts by the default rule, an :class:`AdaptiveLambda` by its own settings."""
    if isinstance(lam, AdaptiveLambda):
        return lam.lam, lam
    if isinstance(lam, str):
        if lam != AUTO_LAM:
            raise ValueError(f"lam must be a finite number >= 0, {AUTO_LAM!r} or an AdaptiveLambda, got {lam!r}")
        adaptive = AdaptiveLambda()
        return adaptive.lam, adaptive
    try:
        check_lam(lam)
    except ValueError as error:
        raise ValueError(f"lam must be a finite number >= 0, {AUTO_LAM!r} or an AdaptiveLambda, got {lam!r}") from error
    return float(lam), None
