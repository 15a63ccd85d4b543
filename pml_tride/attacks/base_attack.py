"""Shared machinery of the ranking attacks: the candidate pool, per-trial records and the attack base class.

Every attack is target selection + objective + measurement; the objective is minimised by the one PGD engine
(:func:`pml_tride.pgd.projected_gradient_descent`). Embeddings are L2-normalised and compared with the
Euclidean distance (metric "N" of robrank), TMA with the cosine. Only batch x pool distance blocks are built.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar, Collection, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..pgd import check_input_range, frozen_model, projected_gradient_descent
from .measurement import Measurement

__all__ = [
    "RetrievalPool",
    "AttackTrials",
    "AttackContext",
    "BaseRankingAttack",
    "pool_distances",
    "exclude_self",
    "uniform_indices",
    "top1_hit",
    "check_attack_settings",
]

# Larger than any distance between unit vectors (at most 2): marks excluded pool entries.
EXCLUDED_DISTANCE = 1e38
# How far from 1 the norm of a pool embedding may be (float32 rounding of F.normalize is far below this).
UNIT_NORM_TOLERANCE = 1e-3


@dataclass
class RetrievalPool:
    """The candidate pool: clean, L2-normalised embeddings of the whole test set and their labels (embeddings that
    are not unit vectors are refused: every attack compares unit vectors)."""

    embeddings: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 2 or self.labels.shape != (self.embeddings.shape[0],):
            raise ValueError(
                f"pool embeddings must be (N, D) and labels (N,), got {tuple(self.embeddings.shape)} and "
                f"{tuple(self.labels.shape)}"
            )
        if len(self.labels) < 2:
            raise ValueError("the pool needs at least 2 items")
        if not torch.isfinite(self.embeddings).all():
            raise ValueError("pool embeddings contain NaN or Inf values")
        norms = self.embeddings.detach().norm(dim=1)
        if (norms - 1).abs().max() > UNIT_NORM_TOLERANCE:
            raise ValueError(
                f"pool embeddings must be L2-normalised (norms {norms.min().item():.4g} to {norms.max().item():.4g}); "
                "pass torch.nn.functional.normalize(embeddings, dim=1)"
            )
        self.embeddings = self.embeddings.detach()

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class AttackTrials:
    """Per-trial records of one measurement over one batch (one row per attacked image).

    Units of ``before``/``after``: CA+/CA-/QA+/QA-: percentile rank (rank / N; in [0, 1] for CA, whose
    adversarial candidate can fall behind all N pool items, and in [0, 1) for QA); TMA: cosine to the target;
    ES:D: L2 embedding shift (``before`` = 0); ES:R, LTM, GTM: top-1 hit (1/0) with the query's own pool entry
    excluded; GTT: the target still among the 4 nearest non-self items (1/0).
    """

    name: str
    query_index: torch.Tensor
    target_index: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor


@dataclass
class AttackContext:
    """What selection, objective and measurement of one batch share."""

    clean: torch.Tensor
    pool: RetrievalPool
    pool_indices: torch.Tensor
    target_index: torch.Tensor
    extras: Dict[str, Any] = field(default_factory=dict)
    last_objective_embeddings: Optional[torch.Tensor] = None


def pool_distances(embeddings: torch.Tensor, pool: RetrievalPool) -> torch.Tensor:
    """(B, N) Euclidean distances between normalised batch embeddings and the pool."""
    return torch.cdist(embeddings, pool.embeddings)


def exclude_self(distances: torch.Tensor, pool_indices: torch.Tensor) -> torch.Tensor:
    """A copy of ``distances`` with each row's own pool entry pushed beyond every other item."""
    masked = distances.clone()
    masked[torch.arange(len(pool_indices), device=distances.device), pool_indices] = EXCLUDED_DISTANCE
    return masked


