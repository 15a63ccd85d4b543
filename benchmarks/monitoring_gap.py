"""How far the cheap robustness numbers of RobustnessTester are from a full evaluation, over training epochs.

Trains the demo's two models (undefended and CA-TRIDE, the demo's settings) on digits and, after every
``--every`` epochs, evaluates each with the full evaluation (every test digit, 32 steps) and with cheap
configurations (a fixed random subset of queries and/or fewer steps). For each configuration and model it reports
the mean absolute difference from the full ARS and ERS over the evaluated epochs, the mean signed difference
(fewer steps make a weaker attack, so the cheap number is biased upwards), the largest difference, the Spearman
rank correlation of the cheap and the full numbers over epochs (does the cheap number follow the trend?), and
whether the cheap numbers pick the same best epoch as the full ones.

    python benchmarks/monitoring_gap.py                       # demo settings, 20 epochs, every epoch
    python benchmarks/monitoring_gap.py --epochs 4 --device cuda --out gap.json
    python benchmarks/monitoring_gap.py --from-json benchmarks/monitoring_gap_h100.json   # tables of a stored run
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List

import torch
from bench_common import write_json

from pml_tride.datasets import Digits
from pml_tride.demo import MODELS, DemoSettings
from pml_tride.evaluation import MONITORING_SETTINGS, RobustnessTester
from pml_tride.models import small_cnn_embedder
from pml_tride.recipes import train_embedder

FULL = "full"
# Cheap configurations: the monitoring preset, the demo's, and each of its two savings on its own.
CONFIGURATIONS: Dict[str, Dict[str, Any]] = {
    FULL: {},
    "monitoring (224 queries, 8 steps)": dict(MONITORING_SETTINGS),
    "demo (112 queries, 8 steps)": {"queries": 112, "steps": 8},
    "224 queries, 32 steps": {"queries": 224},
    "all queries, 8 steps": {"steps": 8},
}
METRICS = ("ARS", "ERS")


def measure(settings: DemoSettings, epochs: int, every: int, device: torch.device) -> Dict[str, List[dict]]:
    """Per model, one row per evaluated epoch: each configuration's ARS, ERS and its seconds."""
    train_set = Digits("train", image_size=settings.image_size)
    test_set = Digits("test", image_size=settings.image_size)
    rows: Dict[str, List[dict]] = {}
    for name, defense in MODELS:
        testers = {label: RobustnessTester(eps=settings.eps, alpha=settings.eval_alpha, seed=settings.seed,
                                           device=device, **{"steps": settings.eval_steps, **overrides})
                   for label, overrides in CONFIGURATIONS.items()}
        rows[name] = []

        def evaluate(trainer: Any, model_rows: List[dict] = rows[name], model_testers=testers,
                     model_name: str = name) -> bool:
            if trainer.epoch % every != 0:
                return True
            row: Dict[str, Any] = {"epoch": trainer.epoch}
            for label, tester in model_testers.items():
                started = time.perf_counter()
                tester.test({"test": test_set}, trainer.epoch, trainer.models["trunk"])
                row[label] = {**{metric: tester.history[-1][metric] for metric in METRICS},
                              "seconds": time.perf_counter() - started}
            model_rows.append(row)
            print(model_name, json.dumps(row), flush=True)
            return True

        torch.manual_seed(settings.seed)
        model = small_cnn_embedder(in_channels=1, embedding_dim=settings.embedding_dim, width=settings.width)
        train_embedder(model, train_set, defense=defense, epochs=epochs, batch_size=settings.batch_size,
                       lr=settings.lr, eps=settings.eps, alpha=settings.train_alpha, steps=settings.train_steps,
                       lam=settings.lam, seed=settings.seed, device=device, end_of_epoch_hook=evaluate,
                       disable_progress=True)
    return rows


