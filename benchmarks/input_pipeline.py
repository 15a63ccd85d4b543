"""Images per second the training loader delivers, next to what a GPU training step consumes.

It writes random JPEGs at CUB-200-2011's typical sizes (about 500x375) into a temporary folder in CUB's layout
(``images.txt``, ``image_class_labels.txt``, ``images/<class>/<file>.jpg``), loads the train split with the paper's
train transform at 224x224 (resize to 256x256, random crop, random flip) through the trainer's own loader
(:class:`~pml_tride.trainers.batch_plan.BatchPlan`, seeded items, persistent workers) with 0, 1 and 2 worker
processes, and divides the images per second by what one training step consumes on the H100 of
``benchmarks/results/gpu/gpu_step_h100.json`` (``gpu_step.py``): a CA-TRIDE step with all 16 PGD steps (the mean of
its CAP and ANP steps), CA-TRIDE with its early stop, and HM with all 32 steps (unique images and robrank's per-triplet
copies), each on a batch of 112. A ratio below 1 means the GPU would wait for the loader.

Per image, in the main process, it also splits the cost into JPEG decoding and the transform (min over the images),
and measures PIL's reduced-size JPEG decoding (``Image.draft``: DCT scaling by 1/2, 1/4 or 1/8 during decoding, to
the smallest scale that keeps the image at least as large as requested) at CUB's size and at a larger one, with the
largest pixel difference it makes after the test transform.

    python benchmarks/input_pipeline.py --out input_pipeline.json       # 400 images; about a minute on 2 cores
    python benchmarks/input_pipeline.py --quick                         # a few seconds (tested in CI)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import bench_common  # noqa: F401  (puts the repository on sys.path when pml_tride is not installed)
import numpy as np
import torch
from bench_common import REPOSITORY, markdown_table, write_json

from pml_tride.datasets import CUB200, ImageTransform
from pml_tride.trainers.batch_plan import BatchPlan

GPU_RESULTS = REPOSITORY / "benchmarks" / "results" / "gpu" / "gpu_step_h100.json"
# Typical CUB-200-2011 image sizes (width, height): most are 500 pixels on their long side.
CUB_SIZES = ((500, 375), (500, 333), (375, 500), (500, 400), (500, 281))
# A larger photograph (Cars-196 and SOP hold many), where reduced-size decoding has room to act.
LARGE_SIZE = (1024, 768)
JPEG_QUALITY = 90
# The random images: a coarse random colour field (one value per GRAIN x GRAIN block, upsampled smoothly) plus pixel
# noise of NOISE_STD, so that they compress and decode like photographs rather than like white noise.
GRAIN = 16
NOISE_STD = 8.0
PIXEL_MAX = 255
DRAFT_REPEATS, QUICK_DRAFT_REPEATS = 20, 3
PER_IMAGE_FILES = 50  # files timed one by one for the decode / transform split
CLASSES = 50  # train classes of the generated tree (CUB's train split: class ids 1-100)
SEED = 0
# The GPU step rows consumed (measurement name in gpu_step.py's JSON -> label), averaged where a label repeats.
STEP_ROWS = (
    ("CA-TRIDE CAP, all 16 steps", "CA-TRIDE"),
    ("CA-TRIDE ANP, all 16 steps", "CA-TRIDE"),
    ("CA-TRIDE (early stop), CAP+ANP", "CA-TRIDE early stop"),
    ("HM, all 32 steps, unique images", "HM"),
    ("HM, all 32 steps, per-triplet A/P/N copies (robrank)", "HM robrank"),
)
STEP_LABELS = {
    "CA-TRIDE": "CA-TRIDE, all 16 PGD steps (mean of its CAP and ANP steps)",
    "CA-TRIDE early stop": "CA-TRIDE with its early stop (random weights: not a trained model's stop point)",
    "HM": "HM, all 32 PGD steps, unique images",
    "HM robrank": "HM, all 32 PGD steps, robrank's per-triplet A/P/N copies",
}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="48 images, batches of 16, 0 and 1 worker (seconds)")
    parser.add_argument("--images", type=int, default=400, help="JPEGs generated (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=112)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", default="0,1,2", help="comma list of worker counts (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the images per worker count")
    parser.add_argument("--gpu-results", default=str(GPU_RESULTS), help="gpu_step.py's JSON (default: the H100's)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.batch_size, args.workers, args.passes = 48, 16, "0,1", 1
    args.workers = [int(value) for value in args.workers.split(",")]
    if args.images < 2 * args.batch_size:
        parser.error(f"--images must be at least two batches ({2 * args.batch_size}), got {args.images}")
    return args


def photo_like(size: Tuple[int, int], rng: np.random.Generator):
    """A random RGB PIL image of ``size`` (width, height) with a photograph's smoothness."""
    from PIL import Image

    width, height = size
    coarse = (rng.random((height // GRAIN + 1, width // GRAIN + 1, 3)) * PIXEL_MAX).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), dtype=np.float32)
    noisy = smooth + rng.normal(0.0, NOISE_STD, smooth.shape)
    return Image.fromarray(noisy.clip(0, PIXEL_MAX).astype(np.uint8))


def write_cub_tree(root: Path, images: int, rng: np.random.Generator) -> None:
    """``images`` JPEGs in CUB-200-2011's layout, spread over CLASSES train classes."""
    index_lines, label_lines = [], []
    for image_id in range(1, images + 1):
        class_id = (image_id - 1) % CLASSES + 1
        relative = f"{class_id:03d}.Class_{class_id}/image_{image_id:05d}.jpg"
        path = root / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        photo_like(CUB_SIZES[image_id % len(CUB_SIZES)], rng).save(path, "JPEG", quality=JPEG_QUALITY)
        index_lines.append(f"{image_id} {relative}")
        label_lines.append(f"{image_id} {class_id}")
    (root / "images.txt").write_text("\n".join(index_lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(label_lines) + "\n")


def loader_throughput(dataset: CUB200, batch_size: int, workers: int, passes: int) -> Dict[str, Any]:
    """Images per second of the trainer's loader over ``passes`` passes, after a first batch (worker start-up)."""
    plan = BatchPlan(dataset, batch_size, seed=SEED, num_workers=workers)
    started = time.perf_counter()
    plan.next_batch()
    startup = time.perf_counter() - started
    batches = passes * len(plan) - 1
    started = time.perf_counter()
    for _ in range(batches):
        plan.next_batch()
    seconds = time.perf_counter() - started
    plan.close()
    return {"workers": workers, "batches": batches, "images_per_second": batches * batch_size / seconds,
            "first_batch_seconds": startup}


def per_image_costs(files: List[Path], image_size: int) -> Dict[str, float]:
    """Milliseconds (min over the files) of decoding one JPEG, and of the train transform after it."""
    from PIL import Image

    transform = ImageTransform(image_size, train=True)
    decode, total = [], []
    for path in files:
        started = time.perf_counter()
        with Image.open(path) as image:
            image.load()
            decoded = time.perf_counter()
            transform(image)
        finished = time.perf_counter()
        decode.append(decoded - started)
        total.append(finished - started)
    return {"decode_ms": 1e3 * min(decode), "transform_ms": 1e3 * (min(total) - min(decode)),
            "decode_and_transform_ms": 1e3 * min(total)}


def draft_effect(size: Tuple[int, int], image_size: int, repeats: int, rng: np.random.Generator) -> Dict[str, Any]:
    """Full against reduced-size (``Image.draft``) decoding of one JPEG of ``size``, each followed by the test
    transform: milliseconds (min of ``repeats``), the decoded size, and the transform outputs' pixel differences."""
    from PIL import Image

    buffer = io.BytesIO()
    photo_like(size, rng).save(buffer, "JPEG", quality=JPEG_QUALITY)
    data = buffer.getvalue()
    transform = ImageTransform(image_size, train=False)
    results: Dict[str, Any] = {"size": f"{size[0]}x{size[1]}"}
    outputs = {}
    for draft in (False, True):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            with Image.open(io.BytesIO(data)) as image:
                if draft:
                    image.draft("RGB", (transform.resize, transform.resize))
                image.load()
                outputs[draft] = transform(image)
                decoded_size = image.size
            times.append(time.perf_counter() - started)
        key = "draft" if draft else "full"
        results[f"{key}_ms"] = 1e3 * min(times)
        results[f"{key}_decoded"] = f"{decoded_size[0]}x{decoded_size[1]}"
    difference = (outputs[True] - outputs[False]).abs()
    results["speedup"] = results["full_ms"] / results["draft_ms"]
    results["mean_abs_difference_255"] = float(difference.mean()) * PIXEL_MAX
    results["max_abs_difference_255"] = float(difference.max()) * PIXEL_MAX
    return results


def gpu_consumption(path: str) -> Dict[str, Any]:
    """Images per second each training step of gpu_step.py's JSON consumes (batch = 2 x its pairs)."""
    with open(path) as handle:
        result = json.load(handle)
    batch = 2 * int(result["config"]["pairs"])
    rows = {row["measurement"]: row for row in result["rows"] if "step_ms" in row}
    steps: Dict[str, List[float]] = {}
    for measurement, label in STEP_ROWS:
        if measurement in rows:
            steps.setdefault(label, []).append(rows[measurement]["step_ms"])
    consumption = {label: {"step_ms": sum(times) / len(times), "images_per_second": batch / (sum(times) / len(times)
                                                                                            / 1e3)}
                   for label, times in steps.items()}
    return {"device": result.get("device"), "batch": batch, "steps": consumption}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the loader's work is per process; workers run one thread each as well
    rng = np.random.default_rng(SEED)
    wall_started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "CUB_200_2011"
        write_cub_tree(root, args.images, rng)
        dataset = CUB200(str(root), split="train", image_size=args.image_size)
        files = sorted((root / "images").rglob("*.jpg"))
        costs = per_image_costs(files[:PER_IMAGE_FILES], args.image_size)
        loaders = [loader_throughput(dataset, args.batch_size, workers, args.passes) for workers in args.workers]
    draft_repeats = QUICK_DRAFT_REPEATS if args.quick else DRAFT_REPEATS
    drafts = [draft_effect(size, args.image_size, draft_repeats, rng) for size in (CUB_SIZES[0], LARGE_SIZE)]
    gpu = gpu_consumption(args.gpu_results)
    for loader in loaders:
        loader["ratio_to_steps"] = {label: loader["images_per_second"] / step["images_per_second"]
                                    for label, step in gpu["steps"].items()}

    print(f"{args.images} random JPEGs at CUB sizes (~500x375), train transform to {args.image_size}x"
          f"{args.image_size}, batches of {args.batch_size}, BatchPlan loader; {os.cpu_count()} CPU cores\n")
    print(f"per image, one process (min): decode {costs['decode_ms']:.2f} ms, transform {costs['transform_ms']:.2f} "
          f"ms, both {costs['decode_and_transform_ms']:.2f} ms\n")
    labels = list(gpu["steps"])
    header = ["workers", "images/s", "first batch (s)"] + [f"ratio to {label}" for label in labels]
    rows = [[str(loader["workers"]), f"{loader['images_per_second']:.1f}", f"{loader['first_batch_seconds']:.2f}"]
            + [f"{loader['ratio_to_steps'][label]:.3f}" for label in labels] for loader in loaders]
    print(markdown_table(header, rows))
    print(f"\nconsumed per training step on the {gpu['device']} (batch {gpu['batch']}, gpu_step.py):")
    for label, step in gpu["steps"].items():
        print(f"  {label}: {STEP_LABELS[label]}: {step['step_ms']:.1f} ms per step, "
              f"{step['images_per_second']:.0f} images/s")
    print("\nreduced-size JPEG decoding (Image.draft) before the test transform:")
    print(markdown_table(["JPEG", "full (ms)", "draft (ms)", "decoded at", "speedup", "mean |diff| (/255)",
                          "max |diff| (/255)"],
                         [[d["size"], f"{d['full_ms']:.2f}", f"{d['draft_ms']:.2f}", d["draft_decoded"],
                           f"{d['speedup']:.2f}", f"{d['mean_abs_difference_255']:.2f}",
                           f"{d['max_abs_difference_255']:.1f}"] for d in drafts]))
    result = {"command": "python benchmarks/input_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu_cores": os.cpu_count(),
              "config": {"images": args.images, "batch_size": args.batch_size, "image_size": args.image_size,
                         "workers": args.workers, "passes": args.passes, "gpu_results": os.path.relpath(
                             args.gpu_results, REPOSITORY)},
              "per_image": costs, "loaders": loaders, "gpu_steps": gpu, "draft": drafts,
              "wall_seconds": time.perf_counter() - wall_started}
    if args.out:
        write_json(args.out, result, torch.device("cpu"))
        print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
