"""Cost of evaluation at scale, as ratios measured in one run.

Sections (``--sections``, all by default):

* ``suite``: the ten-attack suite of :class:`RobustnessEvaluator` (benign metrics off) divided by its bound: for
  each attack, its steps x input-gradient passes on the attacked images, plus embedding the pool once. Goal <= 1.15.
* ``benign``: R@1/R@2/mAP (:func:`retrieval_metrics`, rank counting) on an N x D pool divided by computing the full
  N x N distance matrix in the same chunks (``torch.cdist``, as the metrics do; a matmul-only distance is printed
  too). Goal <= 2. ``--sort-reference`` also times ranking by sorting every row (the former way).
* ``linearity``: pool sizes 10k, 30k, 60k with a trivial model (one linear layer on 3x4x4 images), each in a fresh
  process: the attack suite on two batches (time per batch, linear in N) and eight query blocks of the benign
  metrics (time per query, linear in N), with the peak resident memory each adds (bounded by batch x pool).
* ``nmi``: NMI at SOP scale (60,000 x 512, 11,316 classes) with faiss k-means when installed (else scikit-learn,
  only with ``--nmi-sklearn``: slow at this scale).

    python benchmarks/eval_cost.py                        # everything at full scale (tens of minutes on 2 cores)
    python benchmarks/eval_cost.py --sections benign      # the 60k x 512 benign metrics against the distance matrix
    python benchmarks/eval_cost.py --quick                # seconds: a smoke run of every section (CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from bench_common import PairedTimes, input_gradient_passes, timed, write_json
from torch import nn
from torch.utils.data import TensorDataset

from pml_tride.chunks import chunk_slices
from pml_tride.evaluation import RobustnessEvaluator, retrieval_metrics
from pml_tride.evaluation.benign import ClassMembers, nmi, retrieval_block
from pml_tride.models import small_cnn_embedder

SECTIONS = ("suite", "benign", "linearity", "nmi")
SOP_TEST_IMAGES = 60502
SOP_TEST_CLASSES = 11316
LINEARITY_SIZES = (10_000, 30_000, 60_000)
LINEARITY_ATTACK_BATCHES = 2
# Query blocks of the benign metrics timed per pool size (the whole pool would be N / block blocks: N^2 in all).
LINEARITY_METRIC_BLOCKS = 8
TRIVIAL_IMAGE_SHAPE = (3, 4, 4)
KILOBYTE = 1024
MEGABYTE = 1024 * 1024


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat: a smoke run (seconds)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=112, help="attacked images per batch (robrank: 112)")
    parser.add_argument("--suite-images", type=int, default=112, help="test images attacked by the suite")
    parser.add_argument("--suite-image-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32, help="PGD steps of every attack (ERS: 32)")
    parser.add_argument("--pool-size", type=int, default=60_000, help="benign section: pool size")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=SOP_TEST_CLASSES)
    parser.add_argument("--metric-batch-size", type=int, default=256, help="query rows per distance block")
    parser.add_argument("--sort-reference", action="store_true", help="also time the former sort-every-row mAP")
    parser.add_argument("--sizes", default=",".join(str(size) for size in LINEARITY_SIZES))
    parser.add_argument("--nmi-size", type=int, default=60_000)
    parser.add_argument("--nmi-sklearn", action="store_true", help="run NMI with scikit-learn when faiss is missing")
    parser.add_argument("--out", default=None, help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.suite_images, args.batch_size, args.steps = 1, 16, 8, 2
        args.suite_image_size, args.pool_size, args.classes, args.nmi_size = 16, 600, 120, 600
        args.sizes = "300,600"
    return args


# ----------------------------------------------------------------- data
def sop_like(size: int, dim: int, classes: int, seed: int):
    """Unit embeddings of ``size`` items in ``classes`` classes of about equal size (SOP: about 5 per class), each
    class a noisy copy of a random centre."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(size) % classes
    labels = labels[torch.randperm(size, generator=generator)]
    centres = torch.randn(classes, dim, generator=generator)
    embeddings = centres[labels] + torch.randn(size, dim, generator=generator)
    return F.normalize(embeddings, dim=1), labels


