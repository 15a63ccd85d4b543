"""Every public class and function has a page in the API reference (docs/api/*.md, built by mkdocstrings)."""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pml_tride

API_PAGES = Path(__file__).resolve().parent.parent / "docs" / "api"


def documented_modules():
    directives = set()
    for page in API_PAGES.glob("*.md"):
        directives.update(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.MULTILINE))
    return directives


def public_objects():
    for info in pkgutil.walk_packages(pml_tride.__path__, "pml_tride."):
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [name for name in vars(module) if not name.startswith("_")]
        for name in names:
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__.startswith("pml_tride."):
                yield f"{info.name}.{name}", value.__module__


def test_every_public_class_and_function_is_in_the_api_reference():
    directives = documented_modules()
    missing = sorted(qualified for qualified, module in public_objects()
                     if not any(module == d or module.startswith(d + ".") for d in directives))
    assert not missing, f"add these modules to a page of docs/api/: {missing}"
