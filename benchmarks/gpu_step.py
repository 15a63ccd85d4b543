"""GPU cost of CA-TRIDE and HM at the paper's scale (ResNet-18, 224x224, batch 112, 512-d) and evaluation throughput.

One command on any CUDA machine; prints a markdown table (and writes it as JSON with ``--out``):

    python benchmarks/gpu_step.py --out gpu_step.json             # ~150 s by default (--budget-seconds)
    python benchmarks/gpu_step.py --device cpu --tiny             # dry run of the script itself on a CPU (seconds)

Measured, each training step timed right next to its bound (the work any implementation must do: the input-gradient
passes on exactly the images the defense perturbed, times the steps it took, plus one training pass):

* CA-TRIDE CAP and ANP steps with all 16 PGD steps (``awareness="none"``: the worst case of the early stop), and
  CA-TRIDE as shipped (collapse-aware early stop; on random weights the stop point is not the trained model's);
* HM (all 32 steps: the unbounded destination, the worst case of the saturation stop) as robrank runs it
  (``perturb="per_triplet"``: copies of A, P and N) and with unique images;
* the cost of one host sync per PGD step (the early-stop check reads the loss on the host): bound passes with a
  ``.item()`` per step against the same passes without;
* evaluation throughput: every attack of the ten-attack suite on one batch against a CUB-sized pool, attacked
  images per second, and its ratio to the bound (32 input-gradient passes + 2 embeddings of the batch);
* options, each against the plain run: bf16 autocast, channels_last, both, and ``torch.compile`` of the model the
  attack runs (the pass alone, then a CAP step), each kept only if it pays.

Needs torch, torchvision, pytorch-metric-learning and its dependencies (numpy, scipy, scikit-learn, tqdm); not faiss.
From the step times it projects the wall time of the paper's CUB run (5,864 training images, 100 epochs) next to
the paper's 470 minutes (CA-TRIDE) and 550 minutes (HM). Every measurement runs in its own try/except: a failure
prints ``failed: <reason>`` and the rest still runs; the time budget is respected by measuring fewer repeats.
Without CUDA the script refuses (exit code 2) unless ``--device cpu --tiny``. The budgeted sections are
``budgeted_sections.py``'s, the table and projection ``gpu_step_report.py``'s, the step and bound ``bench_common.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from bench_common import (
    DefenseStep,
    PairedTimes,
    describe_records,
    device_name,
    input_gradient_passes,
    pair_batch,
    timed,
)
from budgeted_sections import BudgetedSections
from gpu_step_report import PAPER_EPOCHS, PAPER_MINUTES, kept_options, print_report, projection

CUB_TEST_IMAGES = 5924
CUB_TEST_CLASSES = 100
EVAL_STEPS, EVAL_ALPHA = 32, 3 / 255
TRIDE_STEPS, HM_STEPS = 16, 32
REFUSAL_EXIT_CODE = 2
# Share of the remaining budget each section may spend (relative weights).
SECTION_WEIGHTS = {"pass": 1, "cap": 2, "anp": 2, "ca-tride": 2, "hm": 4, "hm-unique": 3, "sync": 1, "eval": 5,
                   "bf16": 2, "channels_last": 2, "bf16+channels_last": 2, "compile-pass": 4, "compile-step": 4}
MAX_REPEATS = 5
# Repeats of each attack of the suite (after one warm-up): GPU timings are steady, the suite has nine attacks.
EVAL_MAX_REPEATS = 2
# Graphs torch.compile builds for a CAP step: attack (eval, input grad), clean anchors (eval, no grad), training.
COMPILED_STEP_GRAPHS = 3
# Budget needed to start compiling (inductor compiles ResNet-18's forward and backward in about a minute).
COMPILE_MIN_SECONDS = 45


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="dry run: small CNN, 16x16 images, batch 8, 1 repeat, compile with the eager backend")
    parser.add_argument("--budget-seconds", type=float, default=150.0,
                        help="wall-clock budget; fewer repeats are measured to respect it (default 150)")
    parser.add_argument("--out", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--pairs", type=int, default=56, help="SPC-2 pairs per batch (112 images, as the paper)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--embedding-dim", type=int, default=512)
    parser.add_argument("--pool-size", type=int, default=CUB_TEST_IMAGES, help="evaluation pool (CUB test set)")
    parser.add_argument("--max-repeats", type=int, default=MAX_REPEATS)
    parser.add_argument("--options", default="bf16,channels_last,compile",
                        help="comma-separated options to measure against the plain run ('' for none)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; tiny: eager)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tiny:
        args.pairs, args.image_size, args.embedding_dim, args.pool_size = 4, 16, 16, 64
        args.max_repeats = 1
        args.compile_backend = args.compile_backend or "eager"
    args.compile_backend = args.compile_backend or "inductor"
    return args


def refusal(args: argparse.Namespace) -> Optional[str]:
    """Why the script will not run here, or None."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return (f"gpu_step.py needs a CUDA GPU, but torch.cuda.is_available() is False here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a CUDA machine, or dry-run "
                "the script on the CPU with --device cpu --tiny")
    if device.type != "cuda" and not args.tiny:
        return (f"gpu_step.py measures the GPU path; --device {args.device} is only allowed with --tiny "
                "(a dry run of the script itself)")
    return None


