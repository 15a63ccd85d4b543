"""The documentation speaks to users: no machine paths, no stray control characters (a Python escape such as
"\\f" in "\\frac"), and a site that renders offline (no script or stylesheet from the network)."""

import json
import re
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# Pages and result files written by benchmarks/reproduce, which records its own command lines (in _runs.json).
GENERATED = ("docs/results.md", "docs/results/", "benchmarks/results/full/", "benchmarks/results/quick/",
             "benchmarks/results/any-loss/", "benchmarks/results/entangled/", "benchmarks/results/entangled-long/")
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp)/")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _user_files(patterns, include_generated=False):
    for pattern in patterns:
        for path in sorted(REPOSITORY.glob(pattern)):
            relative = path.relative_to(REPOSITORY).as_posix()
            if include_generated or not relative.startswith(GENERATED):
                yield relative, path.read_text(encoding="utf-8")


def test_docs_have_no_machine_paths_or_control_characters():
    for relative, text in _user_files(["README.md", "CHANGELOG.md", "docs/**/*.md"]):
        assert not MACHINE_PATH.search(text), f"{relative}: {MACHINE_PATH.search(text).group()}"
        found = CONTROL.search(text)
        assert not found, f"{relative}: control character {found.group()!r} at offset {found.start()}"


def test_generated_pages_and_records_have_no_machine_paths():
    for relative, text in _user_files(["docs/results.md", "docs/results/**/*.md", "benchmarks/results/**/*.json",
                                       "benchmarks/results/**/*.md"], include_generated=True):
        assert not MACHINE_PATH.search(text), f"{relative}: {MACHINE_PATH.search(text).group()}"


def test_result_files_have_provenance_and_no_machine_paths():
    for relative, text in _user_files(["benchmarks/*.json", "benchmarks/results/**/*.json"]):
        assert not MACHINE_PATH.search(text), f"{relative}: {MACHINE_PATH.search(text).group()}"
        provenance = json.loads(text)["provenance"]
        assert {"commit", "torch", "device", "date"} <= set(provenance), relative
        assert provenance["commit"] or provenance.get("commit_note"), f"{relative}: neither a commit nor why not"


def test_the_site_loads_nothing_from_the_network():
    config = (REPOSITORY / "mkdocs.yml").read_text()
    for section in ("extra_javascript", "extra_css"):
        block = re.search(rf"^{section}:\n((?:  - .*\n)+)", config, re.MULTILINE)
        entries = block.group(1).split("\n") if block else []
        assert not [entry for entry in entries if "://" in entry], section
    assert re.search(r"^  font: false", config, re.MULTILINE), "the theme would load Google Fonts"
    assert "mkdocs_hooks/offline_math.py" in config
