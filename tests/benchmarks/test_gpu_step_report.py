import pytest


def test_projection_and_options_from_hand_made_rows(load_benchmark):
    report = load_benchmark("gpu_step_report")
    rows = [{"measurement": "CA-TRIDE CAP, all 16 steps", "step_ms": 100.0},
            {"measurement": "CA-TRIDE ANP, all 16 steps", "step_ms": 300.0},
            {"measurement": "HM, all 32 steps, per-triplet A/P/N copies (robrank)", "note": "failed: x"},
            {"measurement": "CAP step, bf16 autocast", "step_ms": 90.0, "vs_plain": 0.9},
            {"measurement": "CAP step, channels_last", "step_ms": 99.0, "vs_plain": 0.99}]
    projected = report.projection(rows, pairs=56)
    batches = 5864 / 112
    assert projected["batches_per_epoch"] == pytest.approx(batches) and projected["epochs"] == 100
    assert projected["CA-TRIDE, all 16 steps"] == pytest.approx(0.2 * batches * 100 / 60)  # mean step 200 ms
    assert "HM (robrank, per-triplet)" not in projected and "CA-TRIDE, early stop (random weights)" not in projected
    verdicts = report.kept_options(rows)
    assert verdicts == {"CAP step, bf16 autocast": "0.900x the plain time: pays",
                        "CAP step, channels_last": "0.990x the plain time: does not pay"}
