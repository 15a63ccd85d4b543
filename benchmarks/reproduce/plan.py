"""The study's plan: the models (derived from ``pml_tride.recipes.DEFENSES``), the settings, the jobs and their cost.

Three studies share the machinery. The *digits* study trains the whole zoo at one eps, plus the claims' extra model,
the defaults study and an eps x training-length sweep. The *entangled* study (``--dataset entangled-digits``) trains
the regime zoo on every cell of a fixed grid of eps x entanglement, each defense also at the other loss classes'
default PGD steps (equal cost), and a lambda sweep of CA-TRIDE. The *any-loss* study (``--studies any-loss``) trains
plain PML losses with their miners, plain and wrapped in ``AdversarialLoss``, on both data sets.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from pml_tride import losses
from pml_tride.losses.adversarial_loss import ADVERSARIAL_LOSS_AWARENESS
from pml_tride.losses.adversarial_triplet_loss import SHARED_DEFAULTS
from pml_tride.recipes import DEFENSES, DefenseSpec

PIXEL_LEVELS = 255
PAPER_EPS = 8 / PIXEL_LEVELS
ENTANGLED = "entangled-digits"
COMMAND = ("python", "-m", "benchmarks.reproduce")
# Display names of the defenses; a defense without one is shown by its name in DEFENSES.
DISPLAY_NAMES = {
    "none": "NT", "naive-at": "naive AT", "naive-cap": "naive CAP", "naive-anp": "naive ANP",
    "naive-tride": "naive TRIDE", "ca-cap": "CA-CAP", "ca-anp": "CA-ANP", "ca-tride": "CA-TRIDE",
    "ca-tride-reference": "CA-TRIDE (reference)", "hardness-tride": "H-aware TRIDE, prog. alpha off",
    "ca-tride-no-tpr": "CA-TRIDE w/o TPR", "ca-tride-no-ltr": "CA-TRIDE w/o L_TR", "colo-tride": "COLO-TRIDE",
    "est": "EST", "act": "ACT", "hm": "HM",
}
# Ablations of the paper's tables 3 and 4 and the released-code variant: in the digits zoo, not in the regime zoo
# (every other defense of DEFENSES, present or future, is in both).
ABLATIONS = ("naive-cap", "naive-anp", "ca-cap", "ca-anp", "ca-tride-no-tpr", "ca-tride-no-ltr", "ca-tride-reference")
# ----------------------------------------------------------------------------------------------- the regime grid
# Fixed before any run of the entangled study (also written on the page's "Plan and rules").
REGIME_EPS = (8 / PIXEL_LEVELS, 16 / PIXEL_LEVELS)
ENTANGLEMENT_FACTORS = (0.5, 1.0, 2.0)  # entanglement a = factor x eps
LAMBDA_SWEEP: Tuple[Union[float, str], ...] = (0.0, 2.0, 5.0, 10.0, 20.0, "auto")  # CA-TRIDE's lam
LAMBDA_DEFENSE = "ca-tride"
ENTANGLED_SUBCLASSES = 4
# Cost model, in CPU seconds of one job measured single-threaded on the 2-core development machine (entangled
# digits at 16x16, 1 epoch of 32 iterations: 1.7e-4 s per image forward or backward pass of PGD, about 6 s for a job
# without attacks with 8 evaluation steps on one batch). Upper bound: every PGD step taken (early stops cost less).
SECONDS_PER_TRAIN_UNIT = 0.038  # one iteration-step: a PGD step (forward + backward) or the training pass, 112 images
SECONDS_PER_EVAL_UNIT = 0.27  # one attacked batch of 112 x one PGD step, all ten attacks
SECONDS_PER_JOB = 2.7  # data, model and the benign metrics of one job
PER_TRIPLET_COPIES = 2  # perturb="per_triplet" attacks about twice TRIDE's unique images
FULL_TEST_IMAGES = 1000  # test images assumed by the cost model when every query is attacked


def display_name(defense: str) -> str:
    return DISPLAY_NAMES.get(defense, defense)


def loss_defaults(defense: str) -> Dict[str, Any]:
    """The loss arguments of a defense: its loss class's shared and own defaults updated by the defense's own
    ``loss_kwargs``."""
    spec: DefenseSpec = DEFENSES[defense]
    loss_class = getattr(losses, spec.loss)
    parameters = inspect.signature(loss_class).parameters
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return {**loss_class.shared_defaults(), **defaults, **spec.loss_kwargs}


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

    def canonical(self) -> "ModelSpec":
        """The same model without the loss overrides that equal the defense's own arguments (so that, e.g.,
        ``hardness-tride`` with ``progressive_alpha=False`` and ``ca-tride`` with ``lam=10.0`` are one model each)."""
        defaults = loss_defaults(self.defense)
        kept = tuple((key, value) for key, value in self.loss_overrides
                     if key not in defaults or defaults[key] != value)
        return ModelSpec(self.label, self.defense, kept, self.miner_overrides)

    def steps(self) -> int:
        """The training PGD steps of this model (its overrides, else the defense's, else the loss class's)."""
        return int(dict(self.loss_overrides).get("steps", loss_defaults(self.defense)["steps"]))

    def attack_steps_per_image(self) -> int:
        """PGD steps per training image and iteration (per-triplet perturbation attacks about twice the images)."""
        copies = PER_TRIPLET_COPIES if dict(self.loss_overrides).get("perturb") == "per_triplet" else 1
        return self.steps() * copies


# ----------------------------------------------------------------------------------------------- the any-loss study
ANY_LOSS = "any-loss"
PLAIN = "plain"  # the PML loss unwrapped; the other variants are AdversarialLoss's awareness values
ANY_LOSS_VARIANTS = (PLAIN,) + ADVERSARIAL_LOSS_AWARENESS
# The PML losses of the any-loss study (each trained with its usual miner, see benchmarks/reproduce/any_loss.py).
ANY_LOSS_NAMES = {"multi-similarity": "MultiSimilarity", "contrastive": "Contrastive"}


@dataclass(frozen=True)
class LossSpec:
    """A model of the any-loss study: a PML loss (a key of ``ANY_LOSS_NAMES``) trained plain or wrapped in
    ``AdversarialLoss`` with the awareness ``variant``."""

    label: str
    loss: str
    variant: str

    @property
    def slug(self) -> str:
        return f"{self.loss}+{self.variant if self.variant == PLAIN else 'adversarial-' + self.variant}"

    @property
    def variant_label(self) -> str:
        return PLAIN if self.variant == PLAIN else f'AdversarialLoss, awareness="{self.variant}"'

    def canonical(self) -> "LossSpec":
        return self

    def steps(self) -> int:
        """AdversarialLoss's default PGD steps; 0 for the plain loss."""
        return 0 if self.variant == PLAIN else int(SHARED_DEFAULTS["steps"])

    def attack_steps_per_image(self) -> int:
        return self.steps()