def chunked_distances(embeddings: torch.Tensor, batch_size: int, matmul: bool = False) -> None:
    """The full N x N distance matrix, block by block (each block dropped): the baseline of the benign metrics."""
    squared = (embeddings * embeddings).sum(dim=1)
    for start in range(0, len(embeddings), batch_size):
        block = embeddings[start:start + batch_size]
        if matmul:
            squares = squared[start:start + batch_size, None] + squared[None, :]
            (squares - 2 * block @ embeddings.T).clamp_(min=0).sqrt_()
        else:
            torch.cdist(block, embeddings)


def sorted_positions(distances: torch.Tensor, relevant_columns: torch.Tensor, valid: torch.Tensor,
                     excluded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """What :func:`relevant_positions` returns, found the former way: every row sorted (stable, ties by index), the
    place of each of its relevant items read off the order. ``distances`` is overwritten (excluded entries: +inf)."""
    batch, total = distances.shape
    distances[torch.arange(batch), excluded] = float("inf")
    valid = valid & (relevant_columns != excluded[:, None])
    order = distances.argsort(dim=1, stable=True)
    place = torch.empty_like(order).scatter_(1, order, torch.arange(1, total + 1).expand(batch, total))
    positions = place.gather(1, relevant_columns).masked_fill_(~valid, total + 1).sort(dim=1).values
    return positions, valid.sum(dim=1)


def sort_based_retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """The former mAP (the "before" of the rank counting): the query blocks of :func:`retrieval_metrics` with the
    places of the relevant items found by :func:`sorted_positions` instead of :func:`relevant_positions`; mAP."""
    embeddings = F.normalize(embeddings.float(), dim=1)
    members = ClassMembers(labels)
    average_precision_sum, scored = 0.0, 0
    for part in chunk_slices(len(labels), batch_size):
        rows = torch.arange(part.start, part.stop)
        positions, counts = sorted_positions(torch.cdist(embeddings[rows], embeddings), *members.relevant(rows), rows)
        places = torch.arange(1, positions.shape[1] + 1, dtype=torch.float64)
        precision = (places / positions.double()).masked_fill(places[None, :] > counts[:, None], 0.0)
        has = counts > 0
        average_precision_sum += (precision.sum(dim=1)[has] / counts[has]).sum().item()
        scored += int(has.sum())
    return 100 * average_precision_sum / max(scored, 1)


class Trivial(nn.Module):
    """A trivial embedding model: flatten and one linear layer (the model costs nothing next to the pool)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inputs = 1
        for size in TRIVIAL_IMAGE_SHAPE:
            inputs *= size
        self.linear = nn.Linear(inputs, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


# ----------------------------------------------------------------- sections
def suite_section(args) -> Dict[str, object]:
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.suite_images, 3, args.suite_image_size, args.suite_image_size, generator=generator)
    labels = torch.arange(args.suite_images) // 2
    dataset = TensorDataset(images, labels)
    torch.manual_seed(args.seed)
    model = small_cnn_embedder(in_channels=3, embedding_dim=64)
    evaluator = RobustnessEvaluator(steps=args.steps, batch_size=args.batch_size, benign=False, progress=False)
    families = len(evaluator.attacks)
    batches = [images[start:start + args.batch_size] for start in range(0, len(images), args.batch_size)]
    device = torch.device("cpu")

    def bound() -> None:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                model(batch)
        for _ in range(families):
            for batch in batches:
                input_gradient_passes(model, batch, args.steps)

    times = PairedTimes()
    per_attack: Dict[str, List[float]] = {}
    report = {}
    for _ in range(args.repeats):
        times.step.append(timed(lambda: report.update(r=evaluator.evaluate(model, dataset)), device))
        times.bound.append(timed(bound, device))
        for name, seconds in report["r"].settings["attack_seconds"].items():
            per_attack.setdefault(name, []).append(seconds)
    single_attack_bound = (min(times.bound) - 0) / families
    result = {
        "images": args.suite_images, "batch_size": args.batch_size, "steps": args.steps, "attacks": families,
        "suite_seconds_min": min(times.step), "bound_seconds_min": min(times.bound),
        "ratio_of_minima": times.ratio_of_minima, "median_ratio": times.median_ratio,
        "attack_seconds_min": {name: min(values) for name, values in per_attack.items()},
    }
    print(f"suite: {families} attacks x {args.suite_images} images x {args.steps} steps (small CNN, "
          f"{args.suite_image_size}x{args.suite_image_size}): suite {min(times.step):.2f} s, bound "
          f"{min(times.bound):.2f} s (minima of {args.repeats}); ratio {times.ratio_of_minima:.3f} (of minima), "
          f"{times.median_ratio:.3f} (median of paired ratios); goal <= 1.15")
    for name, seconds in result["attack_seconds_min"].items():
        print(f"  {name}: {seconds:.2f} s, {seconds / single_attack_bound:.3f} x one attack's share of the bound")
    return result


def benign_section(args) -> Dict[str, object]:
    embeddings, labels = sop_like(args.pool_size, args.dim, args.classes, args.seed)
    device = torch.device("cpu")
    candidates = {
        "metrics": lambda: retrieval_metrics(embeddings, labels, batch_size=args.metric_batch_size),
        "cdist": lambda: chunked_distances(embeddings, args.metric_batch_size),
        "matmul": lambda: chunked_distances(embeddings, args.metric_batch_size, matmul=True),
    }
    if args.sort_reference:
        candidates["sorting"] = lambda: sort_based_retrieval_metrics(embeddings, labels, args.metric_batch_size)
    seconds: Dict[str, List[float]] = {name: [] for name in candidates}
    metrics = retrieval_metrics(embeddings[:2], labels[:2])
    holder = {}
    for _ in range(args.repeats):
        for name, function in candidates.items():
            seconds[name].append(timed(lambda function=function: holder.update(value=function()), device))
            if name == "metrics":
                metrics = holder["value"]
    best = {name: min(values) for name, values in seconds.items()}
    result = {"pool_size": args.pool_size, "dim": args.dim, "classes": args.classes,
              "batch_size": args.metric_batch_size, "seconds_min": best, "metrics": metrics,
              "ratio_to_cdist": best["metrics"] / best["cdist"], "ratio_to_matmul": best["metrics"] / best["matmul"]}
    print(f"benign: {args.pool_size} x {args.dim} pool, {args.classes} classes, blocks of {args.metric_batch_size}: "
          f"metrics {best['metrics']:.1f} s, distance matrix {best['cdist']:.1f} s (cdist) / {best['matmul']:.1f} s "
          f"(matmul) (minima of {args.repeats}); ratio {result['ratio_to_cdist']:.3f} to cdist (goal <= 2), "
          f"{result['ratio_to_matmul']:.3f} to matmul")
    if "sorting" in best:
        result["sorting_over_metrics"] = best["sorting"] / best["metrics"]
        print(f"  former sort-every-row mAP: {best['sorting']:.1f} s ({result['sorting_over_metrics']:.2f} x the "
              "rank counting)")
    return result


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux: "5" to /proc/self/clear_refs); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def proc_status_bytes(field: str) -> Optional[int]:
    """A size ``field`` of /proc/self/status (Linux, in kB) in bytes, or None where the file or the field is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * KILOBYTE
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The peak resident set size since the last reset (Linux VmHWM), else since the start (ru_maxrss)."""
    peak = proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KILOBYTE  # Linux reports KiB


def current_rss_bytes() -> int:
    """The current resident set size (Linux VmRSS), else the peak so far."""
    current = proc_status_bytes("VmRSS")
    return current if current is not None else peak_rss_bytes()


def baseline_rss_bytes() -> int:
    """The resident size to measure from: the current one after a peak reset, else the peak so far."""
    return current_rss_bytes() if reset_peak_rss() else peak_rss_bytes()


def linearity_child(args) -> Dict[str, object]:
    """One pool size in a fresh process, so that the peak resident memory is this measurement's own."""
    size = args.child_size
    generator = torch.Generator().manual_seed(args.seed)
    dataset = TensorDataset(torch.rand(size, *TRIVIAL_IMAGE_SHAPE, generator=generator),
                            torch.arange(size) % max(size // 5, 1))
    torch.manual_seed(args.seed)
    model = Trivial(args.dim)
    before = baseline_rss_bytes()
    if args.child == "attacks":
        evaluator = RobustnessEvaluator(steps=args.steps, batch_size=args.batch_size, benign=False, progress=False,
                                        max_batches=LINEARITY_ATTACK_BATCHES)
        started = time.perf_counter()
        report = evaluator.evaluate(model, dataset)
        seconds = time.perf_counter() - started
        per_batch = sum(report.settings["attack_seconds"].values()) / LINEARITY_ATTACK_BATCHES
        values = {"seconds": seconds, "attack_seconds_per_batch": per_batch}
    else:
        embeddings = F.normalize(model(dataset.tensors[0]).detach(), dim=1)
        members = ClassMembers(dataset.tensors[1])
        blocks = [torch.arange(start, min(start + args.metric_batch_size, size))
                  for start in range(0, size, args.metric_batch_size)][:LINEARITY_METRIC_BLOCKS]
        before = baseline_rss_bytes()
        started = time.perf_counter()
        for rows in blocks:
            retrieval_block(embeddings, members, rows).tolist()
        seconds = time.perf_counter() - started
        queries = sum(len(rows) for rows in blocks)
        values = {"seconds": seconds, "queries": queries, "seconds_per_query": seconds / queries}
    return {"size": size, "kind": args.child, "added_peak_bytes": max(peak_rss_bytes() - before, 0), **values}


def run_child(kind: str, size: int, args) -> Dict[str, object]:
    """A fresh process per measurement (in this process with ``--quick``: the memory figures then mean little)."""
    if args.quick:
        child = argparse.Namespace(**{**vars(args), "child": kind, "child_size": size})
        return linearity_child(child)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-size", str(size),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--dim", str(args.dim),
               "--metric-batch-size", str(args.metric_batch_size), "--seed", str(args.seed)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def linearity_section(args) -> Dict[str, object]:
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = []
    for size in sizes:
        attacks, benign = run_child("attacks", size, args), run_child("benign", size, args)
        rows.append({"size": size, "attacks": attacks, "benign": benign})
    print(f"linearity (trivial model, {args.dim}-d, attack batch {args.batch_size}, metric blocks of "
          f"{args.metric_batch_size}; each size in a fresh process):")
    print("| pool | attack suite per batch (s) | per batch / pool (us) | its added peak memory (MB) | attack batch x "
          "pool x 4 B (MB) | 8 metric blocks (s) | per query / pool (ns) | its added peak memory (MB) | metric block "
          "x pool x 4 B (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        size, attacks, benign = row["size"], row["attacks"], row["benign"]
        per_batch = attacks["attack_seconds_per_batch"]
        print(f"| {size} | {per_batch:.2f} | {1e6 * per_batch / size:.1f} | "
              f"{attacks['added_peak_bytes'] / MEGABYTE:.0f} | {args.batch_size * size * 4 / MEGABYTE:.0f} | "
              f"{benign['seconds']:.1f} | "
              f"{1e9 * benign['seconds_per_query'] / size:.1f} | {benign['added_peak_bytes'] / MEGABYTE:.0f} | "
              f"{args.metric_batch_size * size * 4 / MEGABYTE:.0f} |")
    return {"rows": rows}


def nmi_section(args) -> Dict[str, object]:
    use_faiss = importlib.util.find_spec("faiss") is not None
    if not use_faiss and not args.nmi_sklearn:
        print("nmi: faiss is not installed; scikit-learn k-means at this scale is slow: pass --nmi-sklearn to run it")
        return {"skipped": "faiss not installed"}
    embeddings, labels = sop_like(args.nmi_size, args.dim, args.classes, args.seed)
    started = time.perf_counter()
    value = nmi(embeddings, labels, use_faiss=use_faiss)
    seconds = time.perf_counter() - started
    backend = "faiss" if use_faiss else "scikit-learn"
    print(f"nmi: {args.nmi_size} x {args.dim}, {args.classes} classes, {backend} k-means: {seconds:.1f} s "
          f"(NMI {value:.2f})")
    return {"size": args.nmi_size, "classes": args.classes, "backend": backend, "seconds": seconds, "nmi": value}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(linearity_child(args)))
        return 0
    sections = [name for name in args.sections.split(",") if name]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; valid: {SECTIONS}")
    print(f"eval_cost.py: torch {torch.__version__}, {torch.get_num_threads()} torch threads, CPU")
    functions = {"suite": suite_section, "benign": benign_section, "linearity": linearity_section,
                 "nmi": nmi_section}
    results = {name: functions[name](args) for name in sections}
    if args.out:
        write_json(args.out, results, torch.device("cpu"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
