import pytest

from pml_tride.schedules import PhaseCycle, progressive_alpha, semi_hard_band


@pytest.mark.parametrize("epoch", [0, 1, 37, 74])
def test_semi_hard_band_closed_forms(epoch):
    total = 75
    assert semi_hard_band(epoch, total, 0.2, "paper") == pytest.approx(0.2 * (1 - (epoch / 150) ** 2))
    assert semi_hard_band(epoch, total, 0.2, "reference") == pytest.approx(0.2 * (1 - epoch / 150) ** 2)


def test_reference_schedule_values_of_the_reference_doc():
    assert semi_hard_band(37, 75, 0.2, "reference") == pytest.approx(0.113, abs=1e-3)
    assert semi_hard_band(74, 75, 0.2, "reference") == pytest.approx(0.051, abs=1e-3)


def test_progressive_alpha():
    assert progressive_alpha(1 / 255, 0, 10) == 0
    assert progressive_alpha(1 / 255, 5, 10) == pytest.approx(0.5 / 255)


def test_phase_cycle_sequences_and_state():
    cycle = PhaseCycle("tride")
    assert [cycle.next() for _ in range(5)] == ["cap", "anp", "cap", "anp", "cap"]
    restored = PhaseCycle("tride")
    restored.load_state_dict(cycle.state_dict())
    assert restored.next() == "anp"
    assert [PhaseCycle("anp").next() for _ in range(2)] == ["anp", "anp"]


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: semi_hard_band(-1, 10), "epoch"),
        (lambda: semi_hard_band(11, 10), "epoch"),
        (lambda: semi_hard_band(1, 0), "total_epochs"),
        (lambda: semi_hard_band(1, 10, schedule="linear"), "schedule"),
        (lambda: progressive_alpha(0.1, 1.5, 10), "epoch"),
        (lambda: PhaseCycle("both"), "phase"),
    ],
)
def test_bad_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()
