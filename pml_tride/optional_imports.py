"""Lazy imports of the optional dependencies (pillow, matplotlib), with errors that say how to install them.

The core of pml-tride needs torch, pytorch-metric-learning and numpy only; torchvision has its own compatibility
import (:func:`pml_tride.models.import_torchvision`).
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["import_pillow", "import_pyplot", "has_pyplot"]


def import_pillow() -> ModuleType:
    """``PIL.Image``; an ImportError naming the extra that installs it when pillow is missing."""
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("reading image files needs pillow: pip install 'pml-tride[vision]'") from error
    return Image


def import_pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; an ImportError naming the extra when missing."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'pml-tride[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def has_pyplot() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import_pyplot()
    except ImportError:
        return False
    return True
