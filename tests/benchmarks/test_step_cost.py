import json

import pml_tride


def test_quick_run_prints_the_ratio_of_every_available_defense(load_benchmark, tmp_path, capsys):
    step_cost = load_benchmark("step_cost")
    out = tmp_path / "step_cost.json"
    assert step_cost.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = {row["defense"]: row for row in json.loads(out.read_text())["results"]}
    assert results["CAP (all steps)"]["work"] == "10x16" and results["ANP (all steps)"]["work"] == "8x16"
    assert "CA-TRIDE (early stop)" in results
    for name in ("ESTLoss", "ACTLoss", "HMLoss"):
        assert hasattr(pml_tride, name) == any(name[:-4] in defense for defense in results)
    assert all(row["ratio"] > 0 and row["bound_ms_min"] > 0 for row in results.values())
    assert all(row["ratio_to_required"] > 0 and row["required_bound_ms_min"] > 0 for row in results.values())
    # CAP keeps its 8 anchors clean and, taking every step, has no stop check; ANP embeds the clean A, P, N
    assert results["CAP (all steps)"]["required_forwards"] == "8 clean, 0 stop check"
    assert results["ANP (all steps)"]["required_forwards"].endswith(", 0 stop check")
    assert "goal <= 1.10" in printed