def _ranks(values: List[float]) -> List[float]:
    """Ranks 1..n, ties given their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(first: List[float], second: List[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks."""
    a, b = _ranks(first), _ranks(second)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    spread = (sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b)) ** 0.5
    return covariance / spread if spread > 0 else float("nan")


def summarise(rows: Dict[str, List[dict]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per model and cheap configuration: mean |cheap - full|, mean (cheap - full), max |cheap - full| of ARS and
    ERS over epochs, whether the best epochs agree, and the mean seconds per evaluation."""
    summary: Dict[str, Dict[str, Dict[str, float]]] = {}
    for model, model_rows in rows.items():
        summary[model] = {}
        for label in CONFIGURATIONS:
            entry: Dict[str, float] = {"seconds": sum(r[label]["seconds"] for r in model_rows) / len(model_rows)}
            for metric in METRICS:
                differences = [r[label][metric] - r[FULL][metric] for r in model_rows]
                entry[f"{metric} mean abs diff"] = sum(abs(d) for d in differences) / len(differences)
                entry[f"{metric} mean diff"] = sum(differences) / len(differences)
                entry[f"{metric} max abs diff"] = max(abs(d) for d in differences)
                entry[f"{metric} spearman"] = spearman([r[FULL][metric] for r in model_rows],
                                                       [r[label][metric] for r in model_rows])
                best_full = max(model_rows, key=lambda r: r[FULL][metric])["epoch"]
                best_cheap = max(model_rows, key=lambda r, key=label: r[key][metric])["epoch"]
                entry[f"{metric} same best epoch"] = float(best_full == best_cheap)
            summary[model][label] = entry
    return summary


def markdown(summary: Dict[str, Dict[str, Dict[str, float]]], epochs: int) -> str:
    lines = ["| model | configuration | ARS mean abs diff | ARS mean diff | ARS max abs diff | ARS Spearman | "
             "ERS mean abs diff | ERS mean diff | ERS max abs diff | ERS Spearman | same best epoch (ARS/ERS) | "
             "s per evaluation |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, entries in summary.items():
        for label, entry in entries.items():
            if label == FULL:
                continue
            same = "/".join("yes" if entry[f"{m} same best epoch"] else "no" for m in METRICS)
            cells = [f"{entry[f'{m} mean abs diff']:.2f} | {entry[f'{m} mean diff']:+.2f} | "
                     f"{entry[f'{m} max abs diff']:.2f} | {entry[f'{m} spearman']:.2f}" for m in METRICS]
            lines.append(f"| {model} | {label} | {' | '.join(cells)} | {same} | {entry['seconds']:.1f} |")
        lines.append(f"| {model} | full (every test digit, 32 steps) | | | | | | | | | | "
                     f"{entries[FULL]['seconds']:.1f} |")
    return f"{epochs} epochs\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DemoSettings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--every", type=int, default=1, help="evaluate every K epochs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="monitoring_gap.json")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="a smoke run: 8")
    parser.add_argument("--eval-steps", type=int, default=defaults.eval_steps, help="steps of the full evaluation")
    parser.add_argument("--from-json", help="print the tables of a stored run instead of measuring")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as handle:
            stored = json.load(handle)
        print(f"device {stored['device']}; models trained with: {stored['settings']}; evaluated every "
              f"{stored['every']} epoch(s)")
        print(markdown(summarise(stored["rows"]), stored["epochs"]))
        return
    started = time.perf_counter()
    defaults.image_size, defaults.eval_steps = args.image_size, args.eval_steps
    rows = measure(defaults, args.epochs, args.every, torch.device(args.device))
    summary = summarise(rows)
    table = markdown(summary, args.epochs)
    write_json(args.out, {"settings": defaults.describe(), "epochs": args.epochs, "every": args.every,
                          "device": args.device, "rows": rows, "summary": summary,
                          "seconds": time.perf_counter() - started}, torch.device(args.device))
    print(table)
    print(f"total {time.perf_counter() - started:.0f} s; written: {args.out}")


if __name__ == "__main__":
    main()
