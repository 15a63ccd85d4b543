"""Benign retrieval metrics of the test set: R@1, R@2, mAP and NMI (percent), computed in B x N blocks.

Every test item is a query against all other items (itself excluded). R@k: a same-label item among the k
nearest. mAP: mean over queries of the average precision over the full ranking of the other N - 1 items
(queries with no other item of their class are skipped, as PML does for lone labels); the places of the relevant
items are counted, not sorted (see :func:`relevant_positions`), so time is linear in N per query. NMI: k-means with
k = number of classes (faiss when installed, else scikit-learn), scored by PML's AccuracyCalculator.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ["benign_metrics", "retrieval_metrics", "retrieval_block", "relevant_positions", "ClassMembers", "nmi",
           "kmeans_function", "RECALL_AT"]

RECALL_AT = (1, 2)
KMEANS_SEED = 0
KMEANS_ITERATIONS = 20
# Sorts after every real order key (float32 bit patterns of finite distances times N plus an index).
EXCLUDED_KEY = torch.iinfo(torch.int64).max


def order_keys(distances: torch.Tensor) -> torch.Tensor:
    """int64 keys that order the items of each row exactly as a stable ascending sort of float32 ``distances``
    (B, N) >= 0 does: by distance, ties by column index. Non-negative float32 values order as their bit patterns
    (``abs`` turns -0.0, the one negative pattern, into +0.0); key = bits * N + column, in one int64 pass."""
    bits = torch.abs(distances).view(torch.int32)
    columns = torch.arange(distances.shape[1], device=distances.device)
    return torch.add(columns, bits, alpha=distances.shape[1])


class ClassMembers:
    """The items of each label, for gathering a query's relevant items without a (B, N) label comparison."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.order = torch.argsort(labels, stable=True)
        _, self.label_index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        self.starts = counts.cumsum(dim=0) - counts
        self.counts = counts

    def relevant(self, rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, W) columns of the items sharing each row's label, the row itself included, and a (B, W) mask of
        the valid entries (W = the largest class among the rows)."""
        label_index = self.label_index[rows]
        counts = self.counts[label_index]
        width = int(counts.max())
        offsets = torch.arange(width, device=rows.device)
        valid = offsets[None, :] < counts[:, None]
        places = (self.starts[label_index][:, None] + offsets[None, :]).masked_fill_(~valid, 0)
        return self.order[places], valid


def relevant_positions(distances: torch.Tensor, relevant_columns: torch.Tensor, valid: torch.Tensor,
                       excluded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Places of the relevant items of each row without sorting the row.

    ``distances`` (B, N) float32 >= 0; ``relevant_columns`` (B, W) the columns of each row's relevant items where
    ``valid`` (B, W) holds (an entry equal to ``excluded`` is dropped); ``excluded`` (B,) the column of each row left
    out of the ranking (the query itself). Returns ``positions`` (B, R): the 1-based place of each row's i-th nearest
    relevant item in the stable ascending order of the row without its excluded column, and ``counts`` (B,): the
    number R_q of relevant items of each row (entries ``positions[q, i >= R_q]`` are meaningless).

    Only the relevant keys are sorted (at most W per row); every item is located among them by binary search, and
    the accumulated histogram of those locations counts the items up to each relevant one: O(N log W) per row
    instead of the O(N log N) of sorting the row.
    """
    batch = len(distances)
    rows = torch.arange(batch, device=distances.device)
    keys = order_keys(distances)
    keys[rows, excluded] = EXCLUDED_KEY
    valid = valid & (relevant_columns != excluded[:, None])
    counts = valid.sum(dim=1)
    relevant_keys = keys.gather(1, relevant_columns).masked_fill_(~valid, EXCLUDED_KEY).sort(dim=1).values
    width = relevant_keys.shape[1]
    # how many relevant keys lie strictly below each item's key, offset per row for one flat histogram
    located = torch.searchsorted(relevant_keys, keys, out_int32=True)
    located.add_((rows * (width + 1)).int()[:, None])
    histogram = torch.bincount(located.view(-1), minlength=batch * (width + 1)).view(batch, width + 1)
    # the items up to the i-th relevant one, itself included: its 1-based place
    return histogram.cumsum(dim=1)[:, :width], counts


