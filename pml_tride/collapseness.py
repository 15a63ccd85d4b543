"""Collapseness, hardness and the collapse diagnostics of CA-TRIDE (Tian et al., ICML 2024).

* :func:`proximity_weighted_mean` is Eq. 6-7, the proximity-weighted mean distance d_w, and the only place the
  weighting formula exists; :func:`weighted_distance` is the same after checking its inputs, and
  :class:`~pml_tride.CollapsenessReducer` and every loss call one of the two.
* :func:`collapseness` is Eq. 5, C = d_w(A, P) - d_w(A, N), after checking its inputs; :func:`weighted_collapseness`
  is the same without checks (an attack's objective), and the only place Eq. 5 exists.
* :func:`hardness` is Eq. 2, H = d(A, P) - d(A, N) with d the mean distance (C with lam = 0), after checking its
  inputs; :func:`mean_hardness` is the same without checks, and the only place Eq. 2 (of a batch) exists.
* :func:`triplet_hinge` is the hinge max(d(a, p) - d(a, n) + margin, 0) of the triplet loss (Eq. 1) and of the
  top-rank loss (Eq. 13).
* :func:`separability`, :func:`mean_pairwise_distance`, :func:`embedding_shift` and :func:`entanglement`
  are the diagnostics of Section 4.3 and Table 5.
* :func:`dissimilarity` is the one place where a PML similarity (``distance.is_inverted``: larger = closer) becomes
  the dissimilarity 1 - s that every equation above is applied to, so that each keeps its sign (C > 0 signals
  collapse) and the hinge is PML's ``distance.margin(ap, an) + margin``.
"""

from __future__ import annotations

from typing import Optional

import torch
from pytorch_metric_learning.distances import BaseDistance, LpDistance

from .validation import check_choice, check_number

__all__ = [
    "WEIGHTINGS",
    "weighted_distance",
    "proximity_weighted_mean",
    "collapseness",
    "weighted_collapseness",
    "hardness",
    "mean_hardness",
    "triplet_hinge",
    "separability",
    "mean_pairwise_distance",
    "embedding_shift",
    "entanglement",
    "dissimilarity",
    "SIMILARITY_OFFSET",
]

WEIGHTINGS = ("paper", "reference")
# A similarity s enters the equations as the dissimilarity SIMILARITY_OFFSET - s: for CosineSimilarity, 1 - cos,
# half the squared Euclidean distance of the unit vectors. Differences (C, H, the hinge) do not depend on the offset.
SIMILARITY_OFFSET = 1.0


def dissimilarity(values: torch.Tensor, distance: Optional[BaseDistance] = None) -> torch.Tensor:
    """``values`` of ``distance`` as a dissimilarity (smaller = closer): unchanged for a distance (or None), and
    ``SIMILARITY_OFFSET - s`` for a similarity (``distance.is_inverted``, e.g. PML's ``CosineSimilarity``)."""
    if distance is not None and distance.is_inverted:
        return SIMILARITY_OFFSET - values
    return values


def check_bounded(distance: BaseDistance, name: str) -> None:
    """Ratios of mean dissimilarities need them positive: refuse a similarity that does not normalise."""
    if distance.is_inverted and not distance.normalize_embeddings:
        raise ValueError(
            f"{name} divides mean dissimilarities 1 - s, which need a similarity of unit vectors; got "
            f"{type(distance).__name__}(normalize_embeddings=False). Use CosineSimilarity() or "
            "DotProductSimilarity(normalize_embeddings=True)"
        )


def check_weighting(weighting: str) -> None:
    check_choice("weighting", weighting, WEIGHTINGS)


def check_lam(lam: float) -> None:
    check_number("lam", lam, minimum=0, meaning="the attention factor lambda of Eq. 7")


def check_distance_shape(dists: torch.Tensor, name: str) -> None:
    """Raise a ValueError unless ``dists`` is a non-empty 1-D tensor (shape only: no host read)."""
    if not isinstance(dists, torch.Tensor) or dists.dim() != 1 or dists.numel() == 0:
        shape = tuple(dists.shape) if isinstance(dists, torch.Tensor) else type(dists).__name__
        raise ValueError(f"{name} must be a non-empty 1-D tensor of pair distances, got {shape}")


def _check_distances(dists: torch.Tensor, name: str) -> None:
    check_distance_shape(dists, name)
    if not torch.isfinite(dists).all():
        raise ValueError(f"{name} contain NaN or Inf values")


def weighted_distance(
    dists: torch.Tensor, lam: float = 10.0, weighting: str = "paper", distance: Optional[BaseDistance] = None
) -> torch.Tensor:
    """Proximity-weighted mean distance d_w (Eq. 6-7), after checking its inputs (see
    :func:`proximity_weighted_mean` for the formula). With a similarity as ``distance``, ``dists`` are its values
    s and the result is d_w of 1 - s (:func:`dissimilarity`)."""
    _check_distances(dists, "dists")
    check_lam(lam)
    check_weighting(weighting)
    return proximity_weighted_mean(dissimilarity(dists, distance), lam, weighting)


def proximity_weighted_mean(dists: torch.Tensor, lam: float, weighting: str) -> torch.Tensor:
    """d_w of Eq. 6-7 without input checks (an attack's objective calls it every step; a finiteness check there
    would read the distances back to the host each time; the engine checks the attack's result once instead).

    ``weighting="paper"``: w_i = exp(-lam (d_i - min_j d_j)) (Eq. 7), closer pairs weigh more.
    ``weighting="reference"``: w_i = exp(+lam (d_i - max_j d_j)), the released code's softmax of the
    distances, which leans towards the largest distances (reference doc, section 1.4).
    Both return sum_i w_i d_i / sum_i w_i (Eq. 6); lam = 0 gives the plain mean.
    """
    if weighting == "paper":
        weights = torch.exp(-lam * (dists - dists.min()))
    else:
        weights = torch.exp(lam * (dists - dists.max()))
    return (weights * dists).sum() / weights.sum()


