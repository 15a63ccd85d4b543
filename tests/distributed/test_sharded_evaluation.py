"""pml-tride evaluate --nproc-per-node 2 (gloo): the sharded report equals the single-process one exactly."""

import json

import torch

from pml_tride.cli import main
from pml_tride.models import save_model, small_cnn_embedder

# 3 attacked batches over 2 ranks: rank 0 attacks batches 0 and 2, rank 1 batch 1 (an uneven split)
EVALUATE = ["evaluate", "--image-size", "8", "--steps", "2", "--batch-size", "50", "--max-batches", "3",
            "--device", "cpu", "--seed", "4"]


def test_two_processes_give_the_single_process_report(tmp_path):
    torch.manual_seed(0)
    model_path = tmp_path / "model.pt"
    save_model(small_cnn_embedder(embedding_dim=8, width=4), str(model_path))
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    assert main(EVALUATE + ["--checkpoint", str(model_path), "--out", str(single)]) == 0
    assert main(EVALUATE + ["--checkpoint", str(model_path), "--out", str(sharded), "--nproc-per-node", "2"]) == 0
    first, second = json.loads(single.read_text()), json.loads(sharded.read_text())
    assert second["settings"]["processes"] == 2 and first["settings"]["processes"] == 1
    assert len(first["trials"]["CA+"]["after"]) == 150 and len(first["raw"]) == 10
    for key in ("benign", "raw", "trials", "ers", "ars", "ars_per_attack"):
        assert first[key] == second[key], key
