import math
import os
import runpy

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "digits_plain_loop.py")


def test_the_plain_pml_loop_trains_with_tride_loss(capsys):
    example = runpy.run_path(EXAMPLE)
    means = example["main"](["--epochs", "2", "--steps", "2", "--image-size", "8"])
    assert all(math.isfinite(value) for value in means.values())
    # second epoch: the progressive step size is no longer 0, so the attack makes the triplets more collapsed
    assert means["C adv"] > means["C clean"]
    assert "epoch 2/2" in capsys.readouterr().out