def any_loss_models() -> List[LossSpec]:
    return [LossSpec(f"{name} ({variant})", loss, variant) for loss, name in ANY_LOSS_NAMES.items()
            for variant in ANY_LOSS_VARIANTS]


def zoo_spec(defense: str) -> ModelSpec:
    return ModelSpec(display_name(defense), defense)


def digits_zoo() -> Tuple[str, ...]:
    return tuple(DEFENSES)


def regime_zoo() -> Tuple[str, ...]:
    return tuple(name for name in DEFENSES if name not in ABLATIONS)


PROGRESSIVE_OFF = (("progressive_alpha", False),)
PER_TRIPLET = (("perturb", "per_triplet"),)
SPC2_ANCHORS = (("anchors", "spc2"),)
CA_PROGRESSIVE_OFF = ModelSpec("CA-TRIDE, prog. alpha off", "ca-tride", PROGRESSIVE_OFF)


def defaults_configurations() -> List[Tuple[str, ModelSpec]]:
    """The four CA-TRIDE configurations of the defaults study (perturb x anchors)."""
    return [
        ("unique, every-image anchors (default)", zoo_spec("ca-tride")),
        ("per_triplet, every-image anchors", ModelSpec("CA-TRIDE per_triplet", "ca-tride", PER_TRIPLET)),
        ("unique, SPC-2 anchors", ModelSpec("CA-TRIDE SPC-2", "ca-tride", (), SPC2_ANCHORS)),
        ("per_triplet, SPC-2 anchors", ModelSpec("CA-TRIDE per_triplet SPC-2", "ca-tride", PER_TRIPLET, SPC2_ANCHORS)),
    ]


def matched_steps() -> Tuple[int, ...]:
    """The distinct default PGD steps of the regime zoo's loss classes (16 for TrideLoss, 32 for the baselines):
    every defense of the regime study is also trained at each of the others (equal cost)."""
    return tuple(sorted({loss_defaults(name)["steps"] for name in regime_zoo()} - {0}))


def steps_variants(defense: str) -> List[ModelSpec]:
    """The defense at the other loss classes' default steps; none when the defense fixes its steps (NT)."""
    if "steps" in DEFENSES[defense].loss_kwargs:
        return []
    own = loss_defaults(defense)["steps"]
    return [ModelSpec(f"{display_name(defense)} ({steps} steps)", defense, (("steps", steps),))
            for steps in matched_steps() if steps != own]


