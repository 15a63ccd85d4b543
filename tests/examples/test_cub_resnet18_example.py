import importlib.util
import json
import os
import runpy

import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "cub_resnet18.py")


def test_runs_one_iteration_on_a_miniature_cub_tree(cub_tree, tmp_path):
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("the ResNet-18 example needs torchvision (pip install 'pml-tride[vision]')")
    root = cub_tree(tmp_path / "CUB_200_2011")
    example = runpy.run_path(EXAMPLE)
    out = tmp_path / "run"
    example["main"](["--data-root", str(root), "--epochs", "1", "--batch-size", "4", "--image-size", "32",
                     "--weights", "none", "--device", "cpu", "--out", str(out)])
    assert (out / "epoch_1.pt").exists()
    report = json.loads((out / "report.json").read_text())
    assert len(report["raw"]) == 10 and report["settings"]["pool_size"] == 6
