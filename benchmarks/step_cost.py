"""Cost of one training step of every defense relative to its lower bound, measured in the same run.

For each defense this times, interleaved (each step right next to its bound):

* **step**: one training step of a plain PML loop with the defense's loss (forward of the batch, the loss call with
  its attack, backward, optimizer step), and
* **lower bound**: the work any implementation must do for the same step: for each PGD call the defense made, the
  steps it actually took of input-gradient forward+backward passes (eval mode, frozen parameters) on exactly as many
  images as it perturbed, plus one training pass (forward of the batch and of the adversarial images, a triplet
  loss, backward, optimizer step);
* **bound + required forwards**: the bound plus the forwards without grad that the method's definition needs
  beyond its PGD passes: the clean embeddings of the images its objective keeps clean (CAP: the anchors; ANP:
  the clean A, P, N; EST: the clean images) and, after an early stop, the forward of the final iterate on which
  the stop was decided. What remains between a step and this bound is the implementation's own overhead.

Defenses: CA-TRIDE's CAP and ANP phases with ``awareness="none"`` (all M steps run), CA-TRIDE as shipped (phase
"tride", collapse-aware early stop; the bound counts the steps it took), COLO-TRIDE, EST, ACT and HM (unique images
and robrank's per-triplet copies), each where the installed package has it. It prints the ratio of the minimum
times (the headline: on a shared machine interference only ever adds time, so the minima estimate the intrinsic
cost, as ``timeit`` recommends) and the median of the paired ratios. Goal: ratio <= 1.10. Absolute times are not
comparable across runs or machines; the ratio is.

    python benchmarks/step_cost.py               # small CNN, 112 images of 32x32, each defense's own steps
    python benchmarks/step_cost.py --quick       # fewer repeats, smaller images (a smoke run)
    python benchmarks/step_cost.py --defenses cap,anp
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from bench_common import AttackRecord, DefenseStep, describe_records, markdown_table, pair_batch, time_pairs, write_json
from torch import nn

import pml_tride

GOAL = 1.10
SCHEDULE_EPOCH, SCHEDULE_EPOCHS = 50, 100


def small_cnn(embedding_dim: int = 64) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, embedding_dim))


def tride(**kwargs) -> Callable[[nn.Module], Any]:
    return lambda model: pml_tride.TrideLoss(model, progressive_alpha=False, **kwargs)


def colo(model: nn.Module):
    if "orientation" not in inspect.signature(pml_tride.TrideLoss).parameters:
        return None
    return pml_tride.TrideLoss(model, orientation="assist", progressive_alpha=False)


def baseline(class_name: str, **kwargs) -> Callable[[nn.Module], Any]:
    def build(model: nn.Module):
        loss_class = getattr(pml_tride, class_name, None)
        return None if loss_class is None else loss_class(model, **kwargs)

    return build


DEFENSES: Dict[str, Callable[[nn.Module], Any]] = {
    "cap": tride(phase="cap", awareness="none"),
    "anp": tride(phase="anp", awareness="none"),
    "ca-tride": tride(phase="tride"),
    "colo-tride": colo,
    "est": baseline("ESTLoss"),
    "act": baseline("ACTLoss"),
    "hm": baseline("HMLoss"),
    "hm-per-triplet": baseline("HMLoss", perturb="per_triplet"),
}
LABELS = {"cap": "CAP (all steps)", "anp": "ANP (all steps)", "ca-tride": "CA-TRIDE (early stop)",
          "colo-tride": "COLO-TRIDE", "est": "EST", "act": "ACT", "hm": "HM (unique)",
          "hm-per-triplet": "HM (per-triplet, robrank)"}


def measure(name: str, args, images, labels, triplets) -> Optional[Dict[str, Any]]:
    torch.manual_seed(args.seed)
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_func = DEFENSES[name](model)
    if loss_func is None:
        print(f"{LABELS[name]}: not available in this version of pml_tride")
        return None
    loss_func.progressive_alpha = False
    loss_func.set_epoch(SCHEDULE_EPOCH, SCHEDULE_EPOCHS)
    defense = DefenseStep(model, optimizer, loss_func, images, labels, triplets)
    device = torch.device("cpu")
    time_pairs(defense.step, defense.bound, device, args.warmup, defense.required)  # warm-up, discarded
    times = time_pairs(defense.step, defense.bound, device, args.repeats, defense.required)
    records = times.result
    print(f"{LABELS[name]}: PGD {describe_records(records)} (images x steps, last step) of {len(images)} images: "
          f"step {statistics.median(times.step) * 1e3:.1f} ms, lower bound {statistics.median(times.bound) * 1e3:.1f} "
          f"ms (medians); ratio {times.ratio_of_minima:.3f} (ratio of minima), {times.median_ratio:.3f} (median of "
          f"paired ratios); {times.ratio_to_required:.3f} against the bound with the forwards the method requires "
          f"({describe_required(records)})")
    return {"defense": LABELS[name], "work": describe_records(records), "step_ms_min": 1e3 * min(times.step),
            "bound_ms_min": 1e3 * min(times.bound), "ratio": times.ratio_of_minima, "median_ratio": times.median_ratio,
            "required_forwards": describe_required(records), "required_bound_ms_min": 1e3 * min(times.required),
            "ratio_to_required": times.ratio_to_required}


def describe_required(records: Sequence[AttackRecord]) -> str:
    """The forwards without grad a defense's definition needs beyond its PGD passes, per attack."""
    return " + ".join(f"{record.clean_images} clean, {record.forward_only_images} stop check" for record in records
                      ) or "none"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defenses", default=",".join(DEFENSES), help=f"comma-separated subset of {list(DEFENSES)}")
    parser.add_argument("--pairs", type=int, default=56, help="SPC-2 pairs per batch (112 images, as the paper)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 1 warm-up, 8 pairs of 16x16 (a smoke run)")
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.pairs, args.image_size = 2, 1, 8, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name for name in args.defenses.split(",") if name]
    unknown = [name for name in names if name not in DEFENSES]
    if unknown:
        raise SystemExit(f"unknown defenses {unknown}; valid: {list(DEFENSES)}")
    generator = torch.Generator().manual_seed(args.seed)
    images, labels, triplets = pair_batch(args.pairs, args.image_size, generator)
    results = [result for name in names if (result := measure(name, args, images, labels, triplets))]
    print()
    print(markdown_table(
        ("defense", "PGD images x steps", "step (ms, min)", "bound (ms, min)", "ratio of minima", "median ratio",
         "required forwards (images)", "bound + required (ms, min)", "ratio to bound + required"),
        [[r["defense"], r["work"], f"{r['step_ms_min']:.1f}", f"{r['bound_ms_min']:.1f}", f"{r['ratio']:.3f}",
          f"{r['median_ratio']:.3f}", r["required_forwards"], f"{r['required_bound_ms_min']:.1f}",
          f"{r['ratio_to_required']:.3f}"] for r in results]))
    print(f"\nratios of minima (step / lower bound; goal <= {GOAL:.2f}): "
          + ", ".join(f"{r['defense']} {r['ratio']:.3f}" for r in results))
    if args.out:
        write_json(args.out, {"config": vars(args), "results": results}, torch.device("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
