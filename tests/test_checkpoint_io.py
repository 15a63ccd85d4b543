import os

import pytest
import torch

from pml_tride.checkpoint_io import CorruptCheckpointError, atomic_save, load_state


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("interrupted in the middle of writing")


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.pt"
    atomic_save({"weights": torch.arange(4.0)}, str(path))
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_save({"weights": torch.zeros(10_000), "bad": Unpicklable()}, str(path))
    assert torch.equal(load_state(str(path))["weights"], torch.arange(4.0))
    assert os.listdir(tmp_path) == ["latest.pt"]  # no temporary file left behind
    atomic_save({"weights": torch.ones(2)}, str(path))
    assert torch.equal(load_state(str(path))["weights"], torch.ones(2))


def test_unreadable_files_give_an_error_naming_the_file(tmp_path):
    path = tmp_path / "epoch_3.pt"
    atomic_save({"weights": torch.arange(1000.0)}, str(path))
    content = path.read_bytes()
    for broken in (content[:-50], content[: len(content) // 3], b"not a checkpoint"):
        path.write_bytes(broken)
        with pytest.raises(CorruptCheckpointError, match=r"epoch_3\.pt.*truncated or corrupted") as caught:
            load_state(str(path))
        assert caught.value.__context__ is None
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_state(str(tmp_path / "missing.pt"))
