"""The ten ranking attacks of the ERS/ARS evaluation, all driven by :mod:`pml_tride.pgd`."""

from typing import Iterable, List, Union

from .base_attack import AttackContext, AttackTrials, BaseRankingAttack, RetrievalPool
from .candidate_attack import CandidateAttack
from .embedding_shift_attack import EmbeddingShiftAttack
from .greedy_top1_misranking_attack import GreedyTop1MisrankingAttack
from .greedy_top1_translocation_attack import GreedyTop1TranslocationAttack
from .learning_to_misrank_attack import LearningToMisrankAttack
from .query_attack import QueryAttack
from .targeted_mismatch_attack import TargetedMismatchAttack

# Table 2 order.
ATTACK_NAMES = ("CA+", "CA-", "QA+", "QA-", "TMA", "ES:D", "ES:R", "LTM", "GTM", "GTT")
# The attack selection of a benign-only evaluation.
NO_ATTACKS = "none"


def _factory(name: str, kwargs) -> BaseRankingAttack:
    if name in ("CA+", "CA-"):
        return CandidateAttack(direction=name[-1], **kwargs)
    if name in ("QA+", "QA-"):
        return QueryAttack(direction=name[-1], **kwargs)
    classes = {"TMA": TargetedMismatchAttack, "ES": EmbeddingShiftAttack, "LTM": LearningToMisrankAttack,
               "GTM": GreedyTop1MisrankingAttack, "GTT": GreedyTop1TranslocationAttack}
    return classes[name](**kwargs)


def build_attacks(names: Union[str, Iterable[str]] = "all", **kwargs) -> List[BaseRankingAttack]:
    """Attack instances for measurement names (``"all"``, or e.g. ``["CA+", "ES:R"]``), in Table 2 order;
    ``"none"`` or an empty list: no attack (a benign-only evaluation).

    ES:D and ES:R come from one embedding-shift attack. ``kwargs`` go to every attack (eps, alpha, steps,
    input_range, robrank_compat).
    """
    if names == NO_ATTACKS:
        return []
    requested = list(ATTACK_NAMES) if names == "all" else ([names] if isinstance(names, str) else list(names))
    if not requested:
        return []
    unknown = [name for name in requested if name not in ATTACK_NAMES]
    if unknown:
        raise ValueError(f"unknown attack names {unknown}; valid: 'all', '{NO_ATTACKS}' or any of {list(ATTACK_NAMES)}")
    families = []
    for name in ATTACK_NAMES:
        if name in requested:
            family = "ES" if name.startswith("ES") else name
            if family not in families:
                families.append(family)
    return [_factory(family, kwargs) for family in families]


__all__ = [
    "ATTACK_NAMES", "NO_ATTACKS", "AttackContext", "AttackTrials", "BaseRankingAttack", "RetrievalPool",
    "build_attacks",
    "CandidateAttack", "QueryAttack", "TargetedMismatchAttack", "EmbeddingShiftAttack", "LearningToMisrankAttack",
    "GreedyTop1MisrankingAttack", "GreedyTop1TranslocationAttack",
]
