"""The paper's study in one command: the defense zoo trained alike, attacked with all ten attacks, and judged.

Every model is the same small CNN trained with the same epochs, data and seeds on a class-disjoint split
(``pml_tride.recipes.train_embedder``), then evaluated with ``RobustnessEvaluator`` (benign R@1/R@2/mAP/NMI, the
ten attacks, ERS, ARS). The study writes one JSON per (model, seed) job to ``--out`` as soon as the job ends, and
``docs/results.md`` with plots under ``docs/results/``: the zoo's tables (mean +- std over seeds), the collapse
diagnostics over training (the paper's Figures 4 and 5), the defaults study (``perturb`` unique vs per_triplet,
every-image vs SPC-2 anchors), the eps x training-length sweep, and the verdicts, derived from the numbers by the
rules in ``RULES`` (stated in the report too).

    python benchmarks/reproduce.py --quick                       # CI: two models, 2 epochs, 2 seeds
    python benchmarks/reproduce.py --workers 16                  # the full study, about 100 core-minutes
    python benchmarks/reproduce.py --workers 16 --report-only    # rebuild the report from the JSON files
    python benchmarks/reproduce.py --dataset image-folder --data-root DIR --image-size 32

Jobs whose JSON exists are skipped (resume); ``--time-budget`` stops starting jobs after that many seconds and
the report lists the missing ones.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import shlex
import sys
import time
import traceback
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pml_tride.cli import pixel_value
from pml_tride.datasets import DEFAULT_IMAGE_SIZES, build_dataset
from pml_tride.evaluation import ARS_ATTACKS, ERS_ATTACKS, RobustnessEvaluator
from pml_tride.miners import TrideMiner
from pml_tride.models import small_cnn_embedder
from pml_tride.optional_imports import has_pyplot, import_pyplot
from pml_tride.recipes import DEFENSES, train_embedder
from pml_tride.samplers import PAIR_SIZE, SPC2Sampler

PIXEL_LEVELS = 255
PAPER_EPS = 8 / PIXEL_LEVELS
# ----------------------------------------------------------------------------------------------- verdict rules
CHANCE_FACTOR = 2.0  # a model is collapsed when its R@1 is below this multiple of chance ...
COLLAPSED_SEPARABILITY = 0.1  # ... or its separability over the last epoch is below this
# Optional notes in the JSON folder on the code and the runs behind the records, shown under "Runs" in the report.
PROVENANCE_FILE = "_provenance.md"
# Optional reading of the verdicts (what failed and what may explain it), shown after them.
READING_FILE = "_reading.md"
COMPARABLE_R1_POINTS = 5.0  # "comparable R@1": at most this many points lower
DEFAULT_R1_TOLERANCE_POINTS = 1.0  # a new default may lose at most this much R@1
RULES = f"""- **Collapsed** (per seed): R@1 < {CHANCE_FACTOR:g} x chance R@1 (the R@1 of a random embedding, from the
  test labels) or separability (mean over the last epoch) < {COLLAPSED_SEPARABILITY:g}. A model is collapsed when
  more than half of its seeds are. Shrinkage is reported as the last epoch's mean pairwise distance over the
  first epoch's.
- **a > b** compares means over seeds; when the difference is at most sqrt(std_a^2 + std_b^2) it is marked
  *(within noise)* and counts as neither a pass nor a failure.
- **Comparable R@1**: at most {COMPARABLE_R1_POINTS:g} points below. **Lower cost**: fewer PGD image passes
  (forward + backward, counted during training), or fewer training seconds where the passes were not counted.
- **Embedding shift** (Figure 5): the mean L2 shift of the perturbed images' embeddings over training, divided by
  the batch's mean pairwise distance (as the paper normalises); *overall* multiplies it by the perturbed roles (CAP 2,
  ANP 1, TRIDE alternating, ACT 2, HM and EST 3).
- **C tracks collapse, H does not**: (a) H-aware TRIDE collapses and CA-TRIDE does not, both with progressive alpha
  off; (b) over the zoo, the last-epoch clean collapseness C of every collapsed model exceeds that of every
  uncollapsed one, while hardness H (= -separability x mean distance) does not separate them.
- A claim is *reproduced* when all its tested checks pass (*where testable* when some comparisons are within the
  noise), *not reproduced* when none does, *partly* otherwise, *inconclusive* when every comparison is within the
  noise, and *not tested* when its models are missing. "CA-TRIDE does not collapse" is tested only when a naive
  model collapses (the claim is a contrast).
