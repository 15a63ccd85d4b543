"""Benign retrieval metrics of the test set: R@1, R@2, mAP and NMI (percent), computed in B x N blocks.

Every test item is a query against all other items (itself excluded). R@k: a same-label item among the k
nearest. mAP: mean over queries of the average precision over the full ranking of the other N - 1 items
(queries with no other item of their class are skipped, as PML does for lone labels). NMI: k-means with
k = number of classes (faiss when installed, else scikit-learn), scored by PML's AccuracyCalculator.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

__all__ = ["benign_metrics", "retrieval_metrics", "nmi", "kmeans_function", "RECALL_AT"]

RECALL_AT = (1, 2)
KMEANS_SEED = 0
KMEANS_ITERATIONS = 20


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> Dict[str, float]:
    """R@1, R@2 and mAP in percent; only (batch_size x N) distance blocks are built."""
    embeddings = F.normalize(embeddings.float(), dim=1)
    total = len(labels)
    hits = {k: 0.0 for k in RECALL_AT}
    average_precision_sum, scored_queries = 0.0, 0
    for start in range(0, total, batch_size):
        rows = torch.arange(start, min(start + batch_size, total), device=embeddings.device)
        distances = torch.cdist(embeddings[rows], embeddings)
        distances[torch.arange(len(rows)), rows] = float("inf")
        order = distances.argsort(dim=1, stable=True)[:, : total - 1]
        relevant = (labels[order] == labels[rows][:, None]).double()
        for k in RECALL_AT:
            hits[k] += relevant[:, :k].max(dim=1).values.sum().item()
        relevant_count = relevant.sum(dim=1)
        precision = relevant.cumsum(dim=1) / torch.arange(1, total, device=relevant.device, dtype=torch.float64)
        has_relevant = relevant_count > 0
        average_precision = (precision * relevant).sum(dim=1)[has_relevant] / relevant_count[has_relevant]
        average_precision_sum += average_precision.sum().item()
        scored_queries += int(has_relevant.sum())
    metrics = {f"R@{k}": 100 * hits[k] / total for k in RECALL_AT}
    metrics["mAP"] = 100 * average_precision_sum / max(scored_queries, 1)
    return metrics


class SklearnKMeans:
    """PML-style k-means callable (x, k) -> cluster labels, with scikit-learn."""

    def __call__(self, x: torch.Tensor, clusters: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        assignments = KMeans(n_clusters=clusters, n_init=1, max_iter=KMEANS_ITERATIONS * 5,
                             random_state=KMEANS_SEED).fit_predict(x.detach().cpu().numpy())
        return torch.as_tensor(assignments, device=x.device)


def kmeans_function(use_faiss: bool = True):
    """PML's FaissKMeans when faiss is importable (and wanted), else a scikit-learn k-means."""
    if use_faiss:
        try:
            import faiss  # noqa: F401
            from pytorch_metric_learning.utils.inference import FaissKMeans

            return FaissKMeans(niter=KMEANS_ITERATIONS, seed=KMEANS_SEED)
        except ImportError:
            pass
    return SklearnKMeans()


def nmi(embeddings: torch.Tensor, labels: torch.Tensor, use_faiss: bool = True) -> float:
    """NMI (percent) of k-means clusters (k = number of classes) through PML's AccuracyCalculator."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calculator = AccuracyCalculator(include=("NMI",), knn_func=CustomKNN(LpDistance()),
                                    kmeans_func=kmeans_function(use_faiss), device=torch.device("cpu"))
    embeddings = F.normalize(embeddings.float(), dim=1).cpu()
    return 100 * calculator.get_accuracy(embeddings, labels.cpu())["NMI"]


def benign_metrics(embeddings: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
                   use_faiss: bool = True) -> Dict[str, float]:
    """R@1, R@2, mAP and NMI of a test set, in percent."""
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],) or len(labels) < 2:
        raise ValueError(f"embeddings must be (N >= 2, D) and labels (N,), got {tuple(embeddings.shape)}, "
                         f"{tuple(labels.shape)}")
    metrics = retrieval_metrics(embeddings, labels, batch_size)
    metrics["NMI"] = nmi(embeddings, labels, use_faiss)
    return metrics