def uniform_indices(
    count: int, high: int, generator: Optional[torch.Generator], device, exclude: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``count`` indices uniform over [0, high), drawn on the CPU from ``generator``; with ``exclude`` (one index
    per row), uniform over the other ``high - 1`` indices of each row."""
    if exclude is None:
        return torch.randint(0, high, (count,), generator=generator, device="cpu").to(device)
    drawn = torch.randint(0, high - 1, (count,), generator=generator, device="cpu").to(device)
    return drawn + (drawn >= exclude).long()


def top1_hit(embeddings: torch.Tensor, context: AttackContext, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """1.0 where the nearest pool item other than the query itself shares the query's label (R@1)."""
    labels = context.pool.labels[context.pool_indices] if labels is None else labels
    nearest = exclude_self(pool_distances(embeddings, context.pool), context.pool_indices).argmin(dim=1)
    return (context.pool.labels[nearest] == labels).double()


def check_attack_settings(eps: float, alpha: float, steps: int, input_range: Tuple[float, float]) -> None:
    """Raise a ValueError naming the bad setting: ``steps`` an integer >= 0, ``input_range`` (low, high) with
    low < high, ``eps`` and ``alpha`` finite numbers in [0, high - low] (pixel units: a budget wider than the pixel
    range is a unit mistake, e.g. 8 for 8/255)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if (len(input_range) != 2 or not all(isinstance(bound, numbers.Real) for bound in input_range)
            or not input_range[0] < input_range[1]):
        raise ValueError(f"input_range must be (low, high) with low < high, got {input_range!r}")
    width = input_range[1] - input_range[0]
    for name, value in (("eps", eps), ("alpha", alpha)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                or not 0 <= value <= width):
            raise ValueError(f"{name} must be a number in [0, {width:g}] (pixel units within input_range "
                             f"{tuple(input_range)}, e.g. 8/255), got {value!r}")


class BaseRankingAttack:
    """A ranking attack: target selection, an objective minimised by PGD, and a per-trial measurement.

    Subclasses declare ``measurement_info`` (every :class:`~pml_tride.attacks.measurement.Measurement` the class
    can report: its unit, ERS normaliser and ARS goal), set ``measurements`` (the names an instance reports) and
    implement :meth:`select`, :meth:`loss` and :meth:`measure`; a class with options overrides :meth:`build`.

    Args:
        eps, alpha, steps: L-inf budget, step size and number of signed steps (ERS setting: 8/255, 3/255, 32);
            checked when the attack is built (:func:`check_attack_settings`).
        input_range: valid pixel range of the images.
        robrank_compat: reproduce robrank's quirks where this attack has one (GTM target index, LTM keeping the
            query among its positives, ES:D one step stale, CA+/QA+/TMA random targets that can be the attacked
            image itself); the default is the corrected behaviour.
    """

    measurement_info: ClassVar[Tuple[Measurement, ...]] = ()
    measurements: Tuple[str, ...] = ()

    @classmethod
    def build(cls, names: Collection[str], **kwargs: Any) -> List["BaseRankingAttack"]:
        """The instances of this class that report the requested measurement ``names``: one when any of its
        measurements is requested. ``kwargs`` go to the constructor."""
        return [cls(**kwargs)] if any(info.name in names for info in cls.measurement_info) else []

    def __init__(
        self,
        eps: float = 8 / 255,
        alpha: float = 3 / 255,
        steps: int = 32,
        input_range: Tuple[float, float] = (0.0, 1.0),
        robrank_compat: bool = False,
    ) -> None:
        check_attack_settings(eps, alpha, steps, input_range)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.input_range = tuple(input_range)
        self.robrank_compat = robrank_compat
        self.last_adversarial: Optional[torch.Tensor] = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({', '.join(self.measurements)}; eps={self.eps:.4g}, alpha={self.alpha:.4g}, "
                f"steps={self.steps}, robrank_compat={self.robrank_compat})")

    # ----------------------------------------------------------------- the three parts of an attack
    def select(self, context: AttackContext, generator: Optional[torch.Generator]) -> None:
        """Fill ``context.target_index`` (and ``context.extras``) from the clean embeddings."""
        raise NotImplementedError

    def loss(self, embeddings: torch.Tensor, context: AttackContext) -> torch.Tensor:
        """The scalar objective to minimise, given the normalised embeddings of the current iterate."""
        raise NotImplementedError

    def measure(self, embeddings: torch.Tensor, context: AttackContext) -> Dict[str, torch.Tensor]:
        """Per-trial values of each measurement for normalised embeddings (clean or adversarial)."""
        raise NotImplementedError

    def random_targets(self, context: AttackContext, generator: Optional[torch.Generator]) -> torch.Tensor:
        """One pool index per attacked image, uniform over the pool without the image's own entry (a trial whose
        target is the image itself starts at the attack's goal); ``robrank_compat=True`` keeps it drawable."""
        exclude = None if self.robrank_compat else context.pool_indices
        return uniform_indices(len(context.clean), len(context.pool), generator, context.clean.device, exclude)

    # ----------------------------------------------------------------- driver
    def _validate(
        self, model: nn.Module, images: torch.Tensor, pool: RetrievalPool, pool_indices: torch.Tensor
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(pool, RetrievalPool):
            raise TypeError(f"pool must be a RetrievalPool, got {type(pool).__name__}")
        if not isinstance(images, torch.Tensor) or images.dim() < 2:
            raise ValueError(f"images must be a batch tensor (B, ...), got {getattr(images, 'shape', images)}")
        check_input_range(images, self.input_range, name="images")
        if pool_indices.shape != (images.shape[0],) or pool_indices.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"pool_indices must be an integer tensor of shape ({images.shape[0]},), got "
                f"{tuple(pool_indices.shape)} {pool_indices.dtype}"
            )
        if len(pool_indices) and (pool_indices.min() < 0 or pool_indices.max() >= len(pool)):
            raise ValueError(f"pool_indices must lie in [0, {len(pool)}) (the pool size)")
        if images.device != pool.embeddings.device:
            raise ValueError(f"images are on {images.device} but the pool is on {pool.embeddings.device}")

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with frozen_model(model), torch.no_grad():
            return F.normalize(model(images), dim=1)

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        pool: RetrievalPool,
        pool_indices: torch.Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, AttackTrials]:
        """Attack one batch whose images are ``pool[pool_indices]``; the adversarial images are kept in
        :attr:`last_adversarial`."""
        self._validate(model, images, pool, pool_indices)
        pool_indices = pool_indices.to(images.device).long()
        clean = self.embed(model, images)
        if clean.dim() != 2 or clean.shape[1] != pool.embeddings.shape[1]:
            raise ValueError(
                f"the model maps the batch to {tuple(clean.shape)}, but the pool has dimension "
                f"{pool.embeddings.shape[1]}"
            )
        context = AttackContext(
            clean=clean, pool=pool, pool_indices=pool_indices,
            target_index=torch.full((len(images),), -1, dtype=torch.long, device=images.device),
        )
        self.select(context, generator)

        def objective(embeddings: torch.Tensor) -> torch.Tensor:
            normalised = F.normalize(embeddings, dim=1)
            context.last_objective_embeddings = normalised.detach()
            return self.loss(normalised, context)

        result = projected_gradient_descent(
            model, images, objective, eps=self.eps, alpha=self.alpha, steps=self.steps, input_range=self.input_range
        )
        self.last_adversarial = result.adversarial
        adversarial = self.embed(model, result.adversarial)
        before, after = self.measure(clean, context), self.measure(adversarial, context)
        return {
            name: AttackTrials(
                name=name,
                query_index=pool_indices.cpu(),
                target_index=context.target_index.cpu(),
                before=before[name].double().cpu(),
                after=after[name].double().cpu(),
            )
            for name in self.measurements
        }
