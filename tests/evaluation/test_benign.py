import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN, FaissKNN

from pml_tride.evaluation import benign_metrics, pool_entanglement, retrieval_metrics
from pml_tride.evaluation.benign import ClassMembers, relevant_positions

from triplet_loops import loop_average_precision


def data(count=60, classes=6, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(count // classes)
    centres = torch.randn(classes, dim, generator=generator)
    return centres[labels] + 0.9 * torch.randn(count, dim, generator=generator), labels


def brute_force(embeddings, labels):
    unit = F.normalize(embeddings, dim=1).tolist()
    n = len(unit)
    r1 = r2 = ap_sum = 0.0
    scored = 0
    for q in range(n):
        others = sorted((math.dist(unit[q], unit[j]), j) for j in range(n) if j != q)
        relevant = [labels[j] == labels[q] for _, j in others]
        r1 += relevant[0]
        r2 += relevant[0] or relevant[1]
        if any(relevant):
            ap_sum += loop_average_precision(relevant)
            scored += 1
    return 100 * r1 / n, 100 * r2 / n, 100 * ap_sum / scored


@pytest.mark.parametrize("batch_size", [7, 64])
def test_retrieval_metrics_match_loops(batch_size):
    embeddings, labels = data()
    metrics = retrieval_metrics(embeddings, labels, batch_size=batch_size)
    r1, r2, m_ap = brute_force(embeddings, labels)
    assert metrics["R@1"] == pytest.approx(r1) and metrics["R@2"] == pytest.approx(r2)
    assert metrics["mAP"] == pytest.approx(m_ap)


@pytest.mark.parametrize("knn", [FaissKNN(), CustomKNN(LpDistance())], ids=["faiss", "custom"])
def test_r1_equals_pml_precision_at_1(knn):
    embeddings, labels = data(count=90, seed=2)
    calculator = AccuracyCalculator(include=("precision_at_1",), knn_func=knn, device=torch.device("cpu"))
    normalised = F.normalize(embeddings, dim=1)
    expected = 100 * calculator.get_accuracy(normalised, labels)["precision_at_1"]
    assert retrieval_metrics(embeddings, labels)["R@1"] == pytest.approx(expected)


@pytest.mark.parametrize("use_faiss", [True, False])
def test_nmi_high_for_separated_classes(use_faiss):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(25)
    embeddings = torch.eye(4)[labels] * 10 + 0.01 * torch.randn(100, 4, generator=generator)
    metrics = benign_metrics(embeddings, labels, use_faiss=use_faiss)
    assert metrics["NMI"] == pytest.approx(100, abs=1e-6) and metrics["R@1"] == 100


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="labels"):
        benign_metrics(torch.rand(5, 2), torch.zeros(4))


def sorted_retrieval_metrics(embeddings, labels, batch_size):
    """The former implementation: every row sorted (stable, ties by index); the reference of the rank counting."""
    embeddings = F.normalize(embeddings.float(), dim=1)
    total = len(labels)
    hits = {1: 0.0, 2: 0.0}
    average_precision_sum, scored_queries = 0.0, 0
    for start in range(0, total, batch_size):
        rows = torch.arange(start, min(start + batch_size, total))
        distances = torch.cdist(embeddings[rows], embeddings)
        distances[torch.arange(len(rows)), rows] = float("inf")
        order = distances.argsort(dim=1, stable=True)[:, : total - 1]
        relevant = (labels[order] == labels[rows][:, None]).double()
        for k in hits:
            hits[k] += relevant[:, :k].max(dim=1).values.sum().item()
        relevant_count = relevant.sum(dim=1)
        precision = relevant.cumsum(dim=1) / torch.arange(1, total, dtype=torch.float64)
        has_relevant = relevant_count > 0
        average_precision = (precision * relevant).sum(dim=1)[has_relevant] / relevant_count[has_relevant]
        average_precision_sum += average_precision.sum().item()
        scored_queries += int(has_relevant.sum())
    metrics = {f"R@{k}": 100 * hits[k] / total for k in hits}
    metrics["mAP"] = 100 * average_precision_sum / max(scored_queries, 1)
    return metrics


def tied_data(count=80, seed=3):
    """Embeddings on a coarse grid: many exact distance ties, duplicates, lone labels and uneven classes."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randint(-1, 2, (count, 3), generator=generator).float()
    embeddings[embeddings.abs().sum(dim=1) == 0] = 1.0
    labels = torch.randint(0, 9, (count,), generator=generator)
    labels[:3] = torch.tensor([100, 101, 102])  # three lone labels: no relevant item
    return embeddings, labels


@pytest.mark.parametrize("make", [data, tied_data], ids=["continuous", "ties"])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_rank_counting_equals_sorting_every_row(make, batch_size):
    embeddings, labels = make()
    expected = sorted_retrieval_metrics(embeddings, labels, batch_size)
    metrics = retrieval_metrics(embeddings, labels, batch_size=batch_size)
    assert metrics["R@1"] == expected["R@1"] and metrics["R@2"] == expected["R@2"]
    assert metrics["mAP"] == pytest.approx(expected["mAP"], rel=1e-12, abs=0)


def test_relevant_positions_are_the_places_in_a_stable_sort():
    embeddings, labels = tied_data(count=50, seed=5)
    unit = F.normalize(embeddings, dim=1)
    distances = torch.cdist(unit, unit)
    rows = torch.arange(len(labels))
    positions, counts = relevant_positions(distances, *ClassMembers(labels).relevant(rows), rows)
    for query in range(len(labels)):
        others = [j for j in range(len(labels)) if j != query]
        order = sorted(others, key=lambda j: (distances[query, j].item(), j))
        expected = [place for place, j in enumerate(order, start=1) if labels[j] == labels[query]]
        assert counts[query] == len(expected)
        assert positions[query, : len(expected)].tolist() == expected


def test_all_items_of_one_class_have_average_precision_one():
    embeddings, _ = data(count=30)
    metrics = retrieval_metrics(embeddings, torch.zeros(30, dtype=torch.long), batch_size=4)
    assert metrics == {"R@1": 100.0, "R@2": 100.0, "mAP": 100.0}


def test_blocks_too_large_for_one_key_range_are_split(monkeypatch):
    from pml_tride.evaluation import benign

    embeddings, labels = tied_data(count=40, seed=7)
    expected = sorted_retrieval_metrics(embeddings, labels, batch_size=16)
    monkeypatch.setattr(benign, "MAX_KEYED_ELEMENTS", 100)
    metrics = retrieval_metrics(embeddings, labels, batch_size=16)
    assert metrics["R@1"] == expected["R@1"] and metrics["mAP"] == pytest.approx(expected["mAP"], rel=1e-12)


def brute_force_entanglement(embeddings, labels):
    unit = F.normalize(embeddings, dim=1).tolist()
    intra, inter = [], []
    for i in range(len(unit)):
        for j in range(len(unit)):
            if i != j:
                (intra if labels[i] == labels[j] else inter).append(math.dist(unit[i], unit[j]))
    return (sum(intra) / len(intra)) / (sum(inter) / len(inter))


def test_pool_entanglement_is_d_intra_over_d_inter():
    embeddings, labels = data(count=30, classes=3)
    value, items = pool_entanglement(embeddings, labels)
    assert items == 30 and value == pytest.approx(brute_force_entanglement(embeddings, labels.tolist()), rel=1e-5)


def test_pool_entanglement_subsamples_large_pools_with_a_fixed_seed():
    embeddings, labels = data(count=60, classes=6)
    value, items = pool_entanglement(embeddings, labels, sample=20, seed=3)
    chosen = torch.randperm(60, generator=torch.Generator().manual_seed(3))[:20].sort().values
    assert items == 20
    assert value == pytest.approx(brute_force_entanglement(embeddings[chosen], labels[chosen].tolist()), rel=1e-5)
    assert pool_entanglement(embeddings, labels, sample=20, seed=3) == (value, items)
    assert pool_entanglement(embeddings, labels, sample=20, seed=4)[0] != value


def test_pool_entanglement_undefined_without_both_kinds_of_pair():
    assert pool_entanglement(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)) == (None, 4)
    assert pool_entanglement(torch.randn(4, 3), torch.arange(4)) == (None, 4)
    with pytest.raises(ValueError, match="sample"):
        pool_entanglement(torch.randn(4, 3), torch.arange(4), sample=1)
