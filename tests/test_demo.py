"""The demo's summary: the side-by-side table and its collapsed / degraded verdicts, on hand-made reports."""

from pml_tride.demo import DemoSettings, demo_summary
from pml_tride.evaluation import RobustnessReport


def report(r1, defense, base_r1=None, chance_r1=5.0):
    benign = {"R@1": r1, "R@2": r1, "mAP": r1, "NMI": 50.0}
    if base_r1 is not None:
        benign["base R@1"] = base_r1
    return RobustnessReport.from_trials(benign, {}, {"defense": defense, "train_seconds": 1.0}, chance_r1=chance_r1)


def test_degraded_is_said_against_the_undefended_model_with_the_base_r1():
    reports = {"undefended": report(87.0, "none", 95.0), "naive AT": report(31.7, "naive-at", 90.0),
               "CA-TRIDE": report(77.0, "ca-tride", 96.0), "collapsed one": report(6.0, "naive-at", 20.0)}
    summary = demo_summary(DemoSettings(), reports)
    assert "| naive AT | naive-at | 31.7 | 90.0 | 5.0 | no |" in summary
    assert ("naive AT DEGRADED: its benign R@1 31.7 is more than 10 points below the undefended model's 87.0; its "
            "robustness is bought with accuracy (R@1 over the base classes 90.0") in summary
    assert "CA-TRIDE DEGRADED" not in summary  # exactly 10 points below is not more than 10
    assert "collapsed one COLLAPSED" in summary and "collapsed one DEGRADED" not in summary


def test_without_base_labels_or_an_undefended_model_nothing_is_invented():
    summary = demo_summary(DemoSettings.plain_digits(), {"CA-TRIDE": report(50.0, "ca-tride")})
    assert "base R@1" not in summary.split("per attack:")[0] and "DEGRADED" not in summary
