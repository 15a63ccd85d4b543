import subprocess
import sys

# Runs in a fresh interpreter in which the optional dependencies cannot be imported (a None entry in sys.modules
# makes `import` raise ImportError), as on a machine with only the core dependencies installed.
CORE_ONLY_SCRIPT = """
import sys
for name in ("PIL", "matplotlib", "torchvision", "faiss"):
    sys.modules[name] = None

import torch
import pml_tride
import pml_tride.cli
from pml_tride.datasets import CUB200, Digits
from pml_tride.evaluation import RobustnessEvaluator
from pml_tride.models import small_cnn_embedder
from pml_tride.optional_imports import has_pyplot

assert not has_pyplot()
for name in ("PIL", "matplotlib", "torchvision", "faiss"):
    assert sys.modules[name] is None, name + " was imported for real"

digits = Digits("test", image_size=8)
torch.manual_seed(0)
report = RobustnessEvaluator(steps=1, attacks="all", max_batches=1, progress=False).evaluate(
    small_cnn_embedder(embedding_dim=8, width=4), digits)
assert report.benign["NMI"] > 0 and report.ers is not None

for attempt in (lambda: CUB200("/nonexistent", "test"), lambda: report.plot("bars.png")):
    try:
        attempt()
    except ImportError as error:
        print(error)
    else:
        raise AssertionError("no ImportError")
"""


def test_core_works_without_pillow_matplotlib_torchvision_and_faiss():
    completed = subprocess.run([sys.executable, "-c", CORE_ONLY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    messages = completed.stdout.strip().splitlines()
    assert "pml-tride[vision]" in messages[0] and "pml-tride[plot]" in messages[1]
