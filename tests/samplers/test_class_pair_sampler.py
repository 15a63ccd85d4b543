from collections import Counter

import pytest
import torch

from pml_tride.samplers import ClassPairSampler


def test_pairs_of_one_class_with_two_different_images():
    labels = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]  # class 2 has a single image: never drawn
    sampler = ClassPairSampler(labels, length=401, seed=0)
    indices = list(sampler)
    assert len(sampler) == len(indices) == 400
    pairs = list(zip(indices[0::2], indices[1::2]))
    for first, second in pairs:
        assert labels[first] == labels[second] and first != second
    drawn = Counter(labels[first] for first, _ in pairs)
    assert set(drawn) == {0, 1, 3} and min(drawn.values()) > 40  # uniform over the three eligible classes
    within = Counter(frozenset(pair) for pair in pairs if labels[pair[0]] == 3)
    assert len(within) == 6  # every pair of class 3's four images occurs


def test_seeded_and_resumable():
    labels = torch.arange(20) % 4
    a, b = ClassPairSampler(labels, seed=3), ClassPairSampler(labels, seed=3)
    assert list(a) == list(b)
    state = a.state_dict()
    following = list(a)
    b.load_state_dict(state)
    assert list(b) == following and following != list(ClassPairSampler(labels, seed=3))


def test_errors():
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassPairSampler([0, 0, 1])
    with pytest.raises(ValueError, match="length must be"):
        ClassPairSampler([0, 0, 1, 1], length=1)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ClassPairSampler([])
