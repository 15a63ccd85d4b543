"""MkDocs hook: serve MathJax from the installed ``django-static-mathjax`` package (the ``[docs]`` extra), so
that the built site renders its equations without any network access.

The files of MathJax's ``es5`` build that the TeX-to-CommonHTML component loads (the component, the TeX extensions
it loads on demand, the CommonHTML output and its fonts, the menu) are added to the site under ``mathjax/``.
"""

from __future__ import annotations

import os

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

SITE_FOLDER = "mathjax"
COMPONENT = "tex-chtml.js"
LAZY_FOLDERS = ("input/tex/extensions", "output/chtml", "ui", "a11y")


def _mathjax_build() -> str:
    try:
        import mathjax
    except ImportError as error:
        raise PluginError("the docs render equations with the MathJax of the 'django-static-mathjax' package: "
                          'install the docs extra, pip install -e ".[docs]"') from error
    return os.path.join(os.path.dirname(mathjax.__file__), "static", "mathjax", "es5")


def on_files(files: Files, config) -> Files:
    build = _mathjax_build()
    sources = [COMPONENT]
    for folder in LAZY_FOLDERS:
        for root, _, names in os.walk(os.path.join(build, folder)):
            sources += [os.path.relpath(os.path.join(root, name), build) for name in names]
    for source in sorted(sources):
        uri = f"{SITE_FOLDER}/{source.replace(os.sep, '/')}"
        files.append(File.generated(config, uri, abs_src_path=os.path.join(build, source)))
    return files
