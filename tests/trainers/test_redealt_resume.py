"""A checkpoint written by another number of processes: the rest of the pass is re-dealt, the epoch ends with it,
and the log says so. The real 2 -> 1 and 1 -> 2 runs are in tests/distributed/test_world_size_change.py."""

import logging

import fault_worker
import pytest
import torch

from pml_tride.checkpoint_io import atomic_save


class Crash(Exception):
    pass


def batches_by_step(records):
    def record(trainer):
        plan = trainer.batch_plan
        records[(trainer.epoch, trainer.iteration)] = plan.batches[plan.position - 1]

    return record


def test_an_epoch_of_two_processes_resumed_by_one_ends_with_the_pass(tmp_path, caplog):
    whole = {}
    fault_worker.run(str(tmp_path / "whole"), epochs=2, end_of_iteration_hook=batches_by_step(whole))
    assert sorted(whole) == [(epoch, iteration) for epoch in (1, 2) for iteration in range(4)]  # 4 batches a pass

    def crash(trainer):
        if (trainer.epoch, trainer.iteration) == (1, 2):
            raise Crash

    with pytest.raises(Crash):
        fault_worker.run(str(tmp_path / "one"), epochs=2, end_of_iteration_hook=crash)
    state = torch.load(tmp_path / "one" / "latest.pt", weights_only=True)
    assert state["batch_plan"]["position"] == 2
    # the same point of a 2-process run: one step each, batches 0 and 1 of the pass trained, iteration 1 done
    state["batch_plan"].update(position=1, world_size=2)
    state["iteration"] = 1
    state["ranks"] = state["ranks"] * 2
    two = str(tmp_path / "two.pt")
    atomic_save(state, two)
    resumed = {}
    with caplog.at_level(logging.WARNING, logger="pml_tride"):
        trainer = fault_worker.run(str(tmp_path / "resumed"), resume=two, epochs=2,
                                   end_of_iteration_hook=batches_by_step(resumed))
    # one process takes the 2 batches left in the pass: epoch 1 resumes at iteration 2 of 4 and ends with the pass
    assert resumed == {step: batch for step, batch in whole.items() if step >= (1, 2)}
    assert trainer.batch_plan.state_dict()["passes_drawn"] == 2
    message = caplog.text
    assert "world size changed from 2 to 1" in message
    assert "the 2 batches of pass 1 not trained yet (0-based batches 2 to 3 of 4) are re-dealt" in message
    assert "epoch 1 resumes at iteration 2 (was 1)" in message
