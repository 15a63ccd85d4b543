"""Cost of one TrideLoss training step relative to its lower bound, measured in the same run.

For each phase (CAP, ANP) with ``awareness="none"`` (so all M PGD steps run), this times

* **step**: one full training step of a plain PML loop with ``TrideLoss`` (forward of the batch, the loss call with
  its attack, backward, optimizer step), and
* **lower bound**: the work any implementation must do for the same step: M input-gradient forward+backward
  passes (eval mode, frozen parameters) on exactly the images the phase perturbs, plus one training pass (forward
  of the batch and of the adversarial images, the triplet loss, backward, optimizer step),

interleaved (each step timed right next to its lower bound). It prints the ratio of the minimum times (the
headline: on a shared machine interference only ever adds time, so the minima estimate the intrinsic cost, as
``timeit`` recommends) and the median of the paired ratios. Goal: ratio <= 1.15. Absolute times are not comparable across
runs or machines; the ratio is.

    python benchmarks/step_cost.py               # small CNN, 112 images of 32x32, M = 16
    python benchmarks/step_cost.py --quick       # fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from pml_tride import TrideLoss
from pml_tride.losses.adversarial_triplet_loss import PerturbationSet


def small_cnn(embedding_dim: int = 64) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, embedding_dim))


def pair_batch(pairs: int, image_size: int, generator: torch.Generator):
    """SPC-2 batch (a0, p0, a1, p1, ...) with one triplet per pair: (2i, 2i+1, random other-class image)."""
    images = torch.rand(2 * pairs, 3, image_size, image_size, generator=generator)
    labels = torch.arange(pairs).repeat_interleave(2)
    anchors = torch.arange(0, 2 * pairs, 2)
    offsets = torch.randint(1, pairs, (pairs,), generator=generator)
    negatives = 2 * ((torch.arange(pairs) + offsets) % pairs) + torch.randint(0, 2, (pairs,), generator=generator)
    return images, labels, (anchors, anchors + 1, negatives)


def tride_step(model, optimizer, loss_func, images, labels, triplets):
    optimizer.zero_grad()
    embeddings = model(images)
    loss_func(embeddings, labels, triplets).backward()
    optimizer.step()


def lower_bound_step(model, optimizer, images, perturbed_rows, steps, margin, triplets):
    perturbed = images[perturbed_rows]
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adversarial = perturbed.clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(adversarial).sum(), adversarial)
        adversarial = (adversarial.detach() + gradient.sign() / 255).clamp(0, 1)
    for parameter, flag in zip(model.parameters(), flags):
        parameter.requires_grad_(flag)
    model.train()
    optimizer.zero_grad()
    embeddings = model(images)
    adversarial_embeddings = model(adversarial)
    anchors, positives, negatives = triplets
    count = len(anchors)
    distance = torch.nn.functional.pairwise_distance
    loss = torch.relu(
        distance(embeddings[anchors], adversarial_embeddings[:count])
        - distance(embeddings[anchors], adversarial_embeddings[-count:])
        + margin
    ).mean()
    loss.backward()
    optimizer.step()


def measure(phase: str, args) -> float:
    generator = torch.Generator().manual_seed(args.seed)
    images, labels, triplets = pair_batch(args.pairs, args.image_size, generator)
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_func = TrideLoss(model, phase=phase, awareness="none", steps=args.steps, progressive_alpha=False)
    anchors, positives, negatives = triplets
    roles = (positives, negatives) if phase == "cap" else (anchors,)
    perturbed_rows = PerturbationSet(roles, "unique").source_rows
    step_times, bound_times = [], []
    for repeat in range(args.warmup + args.repeats):
        start = time.perf_counter()
        tride_step(model, optimizer, loss_func, images, labels, triplets)
        middle = time.perf_counter()
        lower_bound_step(model, optimizer, images, perturbed_rows, args.steps, loss_func.margin, triplets)
        end = time.perf_counter()
        if repeat >= args.warmup:
            step_times.append(middle - start)
            bound_times.append(end - middle)
    ratio = statistics.median(step / bound for step, bound in zip(step_times, bound_times))
    minimum_ratio = min(step_times) / min(bound_times)
    print(f"{phase.upper()}: perturbed {len(perturbed_rows)} of {len(images)} images, M={args.steps}: "
          f"step {statistics.median(step_times) * 1e3:.1f} ms, lower bound {statistics.median(bound_times) * 1e3:.1f} ms "
          f"(medians); ratio {minimum_ratio:.3f} (ratio of minima), {ratio:.3f} (median of paired ratios)")
    return minimum_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=56, help="SPC-2 pairs per batch (112 images, as the paper)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up (a smoke run for CI)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 3, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ratios = {phase: measure(phase, args) for phase in ("cap", "anp")}
    print("ratios of minima (TrideLoss step / lower bound; goal <= 1.15): "
          + ", ".join(f"{phase.upper()} {ratio:.3f}" for phase, ratio in ratios.items()))


if __name__ == "__main__":
    main()
