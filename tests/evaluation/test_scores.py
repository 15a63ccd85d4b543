import math

import pytest
import torch

from pml_tride.evaluation import ARS_ATTACKS, ars, ars_per_trial, ers, ers_per_attack

NAMES = ("CA+", "CA-", "QA+", "QA-", "TMA", "ES:D", "ES:R", "LTM", "GTM", "GTT")
# The paper's Table 2 (raw results, benign R@1, ERS) and Table 1 (ARS) rows.
TABLE2 = {
    ("CUB", "N/A"): (58.9, [0.0, 100, 0.0, 99.9, 0.883, 1.76, 0.0, 0.0, 14.1, 0.0], 3.8),
    ("CUB", "ACT"): (27.5, [15.5, 37.7, 15.1, 32.2, 0.47, 0.82, 11.1, 9.4, 14.9, 1.0], 33.9),
    ("CUB", "HM"): (34.9, [15.5, 37.7, 16.6, 30.9, 0.75, 0.50, 17.9, 16.7, 27.3, 2.9], 36.0),
    ("CARS", "ACT"): (43.4, [18.0, 32.3, 17.5, 30.5, 0.38, 0.76, 16.3, 15.3, 20.7, 1.6], 38.6),
    ("CARS", "HM"): (60.2, [19.3, 25.9, 19.6, 25.7, 0.65, 0.45, 30.3, 36.7, 46.0, 8.8], 46.1),
    ("SOP", "ACT"): (47.5, [24.1, 10.5, 22.7, 9.4, 0.25, 0.53, 21.2, 21.6, 27.8, 15.3], 50.8),
    ("SOP", "HM"): (46.8, [32.0, 4.2, 33.7, 3.0, 0.61, 0.20, 39.1, 39.8, 37.9, 45.6], 61.6),
}
TABLE1 = {
    ("CUB", "ACT"): [31.0, 62.9, 30.2, 68.5, 40.3, 34.2, 54.2, 1.0, 40.3],
    ("CUB", "HM"): [31.0, 62.9, 33.2, 69.8, 51.3, 47.9, 78.2, 2.9, 47.2],
    ("CARS", "ACT"): [36.0, 68.4, 35.0, 70.2, 37.6, 35.3, 47.7, 1.6, 41.4],
    ("CARS", "HM"): [38.6, 74.8, 39.2, 75.1, 50.3, 61.0, 76.4, 8.8, 52.9],
    ("SOP", "ACT"): [48.2, 90.4, 45.4, 91.5, 44.6, 45.5, 58.5, 15.3, 54.9],
    ("SOP", "HM"): [64.0, 96.8, 67.4, 98.0, 83.5, 85.0, 81.0, 45.6, 77.7],
}
# Printed ERS values that the formula reproduces to 0.1 (the reference doc lists CUB Ours and CARS N/A as
# inconsistent rows of the paper).
REPRODUCED_ERS = [("CUB", "N/A"), ("CUB", "ACT"), ("CUB", "HM"), ("CARS", "ACT"), ("CARS", "HM"), ("SOP", "ACT"),
                  ("SOP", "HM")]


def raw(row):
    return dict(zip(NAMES, TABLE2[row][1]))


@pytest.mark.parametrize("row", REPRODUCED_ERS)
def test_ers_reproduces_table2(row):
    assert ers(raw(row)) == pytest.approx(TABLE2[row][2], abs=0.1)


def test_ers_cub_act_exact_value():
    assert ers(raw(("CUB", "ACT"))) == pytest.approx(33.97, abs=0.005)


@pytest.mark.parametrize("row", list(TABLE1))
def test_table_mode_ars_reproduces_table1(row):
    scores = ars(raw(row), benign_r1=TABLE2[row][0])
    for name, expected in zip(ARS_ATTACKS, TABLE1[row]):
        assert scores[name] == pytest.approx(expected, abs=0.1), name
    # the paper's CARS HM overall (52.9) is not the mean of its own printed columns (53.03)
    if row != ("CARS", "HM"):
        assert scores["overall"] == pytest.approx(TABLE1[row][-1], abs=0.1)
    assert sum(TABLE1[("CARS", "HM")][:8]) / 8 == pytest.approx(53.03, abs=0.01)


def test_ers_is_the_mean_of_ten_and_ars_the_mean_of_eight():
    per_attack = ers_per_attack(raw(("CUB", "HM")))
    assert ers(raw(("CUB", "HM"))) == pytest.approx(sum(per_attack.values()) / 10)
    scores = ars(raw(("CUB", "HM")), 34.9)
    assert scores["overall"] == pytest.approx(sum(scores[n] for n in ARS_ATTACKS) / 8)
    assert ars({**raw(("CUB", "HM")), "CA-": 150.0}, 34.9, clip=True)["CA-"] == 0.0


