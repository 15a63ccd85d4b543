"""ERS (Zhou et al., 2021) and ARS (CA-TRIDE, Eq. 15 and 27-31): pure functions of attack results.

Raw values are in the units of the paper's Table 2: percent for CA+/CA-/QA+/QA- (percentile ranks) and for
ES:R, LTM, GTM (R@1) and GTT (retain@4); the cosine for TMA; the L2 shift for ES:D. Units, ERS normalisers and ARS
goals are declared by the attack classes (:data:`pml_tride.attacks.MEASUREMENTS`); which attacks ERS and ARS
average over is fixed here (:data:`ERS_ATTACKS`, :data:`ARS_ATTACKS`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch

from ..attacks import MEASUREMENTS
from ..validation import check_choice

__all__ = [
    "ERS_ATTACKS", "ARS_ATTACKS", "PLUS_ATTACKS", "MINUS_ATTACKS", "RECALL_ATTACKS", "SIGN_HANDLINGS",
    "ers_per_attack", "ers", "ars", "ars_per_attack", "ars_per_trial", "PerTrialARS",
]

# ERS is the mean over the literature's ten (Zhou et al., 2021), named here so that a new attack does not change it.
ERS_ATTACKS = ("CA+", "CA-", "QA+", "QA-", "TMA", "ES:D", "ES:R", "LTM", "GTM", "GTT")
# ARS is the mean over the paper's eight: without TMA (cosine-based) and ES:D (a shift, not a ranking outcome),
# Section 3.4.
ARS_ATTACKS = ("CA+", "CA-", "QA+", "QA-", "ES:R", "LTM", "GTM", "GTT")
# Rank attacks whose goal is the top (+) or the bottom (-) of the list, and the recall attacks (Eq. 31), as the
# attack classes declare them (pml_tride.attacks.Measurement).
PLUS_ATTACKS = tuple(name for name in ARS_ATTACKS if MEASUREMENTS[name].ars_trialwise
                     and MEASUREMENTS[name].ars_goal == 0)
MINUS_ATTACKS = tuple(name for name in ARS_ATTACKS if MEASUREMENTS[name].ars_trialwise
                      and MEASUREMENTS[name].ars_goal != 0)
RECALL_ATTACKS = tuple(name for name in ARS_ATTACKS if not MEASUREMENTS[name].ars_trialwise)
SIGN_HANDLINGS = ("signed_clip", "signed", "abs")


def _check_keys(raw: Mapping[str, float], needed: Tuple[str, ...]) -> None:
    missing = [name for name in needed if name not in raw]
    unknown = [name for name in raw if name not in MEASUREMENTS]
    if missing or unknown:
        raise ValueError(f"raw results: missing {missing}, unknown {unknown}; expected keys {list(needed)}")


def ers_per_attack(raw: Mapping[str, float], partial: bool = False) -> Dict[str, float]:
    """Each raw result normalised to 0-100, higher = more robust (robrank's ``ersnormalize``, with the normaliser
    each attack class declares: :meth:`pml_tride.attacks.Measurement.ers_score`), for the ten ERS attacks (and
    any other measurement present in ``raw``). ``partial=True`` normalises the attacks present instead of
    requiring all ten."""
    _check_keys(raw, () if partial else ERS_ATTACKS)
    return {name: MEASUREMENTS[name].ers_score(raw[name]) for name in MEASUREMENTS if name in raw}


def ers(raw: Mapping[str, float]) -> float:
    """Empirical Robustness Score: the mean of the normalised scores of the ten :data:`ERS_ATTACKS`."""
    per_attack = ers_per_attack(raw)
    return sum(per_attack[name] for name in ERS_ATTACKS) / len(ERS_ATTACKS)


def _check_r1(benign_r1: float) -> None:
    if not (isinstance(benign_r1, (int, float)) and benign_r1 > 0):
        raise ValueError(f"benign_r1 must be a positive percentage, got {benign_r1!r}")


def ars_per_attack(raw: Mapping[str, float], benign_r1: Optional[float], clip: bool = False) -> Dict[str, float]:
    """Table-mode ARS of each ARS attack present in ``raw`` (any subset of the eight, and any other measurement
    with an ARS goal; TMA and ES:D are ignored), without ``"overall"``: what a partial evaluation can report.
    ``benign_r1=None`` leaves out the recall attacks whose score divides by it (ES:R, LTM, GTM)."""
    unknown = [name for name in raw if name not in MEASUREMENTS]
    if unknown:
        raise ValueError(f"raw results: unknown {unknown}; expected names from {list(MEASUREMENTS)}")
    if benign_r1 is not None:
        _check_r1(benign_r1)
    names = [name for name, info in MEASUREMENTS.items() if name in raw and info.ars_goal is not None
             and (benign_r1 is not None or info.ars_initial is not None)]
    scores = {name: MEASUREMENTS[name].ars_score(raw[name], benign_r1) for name in names}
    return {name: min(max(score, 0.0), 100.0) for name, score in scores.items()} if clip else scores


def ars(raw: Mapping[str, float], benign_r1: float, clip: bool = False) -> Dict[str, float]:
    """Table-mode ARS (Eq. 15 with nominal initial states), reproducing the paper's Table 1 from Table 2.

    CA+/QA+: 100 (1 - (50 - x) / 50); CA-/QA-: 100 (1 - (x - 1) / 99) (goal: the bottom of the list);
    ES:R/LTM/GTM: 100 x / R@1 (Eq. 31); GTT: x (retain@4 starts at 100%); each from the goal and initial state
    its attack class declares (:meth:`pml_tride.attacks.Measurement.ars_score`). ``clip`` bounds each score to
    [0, 100]; the paper does not clip. Returns the scores and the mean of the eight :data:`ARS_ATTACKS`,
    ``"overall"``.
    """
    _check_keys(raw, ARS_ATTACKS)
    _check_r1(benign_r1)
    scores = ars_per_attack(raw, benign_r1, clip)
    scores["overall"] = sum(scores[name] for name in ARS_ATTACKS) / len(ARS_ATTACKS)
    return scores


@dataclass
class PerTrialARS:
    """Per-trial ARS: ``scores`` per attack (percent) with ``"overall"``, and the trials ``excluded`` from each
    rank attack because they started at the attack's goal."""

    scores: Dict[str, float]
    excluded: Dict[str, int]


