"""benchmarks/reproduce.py: the --quick study end to end (as CI runs it), resume, --report-only, and the rules."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"


@pytest.fixture
def reproduce(load_benchmark):
    return load_benchmark("reproduce")


def run_script(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_quick_study_with_a_process_pool_then_resume_and_report_only(tmp_path):
    out, report = tmp_path / "json", tmp_path / "docs" / "results.md"
    args = ["--quick", "--seeds", "0", "--out", str(out), "--report", str(report)]
    first = run_script(*args, "--workers", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 jobs to run" in first.stdout and "about" in first.stderr + first.stdout
    records = {path.name: json.loads(path.read_text()) for path in out.glob("*.json") if not path.name.startswith("_")}
    assert sorted(records) == ["ca-tride__eps16__ep2__seed0.json", "none__eps16__ep2__seed0.json"]
    for record in records.values():
        assert set(record["benign"]) == {"R@1", "R@2", "mAP", "NMI"}
        assert set(record["raw"]) == {"CA+", "CA-", "QA+", "QA-", "TMA", "ES:D", "ES:R", "LTM", "GTM", "GTT"}
        assert math.isfinite(record["ers"]) and math.isfinite(record["ars"]) and "overall" in record["ars_per_trial"]
        assert record["train_seconds"] > 0 and record["settings"]["epochs"] == 2 and record["seed"] == 0
        assert len(record["history"]) == record["iterations"] == 2 * 8  # 2 epochs of 901 digits in batches of 112
        assert {"separability", "mean_distance", "collapseness_clean", "embedding_shift"} <= set(record["history"][0])
        assert 0 < record["chance_r1"] < 100
    attacked = [row for row in records["ca-tride__eps16__ep2__seed0.json"]["history"] if row["pgd_steps"] > 0]
    assert attacked and all(row["embedding_shift"] > 0 for row in attacked)
    text = report.read_text()
    assert text.startswith("# Reproduction study (quick run)")
    for expected in ("| NT | `none` |", "| CA-TRIDE | `ca-tride` |", "## Verdicts", "Collapsed", "reproduce.py --quick",
                     "results/over_training.png"):
        assert expected in text, expected
    for name in ("over_training.png", "embedding_shift.png"):
        assert 0 < (report.parent / "results" / name).stat().st_size < 300_000
    # resume: every job's JSON exists, nothing runs again; --report-only rebuilds the page from the files
    second = run_script(*args, cwd=tmp_path)
    assert second.returncode == 0 and "0 jobs to run" in second.stdout
    report.unlink()
    third = run_script(*args, "--report-only", cwd=tmp_path)
    assert third.returncode == 0 and "| CA-TRIDE | `ca-tride` |" in report.read_text()
    # other settings are refused rather than mixed into the study
    fourth = run_script("--quick", "--epochs", "3", "--out", str(out), "--report", str(report), cwd=tmp_path)
    assert fourth.returncode != 0 and "other settings (epochs)" in fourth.stderr


def test_time_budget_leaves_jobs_missing(tmp_path):
    report = tmp_path / "results.md"
    result = run_script("--quick", "--seeds", "0", "--time-budget", "0", "--out", str(tmp_path / "json"),
                        "--report", str(report), cwd=tmp_path)
    assert result.returncode == 0 and "2 jobs not started" in result.stdout
    text = report.read_text()
    assert "not run (time budget or interrupted): none__eps16__ep2__seed0, ca-tride__eps16__ep2__seed0" in text


def test_chance_r1_by_brute_force(reproduce):
    labels = [0, 0, 0, 1, 1, 2]
    same = sum(labels[i] == labels[j] for i in range(6) for j in range(6) if i != j)
    assert reproduce.chance_r1(labels) == pytest.approx(100 * same / (6 * 5))


def record(reproduce, r1, separability, seed=0, defense="none", mean_distances=(1.0, 0.5)):
    history = [{"epoch": 1, "separability": 0.5, "mean_distance": mean_distances[0], "pgd_steps": 0, "loss": 0.2},
               {"epoch": 2, "separability": separability, "mean_distance": mean_distances[1], "pgd_steps": 1,
                "embedding_shift": 0.2, "phase": "cap", "loss": 0.1}]
    job = reproduce.Job(reproduce.ModelSpec(defense, defense), seed, 16 / 255, 2)
    return job.key, {"key": job.key, "seed": seed, "model": {"defense": defense}, "benign": {"R@1": r1},
                     "chance_r1": 20.0,
                     "epochs": 2, "history": history,
                     "ers": 10.0, "ars": 10.0, "train_seconds": 1.0}


def test_collapse_rule(reproduce):
    assert reproduce.collapsed(record(reproduce, 39.9, 0.5)[1])  # R@1 below 2 x chance
    assert reproduce.collapsed(record(reproduce, 90.0, 0.09)[1])  # separability below 0.1
    assert not reproduce.collapsed(record(reproduce, 40.0, 0.1)[1])
    assert reproduce.shrink_ratio(record(reproduce, 90.0, 0.5)[1]) == pytest.approx(0.5)
    # normalised shift: 0.2 / 0.5 on the one attacked (CAP) iteration; overall counts the two CAP roles
    assert reproduce.shift_summary(record(reproduce, 90.0, 0.5)[1]) == pytest.approx((0.4, 0.8))


def test_orderings_noise_and_claim_status(reproduce):
    high, low = reproduce.summarize([10.0, 12.0]), reproduce.summarize([5.0, 6.0])
    assert high.mean == 11.0 and high.std == pytest.approx(math.sqrt(2)) and str(high) == "11.0 ± 1.4"
    clear = reproduce.greater("a", high, "b", low, "ERS")
    assert clear.passed and "within noise" not in clear.text
    close = reproduce.greater("a", reproduce.summarize([10.0, 12.0]), "b", reproduce.summarize([9.0, 11.0]), "ERS")
    assert close.passed is None and close.inconclusive and "within noise" in close.text
    assert not reproduce.greater("a", low, "b", high, "ERS").passed
    assert reproduce.greater("a", reproduce.summarize([]), "b", high, "ERS").passed is None
    Check = reproduce.Check
    assert reproduce.status([Check(True, ""), Check(None, "")]) == "reproduced"
    assert reproduce.status([Check(True, ""), Check(False, "")]) == "partly reproduced"
    assert reproduce.status([Check(False, "")]) == "not reproduced"
    assert reproduce.status([Check(None, "")]) == "not tested"
    assert reproduce.status([Check(None, "", inconclusive=True)]).startswith("inconclusive")
    assert reproduce.status([Check(True, ""), Check(None, "", inconclusive=True)]).startswith("reproduced where")


def test_collapse_verdict_from_records(reproduce):
    settings = reproduce.StudySettings(seeds=(0, 1), epochs=2)
    records = {}
    for defense, r1 in (("naive-cap", 25.0), ("naive-anp", 30.0), ("naive-tride", 22.0), ("ca-tride", 90.0)):
        for seed in (0, 1):
            key, value = record(reproduce, r1, 0.02 if defense.startswith("naive") else 0.6, seed=seed,
                                defense=defense)
            records[key] = value
    results = reproduce.Results(settings, records)
    claim, checks = reproduce.verdicts(results)[0]
    assert claim.startswith("Naive CAP/ANP/TRIDE collapse") and reproduce.status(checks) == "reproduced"
    assert "collapsed in 2/2 seeds" in checks[0].text and "collapsed in 0/2 seeds" in checks[3].text


def test_collapse_verdict_without_any_naive_collapse_does_not_count_ca_tride(reproduce):
    settings = reproduce.StudySettings(seeds=(0,), epochs=2)
    records = dict(record(reproduce, 90.0, 0.6, seed=0, defense=defense)
                   for defense in ("naive-cap", "naive-anp", "naive-tride", "ca-tride"))
    _, checks = reproduce.verdicts(reproduce.Results(settings, records))[0]
    assert [check.passed for check in checks] == [False, False, False, None]
    assert reproduce.status(checks) == "not reproduced"


def test_plan_deduplicates_shared_jobs(reproduce):
    settings = reproduce.StudySettings(zoo=("CA-TRIDE",), studies=("zoo", "sweep"), seeds=(0,))
    jobs, _ = reproduce.plan(settings)
    keys = [job.key for job in jobs]
    assert len(keys) == len(set(keys)) == 1 + 2 * 6 - 1  # the zoo's CA-TRIDE is also the sweep's eps 16 short cell
    assert "ca-tride__eps16__ep8__seed0" in keys and "naive-tride__eps32__ep32__seed0" in keys


def test_quick_study_on_an_image_folder(image_folder_tree, tmp_path):
    root = image_folder_tree(tmp_path / "pets", images_per_class=3)
    report = tmp_path / "results.md"
    result = run_script("--quick", "--dataset", "image-folder", "--data-root", str(root), "--image-size", "8",
                        "--models", "NT", "--seeds", "0", "--out", str(tmp_path / "json"), "--report", str(report),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "json" / "none__eps8__ep2__seed0.json").read_text())  # 8/255 off digits
    assert record["settings"]["dataset"] == "image-folder" and record["settings"]["image_size"] == 8
    assert record["chance_r1"] == pytest.approx(100 * 2 * (4 * 3) / (8 * 7))  # dog and emu: 4 images each
    assert "image-folder 8x8" in report.read_text()


def test_command_line_settings(reproduce):
    args = reproduce.build_parser().parse_args(["--quick", "--epochs", "3", "--seeds", "4", "5", "--eval-steps", "2",
                                                "--max-batches", "0", "--sweep-eps", "8/255", "--studies", "sweep"])
    settings = reproduce.settings_from(args)
    assert (settings.epochs, settings.seeds, settings.eval_steps, settings.max_batches) == (3, (4, 5), 2, None)
    assert settings.sweep_eps == (8 / 255,) and settings.studies == ("sweep",) and settings.quick
    jobs, _ = reproduce.plan(settings)
    assert sorted(job.key for job in jobs if job.seed == 4) == [
        "ca-tride__eps8__ep12__seed4", "ca-tride__eps8__ep3__seed4", "naive-tride__eps8__ep12__seed4",
        "naive-tride__eps8__ep3__seed4"]


def test_identical_training_is_noted(reproduce):
    settings = reproduce.StudySettings(seeds=(0,), epochs=2)
    records = dict(record(reproduce, 90.0, 0.6, defense=defense) for defense in ("ca-tride", "ca-tride-no-ltr"))
    claims = dict(reproduce.verdicts(reproduce.Results(settings, records)))
    table4 = claims["Table 4 ordering: CA-TRIDE > w/o L_TR > w/o TPR in R@1, ERS and ARS"]
    assert any("identical per-iteration losses in 1 seed" in check.text for check in table4)
    records["ca-tride-no-ltr__eps16__ep2__seed0"]["history"][1]["loss"] = 0.3
    claims = dict(reproduce.verdicts(reproduce.Results(settings, records)))
    assert not any("identical" in check.text for check in claims[next(c for c in claims if c.startswith("Table 4"))])
