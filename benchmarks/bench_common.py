"""Helpers shared by the benchmark scripts: batches, the lower bound of an adversarial step, timing, a time budget.

The scripts put ``benchmarks/`` first on ``sys.path`` (Python does so for the script's folder), so they import this
module as ``bench_common``. When pml_tride is not installed, importing this module puts the repository root on
``sys.path`` so that ``python benchmarks/<script>.py`` runs from a plain checkout.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

REPOSITORY = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("pml_tride") is None:
    sys.path.insert(0, str(REPOSITORY))

# Seconds to wait for git when recording the commit a measurement ran on.
GIT_TIMEOUT = 10

# The paper's step size (1/255) for the bound's signed steps: any value gives the same cost.
BOUND_STEP_SIZE = 1 / 255

Triplets = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``function()``, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def pair_batch(pairs: int, image_size: int, generator: torch.Generator, channels: int = 3):
    """SPC-2 batch (a0, p0, a1, p1, ...) with one triplet per pair: (2i, 2i+1, a random other-class image)."""
    images = torch.rand(2 * pairs, channels, image_size, image_size, generator=generator)
    labels = torch.arange(pairs).repeat_interleave(2)
    anchors = torch.arange(0, 2 * pairs, 2)
    offsets = torch.randint(1, pairs, (pairs,), generator=generator)
    negatives = 2 * ((torch.arange(pairs) + offsets) % pairs) + torch.randint(0, 2, (pairs,), generator=generator)
    return images, labels, (anchors, anchors + 1, negatives)


@dataclass
class AttackRecord:
    """One PGD call of a defense: how many images it perturbed, how many signed steps it took, and the images it
    pushed through the model forward and backward (the engine's counters when it has them, else images x
    iterations: one forward per iteration, the early-stop check included, one backward per step), and the images
    the defense embedded without grad for this attack's objective (the ones that stay clean)."""

    images: int
    steps: int
    forward_images: int = 0
    backward_images: int = 0
    clean_images: int = 0

    @property
    def forward_only_images(self) -> int:
        """Images the attack pushed forward without a backward: the stop check's forward of the final iterate."""
        return self.forward_images - self.backward_images


@dataclass
class AttackRecorder:
    """Wraps a defense's :meth:`attack` (an instance attribute shadowing the method) to record every PGD call,
    without turning on the loss's statistics (they add host syncs the bound does not have)."""

    loss: nn.Module
    records: List[AttackRecord] = field(default_factory=list)

    clean_images: int = 0

    def __post_init__(self) -> None:
        original = self.loss.attack

        def recording_attack(images, objective, stop_condition=None):
            result = original(images, objective, stop_condition)
            iterations = result.steps_taken + int(result.stopped_early)
            forward = getattr(result, "forward_images", None)
            backward = getattr(result, "backward_images", None)
            self.records.append(AttackRecord(
                len(images), result.steps_taken,
                forward if forward is not None else len(images) * iterations,
                backward if backward is not None else len(images) * result.steps_taken,
                self.clean_images,
            ))
            self.clean_images = 0
            return result

        object.__setattr__(self.loss, "attack", recording_attack)
        original_constant = getattr(self.loss, "constant_embeddings", None)
        if original_constant is not None:
            def recording_constant_embeddings(images):
                self.clean_images += len(images)
                return original_constant(images)

            object.__setattr__(self.loss, "constant_embeddings", recording_constant_embeddings)

    def take(self) -> List[AttackRecord]:
        """The records since the last call, cleared."""
        records, self.records = self.records, []
        return records


def input_gradient_passes(model: nn.Module, images: torch.Tensor, steps: int, sync_every_step: bool = False
                          ) -> torch.Tensor:
    """``steps`` signed-gradient steps on ``images`` (eval mode, frozen parameters): the irreducible work of a PGD
    attack. ``sync_every_step`` reads the loss on the host every step, as an early-stop check does."""
    flags = [parameter.requires_grad for parameter in model.parameters()]
    training = model.training
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adversarial = images.detach().clone()
    try:
        for _ in range(steps):
            adversarial.requires_grad_(True)
            loss = model(adversarial).float().sum()
            if sync_every_step:
                loss.item()
            (gradient,) = torch.autograd.grad(loss, adversarial)
            adversarial = (adversarial.detach() + BOUND_STEP_SIZE * gradient.sign()).clamp(0, 1)
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
        model.train(training)
    return adversarial.detach()


def eval_forwards(model: nn.Module, images: torch.Tensor, count: int) -> None:
    """Embed ``count`` images (rows of ``images`` repeated) in eval mode without grad."""
    if count <= 0:
        return
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images[torch.arange(count, device=images.device) % len(images)])
    finally:
        model.train(training)


