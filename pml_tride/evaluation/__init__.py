"""Robustness evaluation: benign metrics, the ten ranking attacks, ERS and ARS."""

from .benign import benign_metrics, retrieval_metrics
from .robustness_evaluator import RobustnessEvaluator
from .robustness_report import RobustnessReport
from .scores import ARS_ATTACKS, ERS_ATTACKS, PerTrialARS, ars, ars_per_trial, ers, ers_per_attack

__all__ = ["RobustnessEvaluator", "RobustnessReport", "ers", "ers_per_attack", "ars", "ars_per_trial",
           "PerTrialARS", "benign_metrics", "retrieval_metrics", "ERS_ATTACKS", "ARS_ATTACKS"]
