"""Robustness evaluation: benign metrics, the ten ranking attacks, ERS and ARS; robustness during training."""

from .benign import ENTANGLEMENT_SAMPLE, benign_metrics, pool_entanglement, retrieval_metrics
from .collapse import (
    COLLAPSE_LIFT,
    DEGRADED_POINTS,
    chance_recall_at_1,
    collapse_threshold,
    is_collapsed,
    is_degraded,
)
from .robustness_evaluator import RobustnessEvaluator, clean_recall_at_1
from .robustness_report import RobustnessReport
from .robustness_tester import MONITORING_SETTINGS, RobustnessMetrics, RobustnessTester, robustness_metrics
from .scores import (
    ARS_ATTACKS,
    ERS_ATTACKS,
    PerTrialARS,
    ars,
    ars_per_attack,
    ars_per_trial,
    ers,
    ers_per_attack,
)

__all__ = ["RobustnessEvaluator", "RobustnessReport", "RobustnessTester", "RobustnessMetrics", "robustness_metrics",
           "MONITORING_SETTINGS", "ers", "ers_per_attack", "ars", "ars_per_attack", "ars_per_trial", "PerTrialARS",
           "benign_metrics", "retrieval_metrics", "clean_recall_at_1", "ERS_ATTACKS", "ARS_ATTACKS",
           "COLLAPSE_LIFT", "DEGRADED_POINTS", "chance_recall_at_1", "collapse_threshold", "is_collapsed",
           "is_degraded", "pool_entanglement",
           "ENTANGLEMENT_SAMPLE"]
