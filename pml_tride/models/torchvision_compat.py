"""The one place pml-tride imports torchvision, with a workaround for a CUDA torchvision wheel on a CPU-only torch
(the wheel's `_meta_registrations` then fails with "operator torchvision::nms does not exist", pytorch/vision#9085)."""

from __future__ import annotations

import warnings
from types import ModuleType

import torch

__all__ = ["import_torchvision"]

MISSING_OPERATORS = ("nms", "qnms")


def import_torchvision() -> ModuleType:
    """Import torchvision; on a CPU-only torch whose torchvision wheel is a CUDA build, define the two operator
    schemas the wheel misses (``torchvision::nms``, ``torchvision::qnms``) and import again, with a warning.
    Models, transforms and data sets then work; ``torchvision.ops.nms`` does not."""
    try:
        import torchvision

        return torchvision
    except ImportError as error:
        raise ImportError("this feature needs torchvision: pip install 'pml-tride[vision]'") from error
    except RuntimeError as error:
        if torch.version.cuda is not None or "does not exist" not in str(error):
            raise
    library = torch.library.Library("torchvision", "DEF")
    for name in MISSING_OPERATORS:
        library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import sys

    for module in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[module]
    import torchvision

    torchvision._pml_tride_operator_library = library
    warnings.warn(
        "torchvision's wheel is a CUDA build but torch is CPU-only: defined the missing torchvision::nms/qnms "
        "schemas so that torchvision imports (models and transforms work; torchvision.ops.nms does not)",
        stacklevel=2,
    )
    return torchvision
