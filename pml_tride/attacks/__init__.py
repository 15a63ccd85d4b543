"""The ranking attacks of the ERS/ARS evaluation, all driven by :mod:`pml_tride.pgd`.

Each attack class declares its measurements (:class:`Measurement`: unit, ERS normaliser, ARS goal); the registry
:data:`ATTACK_CLASSES` is the one list of attacks, from which the names, :data:`MEASUREMENTS` and
:func:`build_attacks` follow.
"""

from typing import Dict, Iterable, List, Tuple, Type, Union

from .base_attack import AttackContext, AttackTrials, BaseRankingAttack, RetrievalPool, check_attack_settings
from .candidate_attack import CandidateAttack
from .embedding_shift_attack import EmbeddingShiftAttack
from .greedy_top1_misranking_attack import GreedyTop1MisrankingAttack
from .greedy_top1_translocation_attack import GreedyTop1TranslocationAttack
from .learning_to_misrank_attack import LearningToMisrankAttack
from .measurement import Measurement
from .query_attack import QueryAttack
from .targeted_mismatch_attack import TargetedMismatchAttack

# Every attack class, in the order of the report's columns (Table 2 order for the ten of the literature).
ATTACK_CLASSES: Tuple[Type[BaseRankingAttack], ...] = (
    CandidateAttack, QueryAttack, TargetedMismatchAttack, EmbeddingShiftAttack, LearningToMisrankAttack,
    GreedyTop1MisrankingAttack, GreedyTop1TranslocationAttack,
)
# Every measurement by name, from the classes' declarations.
MEASUREMENTS: Dict[str, Measurement] = {info.name: info for cls in ATTACK_CLASSES for info in cls.measurement_info}
ATTACK_NAMES: Tuple[str, ...] = tuple(MEASUREMENTS)
# The attack selection of a benign-only evaluation.
NO_ATTACKS = "none"


def build_attacks(names: Union[str, Iterable[str]] = "all", **kwargs) -> List[BaseRankingAttack]:
    """Attack instances for measurement names (``"all"``, or e.g. ``["CA+", "ES:R"]``), in the order of
    :data:`ATTACK_CLASSES`; ``"none"`` or an empty list: no attack (a benign-only evaluation).

    ES:D and ES:R come from one embedding-shift attack. ``kwargs`` go to every attack (eps, alpha, steps,
    input_range, robrank_compat) and are checked here (:func:`check_attack_settings`), before any model runs.
    """
    if names == NO_ATTACKS:
        return []
    requested = list(ATTACK_NAMES) if names == "all" else ([names] if isinstance(names, str) else list(names))
    if not requested:
        return []
    unknown = [name for name in requested if name not in ATTACK_NAMES]
    if unknown:
        raise ValueError(f"unknown attack names {unknown}; valid: 'all', '{NO_ATTACKS}' or any of {list(ATTACK_NAMES)}")
    return [attack for cls in ATTACK_CLASSES for attack in cls.build(requested, **kwargs)]


__all__ = [
    "ATTACK_CLASSES", "ATTACK_NAMES", "MEASUREMENTS", "NO_ATTACKS", "Measurement", "AttackContext", "AttackTrials",
    "BaseRankingAttack", "RetrievalPool", "build_attacks", "check_attack_settings",
    "CandidateAttack", "QueryAttack", "TargetedMismatchAttack", "EmbeddingShiftAttack", "LearningToMisrankAttack",
    "GreedyTop1MisrankingAttack", "GreedyTop1TranslocationAttack",
]
