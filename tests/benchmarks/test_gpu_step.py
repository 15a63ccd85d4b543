import json

import torch


def test_refuses_clearly_without_cuda(load_benchmark, monkeypatch, capsys):
    gpu_step = load_benchmark("gpu_step")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_step.main([]) == gpu_step.REFUSAL_EXIT_CODE
    message = capsys.readouterr().err
    assert "needs a CUDA GPU" in message and "--device cpu --tiny" in message


def test_refuses_a_full_run_on_the_cpu(load_benchmark, capsys):
    gpu_step = load_benchmark("gpu_step")
    assert gpu_step.main(["--device", "cpu"]) == gpu_step.REFUSAL_EXIT_CODE
    assert "only allowed with --tiny" in capsys.readouterr().err


def test_tiny_dry_run_measures_every_section(load_benchmark, tmp_path, capsys):
    gpu_step = load_benchmark("gpu_step")
    out = tmp_path / "gpu_step.json"
    assert gpu_step.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {row["measurement"]: row for row in result["rows"]}
    assert not [row for row in rows.values() if "failed" in row.get("note", "")], rows
    for name in ("CA-TRIDE CAP, all 16 steps", "CA-TRIDE ANP, all 16 steps", "CA-TRIDE (early stop), CAP+ANP",
                 "PGD loop: a host sync per step", "evaluation: ten-attack suite", "CAP step, bf16 autocast",
                 "CAP step, channels_last", "input-gradient pass, torch.compile"):
        assert rows[name]["step_ms"] > 0, name
        assert name in printed
    cap = rows["CA-TRIDE CAP, all 16 steps"]
    assert cap["work"] == "7x16" and cap["ratio"] > 0 and cap["bound_ms"] > 0
    assert rows["CAP step, bf16 autocast"]["vs_plain"] > 0
    hm = rows["HM, all 32 steps, per-triplet A/P/N copies (robrank)"]
    assert "step_ms" in hm or hm["note"].startswith("HM: not available")
    assert result["projection_minutes"]["CA-TRIDE, all 16 steps"] > 0
    assert "paper: 470 min" in printed


def test_a_failing_measurement_is_reported_and_the_rest_runs(load_benchmark, monkeypatch, tmp_path):
    gpu_step = load_benchmark("gpu_step")

    def broken(self, share):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(gpu_step.GpuStepBenchmark, "measure_compiled_pass", broken)
    out = tmp_path / "gpu_step.json"
    assert gpu_step.main(["--device", "cpu", "--tiny", "--options", "compile", "--out", str(out)]) == 0
    rows = {row["measurement"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["input-gradient pass, torch.compile"]["note"] == "failed: RuntimeError: compiler exploded"
    assert rows["CAP step, attack model torch.compile'd"]["note"].startswith("failed: RuntimeError: the compiled pass")
    assert rows["evaluation: ten-attack suite"]["step_ms"] > 0


def test_budget_skips_measurements_once_spent(load_benchmark, tmp_path):
    gpu_step = load_benchmark("gpu_step")
    out = tmp_path / "gpu_step.json"
    assert gpu_step.main(["--device", "cpu", "--tiny", "--options", "", "--budget-seconds", "0",
                          "--out", str(out)]) == 0
    notes = [row.get("note", "") for row in json.loads(out.read_text())["rows"]]
    assert notes and all(note.startswith(("skipped: budget spent", "HM: not available")) for note in notes)
