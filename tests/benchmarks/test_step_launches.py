import json

import pytest
import torch


@pytest.fixture
def step_launches(load_benchmark):
    return load_benchmark("step_launches")


def test_the_mode_counts_kernels_and_host_syncs_of_a_hand_made_function(step_launches):
    x, a = torch.randn(5, requires_grad=True), torch.randn(3)

    def counts(function):
        result = step_launches.count_ops(function)
        return result.kernel_count, result.sync_count

    assert counts(lambda: x.sum().item()) == (2, 1)  # the sum, and the read of its value
    assert counts(lambda: torch.equal(a, a)) == (1, 1)
    assert counts(lambda: x.view(-1)) == (0, 0)
    assert counts(lambda: x + 1) == (1, 0)
    assert counts(lambda: bool((a > 0).any()))[1] == 1
    assert counts(lambda: a[a > 0])[1] == 1  # a boolean mask: the kernel runs nonzero
    assert counts(lambda: a[torch.tensor([0, 2])])[1] == 0
    repeats = torch.tensor([1, 2, 0])
    assert counts(lambda: torch.arange(3).repeat_interleave(repeats))[1] == 1
    assert counts(lambda: torch.arange(3).repeat_interleave(repeats, output_size=3))[1] == 0
    assert counts(lambda: torch.unique(a))[1] == 1 and counts(lambda: a.nonzero())[1] == 1
    assert counts(lambda: (x * 2).sum().backward())[0] > 2  # autograd's backward ops are seen too
    assert counts(lambda: a.tolist())[1] == 1 and counts(lambda: a.numpy())[1] == 1  # no op dispatched on the CPU
    assert torch.Tensor.tolist is torch._C.TensorBase.tolist  # the methods are restored after counting


def test_differences_are_per_op_and_may_go_negative(step_launches):
    counts = step_launches.OpCounts
    difference = counts({"aten.add.Tensor": 5, "aten.mul.Tensor": 1}, {"x": 2}).minus(
        counts({"aten.add.Tensor": 1, "aten.sub.Tensor": 1}, {"x": 1}), times=2)
    assert difference.kernels == {"aten.add.Tensor": 3, "aten.mul.Tensor": 1, "aten.sub.Tensor": -2}
    assert difference.syncs == {} and difference.kernel_count == 2


def test_quick_run_counts_every_defense_and_its_bound(step_launches, tmp_path, capsys):
    out = tmp_path / "step_launches.json"
    assert step_launches.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = {row["defense"]: row for row in json.loads(out.read_text())["results"]}
    assert set(results) == set(step_launches.LABELS.values())
    for row in results.values():
        assert row["pgd_steps"] >= 0 and row["defense"] in printed
        for part in ("per_pgd_step", "outside_pgd_steps"):
            bound = row[part]["bound"]
            assert bound["host_syncs"] == 0
            for counts in (row[part]["defense"], bound):
                if counts is not None:
                    assert all(isinstance(counts[key], int) and counts[key] >= 0 for key in ("kernels", "host_syncs"))
        assert row["per_pgd_step"]["bound"]["kernels"] > 0
        assert row["step"]["kernels"] >= row["outside_pgd_steps"]["bound"]["kernels"] > 0
    # the bound's steps are uniform: removing its PGD steps leaves the same training pass for every defense
    assert len({row["outside_pgd_steps"]["bound"]["kernels"] for row in results.values()}) == 1
    for label in ("CAP (all steps)", "ANP (all steps)"):
        row = results[label]
        assert row["pgd_steps"] > 0 and row["work"].endswith(f"x{row['pgd_steps']}")
        per_step = row["per_pgd_step"]
        assert per_step["defense"] is not None
        assert per_step["defense"]["kernels"] >= per_step["bound"]["kernels"]
    assert "| defense | PGD images x steps |" in printed


def test_unknown_defenses_are_refused(step_launches):
    with pytest.raises(SystemExit):
        step_launches.main(["--quick", "--defenses", "cap,nope"])
