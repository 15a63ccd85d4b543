import torch


def test_sections_share_the_budget_by_weight_and_note_failures(load_benchmark, capsys):
    budgeted_sections = load_benchmark("budgeted_sections")
    run = budgeted_sections.BudgetedSections({"a": 1, "b": 3, "c": 4}, 60.0, torch.device("cpu"), max_repeats=3)
    run.plan(["a", "b"])
    shares = []
    run.section("a", "first", shares.append)

    def broken(share):
        shares.append(share)
        raise ValueError("bad input\nsecond line")

    run.section("b", "second", broken)
    assert shares == [0.25, 1.0]  # a: 1 of 4; b: all that is left
    assert run.rows == [{"measurement": "second", "note": "failed: ValueError: bad input"}]
    assert "second: failed: ValueError" in capsys.readouterr().err


def test_a_spent_budget_skips_and_paired_respects_max_repeats(load_benchmark):
    budgeted_sections = load_benchmark("budgeted_sections")
    run = budgeted_sections.BudgetedSections({"a": 1}, 60.0, torch.device("cpu"), max_repeats=3)
    times = run.paired(lambda: 1, lambda result: None, share=1.0)
    assert len(times.step) == len(times.bound) == 3 and times.required == []
    assert len(run.paired(lambda: 1, lambda result: None, share=1.0, max_repeats=2).step) == 2
    spent = budgeted_sections.BudgetedSections({"a": 1}, 0.0, torch.device("cpu"), max_repeats=3)
    spent.plan(["a"])
    spent.section("a", "first", lambda share: None)
    assert spent.rows == [{"measurement": "first", "note": "skipped: budget spent"}]
