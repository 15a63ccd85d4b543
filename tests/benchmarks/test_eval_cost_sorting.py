import torch

from pml_tride.evaluation.benign import ClassMembers, relevant_positions


def test_sorted_positions_equal_the_rank_counting_on_ties(load_benchmark):
    eval_cost = load_benchmark("eval_cost")
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randint(0, 3, (40, 2), generator=generator).float()  # a coarse grid: many exact ties
    labels = torch.randint(0, 6, (40,), generator=generator)
    members = ClassMembers(labels)
    rows = torch.arange(10, 25)
    distances = torch.cdist(embeddings[rows], embeddings)
    expected, expected_counts = relevant_positions(distances.clone(), *members.relevant(rows), rows)
    positions, counts = eval_cost.sorted_positions(distances.clone(), *members.relevant(rows), rows)
    assert torch.equal(counts, expected_counts)
    for row, count in enumerate(counts.tolist()):
        assert torch.equal(positions[row, :count], expected[row, :count]), row


def test_sorted_positions_by_hand(load_benchmark):
    eval_cost = load_benchmark("eval_cost")
    distances = torch.tensor([[0.0, 2.0, 1.0, 1.0, 3.0]])  # row 0 is the query; 2 and 3 tie (index order)
    relevant_columns, valid = torch.tensor([[0, 3, 4]]), torch.tensor([[True, True, True]])
    positions, counts = eval_cost.sorted_positions(distances, relevant_columns, valid, torch.tensor([0]))
    # the order without the query: 2 (1.0), 3 (1.0), 1 (2.0), 4 (3.0): item 3 is 2nd, item 4 is 4th
    assert counts.tolist() == [2] and positions[0, :2].tolist() == [2, 4]
