"""benchmarks/reproduce --studies any-loss: PML losses plain and wrapped in AdversarialLoss, the quick run end to end
(as CI runs it), its records, resume, and the page's section from hand-made records beside empty studies."""

import json

import pytest
from reproduce_records import make_record
from test_reproduce import run_study

from benchmarks.reproduce import cli
from benchmarks.reproduce.any_loss import degraded_against_plain
from benchmarks.reproduce.plan import ANY_LOSS_SETTINGS, ENTANGLED, LossSpec, StudySettings, any_loss_models, plan
from benchmarks.reproduce.records import Results

ADVERSARIAL_STEPS = 16  # AdversarialLoss's default
VARIANTS = ("plain", "adversarial-none", "adversarial-collapse")


def test_quick_any_loss_study_then_resume_and_report_only(tmp_path):
    out, report = tmp_path / "json", tmp_path / "results.md"
    args = ["--studies", "any-loss", "--quick", "--dataset", "entangled-digits", "--out", str(out), "--report",
            str(report)]
    first = run_study(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = out / "entangled-digits"
    records = {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")
               if not path.name.startswith("_")}
    assert sorted(records) == sorted(f"{loss}+{variant}__eps16__a16__ep2__seed0"
                                     for loss in ("multi-similarity", "contrastive") for variant in VARIANTS)
    for key, record in records.items():
        assert record["settings"]["studies"] == ["any-loss"] and record["entanglement"] == pytest.approx(16 / 255)
        assert 0 <= record["base_r1"] <= 100 and 0 < record["chance_r1"] < 100 and record["train_seconds"] > 0
        assert record["model"]["loss"] in key and record["iterations"] == len(record["history"]) == 2 * 2
        attacked = [row for row in record["history"] if row.get("pgd_steps")]
        if "+plain" in key:
            assert not attacked and record["pgd_forward_images"] == record["pgd_backward_images"] == 0
            continue
        # progressive alpha: no attack in the first of the 2 epochs, then every iteration is attacked
        assert [row["epoch"] for row in attacked] == [2, 2]
        assert all(row["pgd_steps"] <= ADVERSARIAL_STEPS for row in attacked)
        if "adversarial-none" in key:  # every step taken: one forward and one backward pass per step and image
            passes = sum(row["num_perturbed"] * ADVERSARIAL_STEPS for row in attacked)
            assert record["pgd_forward_images"] == record["pgd_backward_images"] == passes
    text = report.read_text()
    for expected in ("## Any PML loss: plain vs AdversarialLoss", "### entangled-digits", "| digit R@1 |",
                     '| Contrastive | AdversarialLoss, awareness="collapse" |', "| MultiSimilarity | plain |",
                     "--studies any-loss --quick --workers 1"):
        assert expected in text, expected
    assert "### digits" not in text and "## The zoo" not in text and str(tmp_path) not in text
    second = run_study(*args, cwd=tmp_path)
    assert second.returncode == 0 and "0 jobs to run" in second.stdout
    report.unlink()
    third = run_study(*args, "--report-only", cwd=tmp_path)
    assert third.returncode == 0 and "| MultiSimilarity | plain |" in report.read_text()


def test_any_loss_plan_and_options():
    args = cli.build_parser().parse_args(["--studies", "any-loss"])
    studies = cli.study_settings(args)
    assert [settings.dataset for settings in studies] == ["digits", ENTANGLED]
    digits, entangled = studies
    assert (digits.epochs, digits.eval_steps, digits.max_batches, digits.iterations_per_epoch) == (8, 32, 2, None)
    assert (entangled.epochs, entangled.iterations_per_epoch, entangled.eval_steps, entangled.max_batches) == (
        4, 8, 8, 1)
    assert [(cell.eps, cell.entanglement) for cell in entangled.cells()] == [(16 / 255, 16 / 255)]
    keys = [job.key for settings in studies for job in plan(settings)]
    assert len(keys) == len(set(keys)) == 2 * 3 * 3 * 2
    assert "contrastive+adversarial-collapse__eps16__ep8__seed2" in keys
    assert "multi-similarity+plain__eps16__a16__ep4__seed0" in keys
    assert cli.default_out(entangled) == "benchmarks/results/any-loss/entangled-digits"
    for argv in (["--studies", "any-loss", "zoo"], ["--studies", "any-loss", "--models", "none"],
                 ["--studies", "any-loss", "--dataset", "image-folder", "--data-root", "x"]):
        with pytest.raises(SystemExit):
            cli.main(argv)


def test_report_only_renders_the_any_loss_section_beside_missing_studies(tmp_path, monkeypatch):
    """The full page from partial any-loss records (two seeds of one model, nothing else) and no record of the
    other studies: every part renders, the missing ones as not run."""
    settings = StudySettings(**ANY_LOSS_SETTINGS["digits"])
    out = tmp_path / "benchmarks" / "results" / "any-loss" / "digits"
    out.mkdir(parents=True)
    spec = LossSpec("MultiSimilarity (collapse)", "multi-similarity", "collapse")
    assert spec in any_loss_models()
    for seed, (r1, ers) in enumerate(((90.0, 30.0), (91.0, 32.0))):
        key, record = make_record(settings, spec, seed, r1, ers=ers, passes=1000.0 * (seed + 1))
        record["base_r1"] = None
        (out / f"{key}.json").write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    assert cli.main(["--report-only", "--studies", "any-loss"]) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    assert '| MultiSimilarity | AdversarialLoss, awareness="collapse" | 90.5 ± 0.7 | 31.0 ± 1.4 | 32.0 ± 1.4 | ' \
           "0/2 | 0/0 | 1.5e+03 | 1.0 ± 0.0 |" in text  # no plain record: no seed compared for degraded
    assert "| Contrastive | plain | not run yet |" in text and "16 of 18 planned jobs have no record." in text
    for expected in ("## The zoo", "## Entangled digits: eps 8/255, a = 4/255", "### entangled-digits"):
        assert expected in text, expected
    assert text.index("## Entangled digits: plan") < text.index("## Any PML loss: plain vs AdversarialLoss")


def test_degraded_counts_seeds_below_the_plain_loss_of_the_same_seed():
    settings = StudySettings(**ANY_LOSS_SETTINGS["digits"])
    plain = LossSpec("MultiSimilarity", "multi-similarity", "plain")
    adversarial = LossSpec("MultiSimilarity (none)", "multi-similarity", "none")
    records = {}
    for seed, (plain_r1, adversarial_r1) in enumerate(((90.0, 79.0), (90.0, 80.0), (70.0, 75.0))):
        records.update([make_record(settings, plain, seed, plain_r1),
                        make_record(settings, adversarial, seed, adversarial_r1)])
    results = Results(settings, records)
    cell = settings.cells()[0]
    assert degraded_against_plain(results, adversarial, cell) == "1/3"  # 11 points below; exactly 10 is not
    assert degraded_against_plain(results, plain, cell) == "0/3"
