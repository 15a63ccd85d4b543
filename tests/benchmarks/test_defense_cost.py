import json

import torch

from pml_tride import recipes


def test_spc2_batches_pair_images_of_one_class(load_benchmark):
    defense_cost = load_benchmark("defense_cost")
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2, 0])
    batches = defense_cost.spc2_batches(labels, pairs=2, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 2 and all(len(rows) == 4 for rows in batches)
    rows = torch.cat(batches)
    assert len(set(rows.tolist())) == len(rows)
    assert torch.equal(labels[rows[0::2]], labels[rows[1::2]])


def test_quick_run_times_every_available_defense(load_benchmark, tmp_path, capsys):
    defense_cost = load_benchmark("defense_cost")
    out = tmp_path / "defense_cost.json"
    assert defense_cost.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    tride = result["results"]["CA-TRIDE"]
    assert tride["available"] and tride["total_seconds"] > 0
    totals = tride["totals"]
    assert totals["backward_images"] > 0 and totals["forward_images"] >= totals["backward_images"]
    # a run from scratch: progressive alpha is 0 in epoch 0, so CA-TRIDE attacks only from epoch 1 on
    assert tride["epoch_counts"][0]["backward_images"] == 0 < tride["epoch_counts"][1]["backward_images"]
    assert "steps per attack, epoch by epoch" in printed
    if "hm" in recipes.DEFENSES:
        assert 0 < result["ratios"]["CA-TRIDE / HM (robrank)"]
        assert "goal <= 0.35" in printed
        robrank = result["results"]["HM (robrank)"]["totals"]
        assert robrank["perturbed_images"] >= result["results"]["HM (unique)"]["totals"]["perturbed_images"]
    else:
        assert "HM: not available" in printed


def test_schedule_epochs_spread_the_measured_epochs(load_benchmark):
    defense_cost = load_benchmark("defense_cost")
    assert [defense_cost.scheduled_epoch(epoch, 3, None) for epoch in range(3)] == [(0, 3), (1, 3), (2, 3)]
    assert [defense_cost.scheduled_epoch(epoch, 3, 100) for epoch in range(3)] == [(25, 100), (50, 100), (75, 100)]
