"""pml-tride train resumed on another number of processes (gloo): 2 -> 1 and 1 -> 2. The first run trains epoch
1 (3 steps of a longer pass), the second resumes from latest.pt with the other number of processes, re-deals the
rest of the pass, trains epoch 2 and says in the log what changed."""

import pytest
import torch

from pml_tride.cli import main

STEPS_PER_EPOCH = 3
TRAIN = ["train", "--dataset", "digits", "--image-size", "8", "--embedding-dim", "8", "--max-iters",
         str(STEPS_PER_EPOCH), "--steps", "2", "--batch-size", "20", "--device", "cpu", "--seed", "3"]


@pytest.mark.parametrize("old, new", [(2, 1), (1, 2)])
def test_a_run_resumes_on_another_number_of_processes(tmp_path, capfd, old, new):
    out = ["--out", str(tmp_path)]
    assert main(TRAIN + out + ["--epochs", "1", "--nproc-per-node", str(old)]) == 0
    first = torch.load(tmp_path / "latest.pt", weights_only=True)
    capfd.readouterr()
    assert main(TRAIN + out + ["--epochs", "2", "--nproc-per-node", str(new), "--resume", "auto"]) == 0
    log = "".join(capfd.readouterr())
    trained = STEPS_PER_EPOCH * old
    assert f"world size changed from {old} to {new}" in log, log[-3000:]
    assert f"not trained yet (0-based batches {trained} to" in log, log[-3000:]
    assert f"taking batch {trained} + s*{new} + r" in log
    final = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert (final["epoch"], final["epoch_complete"], len(final["ranks"])) == (2, True, new)
    plan = final["batch_plan"]
    # epoch 2 continued the pass of epoch 1 on the new ranks: 3 more steps of `new` batches after `trained`
    assert (plan["passes_drawn"], plan["offset"], plan["position"], plan["world_size"]) == (1, trained, 3, new)
    assert [row["epoch"] for row in final["ranks"][0]["history"]] == [1] * STEPS_PER_EPOCH + [2] * STEPS_PER_EPOCH
    changed = [name for name, tensor in first["models"]["trunk"].items()
               if tensor.is_floating_point() and not torch.equal(tensor, final["models"]["trunk"][name])]
    assert changed, "epoch 2 did not train"
