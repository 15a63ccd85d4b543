import pytest
import torch

from pml_tride.loader_options import (
    MAX_DEFAULT_WORKERS,
    PREFETCH_FACTOR,
    default_num_workers,
    loader_options,
    resolve_num_workers,
)


def test_no_workers_on_cpu():
    assert default_num_workers("cpu") == default_num_workers(None) == default_num_workers(torch.device("cpu")) == 0


@pytest.mark.parametrize("cores, local_world_size, expected", [(32, None, MAX_DEFAULT_WORKERS), (16, "4", 4),
                                                              (6, "1", 6), (2, "8", 1), (None, None, 1)])
def test_cuda_default_shares_the_cores_between_local_processes(monkeypatch, cores, local_world_size, expected):
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    if local_world_size is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert default_num_workers("cuda:0") == expected == min(MAX_DEFAULT_WORKERS, max(1, (cores or 1) // int(
        local_world_size or 1)))


def test_resolve_and_options():
    assert resolve_num_workers(None, "cpu") == 0 and resolve_num_workers(3, "cpu") == 3
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_workers"):
            resolve_num_workers(bad, "cpu")
    assert loader_options(0, "cpu") == {"num_workers": 0, "pin_memory": False}
    assert loader_options(2, "cuda", persistent=True) == {"num_workers": 2, "pin_memory": True,
                                                          "prefetch_factor": PREFETCH_FACTOR,
                                                          "persistent_workers": True}