- **Defaults**: CA-TRIDE keeps `perturb="unique"` with every-image anchors unless another configuration has
  higher mean ERS *and* ARS by more than the noise (as above) with mean R@1 at most
  {DEFAULT_R1_TOLERANCE_POINTS:g} point below."""


CAVEATS = """Caveats for every verdict: the paper trains ResNet-18 on 224x224 CUB, Cars and SOP for 100+ epochs at
8/255; this study trains a small CNN briefly on the data set above, so a claim that does not reproduce here may hold
at the paper's scale (collapse in particular needs long training with a strong adversary: the eps x length sweep
shows how far this setting is from it), and one that does may not transfer. Differences marked *(within noise)* are
not evidence either way."""


# ----------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class ModelSpec:
    """A model of the study: a defense of ``pml_tride.recipes.DEFENSES`` plus loss and miner overrides."""

    label: str
    defense: str
    loss_overrides: Tuple[Tuple[str, Any], ...] = ()
    miner_overrides: Tuple[Tuple[str, Any], ...] = ()

    @property
    def slug(self) -> str:
        extras = [f"{key}={value}" for key, value in self.loss_overrides + self.miner_overrides]
        return "+".join([self.defense] + extras).replace(" ", "").replace("/", "-")


PROGRESSIVE_OFF = (("progressive_alpha", False),)
PER_TRIPLET = (("perturb", "per_triplet"),)
ZOO = (
    ModelSpec("NT", "none"),
    ModelSpec("naive AT", "naive-at"),
    ModelSpec("naive CAP", "naive-cap"),
    ModelSpec("naive ANP", "naive-anp"),
    ModelSpec("naive TRIDE", "naive-tride"),
    ModelSpec("CA-CAP", "ca-cap"),
    ModelSpec("CA-ANP", "ca-anp"),
    ModelSpec("CA-TRIDE", "ca-tride"),
    ModelSpec("CA-TRIDE (reference)", "ca-tride-reference"),
    ModelSpec("H-aware TRIDE, prog. alpha off", "hardness-tride", PROGRESSIVE_OFF),
    ModelSpec("CA-TRIDE w/o TPR", "ca-tride-no-tpr"),
    ModelSpec("CA-TRIDE w/o L_TR", "ca-tride-no-ltr"),
    ModelSpec("COLO-TRIDE", "colo-tride"),
    ModelSpec("EST", "est"),
    ModelSpec("ACT", "act"),
    ModelSpec("HM", "hm"),
)
BY_LABEL = {spec.label: spec for spec in ZOO}
CA_PROGRESSIVE_OFF = ModelSpec("CA-TRIDE, prog. alpha off", "ca-tride", PROGRESSIVE_OFF)
OVER_TRAINING = ("NT", "naive TRIDE", "CA-TRIDE", "HM", "ACT", "EST")
SHIFT_MODELS = ("CA-TRIDE", "naive TRIDE", "CA-CAP", "CA-ANP", "HM", "ACT", "EST")
# Perturbed roles per phase: CAP perturbs positives and negatives, ANP anchors; single-phase defenses: HM and EST
# all three, ACT positives and negatives (reference notes, sections 2.2-2.4).
ROLES = {"cap": 2, "anp": 1, None: 3}
SINGLE_PHASE_ROLES = {"act": 2}
# Training PGD steps of each defense's loss class (for the cost estimate only; the run uses the class defaults).
ESTIMATED_STEPS = {"none": 0, "est": 32, "act": 32, "hm": 32, "naive-at": 32}
DEFAULT_TRAIN_STEPS = 16
# Perturbed images per batch relative to TRIDE's unique images: per-triplet copies of A, P and N (naive-at: one
# triplet per image; hm: one per SPC-2 pair), and per_triplet TRIDE's copies.
ESTIMATED_COPIES = {"naive-at": 3.0, "hm": 1.5}
# Seconds per unit, measured single-threaded on the 2-core development machine (shared, so pessimistic).
SECONDS_PER_TRAIN_UNIT = 0.018  # one iteration-step: a PGD step or the training pass, 112 images of 16x16
SECONDS_PER_EVAL_UNIT = 0.27  # one attacked batch of 112 x one PGD step, all ten attacks
SMOOTHING = 5  # iterations of the moving average in the over-training plots
FIGURE_DPI = 80
HISTORY_KEYS = ("epoch", "iteration", "phase", "loss", "collapseness_clean", "separability", "mean_distance",
                "embedding_shift", "num_perturbed", "pgd_steps", "hardness_clean", "embedding_shift_anchor",
                "embedding_shift_positive", "embedding_shift_negative", "assist_steps")
PGD_KEYS = ("pgd_forward_images", "pgd_backward_images")
HISTORY_DIGITS = 6


def spc2_miner_overrides() -> Optional[Tuple[Tuple[str, Any], ...]]:
    """The miner argument of SPC-2 anchors (the paper's 56 triplets per 112 images); None when this build's
    TrideMiner has no ``anchors`` argument."""
    if "anchors" not in inspect.signature(TrideMiner).parameters:
        return None
    return (("anchors", "spc2"),)


def defaults_configurations() -> List[Tuple[str, Optional[ModelSpec]]]:
    """The four CA-TRIDE configurations of the defaults study; None where this build cannot express one."""
    spc2 = spc2_miner_overrides()
    return [
        ("unique, every-image anchors (default)", BY_LABEL["CA-TRIDE"]),
        ("per_triplet, every-image anchors", ModelSpec("CA-TRIDE per_triplet", "ca-tride", PER_TRIPLET)),
        ("unique, SPC-2 anchors", None if spc2 is None else ModelSpec("CA-TRIDE SPC-2", "ca-tride", (), spc2)),
        ("per_triplet, SPC-2 anchors",
         None if spc2 is None else ModelSpec("CA-TRIDE per_triplet SPC-2", "ca-tride", PER_TRIPLET, spc2)),
    ]


@dataclass(frozen=True)
class StudySettings:
    """Everything that decides a job's result (stored in every JSON; a resumed run must match it)."""

    dataset: str = "digits"
    data_root: Optional[str] = None
    image_size: int = 16
    epochs: int = 8
    long_factor: int = 4
    batch_size: int = 112
    lr: float = 1e-3
    embedding_dim: int = 64
    width: int = 32
    eps: float = 16 / PIXEL_LEVELS
    sweep_eps: Tuple[float, ...] = (8 / PIXEL_LEVELS, 16 / PIXEL_LEVELS, 32 / PIXEL_LEVELS)
    train_alpha_ratio: float = 1 / 8  # the paper's 1/255 at 8/255
    eval_alpha_ratio: float = 3 / 8  # the paper's ERS setting, 3/255 at 8/255
    eval_steps: int = 32
    max_batches: Optional[int] = 2
    seeds: Tuple[int, ...] = (0, 1, 2)
    zoo: Tuple[str, ...] = tuple(spec.label for spec in ZOO)
    studies: Tuple[str, ...] = ("zoo", "claims", "defaults", "sweep")
    quick: bool = False

    def describe(self) -> str:
        queries = "every test image" if self.max_batches is None else \
            f"the first {self.max_batches * self.batch_size} test images (max_batches={self.max_batches})"
        return (f"{self.dataset} {self.image_size}x{self.image_size}, small CNN ({self.embedding_dim}-d, width "
                f"{self.width}), {self.epochs} epochs (x{self.long_factor} for the long sweep cells), SPC-2 batches "
                f"of {self.batch_size} (same-class pairs, SPC2Sampler, for every model), Adam lr {self.lr}, seeds "
                f"{list(self.seeds)}; training PGD eps "
                f"{_pixels(self.eps)}, alpha = eps x {self.train_alpha_ratio:g} (progressive where the defense uses "
                f"it), steps = each loss class's default (TrideLoss 16, EST/ACT/HM 32); evaluation: all ten attacks "
                f"at the training eps, alpha = eps x {self.eval_alpha_ratio:g}, {self.eval_steps} steps, on "
                f"{queries} against the whole test pool")


# Settings that choose which jobs run, not what a job computes (its seed, eps and epochs are in its key).
PLAN_ONLY_SETTINGS = ("seeds", "zoo", "studies", "sweep_eps", "long_factor", "quick")
QUICK = dict(epochs=2, eval_steps=4, max_batches=1, seeds=(0, 1), zoo=("NT", "CA-TRIDE"), studies=("zoo",), quick=True)


@dataclass(frozen=True)
class Job:
    """One (model, seed) training and evaluation."""

    model: ModelSpec
    seed: int
    eps: float
    epochs: int
    priority: int = field(default=0, compare=False)  # 0 zoo and claims, 1 defaults, 2 sweep: run in this order

    @property
    def key(self) -> str:
        return f"{self.model.slug}__eps{round(self.eps * PIXEL_LEVELS)}__ep{self.epochs}__seed{self.seed}"


def _pixels(eps: float) -> str:
    return f"{eps * PIXEL_LEVELS:g}/255"


def available(spec: Optional[ModelSpec]) -> bool:
    return spec is not None and spec.defense in DEFENSES


def sweep_cells(settings: StudySettings) -> List[Tuple[float, int]]:
    return [(eps, epochs) for eps in settings.sweep_eps for epochs in (settings.epochs,
                                                                          settings.epochs * settings.long_factor)]


def plan(settings: StudySettings) -> Tuple[List[Job], List[str]]:
    """The jobs of the chosen studies (deduplicated: a zoo model is also the defaults study's default and the
    sweep's cell at the zoo's eps and length), and the models this build cannot train."""
    wanted: List[Tuple[ModelSpec, float, int, int]] = []
    unavailable: List[str] = []

    def want(spec: Optional[ModelSpec], label: str, eps: float, epochs: int, priority: int = 0) -> None:
        if available(spec):
            wanted.append((spec, eps, epochs, priority))
        elif label not in unavailable:
            unavailable.append(label)

    if "zoo" in settings.studies:
        for label in settings.zoo:
            want(BY_LABEL[label], label, settings.eps, settings.epochs)
    if "claims" in settings.studies:
        want(CA_PROGRESSIVE_OFF, CA_PROGRESSIVE_OFF.label, settings.eps, settings.epochs)
    if "defaults" in settings.studies:
        for label, spec in defaults_configurations():
            want(spec, f"defaults: {label}", settings.eps, settings.epochs, priority=1)
    if "sweep" in settings.studies:
        for eps, epochs in sweep_cells(settings):
            for label in ("naive TRIDE", "CA-TRIDE"):
                want(BY_LABEL[label], label, eps, epochs, priority=2)
    jobs: Dict[str, Job] = {}
    for spec, eps, epochs, priority in wanted:
        for seed in settings.seeds:
            job = Job(spec, seed, eps, epochs, priority)
            jobs.setdefault(job.key, job)
    return list(jobs.values()), unavailable


def estimated_seconds(job: Job, settings: StudySettings, iterations_per_epoch: int) -> float:
    """Single-core seconds of a job by the cost model above (for the ETA and the printed estimate)."""
    steps = ESTIMATED_STEPS.get(job.model.defense, DEFAULT_TRAIN_STEPS)
    loss_kwargs = {**getattr(DEFENSES.get(job.model.defense), "loss_kwargs", {}), **dict(job.model.loss_overrides)}
    copies = ESTIMATED_COPIES.get(job.model.defense, 2 if loss_kwargs.get("perturb") == "per_triplet" else 1)
    train_units = job.epochs * iterations_per_epoch * (1 + steps * copies)
    batches = settings.max_batches or math.ceil(1000 / settings.batch_size)
    return train_units * SECONDS_PER_TRAIN_UNIT + batches * settings.eval_steps * SECONDS_PER_EVAL_UNIT


# ----------------------------------------------------------------------------------------------- one job
def load_data(settings: StudySettings):
    train_set = build_dataset(settings.dataset, root=settings.data_root, split="train", image_size=settings.image_size)
    test_set = build_dataset(settings.dataset, root=settings.data_root, split="test", image_size=settings.image_size)
    return train_set, test_set


def chance_r1(labels: Sequence[int]) -> float:
    """R@1 (percent) of a random embedding: the chance that another test image shares the query's class."""
    counts = np.array(list(Counter(int(label) for label in labels).values()), dtype=np.float64)
    total = counts.sum()
    return float(100 * (counts * (counts - 1)).sum() / (total * (total - 1)))


def machine() -> Dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_job(job: Job, settings: StudySettings, device: str, out: str) -> Dict[str, Any]:
    """Train and evaluate one job single-threaded; write and return its record."""
    torch.set_num_threads(1)
    logging.getLogger("PML").setLevel(logging.ERROR)  # 'models is missing "embedder"': PML adds the identity
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    started = time.time()
    train_set, test_set = load_data(settings)
    # a data set smaller than one batch trains on one batch of all its same-class pairs
    batch_size = min(settings.batch_size, len(train_set) // PAIR_SIZE * PAIR_SIZE)
    torch.manual_seed(job.seed)
    model = small_cnn_embedder(in_channels=train_set[0][0].shape[0], embedding_dim=settings.embedding_dim,
                               width=settings.width)
    with contextlib.redirect_stderr(io.StringIO()):  # PML's per-iteration progress bars, one per job and epoch
        trainer, train_seconds = train_embedder(
            model, train_set, defense=job.model.defense, epochs=job.epochs, batch_size=batch_size,
            lr=settings.lr, eps=job.eps, alpha=job.eps * settings.train_alpha_ratio, seed=job.seed,
            device=torch.device(device), loss_overrides=dict(job.model.loss_overrides) or None,
            miner_overrides=dict(job.model.miner_overrides) or None,
            sampler=SPC2Sampler(torch.as_tensor(train_set.labels), seed=job.seed),
        )
    evaluator = RobustnessEvaluator(eps=job.eps, alpha=job.eps * settings.eval_alpha_ratio, steps=settings.eval_steps,
                                    seed=job.seed, device=device, progress=False, max_batches=settings.max_batches)
    report = evaluator.evaluate(model, test_set)
    history = [{key: _rounded(row[key]) for key in HISTORY_KEYS + PGD_KEYS if key in row} for row in trainer.history]
    counted = {key: (sum(row[key] for row in history) if any(key in row for row in history) else None)
               for key in PGD_KEYS}
    record = {
        "key": job.key, "label": job.model.label, "model": asdict(job.model), "seed": job.seed, "eps": job.eps,
        "epochs": job.epochs, "settings": asdict(settings), "device": device, "machine": machine(),
        "benign": report.benign, "raw": report.raw, "ers": report.ers, "ers_per_attack": report.ers_per_attack,
        "ars": report.ars, "ars_per_attack": report.ars_per_attack, "ars_per_trial": report.ars_per_trial,
        "ars_excluded": report.ars_excluded, "chance_r1": chance_r1(test_set.labels.tolist()),
        "train_seconds": train_seconds, "eval_seconds": report.settings["total_seconds"],
        "job_seconds": time.time() - started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "iterations": len(history), **counted, "history": history,
    }
    path = os.path.join(out, f"{job.key}.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(record, handle)
    os.replace(path + ".tmp", path)
    return record


def _rounded(value: Any) -> Any:
    """Floats to HISTORY_DIGITS significant digits (keeps the JSON files small)."""
    return float(f"{value:.{HISTORY_DIGITS}g}") if isinstance(value, float) else value


def _number(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run_job_safely(job: Job, settings: StudySettings, device: str, out: str) -> Tuple[str, Any]:
    try:
        return "ok", run_job(job, settings, device, out)
    except Exception:  # a failed job is reported, the others go on
        return "error", traceback.format_exc()


# ----------------------------------------------------------------------------------------------- running
def run_jobs(jobs: List[Job], settings: StudySettings, device: str, out: str, workers: int,
             time_budget: Optional[float], iterations_per_epoch: int) -> Dict[str, str]:
    """Run the jobs (a process pool when workers > 1); returns the failures (key -> traceback)."""
    costs = {job.key: estimated_seconds(job, settings, iterations_per_epoch) for job in jobs}
    jobs = sorted(jobs, key=lambda job: (job.priority, -costs[job.key]))  # the zoo first; long jobs early in each
    print(f"{len(jobs)} jobs to run, estimated {sum(costs.values()) / 60:.0f} core-minutes "
          f"(~{sum(costs.values()) / 60 / workers:.1f} min on {workers} worker(s); cost model calibrated on a shared "
          "2-core CPU)", flush=True)
    failures: Dict[str, str] = {}
    started = time.monotonic()
    pending = list(jobs)
    done_cost = 0.0
    bar = tqdm(total=round(sum(costs.values())), desc="jobs", unit="est-s", disable=None)

    def finished(job: Job, status: str, result: Any, count: int) -> None:
        nonlocal done_cost
        done_cost += costs[job.key]
        bar.update(round(costs[job.key]))
        elapsed = time.monotonic() - started
        remaining = sum(costs.values()) - done_cost
        left = max(0.0, elapsed / done_cost * remaining) if done_cost else float("nan")
        if status == "ok":
            summary = (f"R@1 {_number(result['benign']['R@1'])} ERS {_number(result['ers'])} ARS "
                       f"{_number(result['ars'])}, train {result['train_seconds']:.0f} s, job "
                       f"{result['job_seconds']:.0f} s")
        else:
            failures[job.key] = result
            summary = "FAILED: " + result.strip().splitlines()[-1]
        tqdm.write(f"[{count}/{len(jobs)}] {job.key}: {summary}; elapsed {elapsed / 60:.1f} min, about "
                   f"{left / 60:.1f} min left")
        sys.stdout.flush()  # one line per job also when the output goes to a file

    def budget_left() -> bool:
        return time_budget is None or time.monotonic() - started < time_budget

    count = 0
    if workers == 1:
        while pending and budget_left():
            job = pending.pop(0)
            status, result = run_job_safely(job, settings, device, out)
            count += 1
            finished(job, status, result, count)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            running = {}
            while pending or running:
                while pending and len(running) < workers and budget_left():
                    job = pending.pop(0)
                    running[pool.submit(run_job_safely, job, settings, device, out)] = job
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    status, result = future.result()
                    count += 1
                    finished(job, status, result, count)
    bar.close()
    if pending:
        print(f"time budget of {time_budget:.0f} s spent: {len(pending)} jobs not started", flush=True)
    return failures


# ----------------------------------------------------------------------------------------------- statistics
def load_records(out: str) -> Dict[str, Dict[str, Any]]:
    records = {}
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if name.endswith(".json") and not name.startswith("_"):
            with open(os.path.join(out, name)) as handle:
                record = json.load(handle)
            records[record["key"]] = record
    return records


@dataclass
class Summary:
    """Mean and sample standard deviation over seeds."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        if self.n == 0 or not math.isfinite(self.mean):
            return "n/a"
        return f"{self.mean:.1f} ± {self.std:.1f}" if self.n > 1 else f"{self.mean:.1f}"


def summarize(values: Sequence[Optional[float]]) -> Summary:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0, len(finite))


def last_epoch(record: Dict[str, Any], key: str) -> Optional[float]:
    rows = [row[key] for row in record["history"] if row.get("epoch") == record["epochs"] and key in row]
    return float(np.mean(rows)) if rows else None


def first_epoch(record: Dict[str, Any], key: str) -> Optional[float]:
    rows = [row[key] for row in record["history"] if row.get("epoch") == 1 and key in row]
    return float(np.mean(rows)) if rows else None


def hardness_of(row: Dict[str, Any]) -> Optional[float]:
    """H = d(a,p) - d(a,n) (Eq. 2) = -separability x mean distance."""
    if "separability" not in row or "mean_distance" not in row:
        return None
    return -row["separability"] * row["mean_distance"]


def final_hardness(record: Dict[str, Any]) -> Optional[float]:
    rows = [hardness_of(row) for row in record["history"] if row.get("epoch") == record["epochs"]]
    rows = [value for value in rows if value is not None]
    return float(np.mean(rows)) if rows else None


def shrink_ratio(record: Dict[str, Any]) -> Optional[float]:
    first, last = first_epoch(record, "mean_distance"), last_epoch(record, "mean_distance")
    return None if not first or last is None else last / first


def role_shift(row: Dict[str, Any]) -> Optional[Tuple[Any, float]]:
    """(phase, embedding shift / mean distance) of an attacked iteration (phase None for single-phase defenses);
    None for iterations without an attack."""
    if not row.get("pgd_steps") or "embedding_shift" not in row or not row.get("mean_distance"):
        return None
    phase = row.get("phase") if row.get("phase") in ROLES else None
    return phase, row["embedding_shift"] / row["mean_distance"]


def normalized_shifts(record: Dict[str, Any]) -> Dict[Any, List[float]]:
    """The normalised embedding shifts of every attacked iteration, by phase."""
    by_phase: Dict[Any, List[float]] = {}
    for row in record["history"]:
        shift = role_shift(row)
        if shift is not None:
            by_phase.setdefault(shift[0], []).append(shift[1])
    return by_phase


def roles(defense: str, phase: Any) -> int:
    """How many triplet roles an iteration of this phase perturbs (the Figure 5 'overall' weight)."""
    return ROLES[phase] if phase is not None else SINGLE_PHASE_ROLES.get(defense, ROLES[None])


def shift_summary(record: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
    """(average, overall) normalised embedding shift over training; overall weighs by the perturbed roles."""
    by_phase = normalized_shifts(record)
    if not by_phase:
        return None, None
    defense = record["model"]["defense"]
    values = [v for phase in by_phase for v in by_phase[phase]]
    overall = [v * roles(defense, phase) for phase in by_phase for v in by_phase[phase]]
    return float(np.mean(values)), float(np.mean(overall))


def collapsed(record: Dict[str, Any]) -> bool:
    separability = last_epoch(record, "separability")
    low_r1 = record["benign"]["R@1"] < CHANCE_FACTOR * record["chance_r1"]
    return low_r1 or (separability is not None and separability < COLLAPSED_SEPARABILITY)


class Results:
    """The records of one study, looked up by model, eps and epochs."""

    def __init__(self, settings: StudySettings, records: Dict[str, Dict[str, Any]]) -> None:
        self.settings, self.records = settings, records

    def of(self, spec: Optional[ModelSpec], eps: Optional[float] = None, epochs: Optional[int] = None) -> List[dict]:
        if spec is None:
            return []
        eps = self.settings.eps if eps is None else eps
        epochs = self.settings.epochs if epochs is None else epochs
        keys = [Job(spec, seed, eps, epochs).key for seed in self.settings.seeds]
        return [self.records[key] for key in keys if key in self.records]

    def metric(self, spec: Optional[ModelSpec], getter: Callable[[dict], Optional[float]], **cell: Any) -> Summary:
        return summarize([getter(record) for record in self.of(spec, **cell)])

    def is_collapsed(self, spec: ModelSpec, **cell: Any) -> Optional[bool]:
        records = self.of(spec, **cell)
        return None if not records else sum(collapsed(r) for r in records) > len(records) / 2


def r1(record: dict) -> float:
    return record["benign"]["R@1"]


def ers_of(record: dict) -> Optional[float]:
    return record["ers"]


def ars_of(record: dict) -> Optional[float]:
    return record["ars"]


def pgd_images(record: dict) -> Optional[float]:
    forward, backward = record.get("pgd_forward_images"), record.get("pgd_backward_images")
    return None if forward is None or backward is None else forward + backward


# ----------------------------------------------------------------------------------------------- verdicts
@dataclass
class Check:
    passed: Optional[bool]  # None: not testable, or inconclusive
    text: str
    inconclusive: bool = False  # a difference within the noise: evidence neither way


def greater(name_a: str, a: Summary, name_b: str, b: Summary, what: str) -> Check:
    if a.n == 0 or b.n == 0:
        return Check(None, f"{what}: {name_a} or {name_b} missing")
    noise = math.sqrt(a.std ** 2 + b.std ** 2)
    sign = ">" if a.mean > b.mean else "<="
    text = f"{what}: {name_a} {a} {sign} {name_b} {b}"
    if abs(a.mean - b.mean) <= noise:
        return Check(None, text + " *(within noise)*", inconclusive=True)
    return Check(a.mean > b.mean, text)


def status(checks: List[Check]) -> str:
    tested = [check.passed for check in checks if check.passed is not None]
    if not tested:
        return "inconclusive (differences within noise)" if any(c.inconclusive for c in checks) else "not tested"
    if all(tested):
        if any(check.inconclusive for check in checks):
            return "reproduced where testable (the other comparisons are within the noise)"
        return "reproduced"
    return "not reproduced" if not any(tested) else "partly reproduced"


def collapse_line(results: Results, spec: ModelSpec) -> str:
    records = results.of(spec)
    if not records:
        return f"{spec.label}: missing"
    return (f"{spec.label}: R@1 {results.metric(spec, r1)} (chance {records[0]['chance_r1']:.1f}), separability "
            f"{_fmt3(results.metric(spec, lambda r: last_epoch(r, 'separability')))}, mean distance last/first epoch "
            f"{_fmt3(results.metric(spec, shrink_ratio))}, collapsed in {sum(map(collapsed, records))}/{len(records)} "
            "seeds")


def verdicts(results: Results) -> List[Tuple[str, List[Check]]]:
    claims = []
    naive = [BY_LABEL[label] for label in ("naive CAP", "naive ANP", "naive TRIDE")]
    ca = BY_LABEL["CA-TRIDE"]
    checks = []
    any_naive_collapsed = any(results.is_collapsed(spec) for spec in naive)
    for spec in naive + [ca]:
        state = results.is_collapsed(spec)
        expected = spec is not ca
        text = f"{'should collapse' if expected else 'should not collapse'}: " + collapse_line(results, spec)
        if not expected and not any_naive_collapsed:  # a contrast: untested when no naive model collapses
            checks.append(Check(None, text + " (not a test: no naive model collapsed, so there is no contrast)"))
            continue
        checks.append(Check(None if state is None else state == expected, text))
    claims.append(("Naive CAP/ANP/TRIDE collapse (R@1 near chance, separability near 0, shrinking distances); "
                   "CA-TRIDE does not", checks))

    hard = BY_LABEL["H-aware TRIDE, prog. alpha off"]
    h_state, c_state = results.is_collapsed(hard), results.is_collapsed(CA_PROGRESSIVE_OFF)
    checks = [Check(None if h_state is None or c_state is None else (h_state and not c_state),
                    f"(a) {collapse_line(results, hard)}; {collapse_line(results, CA_PROGRESSIVE_OFF)}")]
    states = {spec.label: results.is_collapsed(spec) for spec in ZOO}
    groups = {flag: [label for label, state in states.items() if state is flag] for flag in (True, False)}
    for name, getter in (("C", lambda r: last_epoch(r, "collapseness_clean")), ("H", final_hardness)):
        values = {flag: [results.metric(BY_LABEL[label], getter).mean for label in labels]
                  for flag, labels in groups.items()}
        values = {flag: [value for value in group if math.isfinite(value)] for flag, group in values.items()}
        if not values[True] or not values[False]:
            checks.append(Check(None, f"(b) {name} not testable: the zoo has no {'' if values[False] else 'un'}"
                                "collapsed model with this statistic"))
            continue
        low, high = min(values[True]), max(values[False])
        separates = low > high
        text = (f"(b) last-epoch {name}: collapsed models >= {low:.3f}, uncollapsed <= {high:.3f}: "
                f"{'separates' if separates else 'does not separate'} them")
        checks.append(Check(separates if name == "C" else not separates, text))
    claims.append(("C tracks collapse where H does not", checks))

    checks = []
    for label in ("CA-TRIDE", "CA-CAP", "CA-ANP", "naive TRIDE"):
        for index, what in ((0, "average"), (1, "overall")):
            def getter(record, index=index):
                return shift_summary(record)[index]

            checks.append(greater(label, results.metric(BY_LABEL[label], getter), "HM",
                                  results.metric(BY_LABEL["HM"], getter), f"{what} normalised embedding shift"))
    claims.append(("TRIDE's embedding shifts exceed HM's (Figure 5)", checks))

    checks = []
    for other in ("HM", "ACT"):
        spec = BY_LABEL[other]
        for name, getter in (("ERS", ers_of), ("ARS", ars_of)):
            checks.append(greater("CA-TRIDE", results.metric(ca, getter), other, results.metric(spec, getter), name))
        ours, theirs = results.metric(ca, r1), results.metric(spec, r1)
        if ours.n and theirs.n:
            checks.append(Check(ours.mean >= theirs.mean - COMPARABLE_R1_POINTS,
                                f"comparable R@1: CA-TRIDE {ours} vs {other} {theirs}"))
        passes_ours, passes_theirs = results.metric(ca, pgd_images), results.metric(spec, pgd_images)
        if passes_ours.n and passes_theirs.n:
            checks.append(Check(passes_ours.mean < passes_theirs.mean, f"lower cost: PGD image passes CA-TRIDE "
                                f"{passes_ours.mean:.3g} vs {other} {passes_theirs.mean:.3g}"))
        else:
            time_ours = results.metric(ca, lambda r: r["train_seconds"])
            time_theirs = results.metric(spec, lambda r: r["train_seconds"])
            checks.append(greater(other, time_theirs, "CA-TRIDE", time_ours,
                                  "lower cost (training seconds; PGD passes not counted in this build)"))
    claims.append(("CA-TRIDE (16 steps) reaches higher ARS and ERS than HM and ACT (32 steps) at comparable R@1 "
                   "and lower cost", checks))

    checks = []
    for name, getter in (("ERS", ers_of), ("ARS", ars_of)):
        for first, second in (("CA-TRIDE", "CA-CAP"), ("CA-CAP", "CA-ANP")):
            checks.append(greater(first, results.metric(BY_LABEL[first], getter), second,
                                  results.metric(BY_LABEL[second], getter), name))
    claims.append(("Table 3 ordering: CA-TRIDE > CA-CAP > CA-ANP in overall ERS and ARS", checks))

    checks = []
    for name, getter in (("R@1", r1), ("ERS", ers_of), ("ARS", ars_of)):
        for first, second in (("CA-TRIDE", "CA-TRIDE w/o L_TR"), ("CA-TRIDE w/o L_TR", "CA-TRIDE w/o TPR")):
            checks.append(greater(first, results.metric(BY_LABEL[first], getter), second,
                                  results.metric(BY_LABEL[second], getter), name))
    same = identical_training(results, ca, BY_LABEL["CA-TRIDE w/o L_TR"])
    if same:
        checks.append(Check(None, f"note: CA-TRIDE and CA-TRIDE w/o L_TR have identical per-iteration losses in {same} "
                                  "seed(s): L_TR was zero throughout, so the two models are the same"))
    claims.append(("Table 4 ordering: CA-TRIDE > w/o L_TR > w/o TPR in R@1, ERS and ARS", checks))

    reference = BY_LABEL["CA-TRIDE (reference)"]
    checks = [greater("paper variant", results.metric(ca, getter), "reference variant",
                      results.metric(reference, getter), name)
              for name, getter in (("R@1", r1), ("ERS", ers_of), ("ARS", ars_of))]
    claims.append(("The paper variant does better than the released code's (reference) variant", checks))
    return claims


def identical_training(results: Results, first: ModelSpec, second: ModelSpec) -> int:
    """In how many seeds two models trained identically (equal per-iteration losses)."""
    pairs = {record["seed"]: record for record in results.of(first)}
    def losses(record: dict) -> List[float]:
        return [row["loss"] for row in record["history"]]

    return sum(1 for record in results.of(second)
               if record["seed"] in pairs and losses(record) == losses(pairs[record["seed"]]))


def defaults_decision(results: Results) -> Tuple[List[str], str]:
    rows = ["| configuration | R@1 | ERS | ARS | train s |", "|---|---|---|---|---|"]
    summaries = {}
    for label, spec in defaults_configurations():
        summary = tuple(results.metric(spec, getter) for getter in (r1, ers_of, ars_of))
        summaries[label] = summary
        seconds = results.metric(spec, lambda r: r["train_seconds"])
        rows.append(f"| {label} | {summary[0]} | {summary[1]} | {summary[2]} | {seconds} |"
                    if spec is not None else f"| {label} | not expressible in this build | | | |")
    default_label = defaults_configurations()[0][0]
    base = summaries[default_label]
    if base[0].n == 0:
        return rows, "No decision: the default configuration's runs are missing."
    winners = []
    for label, (r1_, ers_, ars_) in summaries.items():
        if label == default_label or r1_.n == 0:
            continue
        better = all(new.mean - old.mean > math.sqrt(new.std ** 2 + old.std ** 2)
                     for new, old in ((ers_, base[1]), (ars_, base[2])))
        if better and r1_.mean >= base[0].mean - DEFAULT_R1_TOLERANCE_POINTS:
            winners.append((ers_.mean + ars_.mean, label))
    compared = sum(1 for label in summaries if label != default_label and summaries[label][0].n)
    if not compared:
        return rows, "No decision: none of the alternative configurations ran."
    if winners:
        return rows, (f"Switch the default to **{max(winners)[1]}**: it beats the default by more than the noise "
                      "in both ERS and ARS without losing R@1 beyond the tolerance.")
    return rows, (f"Keep the default (**{default_label}**): none of the alternatives ({compared} ran) beats it by "
                  "more than the noise in both ERS and ARS at equal R@1.")


# ----------------------------------------------------------------------------------------------- plots
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


DIAGNOSTICS = (("separability", lambda row: row.get("separability")),
               ("mean pairwise distance", lambda row: row.get("mean_distance")),
               ("collapseness C (clean)", lambda row: row.get("collapseness_clean")),
               ("hardness H", hardness_of))


def plot_diagnostics(results: Results, labels: Sequence[str], specs: Dict[str, ModelSpec], title: str,
                     path: str) -> bool:
    present = [label for label in labels if results.of(specs[label])]
    if not present:
        return False
    plt = import_pyplot()
    figure, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(3.2 * len(DIAGNOSTICS), 2.8))
    for axis, (name, getter) in zip(axes, DIAGNOSTICS):
        for label in present:
            axis.plot(curve(results, specs[label], getter), label=label, linewidth=1)
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
    present = [label for label in SHIFT_MODELS if any(normalized_shifts(r) for r in results.of(BY_LABEL[label]))]
    if not present:
        return False
    plt = import_pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3))
    for label in present:
        for phase, role in (("cap", "candidates (CAP)"), ("anp", "anchors (ANP)"), (None, "all roles")):
            def getter(row, phase=phase):
                shift = role_shift(row)
                return shift[1] if shift is not None and shift[0] == phase else None

            values = curve(results, BY_LABEL[label], getter)
            keep = np.flatnonzero(np.isfinite(values))
            if keep.size:
                smoothed = smooth(values[keep])
                x = keep[keep.size - smoothed.size:]
                axes[0].plot(x, smoothed, label=f"{label}: {role}", linewidth=1)
                axes[1].plot(x, smoothed * roles(BY_LABEL[label].defense, phase), linewidth=1)
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


# ----------------------------------------------------------------------------------------------- report
def zoo_tables(results: Results) -> List[str]:
    present = [spec for spec in ZOO if spec.label in results.settings.zoo and results.of(spec)]
    lines = ["| model | defense | R@1 | R@2 | mAP | NMI | ERS | ARS | ARS per-trial | collapsed | train s | "
             "PGD image passes (fwd+bwd) |", "|" + "---|" * 12]
    for spec in present:
        records = results.of(spec)
        cells = [results.metric(spec, lambda r, k=k: r["benign"][k]) for k in ("R@1", "R@2", "mAP", "NMI")]
        passes = results.metric(spec, pgd_images)
        lines.append(
            f"| {spec.label} | `{spec.slug}` | " + " | ".join(map(str, cells)) + f" | {results.metric(spec, ers_of)} | "
            f"{results.metric(spec, ars_of)} | {results.metric(spec, lambda r: r['ars_per_trial'].get('overall'))} | "
            f"{sum(map(collapsed, records))}/{len(records)} | {results.metric(spec, lambda r: r['train_seconds'])} | "
            + (f"{passes.mean:.3g}" if passes.n else "not counted") + " |")
    lines += ["", "Raw attack results (Table 2 units: percent; TMA cosine; ES:D L2), mean ± std over seeds:", "",
              "| model | " + " | ".join(ERS_ATTACKS) + " |", "|" + "---|" * (len(ERS_ATTACKS) + 1)]
    for spec in present:
        lines.append(f"| {spec.label} | " + " | ".join(
            str(results.metric(spec, lambda r, a=a: r["raw"].get(a))) for a in ERS_ATTACKS) + " |")
    for title, key in (("ARS per attack (table mode)", "ars_per_attack"),
                       ("ARS per attack (per trial)", "ars_per_trial")):
        lines += ["", f"{title}:", "", "| model | " + " | ".join(ARS_ATTACKS) + " |",
                  "|" + "---|" * (len(ARS_ATTACKS) + 1)]
        for spec in present:
            lines.append(f"| {spec.label} | " + " | ".join(
                str(results.metric(spec, lambda r, a=a, k=key: r[k].get(a))) for a in ARS_ATTACKS) + " |")
    lines += ["", "Collapse diagnostics (last epoch; shrinkage = mean distance last / first epoch):", "",
              "| model | separability | shrinkage | C (clean) | H | embedding shift / d̄ |", "|---|---|---|---|---|---|"]
    for spec in present:
        lines.append(f"| {spec.label} | {_fmt3(results.metric(spec, lambda r: last_epoch(r, 'separability')))} | "
                     f"{_fmt3(results.metric(spec, shrink_ratio))} | "
                     f"{_fmt3(results.metric(spec, lambda r: last_epoch(r, 'collapseness_clean')))} | "
                     f"{_fmt3(results.metric(spec, final_hardness))} | "
                     f"{_fmt3(results.metric(spec, lambda r: shift_summary(r)[0]))} |")
    return lines


def _shown_path(path: str) -> str:
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative


def _fmt3(summary: Summary) -> str:
    if summary.n == 0:
        return "n/a"
    return f"{summary.mean:.3f} ± {summary.std:.3f}" if summary.n > 1 else f"{summary.mean:.3f}"


def sweep_table(results: Results) -> List[str]:
    naive, ca = BY_LABEL["naive TRIDE"], BY_LABEL["CA-TRIDE"]
    lines = ["| eps | epochs | naive R@1 | naive ERS | naive ARS | naive collapsed | CA R@1 | CA ERS | CA ARS | "
             "CA collapsed | Δ R@1 | Δ ERS | Δ ARS |", "|" + "---|" * 13]
    collapsing = []
    for eps, epochs in sweep_cells(results.settings):
        cell = {"eps": eps, "epochs": epochs}
        values = {name: (results.metric(naive, getter, **cell), results.metric(ca, getter, **cell))
                  for name, getter in (("R@1", r1), ("ERS", ers_of), ("ARS", ars_of))}
        states = [results.is_collapsed(spec, **cell) for spec in (naive, ca)]
        if states[0]:
            collapsing.append(f"eps {_pixels(eps)}, {epochs} epochs")
        deltas = [values[name][1].mean - values[name][0].mean for name in ("R@1", "ERS", "ARS")]
        lines.append(f"| {_pixels(eps)} | {epochs} | " + " | ".join(str(values[n][0]) for n in ("R@1", "ERS", "ARS"))
                     + f" | {_yes_no(states[0])} | " + " | ".join(str(values[n][1]) for n in ("R@1", "ERS", "ARS"))
                     + f" | {_yes_no(states[1])} | " + " | ".join(
                         "n/a" if not math.isfinite(d) else f"{d:+.1f}" for d in deltas) + " |")
    summary = ("Naive TRIDE collapses in: " + "; ".join(collapsing) + ".") if collapsing else \
        "Naive TRIDE collapses in none of the cells."
    return lines + ["", summary + " Δ = CA-TRIDE − naive TRIDE (means over seeds)."]


def _yes_no(state: Optional[bool]) -> str:
    return "n/a" if state is None else ("yes" if state else "no")


def write_report(settings: StudySettings, out: str, report: str, runs: List[Dict[str, Any]],
                 missing: List[str], unavailable: List[str], failures: Dict[str, str]) -> None:
    results = Results(settings, load_records(out))
    figures = os.path.join(os.path.dirname(os.path.abspath(report)), "results")
    os.makedirs(figures, exist_ok=True)
    name = "quick" if settings.quick else "full"
    lines = [f"# Reproduction study ({name} run)", ""]
    if settings.quick:
        lines += ["!!! warning \"Quick run\"", "    This is the output of `--quick` (two models, two epochs, few "
                  "attack steps): it shows the format, not the study's findings.", ""]
    lines += ["Generated by `benchmarks/reproduce.py` from the JSON files in "
              f"`{_shown_path(out)}` (one per model and seed); `--report-only` regenerates this page.", "",
              "## Setup", "", settings.describe() + ".", "",
              f"Cost choices (not tuned toward the paper's numbers): a small CNN at {settings.image_size}x"
              f"{settings.image_size} instead of ResNet-18 at 224, few epochs, and a fixed subset of attacked queries "
              "(the pool is always the whole test split)."
              + (f" The zoo trains and is attacked at eps {_pixels(settings.eps)}"
                 + (" because 8x8 digits upsampled barely move at 8/255 (the demo's measurement: R@1 93.2% before "
                    "and 70.8% after ES at 8/255 on an undefended model)." if settings.dataset == "digits" else "."))
              + " The sweep varies eps.", "",
              "Runs:", ""]
    for run in runs:
        lines.append(f"- `{run['command']}` on {run['machine']['platform']} ({run['machine']['cpu_count']} CPUs"
                     f"{', ' + run['machine']['gpu'] if run['machine'].get('gpu') else ''}, torch "
                     f"{run['machine']['torch']}), device {run['device']}, {run['workers']} worker(s), started "
                     f"{run['started']}, {run['jobs_run']} jobs in {run['wall_seconds'] / 60:.1f} min wall")
    provenance = os.path.join(out, PROVENANCE_FILE)
    if os.path.exists(provenance):  # how the runs above relate to the code (written by whoever ran them)
        with open(provenance) as handle:
            lines += ["", handle.read().strip()]
    total = sum(record["job_seconds"] for record in results.records.values())
    lines += ["", f"{len(results.records)} jobs, {total / 60:.1f} job-minutes in all (the sum of their wall times).",
              ""]
    if missing or unavailable or failures:
        lines += ["## Missing", ""]
        lines += [f"- not available in this build (no such defense or option): {', '.join(unavailable)}"] \
            if unavailable else []
        lines += [f"- not run (time budget or interrupted): {', '.join(missing)}"] if missing else []
        lines += [f"- failed: `{key}`: {text.strip().splitlines()[-1]}" for key, text in failures.items()]
        lines.append("")
    lines += ["## The zoo", "", "Mean ± std over seeds.", ""] + zoo_tables(results)
    if has_pyplot():
        lines += ["", "## Over training (Figures 4 and 5)", ""]
        specs = {**BY_LABEL, CA_PROGRESSIVE_OFF.label: CA_PROGRESSIVE_OFF}
        if plot_diagnostics(results, OVER_TRAINING, specs, "Collapse diagnostics over training (seed mean)",
                            os.path.join(figures, "over_training.png")):
            lines += ["![collapse diagnostics over training](results/over_training.png)", ""]
        aware = ("H-aware TRIDE, prog. alpha off", CA_PROGRESSIVE_OFF.label)
        if any(results.of(specs[label]) for label in aware) and plot_diagnostics(
                results, ("NT", "naive TRIDE") + aware, specs, "C-aware vs H-aware TRIDE, progressive alpha off",
                os.path.join(figures, "c_vs_h.png")):
            lines += ["![C-aware vs H-aware](results/c_vs_h.png)", ""]
        if plot_shifts(results, os.path.join(figures, "embedding_shift.png")):
            lines += ["![embedding shift per perturbed role](results/embedding_shift.png)", ""]
    else:
        lines += ["", "(matplotlib is not installed: no plots)", ""]
    if "defaults" in settings.studies:
        rows, decision = defaults_decision(results)
        lines += ["## Defaults: perturb and anchors", "", "CA-TRIDE with `perturb` unique vs per_triplet and with "
                  "every-image anchors (TrideMiner) vs SPC-2 anchors (the paper's 56 triplets per 112 images).", ""]
        lines += rows + ["", "**Decision** (rule below): " + decision, ""]
    if "sweep" in settings.studies:
        lines += ["## Where collapse starts: eps x training length", ""] + sweep_table(results) + [""]
    lines += ["## Verdicts", "", "Rules (fixed before the numbers, in `benchmarks/reproduce.py`):", "", RULES, "",
              CAVEATS, ""]
    for claim, checks in verdicts(results):
        lines += [f"### {claim}: **{status(checks)}**", ""] + [
            f"- {'pass' if c.passed else ('n/a' if c.passed is None else 'fail')}: {c.text}" for c in checks] + [""]
    reading = os.path.join(out, READING_FILE)
    if os.path.exists(reading):  # a person's reading of the verdicts above, kept with the records it reads
        with open(reading) as handle:
            lines += ["## Reading", "", handle.read().strip(), ""]
    with open(report, "w") as handle:
        handle.write("\n".join(lines).rstrip() + "\n")


# ----------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two models, 2 epochs, 2 seeds, 4 attack steps (CI)")
    parser.add_argument("--dataset", choices=["digits", "image-folder"], default="digits")
    parser.add_argument("--data-root", help="for image-folder: a folder with one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=None, help="default: 16 for digits, 32 for image-folder")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 10; quick 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0 1)")
    parser.add_argument("--eval-steps", type=int, default=None, help="attack steps (default 32; quick 4)")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="attacked query batches of 112 (default 2; quick 1; 0: every test image)")
    parser.add_argument("--models", nargs="+", choices=[spec.label for spec in ZOO], default=None,
                        help="only these zoo models (default: all 16; quick: NT and CA-TRIDE)")
    parser.add_argument("--studies", nargs="+", choices=list(StudySettings.studies), default=None,
                        help="default: zoo claims defaults sweep (quick: zoo)")
    parser.add_argument("--eps", type=pixel_value, default=None,
                        help="the zoo's training and attack budget (default 16/255 for digits, 8/255 otherwise)")
    parser.add_argument("--sweep-eps", type=pixel_value, nargs="+", default=None,
                        help="eps values of the sweep (default 8/255 16/255 32/255)")
    parser.add_argument("--workers", type=int, default=1, help="parallel jobs, one thread each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="JSON folder (default benchmarks/results/<quick|full>)")
    parser.add_argument("--report", default="docs/results.md", help="the Markdown report; plots go to results/ "
                        "next to it")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the JSON files")
    parser.add_argument("--time-budget", type=float, default=None, help="start no job after this many seconds")
    return parser


def settings_from(args: argparse.Namespace) -> StudySettings:
    settings = StudySettings(**QUICK) if args.quick else StudySettings()
    image_size = args.image_size or (DEFAULT_IMAGE_SIZES["digits"] if args.dataset == "digits" else 32)
    settings = replace(settings, dataset=args.dataset, data_root=args.data_root, image_size=image_size)
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    if args.seeds is not None:
        settings = replace(settings, seeds=tuple(args.seeds))
    if args.eval_steps is not None:
        settings = replace(settings, eval_steps=args.eval_steps)
    if args.max_batches is not None:
        settings = replace(settings, max_batches=args.max_batches or None)
    if args.models is not None:
        settings = replace(settings, zoo=tuple(args.models))
    if args.eps is not None or args.dataset != "digits":
        settings = replace(settings, eps=args.eps if args.eps is not None else PAPER_EPS)
    if args.sweep_eps is not None:
        settings = replace(settings, sweep_eps=tuple(args.sweep_eps))
    if args.studies is not None:
        settings = replace(settings, studies=tuple(args.studies))
    return settings


def check_settings(out: str, settings: StudySettings) -> None:
    """Refuse to mix JSON files made with settings that change a job's result into this study."""
    expected = json.loads(json.dumps(asdict(settings)))
    for name, record in load_records(out).items():
        differing = sorted(key for key in expected
                           if key not in PLAN_ONLY_SETTINGS and record["settings"].get(key) != expected[key])
        if differing:
            raise SystemExit(f"{out}/{name}.json was made with other settings ({', '.join(differing)}): use another "
                             "--out or the same options")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    if args.dataset == "image-folder" and not args.data_root:
        raise SystemExit("--dataset image-folder needs --data-root DIR (one sub-folder per class)")
    settings = settings_from(args)
    out = args.out or os.path.join("benchmarks", "results", "quick" if settings.quick else "full")
    os.makedirs(out, exist_ok=True)
    check_settings(out, settings)
    jobs, unavailable = plan(settings)
    runs_path = os.path.join(out, "_runs.json")
    runs = json.load(open(runs_path)) if os.path.exists(runs_path) else []
    failures: Dict[str, str] = {}
    if not args.report_only:
        done = set(load_records(out))
        todo = [job for job in jobs if job.key not in done]
        print(f"reproduce: {settings.describe()}\n{len(jobs)} jobs planned, {len(jobs) - len(todo)} already in "
              f"{out}" + (f"; not available in this build: {', '.join(unavailable)}" if unavailable else ""),
              flush=True)
        train_set, _ = load_data(settings)
        iterations = max(1, len(train_set) // settings.batch_size)
        started, wall = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
        failures = run_jobs(todo, settings, args.device, out, args.workers, args.time_budget, iterations)
        runs.append({"command": shlex.join(["python", "benchmarks/reproduce.py"] + argv), "machine": machine(),
                     "device": args.device, "workers": args.workers, "started": started, "jobs_run": len(todo),
                     "wall_seconds": time.monotonic() - wall})
        with open(runs_path, "w") as handle:
            json.dump(runs, handle, indent=1)
    records = load_records(out)
    missing = [job.key for job in jobs if job.key not in records and job.key not in failures]
    write_report(settings, out, args.report, runs, missing, unavailable, failures)
    print(f"report: {args.report} ({len(records)} of {len(jobs)} jobs)" +
          (f"; {len(missing)} missing" if missing else "") + (f"; {len(failures)} failed" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
