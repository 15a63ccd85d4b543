import json


def test_quick_run_prints_every_ratio(load_benchmark, tmp_path, capsys):
    eval_cost = load_benchmark("eval_cost")
    out = tmp_path / "eval_cost.json"
    assert eval_cost.main(["--quick", "--sort-reference", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["suite"]["ratio_of_minima"] > 0 and len(result["suite"]["attack_seconds_min"]) == 9
    assert result["benign"]["ratio_to_cdist"] > 0 and result["benign"]["sorting_over_metrics"] > 0
    assert [row["size"] for row in result["linearity"]["rows"]] == [300, 600]
    assert "nmi" in result
    for text in ("goal <= 1.15", "goal <= 2", "| pool |"):
        assert text in printed


def test_sort_reference_agrees_with_the_rank_counting(load_benchmark):
    eval_cost = load_benchmark("eval_cost")
    from pml_tride.evaluation import retrieval_metrics

    embeddings, labels = eval_cost.sop_like(300, 16, 40, seed=0)
    expected = eval_cost.sort_based_retrieval_metrics(embeddings, labels, batch_size=64)
    assert abs(retrieval_metrics(embeddings, labels, batch_size=64)["mAP"] - expected) < 1e-9