def lambda_variants() -> List[ModelSpec]:
    """CA-TRIDE at every lam of the sweep (the loss default is the zoo's model, deduplicated by the plan)."""
    return [ModelSpec(f"{display_name(LAMBDA_DEFENSE)} (lam {lam})", LAMBDA_DEFENSE, (("lam", lam),))
            for lam in LAMBDA_SWEEP]


def lam_of(spec: ModelSpec) -> Union[float, str]:
    return dict(spec.loss_overrides).get("lam", loss_defaults(spec.defense)["lam"])


def pixels(eps: float) -> str:
    return f"{eps * PIXEL_LEVELS:g}/255"


@dataclass(frozen=True)
class Cell:
    """Where a job sits in a study: eps, training epochs and (entangled study) the entanglement a."""

    eps: float
    epochs: int
    entanglement: Optional[float] = None

    def describe(self) -> str:
        text = f"eps {pixels(self.eps)}"
        return text + (f", a = {pixels(self.entanglement)}" if self.entanglement is not None else "")


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
    zoo: Tuple[str, ...] = field(default_factory=digits_zoo)
    studies: Tuple[str, ...] = ("zoo", "claims", "defaults", "sweep")
    quick: bool = False
    regime_eps: Tuple[float, ...] = REGIME_EPS
    entanglement_factors: Tuple[float, ...] = ENTANGLEMENT_FACTORS
    subclasses: int = ENTANGLED_SUBCLASSES  # entangled-digits: sub-classes per digit
    iterations_per_epoch: Optional[int] = None  # None: the whole training split per epoch

    @property
    def entangled(self) -> bool:
        return self.dataset == ENTANGLED

    def cells(self) -> List[Cell]:
        """The cells of the study: the digits zoo's one cell, or the regime grid."""
        if not self.entangled:
            return [Cell(self.eps, self.epochs)]
        return [Cell(eps, self.epochs, eps * factor) for eps in self.regime_eps for factor in self.entanglement_factors]

    def describe(self) -> str:
        queries = "every test image" if self.max_batches is None else \
            f"the first {self.max_batches * self.batch_size} test images (max_batches={self.max_batches})"
        budget = (f"eps {pixels(self.eps)}" if not self.entangled else
                  "eps and entanglement per cell (below)" if len(self.cells()) > 1 else self.cells()[0].describe())
        longer = f" (x{self.long_factor} for the long sweep cells)" if "sweep" in self.studies else ""
        per_epoch = "" if self.iterations_per_epoch is None else f" of {self.iterations_per_epoch} iterations"
        steps = (f"AdversarialLoss's default {SHARED_DEFAULTS['steps']} steps (progressive alpha)"
                 if ANY_LOSS in self.studies else "steps = each loss class's default (TrideLoss 16, EST/ACT/HM 32)")
        return (f"{self.dataset} {self.image_size}x{self.image_size}, small CNN ({self.embedding_dim}-d, width "
                f"{self.width}), {self.epochs} epochs{longer}{per_epoch}, SPC-2 batches "
                f"of {self.batch_size} (same-class pairs, SPC2Sampler, for every model), Adam lr {self.lr}, seeds "
                f"{list(self.seeds)}; training PGD {budget}, alpha = eps x {self.train_alpha_ratio:g} (progressive "
                f"where the defense uses it), {steps}; "
                f"evaluation: all ten attacks at the training eps, alpha = eps x {self.eval_alpha_ratio:g}, "
                f"{self.eval_steps} steps, on {queries} against the whole test pool")


# Settings that choose which jobs run, not what a job computes (its model, seed and cell are in its key).
PLAN_ONLY_SETTINGS = ("seeds", "zoo", "studies", "sweep_eps", "long_factor", "quick", "regime_eps",
                      "entanglement_factors")
QUICK = dict(epochs=2, eval_steps=4, max_batches=1, seeds=(0, 1), zoo=("none", "ca-tride"), studies=("zoo",),
             quick=True)
# The entangled study's budget (chosen from the measured per-job cost so the plan fits 2 h on 2 workers).
REGIME_STUDIES = ("regimes", "matched", "lambda")
# 4 short epochs of 8 iterations (one pass over the 3604 training images in all; progressive alpha: no attack in
# the first epoch, alpha x 1/4, 2/4, 3/4 after).
ENTANGLED_SETTINGS = dict(epochs=4, iterations_per_epoch=8, eval_steps=8, max_batches=1, zoo=regime_zoo(),
                          studies=REGIME_STUDIES)
