import json

import numpy as np
import pytest
from PIL import Image

from pml_tride.datasets import CUB200


def test_quick_run_measures_the_loader_against_the_gpu_steps(load_benchmark, tmp_path, capsys):
    input_pipeline = load_benchmark("input_pipeline")
    out = tmp_path / "input_pipeline.json"
    assert input_pipeline.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    gpu = json.loads(input_pipeline.GPU_RESULTS.read_text())
    step_ms = {row["measurement"]: row["step_ms"] for row in gpu["rows"] if "step_ms" in row}
    ca_tride = (step_ms["CA-TRIDE CAP, all 16 steps"] + step_ms["CA-TRIDE ANP, all 16 steps"]) / 2
    assert result["gpu_steps"]["steps"]["CA-TRIDE"]["images_per_second"] == pytest.approx(112 / (ca_tride / 1e3))
    assert [loader["workers"] for loader in result["loaders"]] == [0, 1]
    for loader in result["loaders"]:
        assert loader["images_per_second"] > 0
        for label, step in result["gpu_steps"]["steps"].items():
            assert loader["ratio_to_steps"][label] == pytest.approx(loader["images_per_second"]
                                                                    / step["images_per_second"])
    cub, large = result["draft"]
    # draft cannot shrink a 500x375 JPEG for a 256x256 resize (half of 375 is below 256); a 1024x768 one it halves
    assert (cub["full_decoded"], cub["draft_decoded"]) == ("500x375", "500x375")
    assert cub["max_abs_difference_255"] == 0
    assert large["draft_decoded"] == "512x384" and large["max_abs_difference_255"] > 0
    assert "ratio to CA-TRIDE" in capsys.readouterr().out


def test_the_generated_tree_is_a_cub_train_split(load_benchmark, tmp_path):
    input_pipeline = load_benchmark("input_pipeline")
    input_pipeline.write_cub_tree(tmp_path / "CUB_200_2011", 12, np.random.default_rng(0))
    dataset = CUB200(str(tmp_path / "CUB_200_2011"), split="train", image_size=32)
    assert len(dataset) == 12 and dataset[0][0].shape == (3, 32, 32)
    with Image.open(tmp_path / "CUB_200_2011" / dataset.samples[0][0]) as image:
        assert image.format == "JPEG" and image.size in input_pipeline.CUB_SIZES
