"""Plain-Python re-derivations shared by the baseline-loss tests (importable: tests/ is on pytest's pythonpath).

Embeddings are lists of floats; distances follow PML's LpDistance(normalize_embeddings=True) with
F.pairwise_distance's +1e-6, similarities PML's CosineSimilarity (the ``loop_similarity*`` helpers); PGD is
re-derived with a central finite-difference sign gradient.
"""

import math

import torch
from torch import nn

PAIRWISE_EPS = 1e-6
FINITE_DIFFERENCE_STEP = 1e-7


class Identity(nn.Module):
    """Embedding = flattened pixels, so every distance can be re-derived by hand."""

    def forward(self, x):
        return x.flatten(1)


HAND_IMAGES = torch.tensor(
    [
        [0.9, 0.1, 0.2],
        [0.8, 0.3, 0.1],
        [0.2, 0.9, 0.3],
        [0.1, 0.7, 0.6],
        [0.5, 0.5, 0.9],
        [0.3, 0.2, 0.8],
    ],
    dtype=torch.float64,
)
HAND_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
HAND_TRIPLETS = [(0, 1, 2), (1, 0, 4), (2, 3, 5), (3, 2, 0), (4, 5, 1)]


def hand_indices(triplets=HAND_TRIPLETS):
    if not triplets:
        return (torch.tensor([], dtype=torch.long),) * 3
    return tuple(torch.tensor(column) for column in zip(*triplets))


def loop_distance(u, v):
    """||u/|u| - v/|v| + 1e-6||."""
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(x * x for x in v))
    return math.sqrt(sum((a / nu - b / nv + PAIRWISE_EPS) ** 2 for a, b in zip(u, v)))


def loop_hinge(a, p, n, margin):
    return max(loop_distance(a, p) - loop_distance(a, n) + margin, 0.0)


def triplet_keys(triplets, perturb, roles=(0, 1, 2)):
    """The key of the perturbed copy of each (triplet, role): the image index ("unique"), or (role, triplet)."""
    return {
        (i, role): (triplet[role] if perturb == "unique" else (role, i))
        for i, triplet in enumerate(triplets)
        for role in roles
    }


def loop_variables(images, triplets, keys, perturb):
    """The clean value of every perturbed copy of :func:`triplet_keys`: its image (the row of ``images``)."""
    return {key: images[key if perturb == "unique" else triplets[key[1]][key[0]]] for key in set(keys.values())}


def loop_pgd(variables, objective, eps, alpha, steps, stop=None, low=0.0, high=1.0):
    """Signed descent on ``objective(variables)`` over a dict key -> list of floats, with L-inf projection and
    clamping; returns (variables, steps_taken). ``stop(loss)`` is checked before each step, as the engine."""
    clean = {key: list(value) for key, value in variables.items()}
    current = {key: list(value) for key, value in variables.items()}
    taken = 0
    for _ in range(steps):
        if stop is not None and stop(objective(current)):
            break
        signs = {}
        for key, value in current.items():
            signs[key] = []
            for k in range(len(value)):
                up = {**current, key: value[:k] + [value[k] + FINITE_DIFFERENCE_STEP] + value[k + 1:]}
                down = {**current, key: value[:k] + [value[k] - FINITE_DIFFERENCE_STEP] + value[k + 1:]}
                difference = objective(up) - objective(down)
                signs[key].append((difference > 0) - (difference < 0))
        for key, value in current.items():
            current[key] = [
                min(max(min(max(x - alpha * s, c - eps), c + eps), low), high)
                for x, s, c in zip(value, signs[key], clean[key])
            ]
        taken += 1
    return current, taken


# A margin every hinge of the hand-made batch exceeds (distances of unit embeddings are at most 2).
ACTIVE_MARGIN = 2.0


def hand_loss(loss_class, **kwargs):
    """``loss_class`` on an :class:`Identity` model called on the hand-made batch (its hook captures the images):
    the loss and its value."""
    model = Identity()
    loss = loss_class(model, **kwargs)
    return loss, loss(model(HAND_IMAGES), HAND_LABELS, hand_indices())


def hand_leaf_call(loss_class, **kwargs):
    """``loss_class`` (every hinge active: margin :data:`ACTIVE_MARGIN`) called on a leaf copy of the hand-made
    embeddings, the images passed as ``inputs``: the leaf and the value, to see where gradients reach."""
    loss = loss_class(Identity(), margin=ACTIVE_MARGIN, **kwargs)
    embeddings = HAND_IMAGES.clone().requires_grad_(True)
    return embeddings, loss(embeddings, HAND_LABELS, hand_indices(), inputs=HAND_IMAGES)


def hand_forward_sizes(loss_class, **kwargs):
    """The batch size of every forward ``loss_class`` on an :class:`Identity` model makes in one call on the
    hand-made batch (the caller's own forward of the batch not counted)."""
    model = Identity()
    seen = []
    model.register_forward_hook(lambda module, args, output: seen.append(len(args[0])))
    loss = loss_class(model, **kwargs)
    embeddings = model(HAND_IMAGES)
    seen.clear()
    loss(embeddings, HAND_LABELS, hand_indices())
    return seen
def loop_similarity(u, v):
    """cos(u, v) = u/|u| . v/|v| (PML's CosineSimilarity, larger = closer)."""
    nu = math.sqrt(sum(x * x for x in u))
    nv = math.sqrt(sum(x * x for x in v))
    return sum(a / nu * b / nv for a, b in zip(u, v))


def loop_similarity_hinge(a, p, n, margin):
    """PML's TripletMarginLoss violation for a similarity: max(s(a, n) - s(a, p) + margin, 0)."""
    return max(loop_similarity(a, n) - loop_similarity(a, p) + margin, 0.0)


def loop_similarity_weighted_mean(similarities, lam):
    """d_w (Eq. 6-7) of the dissimilarities 1 - s: weights exp(-lam (max_j s_j - s_i)), the closest pair weighs 1."""
    closest = max(similarities)
    weights = [math.exp(-lam * (closest - s)) for s in similarities]
    return sum(w * (1 - s) for w, s in zip(weights, similarities)) / sum(weights)


def loop_average_precision(relevant):
    """Average precision of a ranked list of relevance flags: the mean over the relevant items of the precision at
    their positions."""
    hits, precisions = 0, []
    for position, rel in enumerate(relevant, start=1):
        if rel:
            hits += 1
            precisions.append(hits / position)
    return sum(precisions) / len(precisions)
