"""RobustnessTester: ARS, ERS and R@1 as a training-time signal, the way PML's testers report accuracy."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from pytorch_metric_learning.testers import BaseTester
from torch import nn
from torch.utils.data import Dataset

from ..validation import check_number
from .robustness_evaluator import RobustnessEvaluator
from .robustness_report import RobustnessReport
from .scores import ARS_ATTACKS, ERS_ATTACKS, ers_per_attack

__all__ = ["RobustnessTester", "RobustnessMetrics", "robustness_metrics", "MONITORING_SETTINGS", "SELECTABLE"]

logger = logging.getLogger(__name__)

# The cheap monitoring preset (see docs/robustness-tester.md for how far it is from a full evaluation).
MONITORING_SETTINGS: Mapping[str, Any] = {"queries": 224, "steps": 8}
# Names accepted by ``select``; a callable of the report is accepted too.
SELECTABLE = ("ARS", "ERS", "R@1")
SCORE = "score"
# The selection value of a collapsed epoch: below any score, so that no collapsed epoch is ever the best.
COLLAPSED_SCORE = -math.inf


def _metric_name(attack: str) -> str:
    """A column name for a per-attack ARS ("CA+" -> "ARS_CA_plus"): record-keeper writes sqlite columns."""
    return "ARS_" + attack.replace("+", "_plus").replace("-", "_minus").replace(":", "_")


METRICS = (("ARS", "ERS", "ARS_per_trial", "R_at_1", "mAP", "chance_R_at_1", "collapsed", "entanglement", SCORE)
           + tuple(_metric_name(a) for a in ARS_ATTACKS))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def robustness_metrics(report: RobustnessReport) -> Dict[str, float]:
    """The report as flat numbers (NaN where unavailable), without the selection score.

    ``ARS``/``ERS`` are the overall scores when every attack they need ran; with a subset of the attacks (cheap
    monitoring) they are the mean of the per-attack scores of the attacks that ran. ``chance_R_at_1`` is the test
    set's chance R@1, ``collapsed`` 1.0 for a collapsed model (0.0 if not, NaN when unknown) and ``entanglement``
    the test embeddings' d_intra/d_inter.
    """
    ars = report.ars if report.ars is not None else _mean([score for name, score in report.ars_per_attack.items()
                                                           if name in ARS_ATTACKS])
    ers = report.ers if report.ers is not None else _mean([score for name, score in
                                                           ers_per_attack(report.raw, partial=True).items()
                                                           if name in ERS_ATTACKS])
    per_trial = report.ars_per_trial.get("overall")
    if per_trial is None:
        per_trial = _mean([report.ars_per_trial[name] for name in ARS_ATTACKS if name in report.ars_per_trial])
    metrics = {"ARS": ars, "ERS": ers, "ARS_per_trial": per_trial, "R_at_1": report.benign.get("R@1", math.nan),
               "mAP": report.benign.get("mAP", math.nan),
               "chance_R_at_1": math.nan if report.chance_r1 is None else report.chance_r1,
               "collapsed": math.nan if report.collapsed is None else float(report.collapsed),
               "entanglement": math.nan if report.entanglement is None else report.entanglement}
    metrics.update({_metric_name(a): report.ars_per_attack.get(a, math.nan) for a in ARS_ATTACKS})
    return metrics


class RobustnessMetrics:
    """The metric names a :class:`RobustnessTester` reports, in the shape of PML's ``AccuracyCalculator`` that
    ``HookContainer`` reads (``get_curr_metrics``, ``description``)."""

    def get_curr_metrics(self) -> List[str]:
        return list(METRICS)

    def description(self) -> str:
        return "robustness"


class RobustnessTester(BaseTester):
    """Evaluate robustness during training, as a PML tester.

    ``test(dataset_dict, epoch, trunk_model, embedder_model)`` runs a :class:`RobustnessEvaluator` on each split
    (each split is its own retrieval pool) and fills ``all_accuracies[split]`` with ``ARS``, ``ERS``,
    ``ARS_per_trial``, ``R_at_1``, ``mAP``, one ``ARS_<attack>`` per ARS attack and ``score`` (the selection
    value), each under PML's key name (``ARS_level0``); ``reports[split]`` keeps the full
    :class:`RobustnessReport`. So it plugs into PML's ``HookContainer.end_of_epoch_hook(tester, ...)`` (pass
    ``end_of_testing_hook=hooks.end_of_testing_hook`` and a ``primary_metric`` such as ``"ARS"`` or ``"score"``),
    and, without a HookContainer, into any PML trainer through :meth:`end_of_epoch_hook`.

    Args:
        evaluator: the evaluator to run; default: one built from ``evaluator_kwargs`` with progress bars off.
        select: what "best" means: ``"ARS"``, ``"ERS"``, ``"R@1"`` or a function of the report returning a
            number (higher = better); recorded as ``score``. A collapsed epoch
            (:func:`~pml_tride.evaluation.is_collapsed`) scores ``-inf`` whatever ``select`` is, and
            :meth:`end_of_epoch_hook` never takes it as the best: while every epoch is collapsed, ``best_epoch``
            stays None and no best checkpoint is written.
        record_keeper: a PML ``record_keeper`` (``logging_presets.get_record_keeper``) that
            :meth:`end_of_epoch_hook` writes the metrics to (TensorBoard included when it has a writer).
        end_of_testing_hook: called with the tester after every test (PML convention).
        **evaluator_kwargs: :class:`RobustnessEvaluator` arguments (``queries``, ``steps``, ``attacks``, ``eps``,
            ``num_workers``, ...); :meth:`monitoring` gives the cheap preset.
    """

    def __init__(
        self,
        evaluator: Optional[RobustnessEvaluator] = None,
        *,
        select: Union[str, Callable[[RobustnessReport], float]] = "ARS",
        record_keeper: Any = None,
        end_of_testing_hook: Optional[Callable[["RobustnessTester"], Any]] = None,
        **evaluator_kwargs: Any,
    ) -> None:
        if evaluator is not None and evaluator_kwargs:
            raise ValueError(f"pass either an evaluator or evaluator arguments, not both: {sorted(evaluator_kwargs)}")
        if not callable(select) and select not in SELECTABLE:
            raise ValueError(f"select must be one of {SELECTABLE} or a function of the report, got {select!r}")
        evaluator = evaluator or RobustnessEvaluator(**{"progress": False, **evaluator_kwargs})
        super().__init__(end_of_testing_hook=end_of_testing_hook, accuracy_calculator=RobustnessMetrics(),
                         dataloader_num_workers=getattr(evaluator, "num_workers", None) or 0)
        self.evaluator = evaluator
        self.select = select
        self.record_keeper = record_keeper
        self.reports: Dict[str, RobustnessReport] = {}
        self.all_accuracies: Dict[str, Dict[str, float]] = {}
        self.history: List[Dict[str, Any]] = []
        self.best_epoch: Optional[int] = None
        self.best_score: Optional[float] = None

    @classmethod
    def monitoring(cls, **kwargs: Any) -> "RobustnessTester":
        """The cheap preset for per-epoch monitoring: :data:`MONITORING_SETTINGS` (a fixed random subset of 224
        queries, 8 PGD steps), overridable by ``kwargs``."""
        return cls(**{**MONITORING_SETTINGS, **kwargs})

    # ----------------------------------------------------------------- testing
    def score(self, report: RobustnessReport, metrics: Mapping[str, float]) -> float:
        """The selection value of a report (higher = better); :data:`COLLAPSED_SCORE` for a collapsed model, whose
        ERS and ARS do not measure robustness."""
        if report.collapsed:
            return COLLAPSED_SCORE
        if callable(self.select):
            return float(self.select(report))
        return metrics["R_at_1" if self.select == "R@1" else self.select]

    @staticmethod
    def _split_names(dataset_dict: Mapping[str, Dataset], splits_to_eval: Optional[Sequence[Any]]) -> List[str]:
        if splits_to_eval is None:
            return list(dataset_dict)
        names = []
        for split in splits_to_eval:
            query, references = (split, [split]) if isinstance(split, str) else split
            if list(references) != [query]:
                raise ValueError(f"RobustnessTester attacks each split against its own pool; got {query!r} vs "
                                 f"{list(references)!r}")
            names.append(query)
        return names

    def test(
        self,
        dataset_dict: Mapping[str, Dataset],
        epoch: int,
        trunk_model: nn.Module,
        embedder_model: Optional[nn.Module] = None,
        splits_to_eval: Optional[Sequence[Any]] = None,
        collate_fn: Any = None,
    ) -> Dict[str, Dict[str, float]]:
        """Evaluate ``embedder_model(trunk_model(x))`` on each split; PML's ``BaseTester.test`` signature."""
        model = trunk_model
        if embedder_model is not None and not isinstance(embedder_model, nn.Identity):
            model = nn.Sequential(trunk_model, embedder_model)
        self.all_accuracies = {}
        for split in self._split_names(dataset_dict, splits_to_eval):
            logger.info("robustness of epoch %s on split %r", epoch, split)
            report = self.evaluator.evaluate(model, dataset_dict[split])
            metrics = robustness_metrics(report)
            metrics[SCORE] = self.score(report, metrics)
            self.reports[split] = report
            self.reference_split_names[split] = [split]
            keyed = {self.accuracies_keyname(name, label_hierarchy_level=self.label_hierarchy_level): value
                     for name, value in metrics.items()}
            self.all_accuracies[split] = {"epoch": epoch, **keyed}
            self.history.append({"epoch": epoch, "split": split, **metrics})
            logger.info("epoch %s, %s: ARS %.1f, ERS %.1f, R@1 %.1f (chance %.1f)%s", epoch, split, metrics["ARS"],
                        metrics["ERS"], metrics["R_at_1"], metrics["chance_R_at_1"],
                        ", COLLAPSED" if report.collapsed else "")
        if self.end_of_testing_hook is not None:
            self.end_of_testing_hook(self)
        return self.all_accuracies

    # ----------------------------------------------------------------- training hook
    def record_group_name(self, split: str) -> str:
        """The record-keeper group of a split, as PML's HookContainer names it."""
        return f"{self.description_suffixes('accuracies')}_{split.upper()}_vs_self"

    def end_of_epoch_hook(
        self,
        dataset_dict: Mapping[str, Dataset],
        test_interval: int = 1,
        validation_split: Optional[str] = None,
        best_checkpoint: Optional[str] = None,
        patience: Optional[int] = None,
    ) -> Callable[[Any], bool]:
        """A PML ``end_of_epoch_hook`` for trainers used without a HookContainer.

        Every ``test_interval`` epochs it tests, writes the metrics to ``record_keeper`` when given (else appends
        them to ``trainer.history`` when the trainer has one, as :class:`~pml_tride.TrideTrainer`), tracks the best
        epoch of ``validation_split`` (default: the first split) by ``select`` among the epochs that are not
        collapsed (none while every tested epoch is collapsed: ``best_epoch`` stays None), writes ``best_checkpoint`` on
        each new best (``trainer.save_checkpoint`` when the trainer has it, else the models' state dicts), and
        stops training (returns False) after ``patience`` epochs without improvement (counted from the first
        tested epoch while no epoch qualifies).
        """
        if not dataset_dict:
            raise ValueError("dataset_dict needs at least one split, e.g. {'val': val_dataset}")
        check_number("test_interval", test_interval, minimum=1, integer=True)
        split = validation_split or next(iter(dataset_dict))
        if split not in dataset_dict:
            raise ValueError(f"validation_split {split!r} is not one of {list(dataset_dict)}")
        if best_checkpoint is not None:
            folder = os.path.dirname(os.path.abspath(best_checkpoint))
            os.makedirs(folder, exist_ok=True)

        tested: List[int] = []

        def hook(trainer: Any) -> bool:
            if trainer.epoch % test_interval != 0:
                return True
            self.test(dataset_dict, trainer.epoch, trainer.models["trunk"], trainer.models.get("embedder"))
            self._log(trainer)
            tested.append(trainer.epoch)
            score = self.all_accuracies[split][self.accuracies_keyname(SCORE, self.label_hierarchy_level)]
            if self.reports[split].collapsed:
                logger.warning("epoch %s is collapsed on %r (%s): never selected as the best epoch%s", trainer.epoch,
                               split, self.reports[split].describe_collapse(),
                               "" if self.best_epoch is not None else "; no epoch qualifies yet")
            elif self.best_epoch is None or score > self.best_score or (math.isnan(self.best_score)
                                                                         and not math.isnan(score)):
                self.best_epoch, self.best_score = trainer.epoch, score
                if best_checkpoint is not None:
                    self._save(trainer, best_checkpoint)
            since = tested[0] if self.best_epoch is None else self.best_epoch
            if patience is not None and trainer.epoch - since > patience:
                logger.info("no better %s for %d epochs: stopping", SCORE, patience)
                return False
            return True

        return hook

    def _log(self, trainer: Any) -> None:
        rows = self.history[-len(self.all_accuracies):]
        if self.record_keeper is not None:
            for split, accuracies in self.all_accuracies.items():
                self.record_keeper.update_records(accuracies, trainer.epoch, parent_name=self.record_group_name(split))
            self.record_keeper.save_records()
        elif isinstance(getattr(trainer, "history", None), list):
            trainer.history.extend({"evaluation": row["split"], **row} for row in rows)

    @staticmethod
    def _save(trainer: Any, path: str) -> None:
        if hasattr(trainer, "save_checkpoint"):
            trainer.save_checkpoint(path)
        else:
            torch.save({name: model.state_dict() for name, model in trainer.models.items()}, path)
