"""The attacks rank L2-normalised embeddings by Euclidean distance, which orders the pool exactly as PML's
CosineSimilarity does (||a - b||^2 = 2 - 2 cos(a, b) for unit vectors): a model trained with a similarity is
attacked on the ranking it was trained for. Checked against plain cosine loops (larger = closer)."""

import torch
import torch.nn.functional as F

from pml_tride.attacks import AttackContext, RetrievalPool
from pml_tride.attacks.base_attack import pool_distances, top1_hit
from pml_tride.attacks.candidate_attack import top_neighbours
from pml_tride.attacks.query_attack import query_rank

from triplet_loops import loop_similarity


def cosine_order(query, pool_rows, exclude=None):
    """Pool indices by decreasing cosine to ``query`` (ties by index), without ``exclude``."""
    scored = [(-loop_similarity(query, row), j) for j, row in enumerate(pool_rows) if j != exclude]
    return [j for _, j in sorted(scored)]


def unit_data(count=40, batch=8, dim=5, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pool = F.normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64), dim=1)
    labels = torch.arange(classes).repeat(count // classes)
    pool_indices = torch.arange(batch)
    # attacked queries: the pool items moved a little, as a perturbation moves them
    queries = F.normalize(pool[:batch] + 0.3 * torch.randn(batch, dim, generator=generator, dtype=torch.float64),
                          dim=1)
    return RetrievalPool(pool, labels), queries, pool_indices


def test_ranks_top_neighbours_and_top1_hits_are_those_of_the_cosine():
    pool, queries, pool_indices = unit_data()
    rows, query_rows = pool.embeddings.tolist(), queries.tolist()
    distances = pool_distances(queries, pool)
    candidates = torch.tensor([5, 17, 3, 22, 39, 0, 11, 30])
    ranks = query_rank(distances, candidates)
    neighbours = top_neighbours(distances, pool_indices)
    context = AttackContext(clean=queries, pool=pool, pool_indices=pool_indices, target_index=candidates)
    hits = top1_hit(queries, context)
    for i, query in enumerate(query_rows):
        order = cosine_order(query, rows)
        assert ranks[i].item() == order.index(candidates[i].item())
        without_self = cosine_order(query, rows, exclude=i)
        assert neighbours[i].tolist() == without_self[:neighbours.shape[1]]
        assert hits[i].item() == float(pool.labels[without_self[0]] == pool.labels[i])
