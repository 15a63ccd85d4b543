"""Build, save and load embedding models (pml-tride checkpoints, TorchScript, pickled modules)."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any

import torch
from torch import nn

from ..checkpoint_io import atomic_save
from .resnet import resnet18_embedder
from .small_cnn import small_cnn_embedder

__all__ = ["MODEL_FACTORIES", "build_model", "save_model", "load_model"]

MODEL_FACTORIES = {"small_cnn": small_cnn_embedder, "resnet18": resnet18_embedder}
CHECKPOINT_FORMAT = 1
# How torch's weights-only unpickler names a global it refuses ("Unsupported global: GLOBAL torch.nn.Linear ...").
REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _pickled_globals(error: Exception) -> list:
    """The Python globals a weights-only load refused (empty when the file failed for another reason)."""
    return sorted(set(REFUSED_GLOBAL.findall(str(error))))


def _unreadable(path: str, error: Exception) -> ValueError:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ValueError(f"{path!r} cannot be read as a model ({type(error).__name__}: {message}): it is not a "
                      "pml-tride checkpoint, TorchScript archive or torch.save file, or it is truncated or corrupted")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    if name not in MODEL_FACTORIES:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(MODEL_FACTORIES)}")
    return MODEL_FACTORIES[name](**kwargs)


def save_model(model: nn.Module, path: str, **extra: Any) -> None:
    """Write (atomically) ``{"pml_tride_checkpoint": 1, "model": {"name", "kwargs", "state_dict"}, **extra}``.

    An ``extra`` entry ``data={"dataset": name, "image_size": size}`` tells :func:`load_model` (and
    ``pml-tride evaluate``) which images the model was trained on."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("save_model needs a model built by pml_tride.models (with a .config); use "
                         "torch.jit.save for other models")
    atomic_save({"pml_tride_checkpoint": CHECKPOINT_FORMAT,
                 "model": {"name": config["name"], "kwargs": config["kwargs"], "state_dict": model.state_dict()},
                 **extra}, path)


def load_model(path: str, map_location: Any = "cpu", trust_pickle: bool = False) -> nn.Module:
    """Load a model in eval mode from a pml-tride checkpoint (also a TrideTrainer checkpoint), a TorchScript
    archive, or, with ``trust_pickle=True`` only, a ``torch.save``d module (unpickling runs arbitrary code).

    ``map_location`` is where the tensors go, whatever device they were saved from (a checkpoint written on a GPU
    loads on a CPU-only machine). A model from a pml-tride checkpoint carries the checkpoint's ``data`` entry as
    ``model.data_info`` (empty when it has none)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):
                return torch.jit.load(path, map_location=map_location).eval()
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        needed = _pickled_globals(error)
        if not needed:
            raise _unreadable(path, error) from error
        if not trust_pickle:
            raise ValueError(
                f"{path!r} is not a pml-tride checkpoint or TorchScript file: it holds pickled Python objects "
                f"({', '.join(needed)}), which a safe load (weights_only=True) refuses because unpickling can run "
                "arbitrary code. Only for a file from a source you trust: trust_pickle=True (--trust-pickle on the "
                "command line); better, save the model with pml_tride.models.save_model or torch.jit.save"
            ) from error
        module = torch.load(path, map_location=map_location, weights_only=False)
        if not isinstance(module, nn.Module):
            raise ValueError(f"{path!r} holds a {type(module).__name__}, not a torch.nn.Module") from error
        return module.eval()
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, ... for files it cannot parse
        raise _unreadable(path, error) from error
    required = {"name", "kwargs", "state_dict"}
    if not isinstance(state, dict) or "model" not in state or not required <= set(state["model"]):
        raise ValueError(f"{path!r} holds no pml-tride model entry ({{'model': {{'name', 'kwargs', 'state_dict'}}}})")
    entry = state["model"]
    model = build_model(entry["name"], **entry["kwargs"])
    try:
        model.load_state_dict(entry["state_dict"])
    except RuntimeError as error:
        raise ValueError(
            f"{path!r}: the weights do not fit a {entry['name']} with {entry['kwargs']}: {error}"
        ) from error
    model.data_info = dict(state.get("data") or {})
    return model.to(map_location).eval()
