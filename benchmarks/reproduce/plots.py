"""The study's figures (matplotlib, imported lazily): collapse diagnostics over training (the paper's Figures 4 and
5), embedding shifts per perturbed role, and robustness against counted PGD image passes (equal cost)."""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from pml_tride.optional_imports import import_pyplot

from .plan import ModelSpec, zoo_spec
from .records import Results, hardness_of, normalized_shifts, role_shift, row_roles

SMOOTHING = 5  # iterations of the moving average in the over-training plots
FIGURE_DPI = 80
SHIFT_MODELS = ("ca-tride", "naive-tride", "ca-cap", "ca-anp", "hm", "act", "est")
DIAGNOSTICS = (("separability", lambda row: row.get("separability")),
               ("mean pairwise distance", lambda row: row.get("mean_distance")),
               ("collapseness C (clean)", lambda row: row.get("collapseness_clean")),
               ("hardness H", hardness_of))


def curve(results: Results, spec: ModelSpec, getter: Callable[[dict], Optional[float]]) -> np.ndarray:
    """Seed-mean of a per-iteration quantity, smoothed by a moving average."""
    series = []
    for record in results.of(spec):
        values = [getter(row) for row in record["history"]]
        series.append([np.nan if v is None else v for v in values])
    if not series:
        return np.array([])
    length = min(map(len, series))
    values = np.array([s[:length] for s in series], dtype=np.float64)
    with warnings.catch_warnings():  # iterations where no seed has a value (another phase) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
    return mean if np.isnan(mean).any() else smooth(mean)  # phase-only curves keep their gaps (NaN)


def smooth(values: np.ndarray) -> np.ndarray:
    """Moving average over SMOOTHING points (fewer when the series is shorter)."""
    width = min(SMOOTHING, values.size)
    return values if width == 0 else np.convolve(values, np.ones(width) / width, mode="valid")


def plot_diagnostics(results: Results, specs: Sequence[ModelSpec], title: str, path: str) -> bool:
    present = [spec for spec in specs if results.of(spec)]
    if not present:
        return False
    plt = import_pyplot()
    figure, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(3.2 * len(DIAGNOSTICS), 2.8))
    for axis, (name, getter) in zip(axes, DIAGNOSTICS):
        for spec in present:
            axis.plot(curve(results, spec, getter), label=spec.label, linewidth=1)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("iteration", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return True


def plot_shifts(results: Results, path: str) -> bool:
    present = [zoo_spec(name) for name in SHIFT_MODELS
               if any(normalized_shifts(r) for r in results.of(zoo_spec(name)))]
    if not present:
        return False
    plt = import_pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3))
    for spec in present:
        for phase, role in (("cap", "candidates (CAP)"), ("anp", "anchors (ANP)"), (None, "all roles")):
            def shift(row, phase=phase):
                value = role_shift(row)
                return value[1] if value is not None and value[0] == phase else None

            def overall(row, phase=phase):
                value = shift(row, phase)
                return None if value is None else value * row_roles(row)

            for axis, getter in ((axes[0], shift), (axes[1], overall)):
                values = curve(results, spec, getter)
                keep = np.flatnonzero(np.isfinite(values))
                if keep.size:
                    smoothed = smooth(values[keep])
                    x = keep[keep.size - smoothed.size:]
                    axis.plot(x, smoothed, label=f"{spec.label}: {role}", linewidth=1)
    axes[0].set_title("embedding shift / mean distance (per perturbed image)", fontsize=9)
    axes[1].set_title("overall: x perturbed roles (CAP 2, ANP 1, ACT 2, HM/EST 3)", fontsize=9)
    for axis in axes:
        axis.set_xlabel("iteration", fontsize=8)
        axis.tick_params(labelsize=7)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return True


def plot_pareto(points: Sequence[Tuple[str, float, float, float]], front: Sequence[str], title: str,
                path: str) -> bool:
    """ERS against counted PGD image passes, one marker per model labelled with its R@1; the front joined."""
    if not points:
        return False
    plt = import_pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, cost, ers, recall in points:
        axis.scatter(cost, ers, s=16, color="tab:red" if name in front else "tab:blue")
        axis.annotate(f"{name} (R@1 {recall:.0f})", (cost, ers), fontsize=6, xytext=(3, 2), textcoords="offset points")
    on_front = sorted((cost, ers) for name, cost, ers, _ in points if name in front)
    if on_front:
        axis.plot(*zip(*on_front), color="tab:red", linewidth=1, label="Pareto front")
        axis.legend(fontsize=7)
    axis.set_xlabel("PGD image passes over training (forward + backward)", fontsize=8)
    axis.set_ylabel("ERS", fontsize=8)
    axis.set_title(title, fontsize=9)
    axis.tick_params(labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return True
