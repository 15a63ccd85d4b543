import os

import torch
from distributed_helpers import run_group

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ddp_train.py")
ARGS = ["--epochs", "2", "--max-iters", "3", "--batch-size", "20", "--image-size", "8", "--steps", "2",
        "--checkpoint-every", "2", "--device", "cpu"]


def test_two_gloo_processes_train_and_checkpoint(tmp_path):
    outputs = run_group(EXAMPLE, *ARGS, "--out", tmp_path)
    assert "2 process(es) x 20 images per step" in outputs[0]
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert state["epoch"] == 2 and state["epoch_complete"] and len(state["ranks"]) == 2
    assert state["ranks"][0]["history"] != state["ranks"][1]["history"]  # each rank trained on its own batches
    saved = torch.load(tmp_path / "model.pt", weights_only=True)["model"]["state_dict"]
    assert all(torch.equal(saved[name], state["models"]["trunk"][name]) for name in saved)
