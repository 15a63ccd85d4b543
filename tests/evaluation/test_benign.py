import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN, FaissKNN

from pml_tride.evaluation import benign_metrics, retrieval_metrics


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
            hits, precisions = 0, []
            for position, rel in enumerate(relevant, start=1):
                if rel:
                    hits += 1
                    precisions.append(hits / position)
            ap_sum += sum(precisions) / len(precisions)
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