ENTANGLED_QUICK = dict(epochs=2, iterations_per_epoch=3, eval_steps=2, max_batches=1, seeds=(0,),
                       zoo=("none", "ca-tride"), studies=REGIME_STUDIES, regime_eps=(16 / PIXEL_LEVELS,),
                       entanglement_factors=(1.0,), quick=True)
# The any-loss study: the digits study's settings, and the entangled study's at its cell eps = a = 16/255.
ANY_LOSS_SETTINGS = {
    "digits": dict(zoo=(), studies=(ANY_LOSS,)),
    ENTANGLED: dict(ENTANGLED_SETTINGS, zoo=(), studies=(ANY_LOSS,), regime_eps=(16 / PIXEL_LEVELS,),
                    entanglement_factors=(1.0,)),
}
ANY_LOSS_QUICK = dict(epochs=2, iterations_per_epoch=2, eval_steps=2, max_batches=1, seeds=(0,), quick=True)


@dataclass(frozen=True)
class Job:
    """One (model, seed, cell) training and evaluation."""

    model: Union[ModelSpec, LossSpec]
    seed: int
    eps: float
    epochs: int
    priority: int = field(default=0, compare=False)  # 0 zoo, claims, any-loss; 1 defaults and variants; 2 sweeps
    entanglement: Optional[float] = None

    @property
    def cell(self) -> Cell:
        return Cell(self.eps, self.epochs, self.entanglement)

    @property
    def key(self) -> str:
        base = f"{self.model.canonical().slug}__eps{round(self.eps * PIXEL_LEVELS)}"
        if self.entanglement is not None:
            base += f"__a{round(self.entanglement * PIXEL_LEVELS)}"
        return f"{base}__ep{self.epochs}__seed{self.seed}"


def sweep_cells(settings: StudySettings) -> List[Cell]:
    return [Cell(eps, epochs) for eps in settings.sweep_eps
            for epochs in (settings.epochs, settings.epochs * settings.long_factor)]


def regime_models(settings: StudySettings) -> List[Tuple[ModelSpec, int]]:
    """The models of one regime cell with their priority: the zoo, each at matched steps, and the lambda sweep."""
    models = [(zoo_spec(name), 0) for name in settings.zoo]
    if "matched" in settings.studies:
        models += [(variant, 1) for name in settings.zoo for variant in steps_variants(name)]
    if "lambda" in settings.studies:
        models += [(variant, 2) for variant in lambda_variants()]
    unique: Dict[str, Tuple[ModelSpec, int]] = {}
    for spec, priority in models:  # the lambda sweep's default lam is the zoo's model
        unique.setdefault(spec.canonical().slug, (spec, priority))
    return list(unique.values())


def plan(settings: StudySettings) -> List[Job]:
    """The jobs of the chosen studies, deduplicated by key (a zoo model is also the defaults study's default, the
    sweep's cell at the zoo's eps and length, and the lambda sweep's default lam)."""
    wanted: List[Tuple[Union[ModelSpec, LossSpec], Cell, int]] = []
    base = Cell(settings.eps, settings.epochs)
    if settings.entangled:
        wanted += [(spec, cell, priority) for cell in settings.cells() for spec, priority in regime_models(settings)]
    if "zoo" in settings.studies and not settings.entangled:
        wanted += [(zoo_spec(name), base, 0) for name in settings.zoo]
    if "claims" in settings.studies:
        wanted.append((CA_PROGRESSIVE_OFF, base, 0))
    if "defaults" in settings.studies:
        wanted += [(spec, base, 1) for _, spec in defaults_configurations()]
    if "sweep" in settings.studies:
        wanted += [(zoo_spec(name), cell, 2) for cell in sweep_cells(settings) for name in ("naive-tride", "ca-tride")]
    if ANY_LOSS in settings.studies:
        wanted += [(spec, cell, 0) for cell in settings.cells() for spec in any_loss_models()]
    jobs: Dict[str, Job] = {}
    for spec, cell, priority in wanted:
        for seed in settings.seeds:
            job = Job(spec, seed, cell.eps, cell.epochs, priority, cell.entanglement)
            jobs.setdefault(job.key, job)
    return list(jobs.values())


def estimated_seconds(job: Job, settings: StudySettings, iterations_per_epoch: int) -> float:
    """Single-core seconds of a job by the cost model above (for the ETA and the printed estimate)."""
    train_units = job.epochs * iterations_per_epoch * (1 + job.model.attack_steps_per_image())
    batches = settings.max_batches or math.ceil(FULL_TEST_IMAGES / settings.batch_size)
    return (train_units * SECONDS_PER_TRAIN_UNIT + batches * settings.eval_steps * SECONDS_PER_EVAL_UNIT
            + SECONDS_PER_JOB)
