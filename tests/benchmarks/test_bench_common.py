import datetime
import json
import shutil
import subprocess
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_result_file_records_commit_torch_device_and_date(load_benchmark, tmp_path):
    bench_common = load_benchmark("bench_common")
    out = tmp_path / "result.json"
    bench_common.write_json(str(out), {"rows": [1, 2]}, torch.device("cpu"))
    written = json.loads(out.read_text())
    assert written["rows"] == [1, 2]
    recorded = written["provenance"]
    assert recorded["torch"] == torch.__version__ and recorded["device"].startswith("CPU (")
    assert datetime.datetime.strptime(recorded["date"], "%Y-%m-%dT%H:%M:%SZ")
    head = shutil.which("git") and subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCHMARKS,
                                                  capture_output=True, text=True)
    if not head or head.returncode != 0:  # outside a git checkout
        assert recorded["commit"] is None
    else:
        assert recorded["commit"].split("+")[0] == head.stdout.strip()


def test_time_pairs_hands_each_step_result_to_its_bounds(load_benchmark):
    bench_common = load_benchmark("bench_common")
    calls = []
    results = iter(range(10))

    def step():
        calls.append("step")
        return next(results)

    times = bench_common.time_pairs(step, lambda result: calls.append(("bound", result)), torch.device("cpu"), 3,
                                    required=lambda result: calls.append(("required", result)))
    assert calls == ["step", ("bound", 0), ("required", 0), "step", ("bound", 1), ("required", 1),
                     "step", ("bound", 2), ("required", 2)]
    assert len(times.step) == len(times.bound) == len(times.required) == 3 and times.result == 2
    assert all(seconds >= 0 for seconds in times.step + times.bound + times.required)
    assert bench_common.time_pairs(step, lambda result: None, torch.device("cpu"), 2).required == []


def test_defense_step_trains_records_its_attacks_and_bounds_them(load_benchmark):
    bench_common = load_benchmark("bench_common")
    from pml_tride import TrideLoss
    from pml_tride.models import small_cnn_embedder

    torch.manual_seed(0)
    model = small_cnn_embedder(in_channels=3, embedding_dim=8, width=4)
    images, labels, triplets = bench_common.pair_batch(4, 8, torch.Generator().manual_seed(0))
    loss = TrideLoss(model, phase="cap", awareness="none", steps=2, progressive_alpha=False)
    defense = bench_common.DefenseStep(model, torch.optim.SGD(model.parameters(), lr=0.1), loss, images, labels,
                                       triplets, inputs=images)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    records = defense.step()
    assert [(record.images, record.steps) for record in records] == [(len(set(torch.cat(triplets[1:]).tolist())), 2)]
    assert records[0].clean_images == len(triplets[0])  # CAP keeps the anchors clean
    assert any(not torch.equal(b, a) for b, a in zip(before, model.parameters()))
    forwards = []
    model.register_forward_hook(lambda module, args, output: forwards.append(len(args[0])))
    defense.bound(records)
    perturbed = records[0].images
    assert forwards == [perturbed] * 2 + [len(images), perturbed]  # 2 PGD steps, then the training pass
    forwards.clear()
    defense.required(records)
    assert forwards == [records[0].clean_images] + [perturbed] * 2 + [len(images), perturbed]
    assert defense.step() != [] and defense.recorder.records == []  # each step takes its own records
