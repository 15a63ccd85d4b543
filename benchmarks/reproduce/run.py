"""Running the jobs: one training and ten-attack evaluation per job, one JSON record each, in a process pool."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from pml_tride.datasets import build_dataset
from pml_tride.evaluation import RobustnessEvaluator, chance_recall_at_1
from pml_tride.evaluation.benign import BASE_RECALL
from pml_tride.models import small_cnn_embedder
from pml_tride.recipes import train_embedder
from pml_tride.samplers import PAIR_SIZE, SPC2Sampler
from pml_tride.trainers import TrideTrainer

from .plan import Job, StudySettings, estimated_seconds

HISTORY_KEYS = ("epoch", "iteration", "phase", "loss", "collapseness_clean", "separability", "mean_distance",
                "embedding_shift", "num_perturbed", "pgd_steps", "hardness_clean", "embedding_shift_anchor",
                "embedding_shift_positive", "embedding_shift_negative", "assist_steps")
PGD_KEYS = ("pgd_forward_images", "pgd_backward_images")
HISTORY_DIGITS = 6
# How a job's model is trained: (job, model, train set, settings, batch size, device) -> (trainer, training seconds).
TrainFunction = Callable[[Job, torch.nn.Module, Any, StudySettings, int, torch.device], Tuple[TrideTrainer, float]]


def load_data(settings: StudySettings, entanglement: Optional[float] = None):
    """The train and test splits; the entangled data set takes the cell's entanglement."""
    extra = {} if entanglement is None else {"entanglement": entanglement, "subclasses": settings.subclasses}
    return tuple(build_dataset(settings.dataset, root=settings.data_root, split=split, image_size=settings.image_size,
                               **extra) for split in ("train", "test"))


def epoch_iterations(settings: StudySettings) -> int:
    """Training iterations per epoch: the setting, else the training split in batches."""
    if settings.iterations_per_epoch is not None:
        return settings.iterations_per_epoch
    train_set, _ = load_data(settings, settings.cells()[0].entanglement)
    return max(1, len(train_set) // settings.batch_size)


def machine() -> Dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def train_defense(job: Job, model: torch.nn.Module, train_set, settings: StudySettings, batch_size: int,
                  device: torch.device) -> Tuple[TrideTrainer, float]:
    """Train a model of the zoo: its named defense through ``pml_tride.recipes.train_embedder``."""
    return train_embedder(
        model, train_set, defense=job.model.defense, epochs=job.epochs, batch_size=batch_size,
        lr=settings.lr, eps=job.eps, alpha=job.eps * settings.train_alpha_ratio, seed=job.seed,
        device=device, loss_overrides=dict(job.model.loss_overrides) or None,
        miner_overrides=dict(job.model.miner_overrides) or None,
        sampler=SPC2Sampler(torch.as_tensor(train_set.labels), seed=job.seed),
        iterations_per_epoch=settings.iterations_per_epoch,
    )


def run_job(job: Job, settings: StudySettings, device: str, out: str,
            train: TrainFunction = train_defense) -> Dict[str, Any]:
    """Train (with ``train``) and evaluate one job single-threaded; write and return its record."""
    torch.set_num_threads(1)
    logging.getLogger("PML").setLevel(logging.ERROR)  # 'models is missing "embedder"': PML adds the identity
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
    started, cpu_started = time.time(), time.process_time()
    train_set, test_set = load_data(settings, job.entanglement)
    # a data set smaller than one batch trains on one batch of all its same-class pairs
    batch_size = min(settings.batch_size, len(train_set) // PAIR_SIZE * PAIR_SIZE)
    torch.manual_seed(job.seed)
    model = small_cnn_embedder(in_channels=train_set[0][0].shape[0], embedding_dim=settings.embedding_dim,
                               width=settings.width)
    with contextlib.redirect_stderr(io.StringIO()):  # PML's per-iteration progress bars, one per job and epoch
        trainer, train_seconds = train(job, model, train_set, settings, batch_size, torch.device(device))
    evaluator = RobustnessEvaluator(eps=job.eps, alpha=job.eps * settings.eval_alpha_ratio, steps=settings.eval_steps,
                                    seed=job.seed, device=device, progress=False, max_batches=settings.max_batches)
    report = evaluator.evaluate(model, test_set)
    history = [{key: _rounded(row[key]) for key in HISTORY_KEYS + PGD_KEYS if key in row} for row in trainer.history]
    counted = {key: sum(row.get(key, 0) for row in history) for key in PGD_KEYS}
    record = {
        "key": job.key, "label": job.model.label, "model": asdict(job.model), "seed": job.seed, "eps": job.eps,
        "entanglement": job.entanglement, "epochs": job.epochs, "settings": asdict(settings), "device": device,
        "machine": machine(), "benign": report.benign, "raw": report.raw, "ers": report.ers,
        "ers_per_attack": report.ers_per_attack, "ars": report.ars, "ars_per_attack": report.ars_per_attack,
        "ars_per_trial": report.ars_per_trial, "ars_excluded": report.ars_excluded,
        "chance_r1": chance_recall_at_1(test_set.labels), "base_r1": report.benign.get(BASE_RECALL),
        "test_entanglement": report.entanglement,
        "train_seconds": train_seconds,
        "eval_seconds": report.settings["total_seconds"], "job_seconds": time.time() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "iterations": len(history), **counted, "history": history,
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


def run_job_safely(job: Job, settings: StudySettings, device: str, out: str,
                   train: TrainFunction = train_defense) -> Tuple[str, Any]:
    try:
        return "ok", run_job(job, settings, device, out, train)
    except Exception:  # a failed job is reported, the others go on
        return "error", traceback.format_exc()


def estimate_line(jobs: List[Job], settings: StudySettings, workers: int, iterations_per_epoch: int) -> str:
    total = sum(estimated_seconds(job, settings, iterations_per_epoch) for job in jobs)
    return (f"{len(jobs)} jobs to run, estimated {total / 60:.0f} core-minutes (~{total / 60 / workers:.1f} min on "
            f"{workers} worker(s); cost model calibrated on a shared 2-core CPU)")


def run_jobs(jobs: List[Job], settings: StudySettings, device: str, out: str, workers: int,
             time_budget: Optional[float], iterations_per_epoch: int,
             train: TrainFunction = train_defense) -> Dict[str, str]:
    """Run the jobs (a process pool when workers > 1), each trained with ``train``; returns the failures (key ->
    traceback)."""
    costs = {job.key: estimated_seconds(job, settings, iterations_per_epoch) for job in jobs}
    jobs = sorted(jobs, key=lambda job: (job.priority, -costs[job.key]))  # the zoo first; long jobs early in each
    print(estimate_line(jobs, settings, workers, iterations_per_epoch), flush=True)
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
            status, result = run_job_safely(job, settings, device, out, train)
            count += 1
            finished(job, status, result, count)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            running = {}
            while pending or running:
                while pending and len(running) < workers and budget_left():
                    job = pending.pop(0)
                    running[pool.submit(run_job_safely, job, settings, device, out, train)] = job
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