def test_missing_and_unknown_keys_raise():
    with pytest.raises(ValueError, match="missing"):
        ers({"CA+": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        ers({**raw(("CUB", "HM")), "XX": 1.0})
    with pytest.raises(ValueError, match="benign_r1"):
        ars(raw(("CUB", "HM")), 0.0)


class Trials:
    def __init__(self, before, after):
        self.before, self.after = torch.tensor(before, dtype=torch.float64), torch.tensor(after, dtype=torch.float64)


def all_trials(**overrides):
    trials = {name: Trials([0.5], [0.5]) for name in ("CA+", "QA+")}
    trials.update({name: Trials([0.01], [0.01]) for name in ("CA-", "QA-")})
    trials.update({name: Trials([1.0, 1.0], [1.0, 0.0]) for name in ("ES:R", "LTM", "GTM", "GTT")})
    trials.update(overrides)
    return trials


def test_per_trial_edge_cases():
    unchanged = ars_per_trial(all_trials())
    assert unchanged.scores["CA+"] == pytest.approx(100) and unchanged.scores["CA-"] == pytest.approx(100)
    reached = ars_per_trial(all_trials(**{"CA+": Trials([0.4], [0.0]), "QA-": Trials([0.02], [1.0])}))
    assert reached.scores["CA+"] == pytest.approx(0) and reached.scores["QA-"] == pytest.approx(0)
    halfway = ars_per_trial(all_trials(**{"QA+": Trials([0.4, 0.6], [0.2, 0.6])}))
    assert halfway.scores["QA+"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    degenerate = ars_per_trial(all_trials(**{"CA+": Trials([0.0, 0.5], [0.0, 0.25])}))
    assert degenerate.excluded["CA+"] == 1 and degenerate.scores["CA+"] == pytest.approx(50)
    away = all_trials(**{"CA+": Trials([0.4], [0.6])})
    assert ars_per_trial(away, "signed_clip").scores["CA+"] == pytest.approx(100)
    assert ars_per_trial(away, "signed").scores["CA+"] == pytest.approx(150)
    assert ars_per_trial(away, "abs").scores["CA+"] == pytest.approx(50)
    assert unchanged.scores["ES:R"] == pytest.approx(50) and unchanged.scores["GTT"] == pytest.approx(50)
    assert unchanged.scores["overall"] == pytest.approx(sum(unchanged.scores[n] for n in ARS_ATTACKS) / 8)


def test_per_trial_nan_when_clean_recall_is_zero():
    with pytest.warns(UserWarning, match="ES:R"):
        result = ars_per_trial(all_trials(**{"ES:R": Trials([0.0], [0.0])}))
    assert math.isnan(result.scores["ES:R"])
    with pytest.raises(ValueError, match="sign_handling"):
        ars_per_trial(all_trials(), "clip")
    with pytest.raises(ValueError, match="GTT"):
        ars_per_trial({name: t for name, t in all_trials().items() if name != "GTT"})


# The literature's formulas written out by hand (robrank's ersnormalize; the paper's Table 1 recipe), to check the
# normalisers and goals the attack classes declare against them.
HAND_ERS = {"CA+": lambda x: 2 * x, "CA-": lambda x: 100 - x, "QA+": lambda x: 2 * x, "QA-": lambda x: 100 - x,
            "TMA": lambda x: 100 * (1 - x), "ES:D": lambda x: 50 * (2 - x), "ES:R": lambda x: x,
            "LTM": lambda x: x, "GTM": lambda x: x, "GTT": lambda x: x}
HAND_ARS = {"CA+": lambda x, r1: 2 * x, "CA-": lambda x, r1: 100 - 100 * (x - 1) / 99,
            "QA+": lambda x, r1: 2 * x, "QA-": lambda x, r1: 100 - 100 * (x - 1) / 99,
            "ES:R": lambda x, r1: 100 * x / r1, "LTM": lambda x, r1: 100 * x / r1, "GTM": lambda x, r1: 100 * x / r1,
            "GTT": lambda x, r1: x}


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0, 1.76, 12.5, 50.0, 99.9, 100.0])
def test_declared_normalisers_equal_the_hand_written_formulas(value):
    raw = dict.fromkeys(NAMES, value)
    per_attack = ers_per_attack(raw)
    assert set(per_attack) == set(HAND_ERS)
    for name, formula in HAND_ERS.items():
        assert per_attack[name] == pytest.approx(formula(value), abs=1e-9), name
    scores = ars(raw, benign_r1=43.4)
    for name, formula in HAND_ARS.items():
        assert scores[name] == pytest.approx(formula(value, 43.4), abs=1e-9), name


def test_a_new_measurement_does_not_change_ers_or_the_overall_ars(monkeypatch):
    from pml_tride.attacks import MEASUREMENTS, Measurement

    monkeypatch.setitem(MEASUREMENTS, "NEW", Measurement("NEW", "R@1 (%)", ars_goal=0.0))
    row = raw(("CUB", "HM"))
    extended = {**row, "NEW": 5.0}
    assert ers(extended) == ers(row) and ars(extended, 34.9)["overall"] == ars(row, 34.9)["overall"]
    assert ers_per_attack(extended)["NEW"] == 5.0 and ars(extended, 34.9)["NEW"] == pytest.approx(100 * 5 / 34.9)
    with pytest.raises(ValueError, match="missing"):
        ers({**{name: 1.0 for name in NAMES if name != "GTT"}, "NEW": 1.0})
