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
    assert resumed.redealt_from is None


@pytest.mark.parametrize("old, new, steps_taken", [(2, 1, 1), (1, 2, 3), (2, 3, 1), (3, 2, 1)])
def test_resume_on_another_number_of_processes_redeals_the_rest_of_the_pass(old, new, steps_taken):
    single = plan(seed=5)
    passes = [[indices(single.next_batch()) for _ in range(len(single))] for _ in range(2)]
    interrupted = [plan(rank, old, seed=5) for rank in range(old)]
    for rank_plan in interrupted:
        for _ in range(steps_taken):
            rank_plan.next_batch()
    state = interrupted[0].state_dict()
    for rank_plan in interrupted:  # rank-independent
        other = rank_plan.state_dict()
        assert torch.equal(other.pop("sampler_before_pass")["labels"], state["sampler_before_pass"]["labels"])
        assert other == {key: value for key, value in state.items() if key != "sampler_before_pass"}
    trained = steps_taken * old  # batches of the pass trained before the interruption
    for rank in range(new):
        resumed = plan(rank, new, seed=99)
        resumed.load_state_dict(state)
        assert resumed.redealt_from == old and len(resumed) == len(passes[0]) // new
        left = (len(passes[0]) - trained) // new  # a remainder of fewer than `new` batches is skipped
        assert resumed.steps_left_in_pass == left
        rest = [indices(resumed.next_batch()) for _ in range(left)]
        assert rest == [passes[0][trained + step * new + rank] for step in range(left)]
        following = [indices(resumed.next_batch()) for _ in range(len(resumed))]  # the next pass, dealt as usual
        assert following == [passes[1][step * new + rank] for step in range(len(resumed))]
        assert resumed.redealt_from is None


def test_a_pass_the_old_processes_had_finished_is_not_reopened():
    single = plan(seed=2)
    passes = [[indices(single.next_batch()) for _ in range(len(single))] for _ in range(2)]
    finished = plan(0, 4, seed=2)  # 6 batches over 4 ranks: one step each, batches 4 and 5 skipped
    finished.next_batch()
    resumed = plan(0, 1, seed=2)
    resumed.load_state_dict(finished.state_dict())
    assert resumed.steps_left_in_pass == 0
    assert indices(resumed.next_batch()) == passes[1][0]
