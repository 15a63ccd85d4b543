import pytest
import torch

from pml_tride.host_sync_counter import HostSyncCounter


def syncs(function, **kwargs):
    with HostSyncCounter(**kwargs) as counter:
        function()
    return counter


@pytest.mark.parametrize("function, expected", [
    (lambda x: x.sum().item(), {"aten._local_scalar_dense.default": 1}),
    (lambda x: bool((x > 0).any()), {"aten._local_scalar_dense.default": 1}),
    (lambda x: torch.equal(x, x), {"aten.equal.default": 1}),
    (lambda x: x.nonzero(), {"aten.nonzero.default": 1}),
    (lambda x: x[x > 0], {"aten.index.Tensor": 1}),  # a boolean mask: the kernel runs nonzero unseen
    (lambda x: torch.arange(3).repeat_interleave(torch.tensor([1, 2, 0])), {"aten.repeat_interleave.Tensor": 1}),
    (lambda x: x.tolist(), {"Tensor.tolist": 1}),
    (lambda x: x.numpy(), {"Tensor.numpy": 1}),
])
def test_each_kind_of_sync_is_counted_by_op(function, expected):
    x = torch.tensor([0.5, -1.0, 2.0])
    counter = syncs(lambda: function(x))
    assert dict(counter.counts) == expected and counter.total == 1


@pytest.mark.parametrize("function", [
    lambda x: x + 1,
    lambda x: x.view(-1),
    lambda x: x[torch.tensor([0, 2])],  # an integer index: no sync
    lambda x: torch.arange(3).repeat_interleave(torch.tensor([1, 2, 0]), output_size=3),
    lambda x: (x.clone().requires_grad_(True) * 2).sum().backward(),
])
def test_work_the_device_runs_ahead_on_is_not_counted(function):
    assert syncs(lambda: function(torch.tensor([0.5, -1.0, 2.0]))).total == 0


def test_methods_are_restored_and_the_test_is_injectable():
    x = torch.tensor([1.0, 2.0])
    counter = syncs(lambda: (x + 1, x.sum().item()), sync_test=lambda func, args, kwargs: True)
    assert counter.counts["aten.add.Tensor"] == 1 and counter.counts["aten._local_scalar_dense.default"] == 1
    assert torch.Tensor.tolist is torch._C.TensorBase.tolist and torch.Tensor.numpy is torch._C.TensorBase.numpy
    x.tolist()
    assert counter.counts["Tensor.tolist"] == 0  # counting stops with the block
