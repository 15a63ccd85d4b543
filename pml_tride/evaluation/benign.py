"""Benign retrieval metrics of the test set: R@1, R@2, mAP and NMI (percent), computed in B x N blocks.

Every test item is a query against all other items (itself excluded). R@k: a same-label item among the k
nearest. mAP: mean over queries of the average precision over the full ranking of the other N - 1 items
(queries with no other item of their class are skipped, as PML does for lone labels); the places of the relevant
items are counted, not sorted (see :func:`relevant_positions`), so time is linear in N per query. NMI: k-means with
k = number of classes (faiss when installed, else scikit-learn), scored by PML's AccuracyCalculator.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..chunks import chunk_slices

__all__ = ["BASE_RECALL", "benign_metrics", "retrieval_metrics", "retrieval_block", "relevant_positions",
           "ClassMembers", "nmi", "kmeans_function", "RECALL_AT", "pool_entanglement", "ENTANGLEMENT_SAMPLE",
           "ENTANGLEMENT_SEED"]

RECALL_AT = (1, 2)
# The benign metric name of R@1 over a data set's coarser ``base_labels`` (see RobustnessEvaluator).
BASE_RECALL = "base R@1"
KMEANS_SEED = 0
KMEANS_ITERATIONS = 20
# Order keys of one row lie in [0, 2^31 N) (float32 bit patterns of distances >= 0 are below 2^31); a block of B
# rows keys B * 2^31 * N values in an int64, so blocks are split to keep B * N below this.
MAX_KEYED_ELEMENTS = 2 ** 32
FLOAT32_PATTERNS = 2 ** 31
# Test-set entanglement uses at most this many items, a fixed seeded subsample, so its pairwise distances stay
# O(ENTANGLEMENT_SAMPLE^2) on large pools (2,000 items: 4 million distances, 16 MB).
ENTANGLEMENT_SAMPLE = 2000
ENTANGLEMENT_SEED = 0


def order_keys(distances: torch.Tensor, columns: torch.Tensor, total: int) -> torch.Tensor:
    """int64 keys that order pool items exactly as a stable ascending sort of their float32 ``distances`` (>= 0)
    does: by distance, ties by column index; non-negative float32 values order as their bit patterns (``abs``
    turns -0.0, the one negative pattern, into +0.0). key = bits * total + column."""
    return torch.add(columns, torch.abs(distances).view(torch.int32), alpha=total)


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

    ``distances`` (B, N) float32 >= 0 (overwritten: the excluded entries become +inf); ``relevant_columns`` (B, W)
    the columns of each row's relevant items where ``valid`` (B, W) holds (an entry equal to ``excluded`` is
    dropped); ``excluded`` (B,) the column of each row left out of the ranking (the query itself). Returns
    ``positions`` (B, W): the 1-based place of each row's i-th nearest relevant item in the stable ascending order
    of the row without its excluded column, and ``counts`` (B,): the number R_q of relevant items of each row
    (entries ``positions[q, i >= R_q]`` are meaningless).

    Only the items no farther than a row's farthest relevant item can come before one; those candidates get exact
    order keys (:func:`order_keys`, offset per row so that one flat sorted array holds every row's sorted relevant
    keys), each is located among the relevant keys by binary search, and the accumulated histogram of those
    locations counts the items up to each relevant one: O(N + M log W) per row, M the candidates, instead of the
    O(N log N) of sorting the row.
    """
    batch, total = distances.shape
    if batch > 1 and batch * total >= MAX_KEYED_ELEMENTS:
        half = batch // 2
        first = relevant_positions(distances[:half], relevant_columns[:half], valid[:half], excluded[:half])
        second = relevant_positions(distances[half:], relevant_columns[half:], valid[half:], excluded[half:])
        return torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
    rows = torch.arange(batch, device=distances.device)
    distances[rows, excluded] = float("inf")
    valid = valid & (relevant_columns != excluded[:, None])
    counts = valid.sum(dim=1)
    width = relevant_columns.shape[1]
    row_span = FLOAT32_PATTERNS * total
    relevant_distances = distances.gather(1, relevant_columns)
    farthest = relevant_distances.masked_fill(~valid, -1.0).max(dim=1).values  # -1: no candidates in the row
    relevant_keys = order_keys(relevant_distances, relevant_columns, total).masked_fill_(~valid, row_span - 1)
    relevant_keys = (relevant_keys.sort(dim=1).values + rows[:, None] * row_span).view(-1)
    candidate_rows, candidate_columns = (distances <= farthest[:, None]).nonzero(as_tuple=True)
    candidate_keys = order_keys(distances[candidate_rows, candidate_columns], candidate_columns, total)
    candidate_keys.add_(candidate_rows * row_span)
    # row r's relevant keys strictly below a candidate's key: searchsorted gives r * W + that count; + r makes
    # room for the count W in a flat histogram of W + 1 bins per row
    located = torch.searchsorted(relevant_keys, candidate_keys).add_(candidate_rows)
    histogram = torch.bincount(located, minlength=batch * (width + 1)).view(batch, width + 1)
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
    sums = sum(retrieval_block(embeddings, members, torch.arange(part.start, part.stop, device=embeddings.device))
               for part in chunk_slices(total, batch_size)).tolist()
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


def pool_entanglement(embeddings: torch.Tensor, labels: torch.Tensor, sample: int = ENTANGLEMENT_SAMPLE,
                          seed: int = ENTANGLEMENT_SEED) -> Tuple[Optional[float], int]:
    """Entanglement d_intra / d_inter of the L2-normalised test embeddings (CA-TRIDE Table 5:
    :func:`pml_tride.collapseness.entanglement`) and the number of items it used: all of them up to ``sample``,
    else ``sample`` items drawn uniformly without replacement by a generator seeded with ``seed`` (the same items
    in every call on a pool of the same size). The value is None when those items hold no same-class pair or no
    different-class pair (a lone-item or one-class sample), where the ratio is undefined."""
    from ..collapseness import entanglement

    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2:
        raise ValueError(f"sample must be an integer >= 2, got {sample!r}")
    total = len(labels)
    if total > sample:
        chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed), device="cpu")[:sample]
        chosen = chosen.sort().values.to(labels.device)
        embeddings, labels = embeddings[chosen], labels[chosen]
    same = labels[:, None] == labels[None, :]
    intra_pairs = int(same.sum()) - len(labels)
    if intra_pairs == 0 or bool(same.all()):
        return None, len(labels)
    return float(entanglement(embeddings.float(), labels)), len(labels)
