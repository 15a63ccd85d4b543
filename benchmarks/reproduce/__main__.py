"""``python -m benchmarks.reproduce``: see ``benchmarks/reproduce/__init__.py``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
