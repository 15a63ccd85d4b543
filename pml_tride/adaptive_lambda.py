"""AdaptiveLambda: the attention factor lambda of collapseness (Eq. 7) set from the data during training.

An extension beyond the paper, which tunes lambda per data set by hand and notes (Section 4.4, Table 5) that its
choices follow the entanglement of the trained models' embeddings. The rule here rests on how lambda enters Eq. 7:
the weights w = exp(-lambda (d - min d)) depend on lambda times distance differences only, so scaling every
distance by s and lambda by 1 / s leaves them unchanged. A rule that keeps the weights' contrast over a typical
distance difference g fixed, lambda g = kappa, respects this; a rule of the ratio d_intra / d_inter alone cannot (the
ratio does not change with the scale). Table 5 fits it with one constant: lambda (d_inter - d_intra) is 0.61 (CUB),
0.66 (CARS) and 0.45 (SOP) while lambda ranges over 2 to 10, and the least-squares kappa is 0.623.

* g is measured on the distances Eq. 7 weighs: the batch's triplets as the adversary left them (CAP: clean anchors,
  adversarial positives and negatives; ANP: adversarial anchors, clean candidates), g = mean d(A, N) - mean d(A, P),
  i.e. minus the hardness H (Eq. 2) of the attacked triplets, with the loss's distance; averaged over the ranks of a
  process group; smoothed by an exponential moving average g_bar <- m g_bar + (1 - m) g, started at the first
  batch's value;
* lambda = clip(kappa / g_bar, min_lam, max_lam), and max_lam once g_bar <= kappa / max_lam (g_bar <= 0: the
  attacked triplets have collapsed); clipped to [0, 10] by default: lambda = 0 is hardness (Eq. 2), and 10 is the
  largest lambda the paper used (it reports that a too large lambda harms robustness);
* before the first batch lambda is ``warm_start`` (10, the paper's CUB value and TrideLoss's default).

``AdaptiveLambda(contrast=..., min_lam=..., max_lam=...)`` recalibrates the rule
(``TrideLoss(lam=AdaptiveLambda(...))``). The gap is measured after the attack, whose early stop depends on lambda,
so the value reached reflects the adversary as well as the data; docs/tride-loss.md ("Adaptive lambda") has the
signal measured per regime and this limitation.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .collapseness import check_lam
from .distributed import is_distributed

__all__ = ["AdaptiveLambda", "AUTO_LAM", "TABLE_5", "TABLE_5_CONTRAST", "contrast_fit", "resolve_lam",
           "lam_for_gap"]

AUTO_LAM = "auto"
# Table 5: (data set, mean inter-class distance, mean intra-class distance, lambda) of the CA-TRIDE models.
TABLE_5 = (("CUB", 0.287, 0.226, 10.0), ("CARS", 0.325, 0.256, 9.5), ("SOP", 0.664, 0.438, 2.0))
DEFAULT_MOMENTUM = 0.95  # about the last 20 batches
DEFAULT_WARM_START = 10.0
DEFAULT_MIN_LAM, DEFAULT_MAX_LAM = 0.0, 10.0


def contrast_fit(rows: Sequence[Tuple[str, float, float, float]]) -> float:
    """The least-squares kappa of lambda = kappa / (d_inter - d_intra) through (name, d_inter, d_intra, lambda)
    rows: kappa = sum(lambda / g) / sum(1 / g^2) with g = d_inter - d_intra."""
    gaps = [(inter - intra, lam) for _, inter, intra, lam in rows]
    return sum(lam / gap for gap, lam in gaps) / sum(1 / gap ** 2 for gap, _ in gaps)


TABLE_5_CONTRAST = contrast_fit(TABLE_5)  # 0.623


def lam_for_gap(gap: float, contrast: float = TABLE_5_CONTRAST, min_lam: float = DEFAULT_MIN_LAM,
                max_lam: float = DEFAULT_MAX_LAM) -> float:
    """lambda = contrast / gap clipped to [min_lam, max_lam]; max_lam once gap <= contrast / max_lam (a gap <= 0
    is a collapse, the most entangled case)."""
    if max_lam * gap <= contrast:
        return max_lam
    return max(contrast / gap, min_lam)


def _check_contrast(contrast: float) -> None:
    if isinstance(contrast, bool) or not isinstance(contrast, (int, float)) or not 0 < contrast < math.inf:
        raise ValueError(f"contrast (kappa = lambda x distance gap) must be a finite number > 0, got {contrast!r}")


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_distances(ap_dists: torch.Tensor, an_dists: torch.Tensor) -> bool:
    """Whether the pair distances hold any triplet; raise a ValueError unless both are 1-D of the same length."""
    valid = all(isinstance(dists, torch.Tensor) and dists.dim() == 1 for dists in (ap_dists, an_dists))
    if not valid or len(ap_dists) != len(an_dists):
        shapes = [tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__ for d in (ap_dists, an_dists)]
        raise ValueError(f"ap_dists and an_dists must be 1-D tensors of the same length (one distance per triplet, "
                         f"empty for none), got {shapes[0]} and {shapes[1]}")
    return len(ap_dists) > 0


class AdaptiveLambda(nn.Module):
    """Sets lambda from the moving average of the attacked triplets' distance gap (see the module docstring).

    Call :meth:`update` once per training batch with the pair distances of the triplets trained on; ``lam`` is the
    current value, ``gap`` the moving average (None before the first batch), ``batches`` how many batches it has
    seen. The three are the module's extra state, so a checkpointed run resumes with them.

    Args:
        momentum: m of the moving average, in [0, 1); 0 follows the last batch only.
        warm_start: lambda before the first batch.
        min_lam, max_lam: the clipping range of lambda.
        contrast: kappa = lambda x gap (default: Table 5's least-squares value, ``TABLE_5_CONTRAST``).
    """

    def __init__(self, momentum: float = DEFAULT_MOMENTUM, warm_start: float = DEFAULT_WARM_START,
                 min_lam: float = DEFAULT_MIN_LAM, max_lam: float = DEFAULT_MAX_LAM,
                 contrast: float = TABLE_5_CONTRAST) -> None:
        super().__init__()
        _check_fraction("momentum", momentum)
        _check_contrast(contrast)
        for value in (warm_start, min_lam, max_lam):
            check_lam(value)
        if not min_lam <= warm_start <= max_lam:
            raise ValueError(f"need min_lam <= warm_start <= max_lam, got {min_lam}, {warm_start}, {max_lam}")
        self.momentum, self.warm_start, self.min_lam, self.max_lam = momentum, warm_start, min_lam, max_lam
        self.contrast = float(contrast)
        self.lam = float(warm_start)
        self.gap: Optional[float] = None
        self.batches = 0

    def batch_gap(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> Optional[float]:
        """mean d(A, N) - mean d(A, P) of one batch's triplets (the mean over the ranks of a process group that
        have triplets); None when no rank has any. In a process group every rank calls it once per batch, with
        empty tensors (on its device) when it has no triplets."""
        usable = _check_distances(ap_dists, an_dists)
        with torch.no_grad():
            zero = ap_dists.new_zeros((), dtype=torch.float64)
            value = (an_dists.mean() - ap_dists.mean()).double() if usable else zero
            if is_distributed():
                total = torch.stack([value, value.new_tensor(float(usable))])
                torch.distributed.all_reduce(total)
                value, usable = total[0] / total[1].clamp(min=1), bool(total[1] > 0)
        return float(value) if usable else None

    def update(self, ap_dists: torch.Tensor, an_dists: torch.Tensor) -> float:
        """Fold one batch's d(a_i, p_i) and d(a_i, n_i) (as the adversary left them) into the moving average and
        return the new lambda; a batch without triplets (empty tensors) leaves both unchanged."""
        value = self.batch_gap(ap_dists, an_dists)
        if value is None:
            return self.lam
        if not math.isfinite(value):
            raise ValueError(f"the triplets' distance gap mean d(A, N) - mean d(A, P) is {value}: the distances "
                             "contain NaN or Inf values")
        previous = self.gap
        self.gap = value if previous is None else self.momentum * previous + (1 - self.momentum) * value
        self.batches += 1
        self.lam = lam_for_gap(self.gap, self.contrast, self.min_lam, self.max_lam)
        return self.lam

    def get_extra_state(self) -> Dict[str, Any]:
        return {"lam": self.lam, "gap": self.gap, "batches": self.batches}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.lam, self.gap, self.batches = state["lam"], state["gap"], state["batches"]

    def extra_repr(self) -> str:
        return (f"momentum={self.momentum}, warm_start={self.warm_start}, min_lam={self.min_lam}, "
                f"max_lam={self.max_lam}, contrast={self.contrast}")


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