def retrieval_block(embeddings: torch.Tensor, members: ClassMembers, rows: torch.Tensor) -> torch.Tensor:
    """Sums over the query ``rows`` of unit ``embeddings`` (N, D) against all N items, itself excluded: a float64
    tensor [R@1 hits, R@2 hits, ..., sum of AP, queries with a relevant item] on the embeddings' device (no host
    sync). Only a (len(rows), N) distance block is built, and no row is sorted."""
    distances = torch.cdist(embeddings[rows], embeddings)
    positions, counts = relevant_positions(distances, *members.relevant(rows), rows)
    has_relevant = counts > 0
    hits = [(has_relevant & (positions[:, 0] <= k)).sum() for k in RECALL_AT]
    places = torch.arange(1, positions.shape[1] + 1, device=positions.device, dtype=torch.float64)
    precision = (places / positions.double()).masked_fill(places[None, :] > counts[:, None], 0.0)
    average_precision = precision.sum(dim=1)[has_relevant] / counts[has_relevant]
    return torch.stack([*hits, average_precision.sum(), has_relevant.sum()]).double()


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> Dict[str, float]:
    """R@1, R@2 and mAP in percent, in (batch_size x N) distance blocks (:func:`retrieval_block`).

    Equal to sorting every row (stable, ties by index): a query's AP is the mean over its relevant items, nearest
    first, of (i + 1) / position_i, and R@k holds when its nearest relevant item is within the first k places.
    """
    embeddings = F.normalize(embeddings.float(), dim=1)
    total = len(labels)
    members = ClassMembers(labels)
    sums = sum(retrieval_block(embeddings, members, torch.arange(start, min(start + batch_size, total),
                                                                 device=embeddings.device))
               for start in range(0, total, batch_size)).tolist()
    *hits, average_precision_sum, scored_queries = sums
    metrics = {f"R@{k}": 100 * hit / total for k, hit in zip(RECALL_AT, hits)}
    metrics["mAP"] = 100 * average_precision_sum / max(scored_queries, 1)
    return metrics


class SklearnKMeans:
    """PML-style k-means callable (x, k) -> cluster labels, with scikit-learn."""

    def __call__(self, x: torch.Tensor, clusters: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        assignments = KMeans(n_clusters=clusters, n_init=1, max_iter=KMEANS_ITERATIONS * 5,
                             random_state=KMEANS_SEED).fit_predict(x.detach().cpu().numpy())
        return torch.as_tensor(assignments, device=x.device)


def kmeans_function(use_faiss: bool = True, gpu: bool = False):
    """PML's FaissKMeans when faiss is importable (and wanted; on the GPUs with ``gpu`` when faiss sees any),
    else a scikit-learn k-means."""
    if use_faiss:
        try:
            import faiss
            from pytorch_metric_learning.utils.inference import FaissKMeans

            on_gpu = gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
            return FaissKMeans(niter=KMEANS_ITERATIONS, seed=KMEANS_SEED, gpu=on_gpu)
        except ImportError:
            pass
    return SklearnKMeans()


def nmi(embeddings: torch.Tensor, labels: torch.Tensor, use_faiss: bool = True) -> float:
    """NMI (percent) of k-means clusters (k = number of classes) through PML's AccuracyCalculator; the k-means
    runs on faiss's GPUs when the embeddings are on CUDA and faiss-gpu is installed."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    kmeans = kmeans_function(use_faiss, gpu=embeddings.is_cuda)
    calculator = AccuracyCalculator(include=("NMI",), knn_func=CustomKNN(LpDistance()), kmeans_func=kmeans,
                                    device=torch.device("cpu"))
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
