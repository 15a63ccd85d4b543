import math
import os
import runpy

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "digits_any_loss.py")


def test_a_pml_loss_trains_plain_and_adversarial_and_is_evaluated(capsys):
    example = runpy.run_path(EXAMPLE)
    results = example["main"](["--loss", "contrastive", "--epochs", "2", "--steps", "2", "--image-size", "8",
                               "--eval-queries", "12", "--eval-steps", "2"])
    plain, adversarial = results["plain contrastive"], results["AdversarialLoss contrastive"]
    assert all(math.isfinite(value) for row in results.values() for value in row.values())
    assert plain != adversarial  # the second epoch's attack changed the trained model
    assert "AdversarialLoss contrastive" in capsys.readouterr().out
