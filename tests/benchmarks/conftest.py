import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def load_benchmark(monkeypatch):
    """Import a benchmark script as a module (benchmarks/ first on sys.path, as when the script runs)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load
