import pytest
import torch
from pytorch_metric_learning import samplers

from pml_tride.trainers.batch_plan import BatchPlan


def data(count=48, classes=12):
    labels = torch.arange(classes).repeat(count // classes)
    return torch.utils.data.TensorDataset(torch.arange(count).float()[:, None], labels)


def plan(rank=0, world_size=1, seed=0, sampler=True):
    dataset = data()
    labels = dataset.tensors[1]
    spc = samplers.MPerClassSampler(labels, m=2, batch_size=8, length_before_new_iter=48) if sampler else None
    return BatchPlan(dataset, 8, spc, seed=seed, rank=rank, world_size=world_size)


def indices(batch):
    return batch[0][:, 0].long().tolist()


@pytest.mark.parametrize("sampler", [True, False])
def test_ranks_get_disjoint_whole_batches_of_the_same_pass(sampler):
    single = plan(sampler=sampler)
    one_process = [indices(single.next_batch()) for _ in range(len(single))]
    ranks = [plan(rank, 2, sampler=sampler) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one_process) // 2
    for step in range(len(ranks[0])):
        batches = [ranks[rank].next_batch() for rank in range(2)]
        for rank, batch in enumerate(batches):  # step s of rank r is the sampler's batch s * 2 + r
            assert indices(batch) == one_process[step * 2 + rank]
            if sampler:  # SPC-2: 4 classes with 2 images each
                assert sorted(torch.bincount(batch[1]).tolist())[-4:] == [2, 2, 2, 2]


def test_passes_depend_on_seed_and_pass_number_only():
    first, second = plan(seed=3), plan(seed=3)
    torch.manual_seed(123)  # the global generators do not matter
    drawn = [indices(first.next_batch()) for _ in range(2 * len(first))]
    torch.manual_seed(456)
    assert drawn == [indices(second.next_batch()) for _ in range(2 * len(second))]
    assert drawn[:len(first)] != drawn[len(first):]  # a new pass is a new order
    assert drawn != [indices(plan(seed=4).next_batch()) for _ in range(2 * len(first))]


def test_state_resumes_in_the_middle_of_a_pass():
    whole = plan(seed=1)
    expected = [indices(whole.next_batch()) for _ in range(3 * len(whole))]
    interrupted = plan(seed=1)
    for _ in range(len(whole) + 2):
        interrupted.next_batch()
    resumed = plan(seed=99)
    resumed.load_state_dict(interrupted.state_dict())
    assert [indices(resumed.next_batch()) for _ in range(2 * len(whole) - 2)] == expected[len(whole) + 2:]
    with pytest.raises(ValueError, match="same number of processes"):
        plan(0, 2).load_state_dict(interrupted.state_dict())
