"""How a defense finds the images behind the embeddings it is given: a forward hook on the model (so
``loss(embeddings, labels, indices_tuple)`` stays a drop-in PML call), or the images passed as ``inputs=``."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator, Optional, Tuple

import torch
from torch import nn

from ..pgd import check_input_range

__all__ = ["ModelReference", "InputCapture"]


class ModelReference:
    """Holds the attacked model by reference: not a submodule (not in ``state_dict()``, not moved by ``.to()``),
    and not an ``nn.Module`` attribute that record-keeper's recursive walk of ``loss_funcs`` would descend into
    (it names tables after the model's children, which sqlite rejects)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class InputCapture:
    """Records the input and (weakly) the output of the model's last forward call, except while capture is paused
    (:meth:`paused`: the defense's own passes of perturbed or clean images); ``explicit_inputs`` (the call's
    ``inputs=``) take precedence."""

    __slots__ = ("_capture_paused", "_captured", "_hook", "explicit_inputs")

    def __init__(self, model: nn.Module) -> None:
        self._capture_paused = False
        self._captured: Optional[Tuple[torch.Tensor, "weakref.ReferenceType[torch.Tensor]"]] = None
        self.explicit_inputs: Optional[torch.Tensor] = None
        self._hook = model.register_forward_hook(self._capture_forward)

    def _capture_forward(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        if (self._capture_paused or not args or not isinstance(args[0], torch.Tensor)
                or not isinstance(output, torch.Tensor)):
            return
        self._captured = (args[0].detach(), weakref.ref(output))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No capture inside: the model's forward calls there are the defense's own."""
        paused, self._capture_paused = self._capture_paused, True
        try:
            yield
        finally:
            self._capture_paused = paused

    def remove(self) -> None:
        """Detach the hook from the model and forget the captured batch."""
        self._hook.remove()
        self._captured = None

    def resolve(self, embeddings: torch.Tensor, owner: str, input_range: Tuple[float, float]) -> torch.Tensor:
        """The images behind ``embeddings`` (detached), checked against ``input_range``; ``owner`` names the loss
        in the error raised when they cannot be found."""
        inputs = self.explicit_inputs
        if inputs is None:
            captured_output = self._captured[1]() if self._captured is not None else None
            if captured_output is not embeddings:
                raise ValueError(
                    f"{owner} could not find the images behind these embeddings: they are not the "
                    "output of the model's last forward call (a different batch, a detached or transformed copy, "
                    "or another model). Pass the images explicitly: "
                    "loss(embeddings, labels, indices_tuple, inputs=images)"
                )
            inputs = self._captured[0]
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] != embeddings.shape[0]:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(
                f"inputs must be a tensor of images with one row per embedding ({embeddings.shape[0]}), got {shape}"
            )
        check_input_range(inputs, input_range, name="inputs")
        return inputs.detach()