def _resistance(before: torch.Tensor, after: torch.Tensor, goal: float, sign_handling: str) -> torch.Tensor:
    progress = (after - before) / (goal - before)
    if sign_handling == "abs":
        return 1 - progress.abs()
    if sign_handling == "signed":
        return 1 - progress
    return (1 - progress).clamp(0, 1)


def _float64(values) -> torch.Tensor:
    """float64 values, on their own device when already a tensor (else on the CPU)."""
    if isinstance(values, torch.Tensor):
        return values.to(torch.float64)
    return torch.as_tensor(values, dtype=torch.float64, device="cpu")


def ars_per_trial(trials: Mapping[str, "object"], sign_handling: str = "signed_clip",
                  partial: bool = False) -> PerTrialARS:
    """ARS from recorded trials (Eq. 15, 27-30): R_i = 1 - (O_r - O_i) / (O_g - O_i), averaged over trials.

    ``trials`` maps each ARS attack name to an object with ``before`` and ``after`` tensors (percentile ranks
    for the rank attacks; hits for the recall attacks). Rank attacks: goal 0 for CA+/QA+, 1 (the bottom) for
    CA-/QA-; trials already at the goal are excluded and counted. ``sign_handling``: "signed_clip" (R_i clipped
    to [0, 1]: moving away from the goal counts as full resistance), "signed" (Eq. 15 as written) or "abs"
    (Eq. 27's |r - r~|). Recall attacks and GTT: 100 mean(after) / mean(before) (Eq. 31); NaN with a warning
    when the clean value is 0. ``partial=True`` scores the ARS attacks present and leaves out ``"overall"``
    unless all eight are there (else a missing attack raises a ``ValueError``).
    """
    check_choice("sign_handling", sign_handling, SIGN_HANDLINGS)
    missing = [name for name in ARS_ATTACKS if name not in trials]
    if missing and not partial:
        raise ValueError(f"ars_per_trial needs trials for {missing}")
    scores, excluded = {}, {}
    for name, info in MEASUREMENTS.items():
        if name not in trials or info.ars_goal is None:
            continue
        before, after = _float64(trials[name].before), _float64(trials[name].after)
        if not info.ars_trialwise:
            clean = before.mean().item()
            if clean == 0:
                warnings.warn(f"{name}: the clean value is 0, so its ARS is undefined (NaN)", stacklevel=2)
                scores[name] = math.nan
            else:
                scores[name] = 100 * after.mean().item() / clean
            continue
        goal = info.ars_goal / info.scale
        informative = before != goal
        excluded[name] = int((~informative).sum())
        if informative.any():
            scores[name] = 100 * _resistance(before[informative], after[informative], goal, sign_handling).mean().item()
        else:
            scores[name] = math.nan
    if not missing:
        scores["overall"] = sum(scores[name] for name in ARS_ATTACKS) / len(ARS_ATTACKS)
    return PerTrialARS(scores=scores, excluded=excluded)