def lower_bound_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                     records: Sequence[AttackRecord], margin: float, triplets: Triplets,
                     autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                     required_forwards: bool = False) -> None:
    """The work any implementation of an adversarial training step must do: for each PGD call of the defense,
    its steps of input-gradient passes on exactly as many images as it perturbed, then one training pass (forward
    of the batch and of the adversarial images, a triplet loss, backward, optimizer step).

    ``required_forwards`` adds the forwards without grad that the method's definition needs beyond those passes:
    the clean embeddings of the images its objective keeps clean, and the early stop's forward of the final
    iterate (the stop is decided on the loss there)."""
    adversarial = []
    with autocast():
        for record in records:
            rows = torch.arange(record.images, device=images.device) % len(images)
            if required_forwards:
                eval_forwards(model, images, record.clean_images + record.forward_only_images)
            adversarial.append(input_gradient_passes(model, images[rows], record.steps))
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        embeddings = model(images)
        anchors = triplets[0]
        count = len(anchors)
        perturbed = [model(batch) for batch in adversarial] or [embeddings]
        first, last = perturbed[0], perturbed[-1]
        first_rows = torch.arange(count, device=images.device) % len(first)
        last_rows = torch.arange(count, device=images.device) % len(last)
        distance = torch.nn.functional.pairwise_distance
        loss = torch.relu(distance(embeddings[anchors], first[first_rows])
                          - distance(embeddings[anchors], last[last_rows]) + margin).mean()
        loss = loss + sum(batch.sum() * 0 for batch in perturbed[1:-1])
    loss.backward()
    optimizer.step()


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_func: nn.Module, images: torch.Tensor,
                  labels: torch.Tensor, triplets: Triplets,
                  autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                  inputs: Optional[torch.Tensor] = None) -> None:
    """One step of a plain PML loop with an adversarial loss: forward, loss (with its attack), backward, step.
    ``inputs``: pass the images to the loss explicitly (else its forward hook captures them)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        embeddings = model(images)
        loss = loss_func(embeddings, labels, triplets) if inputs is None else loss_func(
            embeddings, labels, triplets, inputs=inputs)
    loss.backward()
    optimizer.step()


@dataclass
class DefenseStep:
    """A defense's training step (:func:`training_step`, its PGD calls recorded) and its lower bounds
    (:func:`lower_bound_step`) on the same model, optimizer and batch: the three callables :func:`time_pairs` times."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    triplets: Triplets
    autocast: Callable[[], ContextManager] = contextlib.nullcontext
    inputs: Optional[torch.Tensor] = None
    recorder: AttackRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.recorder = AttackRecorder(self.loss)

    def step(self) -> List[AttackRecord]:
        """One training step; the records of its PGD calls."""
        training_step(self.model, self.optimizer, self.loss, self.images, self.labels, self.triplets, self.autocast,
                      self.inputs)
        return self.recorder.take()

    def bound(self, records: Sequence[AttackRecord], required_forwards: bool = False) -> None:
        lower_bound_step(self.model, self.optimizer, self.images, records, self.loss.margin, self.triplets,
                         self.autocast, required_forwards=required_forwards)

    def required(self, records: Sequence[AttackRecord]) -> None:
        """The bound plus the forwards the method's definition requires."""
        self.bound(records, required_forwards=True)


@dataclass
class PairedTimes:
    """Times of a measured step and of its bound, taken one right after the other; ``result``: what the last timed
    step returned."""

    step: List[float] = field(default_factory=list)
    bound: List[float] = field(default_factory=list)
    required: List[float] = field(default_factory=list)
    result: Any = None

    @property
    def ratio_of_minima(self) -> float:
        """The headline ratio: interference only ever adds time, so the minima estimate the intrinsic costs."""
        return min(self.step) / min(self.bound)

    @property
    def median_ratio(self) -> float:
        return statistics.median(step / bound for step, bound in zip(self.step, self.bound))

    @property
    def ratio_to_required(self) -> Optional[float]:
        """Step over the bound with the method's required forwards (``lower_bound_step(required_forwards=True)``)."""
        return min(self.step) / min(self.required) if self.required else None


def time_pairs(step: Callable[[], Any], bound: Callable[[Any], None], device: torch.device, repeats: int,
               required: Optional[Callable[[Any], None]] = None) -> PairedTimes:
    """``repeats`` times: ``step()`` timed, then right after it ``bound(result)`` on what it returned (and
    ``required(result)`` when given)."""
    times = PairedTimes()
    for _ in range(repeats):
        times.step.append(timed(lambda: setattr(times, "result", step()), device))
        times.bound.append(timed(lambda: bound(times.result), device))
        if required is not None:
            times.required.append(timed(lambda: required(times.result), device))
    return times


class Budget:
    """A wall-clock budget in seconds shared out over the remaining measurements by weight."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def repeats(self, seconds_per_repeat: float, share: float, maximum: int, minimum: int = 1) -> int:
        """How many repeats of ``seconds_per_repeat`` fit into ``share`` of the time left (at least ``minimum``)."""
        allowance = max(self.left(), 0.0) * share
        return max(minimum, min(maximum, int(allowance / max(seconds_per_repeat, 1e-9))))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def describe_records(records: Sequence[AttackRecord]) -> str:
    return " + ".join(f"{record.images}x{record.steps}" for record in records) or "no attack"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} torch threads)"


def optional_float(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _git(*arguments: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True, timeout=GIT_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance(device: torch.device) -> Dict[str, Any]:
    """What a figure needs next to it: the commit (``+dirty`` with uncommitted changes; None outside a git
    checkout), torch, Python, the device and the UTC date."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit is not None and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return {"commit": commit, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "device": device_name(device), "machine": platform.machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_json(path: str, payload: Dict[str, Any], device: torch.device) -> None:
    """Write ``payload`` with its :func:`provenance` as the ``provenance`` entry."""
    Path(path).write_text(json.dumps({"provenance": provenance(device), **payload}, indent=2, default=str))
