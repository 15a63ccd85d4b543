"""What ``gpu_step.py`` prints and projects from its rows: the markdown table, the projected wall time of the paper's
CUB run next to the paper's minutes, and which options pay (imported as ``gpu_step_report``)."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Sequence

import torch
from bench_common import device_name, markdown_table

CUB_TRAIN_IMAGES = 5864
PAPER_EPOCHS = 100
PAPER_MINUTES = {"CA-TRIDE": 470, "HM": 550}
SECONDS_PER_MINUTE = 60
MILLISECONDS = 1e-3
# An option is kept only if it takes less than this fraction of the plain time (3% faster, above timing noise).
PAYS_BELOW = 0.97
# Table columns: the row's key and its header.
COLUMNS = (("measurement", "measurement"), ("work", "images x steps"), ("repeats", "repeats"),
           ("step_ms", "time (ms, min)"), ("bound_ms", "bound (ms, min)"), ("ratio", "ratio (of minima)"),
           ("median_ratio", "median ratio"), ("required_ms", "bound + required forwards (ms, min)"),
           ("ratio_to_required", "ratio to bound + required"), ("vs_plain", "vs plain"), ("note", "note"))
RATIO_COLUMNS = ("ratio", "median_ratio", "ratio_to_required", "vs_plain")
# The rows each projection is made of (the mean of their step times), and its name.
PROJECTED = {"CA-TRIDE, all 16 steps": ("CA-TRIDE CAP, all 16 steps", "CA-TRIDE ANP, all 16 steps"),
             "CA-TRIDE, early stop (random weights)": ("CA-TRIDE (early stop), CAP+ANP",),
             "HM (robrank, per-triplet)": ("HM, all 32 steps, per-triplet A/P/N copies (robrank)",)}


def projection(rows: Sequence[Dict[str, Any]], pairs: int) -> Dict[str, Any]:
    """Minutes of the paper's CUB run (training steps only) at the measured step times, where they were measured."""
    batches = CUB_TRAIN_IMAGES / (2 * pairs)
    steps = {row["measurement"]: row.get("step_ms") for row in rows}
    projected: Dict[str, Any] = {"batches_per_epoch": batches, "epochs": PAPER_EPOCHS}
    for name, measurements in PROJECTED.items():
        times = [steps.get(measurement) for measurement in measurements]
        if None not in times:
            step_seconds = sum(times) / len(times) * MILLISECONDS
            projected[name] = step_seconds * batches * PAPER_EPOCHS / SECONDS_PER_MINUTE
    return projected


def kept_options(rows: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    """Each option's time against the plain run, and whether it pays (:data:`PAYS_BELOW`)."""
    verdicts = {}
    for row in rows:
        if "vs_plain" in row:
            pays = row["vs_plain"] < PAYS_BELOW
            verdicts[row["measurement"]] = f"{row['vs_plain']:.3f}x the plain time: " + ("pays" if pays else
                                                                                          "does not pay")
    return verdicts


def cell(row: Dict[str, Any], column: str) -> Any:
    value = row.get(column, "")
    if isinstance(value, float):
        return f"{value:.3f}" if column in RATIO_COLUMNS else f"{value:.1f}"
    return value


def print_report(rows: List[Dict[str, Any]], args: argparse.Namespace, device: torch.device, elapsed: float) -> None:
    print(f"# gpu_step.py on {device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{'tiny dry run' if args.tiny else 'ResNet-18'}: batch {2 * args.pairs}, "
          f"{args.image_size}x{args.image_size}, {args.embedding_dim}-d)\n")
    print(markdown_table([header for _, header in COLUMNS], [[cell(row, key) for key, _ in COLUMNS] for row in rows]))
    print(f"\nProjected wall time of the paper's CUB run ({CUB_TRAIN_IMAGES} images, batch {2 * args.pairs}, "
          f"{PAPER_EPOCHS} epochs; training steps only, no data loading or evaluation):")
    for name, minutes in projection(rows, args.pairs).items():
        if name in ("batches_per_epoch", "epochs"):
            continue
        paper = PAPER_MINUTES["HM" if name.startswith("HM") else "CA-TRIDE"]
        print(f"- {name}: {minutes:.1f} min (paper: {paper} min on its GPU)")
    kept = kept_options(rows)
    print("\nOptions against the plain CAP step (kept only if they pay): "
          + ("; ".join(f"{name}: {verdict}" for name, verdict in kept.items()) or "none measured"))
    print(f"\nwall time {elapsed:.1f} s of a {args.budget_seconds:.0f} s budget")
