import pytest
import torch
from torch.utils.data import BatchSampler

from pml_tride.samplers import SPC2Sampler

LABELS = [0] * 7 + [1] * 4 + [2] * 5 + [3] * 1


def test_pairs_share_a_label_and_classes_may_repeat_in_a_batch():
    labels = torch.tensor(LABELS)
    sampler = SPC2Sampler(labels, seed=3)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 2 * (3 + 2 + 2 + 0)
    assert len(set(indices)) == len(indices)
    for first, second in zip(indices[0::2], indices[1::2]):
        assert labels[first] == labels[second]
    batch = labels[indices[:8]]
    assert len(torch.unique(batch)) < 4  # four pairs from three classes with two items or more


def test_every_batch_of_an_even_size_is_spc2():
    labels = torch.tensor(LABELS)
    for batch in BatchSampler(SPC2Sampler(labels, seed=0), batch_size=4, drop_last=True):
        assert all(labels[batch[2 * i]] == labels[batch[2 * i + 1]] for i in range(2))


def test_passes_differ_and_resume_from_state_dict_repeats_the_next_pass():
    sampler = SPC2Sampler(LABELS, seed=1)
    first = list(sampler)
    state = sampler.state_dict()
    second = list(sampler)
    assert first != second
    resumed = SPC2Sampler(LABELS, seed=99)
    resumed.load_state_dict(state)
    assert list(resumed) == second
    assert list(SPC2Sampler(LABELS, seed=1)) == first


def test_refuses_labels_without_any_pair():
    with pytest.raises(ValueError, match="two items"):
        SPC2Sampler([0, 1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        SPC2Sampler([])
