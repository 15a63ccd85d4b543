"""``pml-tride demo``: what adversarial training does on entangled data. An undefended model, a collapse-unaware
adversary and CA-TRIDE on entangled digits, attacked and scored.

The data set is :class:`~pml_tride.datasets.EntangledDigits`: sklearn's digits, each split into ``subclasses``
sub-classes told apart only by a +-a pixel pattern, attacked and trained at eps = a, so an adversary can erase the
sub-class evidence entirely. The three models are the same small CNN trained for the same epochs and iterations on
digits 0-4 (zero-shot: tested on 5-9); they differ only in the defense (:data:`~pml_tride.recipes.DEFENSES`):
"none" (the plain triplet loss), "naive-at" (the collapse-unaware adversary perturbing anchor, positive and
negative jointly to maximise hardness) and "ca-tride". During training a cheap
:class:`~pml_tride.evaluation.RobustnessTester` monitors ARS, ERS and R@1 on the test digits; after it each model
is evaluated with all ten attacks. The summary (:func:`demo_summary`, printed by the CLI) shows R@1, the R@1 over
the digits (``base R@1``), chance R@1, the collapse flag, the entanglement d_intra/d_inter, ERS and ARS per model,
and says which model collapsed (its ERS and ARS do not measure robustness) or is degraded (R@1 more than
:data:`~pml_tride.evaluation.DEGRADED_POINTS` below the undefended model's: robustness bought with accuracy).
``dataset="digits"`` runs the two-model demo (undefended and CA-TRIDE on the plain digits) with
:meth:`DemoSettings.plain_digits`.

The budget is set by the cost: 2 epochs of 18 iterations of 100 images (about two passes over the 901 training
images), 4 training PGD steps of eps/4 (the fewest that reach the corner of the budget), so the demo runs in
minutes on two CPU cores. CA-TRIDE
keeps the paper's progressive step size (alpha * epoch / epochs, 0-based), so with 2 epochs its adversary is off
in the first epoch and steps eps/8 in the second.

The demo logs its progress, returns the reports and writes the JSON reports, ``summary.md``, the training
histories, a plot of the collapse diagnostics (C, separability, mean distance, embedding shift) and of the
monitored robustness over training, a per-attack ARS bar chart and the models to ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .datasets import build_dataset
from .evaluation import (
    ARS_ATTACKS,
    DEGRADED_POINTS,
    RobustnessEvaluator,
    RobustnessReport,
    RobustnessTester,
    is_degraded,
)
from .evaluation.benign import BASE_RECALL
from .models import save_model, small_cnn_embedder
from .optional_imports import has_pyplot, import_pyplot
from .recipes import DEFENSES, train_embedder

__all__ = ["DemoSettings", "DEMO_MODELS", "run_demo", "demo_summary"]

logger = logging.getLogger(__name__)

UNDEFENDED = "none"  # the defense of the reference model (degraded is measured against it)
# The models each demo data set compares: (name, defense).
DEMO_MODELS: Mapping[str, Tuple[Tuple[str, str], ...]] = MappingProxyType({
    "entangled-digits": (("undefended", UNDEFENDED), ("naive AT", "naive-at"), ("CA-TRIDE", "ca-tride")),
    "digits": (("undefended", UNDEFENDED), ("CA-TRIDE", "ca-tride")),
})
# The loss class whose defenses take CA-TRIDE's lambda.
LAMBDA_LOSS = "TrideLoss"
DIAGNOSTICS = (("collapseness_clean", "collapseness C (clean)"), ("separability", "separability"),
               ("mean_distance", "mean pairwise distance"), ("embedding_shift", "embedding shift"))
MONITORED = (("ARS", "ARS (monitoring)"), ("ERS", "ERS (monitoring)"), ("R_at_1", "R@1 (%)"))


@dataclass
class DemoSettings:
    """The demo's choices, fixed from cost: the whole default demo (three models) is meant to take about three
    minutes on an idle 2-core CPU. ``entanglement`` None: equal to ``eps`` (the budget can erase the sub-class
    pattern). ``iterations_per_epoch`` None: one pass over the training set per epoch."""

    out: str = "demo_out"
    dataset: str = "entangled-digits"
    entanglement: Optional[float] = None
    subclasses: int = 4
    image_size: int = 16
    epochs: int = 2
    iterations_per_epoch: Optional[int] = 18
    batch_size: int = 100
    lr: float = 1e-3
    embedding_dim: int = 64
    width: int = 32
    eps: float = 16 / 255
    train_alpha: float = 4 / 255
    train_steps: int = 4
    eval_alpha: float = 4 / 255
    eval_steps: int = 8
    eval_queries: Optional[int] = 224
    lam: float = 10.0
    seed: int = 0
    monitor_every: int = 1
    monitor_queries: int = 112
    monitor_steps: int = 4

    @classmethod
    def plain_digits(cls, **overrides) -> "DemoSettings":
        """The earlier demo on the plain digits: 8x8 images upsampled, against which the paper's 8/255 barely hurts
        an undefended model (measured at 8/255, step 2/255, 32 steps: R@1 70.8% after ES, 93.2% before), so it
        attacks and trains at 16/255 too; 20 full epochs, 10 training and 32 attack steps on every test digit."""
        return cls(**{"dataset": "digits", "epochs": 20, "iterations_per_epoch": None, "train_steps": 10,
                      "eval_steps": 32, "eval_queries": None, "monitor_every": 2, "monitor_steps": 8, **overrides})

    def __post_init__(self) -> None:
        if self.dataset not in DEMO_MODELS:
            raise ValueError(f"the demo runs on {sorted(DEMO_MODELS)}, got dataset={self.dataset!r}")

    @property
    def models(self) -> Tuple[Tuple[str, str], ...]:
        return DEMO_MODELS[self.dataset]

    def dataset_options(self) -> Dict[str, float]:
        """The build_dataset options of the demo's data set (entanglement and sub-classes for entangled-digits)."""
        if self.dataset != "entangled-digits":
            return {}
        return {"entanglement": self.eps if self.entanglement is None else self.entanglement,
                "subclasses": self.subclasses}

    def describe(self) -> str:
        options = self.dataset_options()
        data = self.dataset if not options else (
            f"{self.dataset} (a = {options['entanglement'] * 255:.0f}/255, {self.subclasses} sub-classes per digit)")
        passes = "one pass" if self.iterations_per_epoch is None else f"{self.iterations_per_epoch} iterations"
        return (f"{data} {self.image_size}x{self.image_size}, small CNN ({self.embedding_dim}-d), "
                f"{self.epochs} epochs of {passes}, batch {self.batch_size}, Adam lr {self.lr}; training PGD eps "
                f"{self.eps * 255:.0f}/255, alpha {self.train_alpha * 255:.0f}/255, {self.train_steps} steps, "
                f"lambda {self.lam} (CA-TRIDE); evaluation PGD eps {self.eps * 255:.0f}/255, "
                f"alpha {self.eval_alpha * 255:.0f}/255, {self.eval_steps} steps on "
                f"{self.eval_queries or 'all'} test images, seed {self.seed}; monitoring every "
                f"{self.monitor_every} epoch(s) on {self.monitor_queries} test images, {self.monitor_steps} steps")


