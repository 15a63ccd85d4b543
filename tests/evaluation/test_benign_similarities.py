"""The evaluator's benign R@1, R@2 and mAP rank unit vectors by Euclidean distance, the order of PML's
CosineSimilarity (||a - b||^2 = 2 - 2 cos(a, b)): checked against a plain loop that ranks by decreasing cosine."""

import pytest
import torch
import torch.nn.functional as F

from pml_tride.attacks import RetrievalPool
from pml_tride.evaluation import retrieval_metrics
from pml_tride.evaluation.robustness_evaluator import clean_recall_at_1

from triplet_loops import loop_average_precision, loop_similarity


def cosine_retrieval(embeddings, labels):
    rows, n = embeddings.tolist(), len(embeddings)
    r1 = r2 = ap_sum = 0.0
    hits_at_1 = []
    for q in range(n):
        others = sorted((-loop_similarity(rows[q], rows[j]), j) for j in range(n) if j != q)
        relevant = [labels[j] == labels[q] for _, j in others]
        hits_at_1.append(relevant[0])
        r1 += relevant[0]
        r2 += relevant[0] or relevant[1]
        ap_sum += loop_average_precision(relevant)
    return 100 * r1 / n, 100 * r2 / n, 100 * ap_sum / n, hits_at_1


def test_benign_metrics_and_clean_recall_equal_the_cosine_ranking():
    generator = torch.Generator().manual_seed(4)
    labels = torch.arange(5).repeat(8)
    centres = torch.randn(5, 6, generator=generator)
    embeddings = centres[labels] + 1.1 * torch.randn(len(labels), 6, generator=generator)
    r1, r2, m_ap, hits_at_1 = cosine_retrieval(embeddings, labels)
    assert 0 < r1 < 100
    metrics = retrieval_metrics(embeddings, labels, batch_size=7)
    assert metrics["R@1"] == pytest.approx(r1) and metrics["R@2"] == pytest.approx(r2)
    assert metrics["mAP"] == pytest.approx(m_ap)
    rows = torch.tensor([0, 3, 9, 14, 22, 31])
    pool = RetrievalPool(F.normalize(embeddings, dim=1), labels)
    expected = 100 * sum(hits_at_1[row] for row in rows.tolist()) / len(rows)
    assert clean_recall_at_1(pool, rows) == pytest.approx(expected)
