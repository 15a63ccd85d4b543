"""Release metadata: one version everywhere, py.typed shipped (CI also installs and smoke-tests the wheel)."""

import importlib.metadata
import os

import pytest

import pml_tride
from pml_tride.cli import main


def test_one_version_everywhere(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.split() == ["pml-tride", pml_tride.__version__]
    assert importlib.metadata.version("pml-tride") == pml_tride.__version__
    changelog = os.path.join(os.path.dirname(__file__), "..", "CHANGELOG.md")
    with open(changelog) as handle:
        assert f"## {pml_tride.__version__}" in handle.read()


def test_typed_package():
    assert os.path.isfile(os.path.join(os.path.dirname(pml_tride.__file__), "py.typed"))