def _slug(model_name: str) -> str:
    """File-name stem of a model: "CA-TRIDE" -> "ca_tride", "naive AT" -> "naive_at"."""
    return model_name.lower().replace("-", "_").replace(" ", "_")


def _number(value: Optional[float]) -> float:
    return float("nan") if value is None else value


def _plot_diagnostics(histories: Dict[str, List[dict]], monitoring: Dict[str, List[dict]], path: str) -> None:
    """Collapse diagnostics per iteration, then the monitored ARS, ERS and R@1 per epoch, for every model."""
    plt = import_pyplot()
    panels = len(DIAGNOSTICS) + len(MONITORED)
    columns = math.ceil(panels / 2)
    figure, axes = plt.subplots(2, columns, figsize=(4 * columns, 6.4))
    axes = list(axes.flat)
    for axis, (key, title) in zip(axes, DIAGNOSTICS):
        for name, history in histories.items():
            rows = [row for row in history if "iteration" in row]
            axis.plot([_number(row.get(key)) for row in rows], label=name, linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("iteration")
    for axis, (key, title) in zip(axes[len(DIAGNOSTICS):], MONITORED):
        for name, rows in monitoring.items():
            axis.plot([row["epoch"] for row in rows], [_number(row.get(key)) for row in rows], marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
    for axis in axes[panels:]:
        axis.set_visible(False)
    axes[0].legend()
    figure.suptitle("Collapse diagnostics (Section 4.3) and monitored robustness over training")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_ars(reports: Dict[str, RobustnessReport], dataset: str, path: str) -> None:
    plt = import_pyplot()
    figure, axis = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(reports)
    for offset, (name, report) in enumerate(reports.items()):
        positions = [i + (offset - (len(reports) - 1) / 2) * width for i in range(len(ARS_ATTACKS))]
        flag = ", COLLAPSED" if report.collapsed else ""
        axis.bar(positions, [_number(report.ars_per_attack.get(n)) for n in ARS_ATTACKS], width,
                 label=f"{name} (ARS {_number(report.ars):.1f}{flag})")
    axis.set_xticks(range(len(ARS_ATTACKS)), ARS_ATTACKS)
    axis.set_ylabel("ARS (higher = more robust)")
    axis.set_title(f"Per-attack Adversarial Resistance Score on {dataset} 5-9")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def _verdict(reports: Dict[str, RobustnessReport]) -> str:
    """Which model collapsed or is degraded (against the undefended model), in plain words, and what that means."""
    collapsed = [name for name, report in reports.items() if report.collapsed]
    kept = [name for name, report in reports.items() if report.collapsed is False]
    lines = []
    for name in collapsed:
        report = reports[name]
        lines.append(f"{name} COLLAPSED: its benign R@1 {report.benign['R@1']:.1f} is about chance "
                     f"({report.chance_r1:.1f}). It no longer tells these classes apart, so the attacks have no "
                     f"ranking to destroy: its ERS {_cell(report.ers)} and ARS {_cell(report.ars)} are not robustness.")
    if kept:
        lines.append(f"Not collapsed: {', '.join(kept)}; their ERS and ARS measure robustness.")
    if not collapsed:
        lines.append("No model collapsed at these settings.")
    reference = next((report for report in reports.values() if report.settings.get("defense") == UNDEFENDED), None)
    for name in kept if reference is not None else []:
        r1, reference_r1 = reports[name].benign["R@1"], reference.benign["R@1"]
        if is_degraded(r1, reference_r1):
            base = reports[name].benign.get(BASE_RECALL)
            lines.append(f"{name} DEGRADED: its benign R@1 {r1:.1f} is more than {DEGRADED_POINTS:g} points below "
                         f"the undefended model's {reference_r1:.1f}; its robustness is bought with accuracy"
                         + (f" (R@1 over the base classes {base:.1f}: it still tells those apart)." if base is not None
                            else "."))
    return "\n".join(lines)


def demo_summary(settings: DemoSettings, reports: Dict[str, RobustnessReport]) -> str:
    """The side-by-side table of the models, which one collapsed or is degraded, and their full reports, as the CLI
    prints it."""
    with_base = any(BASE_RECALL in report.benign for report in reports.values())
    base_header, base_rule = (f" {BASE_RECALL} |", "---|") if with_base else ("", "")
    rows = [f"| model | defense | R@1 |{base_header} chance R@1 | collapsed | entanglement d_intra/d_inter | mAP | "
            "ERS | ARS | train time (s) |", f"|---|---|---|{base_rule}---|---|---|---|---|---|---|"]
    for name, report in reports.items():
        entanglement = "-" if report.entanglement is None else f"{report.entanglement:.3f}"
        collapsed = {True: "YES", False: "no"}.get(report.collapsed, "-")
        base = f" {_cell(report.benign.get(BASE_RECALL))} |" if with_base else ""
        rows.append(f"| {name} | {report.settings.get('defense', '-')} | {report.benign['R@1']:.1f} |{base} "
                    f"{_cell(report.chance_r1)} | {collapsed} | {entanglement} | {report.benign['mAP']:.1f} | "
                    f"{_cell(report.ers)} | {_cell(report.ars)} | "
                    f"{report.settings.get('train_seconds', float('nan')):.0f} |")
    details = "\n".join(report.to_markdown(title=name) for name, report in reports.items())
    return (f"{settings.describe()}\n\n" + "\n".join(rows) + f"\n\n{_verdict(reports)}\n\nper attack:\n{details}")


def _train_and_evaluate(name: str, defense: str, settings: DemoSettings, train_set, test_set,
                        device: torch.device, progress: bool) -> Tuple[RobustnessReport, List[dict], List[dict]]:
    """One model of the demo: trained with ``defense`` under monitoring, saved, attacked with all ten attacks."""
    logger.info("[%s] training (%s) on %d images of digits 0-4, monitoring robustness every %d epoch(s) ...", name,
                defense, len(train_set), settings.monitor_every)
    torch.manual_seed(settings.seed)
    model = small_cnn_embedder(in_channels=1, embedding_dim=settings.embedding_dim, width=settings.width)
    tester = RobustnessTester.monitoring(queries=settings.monitor_queries, steps=settings.monitor_steps,
                                         eps=settings.eps, alpha=settings.eval_alpha, seed=settings.seed, device=device)
    lam = settings.lam if DEFENSES[defense].loss == LAMBDA_LOSS else None
    trainer, seconds = train_embedder(
        model, train_set, defense=defense, epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        eps=settings.eps, alpha=settings.train_alpha, steps=settings.train_steps, lam=lam, seed=settings.seed,
        device=device, disable_progress=not progress, iterations_per_epoch=settings.iterations_per_epoch,
        end_of_epoch_hook=(tester.end_of_epoch_hook({"test": test_set}, test_interval=settings.monitor_every)
                           if settings.monitor_every > 0 else None),
    )
    save_model(model, os.path.join(settings.out, f"{_slug(name)}.pt"), defense=defense,
               data={"dataset": settings.dataset, "image_size": settings.image_size, **settings.dataset_options()})
    logger.info("[%s] attacking %d of the %d test images with all ten attacks ...", name,
                min(settings.eval_queries or len(test_set), len(test_set)), len(test_set))
    evaluator = RobustnessEvaluator(eps=settings.eps, alpha=settings.eval_alpha, steps=settings.eval_steps,
                                    seed=settings.seed, device=device, progress=progress, queries=settings.eval_queries)
    report = evaluator.evaluate(model, test_set)
    report.settings.update({"train_seconds": seconds, "defense": defense, "demo": settings.describe()})
    return report, trainer.history, tester.history


def run_demo(settings: DemoSettings, device: Optional[torch.device] = None,
             progress: bool = True) -> Dict[str, RobustnessReport]:
    """Train, monitor, evaluate and compare; returns the reports by model name (files are written to
    ``settings.out``)."""
    started = time.perf_counter()
    device = device or torch.device("cpu")
    os.makedirs(settings.out, exist_ok=True)
    logger.info("pml-tride demo: %s", settings.describe())
    plotting = has_pyplot()
    if not plotting:
        logger.warning("matplotlib is not installed: the demo writes no plots (pip install 'pml-tride[plot]')")
    train_set, test_set = (build_dataset(settings.dataset, split=split, image_size=settings.image_size,
                                         **settings.dataset_options()) for split in ("train", "test"))
    reports, histories, monitoring = {}, {}, {}
    for name, defense in settings.models:
        reports[name], histories[name], monitoring[name] = _train_and_evaluate(
            name, defense, settings, train_set, test_set, device, progress)
        reports[name].to_json(os.path.join(settings.out, f"{_slug(name)}_report.json"))
    with open(os.path.join(settings.out, "summary.md"), "w") as handle:
        handle.write(demo_summary(settings, reports))
    with open(os.path.join(settings.out, "histories.json"), "w") as handle:
        json.dump(histories, handle)
    with open(os.path.join(settings.out, "settings.json"), "w") as handle:
        json.dump(dataclasses.asdict(settings), handle, indent=1)
    written = [f"{_slug(name)}_report.json" for name in reports] + ["summary.md", "histories.json", "settings.json"]
    if plotting:
        _plot_diagnostics(histories, monitoring, os.path.join(settings.out, "collapse_diagnostics.png"))
        _plot_ars(reports, settings.dataset, os.path.join(settings.out, "ars_per_attack.png"))
        written += ["collapse_diagnostics.png", "ars_per_attack.png"]
    written += [f"{_slug(name)}.pt" for name in reports]
    logger.info("written to %s/: %s (demo took %.0f s)", settings.out, ", ".join(written),
                time.perf_counter() - started)
    return reports
