"""Smoke test of an installed (non-editable) pml-tride, run by .ci/run as ``python wheel_smoke.py SOURCE_TREE``
from outside the source tree.

Imports every public name of every subpackage, checks that the version is the same everywhere (package, metadata,
``pml-tride --version``) and that the wheel ships ``py.typed``.
"""

import importlib
import importlib.metadata
import os
import subprocess
import sys

PACKAGES = ("pml_tride", "pml_tride.attacks", "pml_tride.datasets", "pml_tride.evaluation", "pml_tride.losses",
            "pml_tride.miners", "pml_tride.models", "pml_tride.reducers", "pml_tride.trainers", "pml_tride.cli",
            "pml_tride.recipes", "pml_tride.demo", "pml_tride.pgd", "pml_tride.collapseness", "pml_tride.schedules")


def main(source_tree: str) -> int:
    import pml_tride

    if os.path.abspath(pml_tride.__file__).startswith(os.path.abspath(source_tree) + os.sep):
        raise SystemExit(f"pml_tride was imported from the source tree ({pml_tride.__file__}), not from the wheel")
    imported = 0
    for name in PACKAGES:
        module = importlib.import_module(name)
        public = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for attribute in public:
            getattr(module, attribute)
            imported += 1
    metadata_version = importlib.metadata.version("pml-tride")
    printed = subprocess.run(["pml-tride", "--version"], capture_output=True, text=True, check=True).stdout.split()
    if not (pml_tride.__version__ == metadata_version == printed[-1]):
        raise SystemExit(f"versions differ: package {pml_tride.__version__}, metadata {metadata_version}, "
                         f"CLI {printed}")
    if not os.path.isfile(os.path.join(os.path.dirname(pml_tride.__file__), "py.typed")):
        raise SystemExit("the installed package has no py.typed")
    print(f"pml-tride {metadata_version} from {os.path.dirname(pml_tride.__file__)}: {imported} public names import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
