"""leave_process_group: a no-op outside a group; inside one, every rank passes the barrier before the group is
destroyed (the worker tests end with it on two gloo ranks)."""

import torch.distributed as dist

from pml_tride.distributed import is_distributed, leave_process_group


def test_outside_a_group_nothing_happens():
    assert not is_distributed()
    leave_process_group()
    assert not dist.is_initialized()


def test_a_one_rank_group_is_left_and_destroyed(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert is_distributed()
    leave_process_group()
    assert not dist.is_initialized()