def collapseness(
    ap_dists: torch.Tensor,
    an_dists: torch.Tensor,
    lam: float = 10.0,
    weighting: str = "paper",
    distance: Optional[BaseDistance] = None,
) -> torch.Tensor:
    """Collapseness C = d_w(A, P) - d_w(A, N) (Eq. 5); positive C signals an impending collapse. With a similarity
    as ``distance``, the inputs are its values s and C is computed on 1 - s (:func:`dissimilarity`)."""
    _check_distances(ap_dists, "ap_dists")
    _check_distances(an_dists, "an_dists")
    check_lam(lam)
    check_weighting(weighting)
    return weighted_collapseness(dissimilarity(ap_dists, distance), dissimilarity(an_dists, distance), lam, weighting)


def weighted_collapseness(ap_dists: torch.Tensor, an_dists: torch.Tensor, lam: float, weighting: str) -> torch.Tensor:
    """C = d_w(A, P) - d_w(A, N) (Eq. 5) without input checks (see :func:`proximity_weighted_mean`)."""
    return proximity_weighted_mean(ap_dists, lam, weighting) - proximity_weighted_mean(an_dists, lam, weighting)


def hardness(
    ap_dists: torch.Tensor, an_dists: torch.Tensor, distance: Optional[BaseDistance] = None
) -> torch.Tensor:
    """Hardness H = d(A, P) - d(A, N) with d the mean distance over the triplets (Eq. 2); with a similarity as
    ``distance``, the inputs are its values s and H = mean s(A, N) - mean s(A, P) (:func:`dissimilarity`)."""
    _check_distances(ap_dists, "ap_dists")
    _check_distances(an_dists, "an_dists")
    return mean_hardness(dissimilarity(ap_dists, distance), dissimilarity(an_dists, distance))


def mean_hardness(ap_dists: torch.Tensor, an_dists: torch.Tensor) -> torch.Tensor:
    """H = mean d(A, P) - mean d(A, N) (Eq. 2) without input checks."""
    return ap_dists.mean() - an_dists.mean()


def triplet_hinge(ap_dists: torch.Tensor, an_dists: torch.Tensor, margin: float) -> torch.Tensor:
    """max(d(a, p) - d(a, n) + margin, 0), elementwise: the triplet loss (Eq. 1) of pair distances, and L_TR
    (Eq. 13) of the top-half means."""
    return torch.relu(ap_dists - an_dists + margin)


def separability(
    ap_dists: torch.Tensor,
    an_dists: torch.Tensor,
    mean_distance: torch.Tensor,
    distance: Optional[BaseDistance] = None,
) -> torch.Tensor:
    """Separability (d(a, n) - d(a, p)) / d_bar of Section 4.3, with d_bar the mean pairwise distance
    (:func:`mean_pairwise_distance` with the same ``distance``). With a similarity as ``distance``, ``ap_dists`` and
    ``an_dists`` are its values s and d is 1 - s (:func:`dissimilarity`)."""
    if distance is not None:
        check_bounded(distance, "separability")
    return -hardness(ap_dists, an_dists, distance) / mean_distance


def mean_pairwise_distance(embeddings: torch.Tensor, distance: Optional[BaseDistance] = None) -> torch.Tensor:
    """Mean distance over all pairs i != j of a batch (d_bar of Section 4.3).

    ``distance`` defaults to PML's ``LpDistance(normalize_embeddings=True, p=2)``; a similarity of unit vectors
    (e.g. ``CosineSimilarity``) gives the mean of 1 - s (:func:`dissimilarity`).
    """
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"embeddings must have shape (N >= 2, D), got {tuple(embeddings.shape)}")
    distance = LpDistance(normalize_embeddings=True, p=2) if distance is None else distance
    check_bounded(distance, "mean_pairwise_distance")
    matrix = dissimilarity(distance(embeddings), distance)
    off_diagonal = ~torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return matrix[off_diagonal].mean()


def embedding_shift(clean: torch.Tensor, adversarial: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean L2 distance between clean and adversarial embeddings of the same images (Figure 5)."""
    if clean.shape != adversarial.shape or clean.dim() != 2:
        raise ValueError(
            f"clean and adversarial embeddings must share a shape (N, D), got {tuple(clean.shape)} and "
            f"{tuple(adversarial.shape)}"
        )
    if normalize:
        clean = torch.nn.functional.normalize(clean, dim=1)
        adversarial = torch.nn.functional.normalize(adversarial, dim=1)
    return (adversarial - clean).norm(dim=1).mean()


def entanglement(
    embeddings: torch.Tensor, labels: torch.Tensor, distance: Optional[BaseDistance] = None
) -> torch.Tensor:
    """Entanglement d_intra / d_inter (Table 5): mean same-class over mean different-class distance; a similarity
    of unit vectors (e.g. ``CosineSimilarity``) is compared as 1 - s (:func:`dissimilarity`)."""
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"embeddings must be (N, D) and labels (N,), got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    distance = LpDistance(normalize_embeddings=True, p=2) if distance is None else distance
    check_bounded(distance, "entanglement")
    matrix = dissimilarity(distance(embeddings), distance)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    intra, inter = matrix[same & off_diagonal], matrix[~same]
    if intra.numel() == 0 or inter.numel() == 0:
        raise ValueError("entanglement needs at least one same-class pair and one different-class pair")
    return intra.mean() / inter.mean()