class GpuStepBenchmark(BudgetedSections):
    """Runs the sections in order within the budget and collects the table rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(SECTION_WEIGHTS, args.budget_seconds, torch.device(args.device), args.max_repeats, args.out)
        self.args = args
        self.compile_seconds: Optional[float] = None
        generator = torch.Generator().manual_seed(args.seed)
        images, labels, triplets = pair_batch(args.pairs, args.image_size, generator)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.triplets = tuple(index.to(self.device) for index in triplets)
        torch.manual_seed(args.seed)
        self.model = self.build_model().to(self.device)
        self.options = [option for option in args.options.split(",") if option]

    def build_model(self) -> torch.nn.Module:
        from pml_tride.models import resnet18_embedder, small_cnn_embedder

        if self.args.tiny:
            return small_cnn_embedder(in_channels=3, embedding_dim=self.args.embedding_dim, width=4)
        return resnet18_embedder(embedding_dim=self.args.embedding_dim, weights=None)

    def fresh(self, memory_format: Optional[torch.memory_format] = None):
        model = copy.deepcopy(self.model)
        images = self.images
        if memory_format is not None:
            model = model.to(memory_format=memory_format)
            images = images.contiguous(memory_format=memory_format)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        return model, optimizer, images

    # ----------------------------------------------------------------- defenses
    def tride_loss(self, phase: str, awareness: str):
        from pml_tride import TrideLoss

        def build(model):
            return TrideLoss(model, phase=phase, awareness=awareness, steps=TRIDE_STEPS, progressive_alpha=False)

        return build

    def hm_loss(self, perturb: str):
        import pml_tride

        hm_class = getattr(pml_tride, "HMLoss", None)
        if hm_class is None:
            return None

        def build(model):
            # every step taken (the worst case of the saturation stop, as CA-TRIDE's rows take all 16): the
            # unbounded destination pushes the same A, P, N images through the same passes per step as the ET loss
            loss = hm_class(model, steps=HM_STEPS, perturb=perturb, destination="unbounded")
            loss.set_epoch(PAPER_EPOCHS // 2, PAPER_EPOCHS)
            return loss

        return build

    # ----------------------------------------------------------------- sections
    def run(self) -> None:
        self.plan(self.planned_sections())
        self.section("pass", "input-gradient pass (batch)", self.measure_pass)
        self.section("cap", "CA-TRIDE CAP, all 16 steps", lambda share: self.measure_defense(
            "CA-TRIDE CAP, all 16 steps", self.tride_loss("cap", "none"), share))
        self.section("anp", "CA-TRIDE ANP, all 16 steps", lambda share: self.measure_defense(
            "CA-TRIDE ANP, all 16 steps", self.tride_loss("anp", "none"), share))
        self.section("ca-tride", "CA-TRIDE (early stop), CAP+ANP", self.measure_ca_tride)
        for name, perturb, label in (("hm", "per_triplet", "HM, all 32 steps, per-triplet A/P/N copies (robrank)"),
                                     ("hm-unique", "unique", "HM, all 32 steps, unique images")):
            build = self.hm_loss(perturb)
            if build is None:
                self.share(name)
                self.add_row(label, note="HM: not available (pml_tride.HMLoss not importable)")
                self.progress(label)
                continue
            self.section(name, label, lambda share, build=build, label=label: self.measure_defense(label, build, share))
        self.section("sync", "PGD loop: a host sync per step", self.measure_sync)
        self.section("eval", "evaluation: ten-attack suite", self.measure_evaluation)
        option_sections = {
            "bf16": ("CAP step, bf16 autocast", dict(autocast=self.bf16)),
            "channels_last": ("CAP step, channels_last", dict(memory_format=torch.channels_last)),
            "bf16+channels_last": ("CAP step, bf16 + channels_last",
                                   dict(autocast=self.bf16, memory_format=torch.channels_last)),
        }
        for name, (label, kwargs) in option_sections.items():
            if name in self.planned_sections():
                self.section(name, label, lambda share, label=label, kwargs=kwargs: self.measure_defense(
                    label, self.tride_loss("cap", "none"), share, **kwargs))
        if "compile" in self.options:
            self.section("compile-pass", "input-gradient pass, torch.compile", self.measure_compiled_pass)
            self.section("compile-step", "CAP step, attack model torch.compile'd", self.measure_compiled_step)

    def planned_sections(self) -> List[str]:
        planned = ["pass", "cap", "anp", "ca-tride", "hm", "hm-unique", "sync", "eval"]
        planned += [name for name in ("bf16", "channels_last") if name in self.options]
        if "bf16" in self.options and "channels_last" in self.options:
            planned.append("bf16+channels_last")
        if "compile" in self.options:
            planned += ["compile-pass", "compile-step"]
        return planned

    def bf16(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model, backend=self.args.compile_backend)

    def measure_defense(self, label: str, build_loss, share: float, memory_format=None,
                        autocast=contextlib.nullcontext, attack_model=None) -> None:
        model, optimizer, images = self.fresh(memory_format)
        loss = build_loss(attack_model(model) if attack_model else model)
        loss.progressive_alpha = False
        defense = DefenseStep(model, optimizer, loss, images, self.labels, self.triplets, autocast, inputs=images)
        times = self.paired(defense.step, defense.bound, share, required=defense.required)
        plain = next((row for row in self.rows if row["measurement"] == "CA-TRIDE CAP, all 16 steps"
                      and "step_ms" in row), None)
        row = self.add_row(label, work=describe_records(times.result), repeats=len(times.step),
                           step_ms=1e3 * min(times.step), bound_ms=1e3 * min(times.bound),
                           ratio=times.ratio_of_minima, median_ratio=times.median_ratio,
                           required_ms=1e3 * min(times.required), ratio_to_required=times.ratio_to_required)
        row["image_passes"] = sum(record.images * record.steps for record in times.result)
        if plain is not None and plain is not row and "CAP step" in label:
            row["vs_plain"] = row["step_ms"] / plain["step_ms"]

    def measure_ca_tride(self, share: float) -> None:
        """CA-TRIDE as shipped: phase "tride" alternates CAP and ANP; one (CAP, ANP) pair of steps per repeat."""
        from pml_tride import TrideLoss

        model, optimizer, images = self.fresh()
        loss = TrideLoss(model, steps=TRIDE_STEPS, progressive_alpha=False)
        defense = DefenseStep(model, optimizer, loss, images, self.labels, self.triplets, inputs=images)

        def bound(records, required_forwards=False):
            for record in records:
                defense.bound([record], required_forwards)

        times = self.paired(lambda: defense.step() + defense.step(), bound, share,
                            required=lambda records: bound(records, required_forwards=True))
        self.add_row("CA-TRIDE (early stop), CAP+ANP", work=describe_records(times.result),
                     repeats=len(times.step), step_ms=1e3 * min(times.step) / 2, bound_ms=1e3 * min(times.bound) / 2,
                     ratio=times.ratio_of_minima, median_ratio=times.median_ratio,
                     required_ms=1e3 * min(times.required) / 2, ratio_to_required=times.ratio_to_required,
                     image_passes=sum(record.images * record.steps for record in times.result) / 2,
                     note="per step; random weights: the early stop point is not a trained model's")

    def measure_pass(self, share: float) -> None:
        model, _, images = self.fresh()
        times = self.paired(lambda: input_gradient_passes(model, images, 1), lambda _: None, share)
        self.add_row("input-gradient pass (batch)", work=f"{len(images)}x1", repeats=len(times.step),
                     step_ms=1e3 * min(times.step), note=f"{len(images) / min(times.step):.0f} image-passes/s")

    def measure_compiled_pass(self, share: float) -> None:
        """Only when the budget left covers a typical compile of the attack's graph (inductor: about a minute)."""
        if self.args.compile_backend == "inductor" and self.budget.left() < COMPILE_MIN_SECONDS:
            self.add_row("input-gradient pass, torch.compile",
                         note=f"skipped: compiling needs ~{COMPILE_MIN_SECONDS} s, {self.budget.left():.0f} s of "
                              "budget left")
            return
        model, _, images = self.fresh()
        compiled = self.compiled(model)
        compile_seconds = timed(lambda: input_gradient_passes(compiled, images, 1), self.device)
        self.compile_seconds = compile_seconds
        times = self.paired(lambda: input_gradient_passes(compiled, images, 1),
                            lambda _: input_gradient_passes(model, images, 1), share)
        self.add_row("input-gradient pass, torch.compile", work=f"{len(images)}x1", repeats=len(times.step),
                     step_ms=1e3 * min(times.step), bound_ms=1e3 * min(times.bound), vs_plain=times.ratio_of_minima,
                     note=f"backend {self.args.compile_backend}; first call (compile) {compile_seconds:.1f} s; "
                          "bound column = plain pass")

    def measure_compiled_step(self, share: float) -> None:
        """Only when the budget left covers compiling its graphs (eval with input grad, eval without grad, train)."""
        if self.compile_seconds is None:
            raise RuntimeError("the compiled pass did not run, so the compile time is unknown")
        needed = COMPILED_STEP_GRAPHS * self.compile_seconds
        if needed > self.budget.left():
            self.add_row("CAP step, attack model torch.compile'd",
                         note=f"skipped: compiling its {COMPILED_STEP_GRAPHS} graphs needs ~{needed:.0f} s, "
                              f"{self.budget.left():.0f} s of budget left")
            return
        self.measure_defense("CAP step, attack model torch.compile'd", self.tride_loss("cap", "none"), share,
                             attack_model=self.compiled)

    def measure_sync(self, share: float) -> None:
        model, _, images = self.fresh()
        rows = torch.arange(len(self.triplets[1]) * 2, device=self.device) % len(images)
        perturbed = images[rows]
        times = self.paired(lambda: input_gradient_passes(model, perturbed, TRIDE_STEPS, sync_every_step=True),
                            lambda _: input_gradient_passes(model, perturbed, TRIDE_STEPS), share)
        self.add_row("PGD loop: a host sync per step", work=f"{len(perturbed)}x{TRIDE_STEPS}",
                     repeats=len(times.step), step_ms=1e3 * min(times.step), bound_ms=1e3 * min(times.bound),
                     ratio=times.ratio_of_minima, median_ratio=times.median_ratio,
                     note="step = passes with .item() every step; bound = the same passes without")

    def measure_evaluation(self, share: float) -> None:
        from pml_tride.attacks import RetrievalPool, build_attacks

        model, _, images = self.fresh()
        generator = torch.Generator().manual_seed(self.args.seed)
        pool = RetrievalPool(
            F.normalize(torch.randn(self.args.pool_size, self.args.embedding_dim, generator=generator), dim=1)
            .to(self.device),
            torch.randint(0, CUB_TEST_CLASSES, (self.args.pool_size,), generator=generator).to(self.device),
        )
        pool_indices = torch.arange(len(images), device=self.device)
        attacks = build_attacks("all", steps=EVAL_STEPS, alpha=EVAL_ALPHA)

        def embed_twice():
            with torch.no_grad():
                for _ in range(2):
                    F.normalize(model.eval()(images), dim=1)
            model.train()

        def bound(_):
            input_gradient_passes(model, images, EVAL_STEPS)
            embed_twice()

        total = PairedTimes()
        for attack in attacks:
            if self.budget.left() <= 0:
                break
            attack_share = share / max(len(attacks), 1)
            times = self.paired(lambda attack=attack: attack(model, images, pool, pool_indices, generator), bound,
                                attack_share, EVAL_MAX_REPEATS)
            total.step.append(min(times.step))
            total.bound.append(min(times.bound))
        measured = len(total.step)
        if measured == 0:
            raise RuntimeError("budget spent before the first attack")
        partial = "" if measured == len(attacks) else f"PARTIAL, budget spent after {measured} of {len(attacks)}: "
        suite, suite_bound = sum(total.step) * len(attacks) / measured, sum(total.bound) * len(attacks) / measured
        self.add_row("evaluation: ten-attack suite", work=f"{len(attacks)} attacks x {len(images)}x{EVAL_STEPS}",
                     repeats=1, step_ms=1e3 * suite, bound_ms=1e3 * suite_bound, ratio=suite / suite_bound,
                     note=f"{partial}{len(images) * len(attacks) / suite:.1f} attacked images/s (one attack each); "
                          f"{len(images) / suite:.2f} test images/s through all ten measurements; pool "
                          f"{self.args.pool_size}; projected CUB test set ({CUB_TEST_IMAGES}): "
                          f"{CUB_TEST_IMAGES / (len(images) / suite) / 60:.1f} min")

    # ----------------------------------------------------------------- output
    def result(self) -> Dict[str, Any]:
        return {"device": device_name(self.device), "torch": torch.__version__, "cuda": torch.version.cuda,
                "python": platform.python_version(), "config": vars(self.args), "rows": self.rows,
                "projection_minutes": projection(self.rows, self.args.pairs), "paper_minutes": PAPER_MINUTES,
                "options": kept_options(self.rows), "wall_seconds": self.elapsed()}

    def report(self) -> Dict[str, Any]:
        print_report(self.rows, self.args, self.device, self.elapsed())
        result = self.result()
        self.save(result)
        return result


def missing_dependency() -> Optional[str]:
    """What keeps pml_tride from importing here (e.g. scipy, a dependency of pytorch-metric-learning), or None."""
    try:
        import pml_tride.attacks  # noqa: F401
        import pml_tride.models  # noqa: F401
    except ImportError as error:
        return (f"gpu_step.py cannot import pml_tride: {error}. It needs torch, torchvision, pytorch-metric-learning "
                "and its dependencies (numpy, scipy, scikit-learn, tqdm)")
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    reason = refusal(args) or missing_dependency()
    if reason is not None:
        print(reason, file=sys.stderr)
        return REFUSAL_EXIT_CODE
    if torch.device(args.device).type == "cuda" and not args.no_cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    benchmark = GpuStepBenchmark(args)
    benchmark.run()
    benchmark.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
