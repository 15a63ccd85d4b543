"""The one projected sign-gradient (L-infinity PGD) engine of pml-tride.

Every attack and every defense calls :func:`projected_gradient_descent`; no other attack loop exists in
the package. The engine

* takes gradients with respect to the inputs only (``torch.autograd.grad``), never filling ``.grad`` of the
  model's parameters;
* runs the model in eval mode (BatchNorm statistics frozen) and with ``requires_grad=False`` on its
  parameters, then restores every module's train/eval mode, every parameter's ``requires_grad`` flag and
  ``.grad``, and every buffer exactly as it found them, also when the objective raises;
* minimises the caller's objective with signed steps, ``x <- x - alpha * sign(grad)``, projecting onto the
  eps-ball around the clean input and clamping to ``input_range`` after every step (Madry et al., 2017);
* stops early when the caller's ``stop_condition(loss)`` holds, checked before each step (the collapse-aware
  stop of CA-TRIDE, Eq. 10: stop once L_CAP = max(-C, 0) reaches 0);
* with ``chunk_size``, bounds its memory by the chunk rather than by the number of rows: each step embeds the
  iterate chunk by chunk without grad, takes the objective's gradient with respect to the embeddings once, then
  re-forwards each chunk with grad on its inputs and back-propagates its slice of that gradient. The model runs
  in eval mode, so rows are independent and the result equals the unchunked attack;
* counts the images it pushes through the model, forward and backward (chunk recomputations included);
* reads nothing back to the host inside the loop except what ``stop_condition`` reads (a GPU keeps its queue
  full): finiteness is checked once, after the last step (:func:`check_attack_finite`), and restoring the model
  compares nothing on the host.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import nn

from .chunks import chunk_slices
from .validation import check_number

__all__ = [
    "PGDResult",
    "projected_gradient_descent",
    "frozen_model",
    "check_input_range",
    "check_attack_finite",
    "attack_memory_bytes",
    "available_memory",
    "ENGINE_IMAGE_COPIES",
]

# Image-sized tensors the engine holds at once: the clean inputs, the lower and upper bounds of the ball, the
# iterate, its gradient and the next iterate.
ENGINE_IMAGE_COPIES = 6

Objective = Callable[[torch.Tensor], torch.Tensor]
StopCondition = Callable[[torch.Tensor], bool]


@dataclass
class PGDResult:
    """What an attack returns.

    Attributes:
        adversarial: the perturbed inputs (detached), within ``eps`` of the clean inputs and inside
            ``input_range``.
        steps_taken: the number of signed steps applied (fewer than ``steps`` after an early stop).
        stopped_early: whether ``stop_condition`` ended the loop.
        last_loss: the objective at the last evaluated iterate (detached), or ``None`` if no step ran.
        forward_images: images pushed forward through the model (chunk recomputations included).
        backward_images: images whose input gradient was back-propagated through the model.
    """

    adversarial: torch.Tensor
    steps_taken: int
    stopped_early: bool
    last_loss: Optional[torch.Tensor]
    forward_images: int = 0
    backward_images: int = 0


def attack_memory_bytes(inputs_shape: Tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of the image-sized tensors the engine keeps for inputs of this shape (``ENGINE_IMAGE_COPIES``)."""
    return ENGINE_IMAGE_COPIES * math.prod(inputs_shape) * torch.empty((), dtype=dtype).element_size()


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, available physical memory elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_input_range(inputs: torch.Tensor, input_range: Tuple[float, float], name: str = "inputs") -> None:
    """Raise a ValueError when ``inputs`` hold NaN/Inf or values outside ``input_range``.

    One host read (the minimum and maximum together; both are NaN when any value is), not one per test.
    """
    low, high = input_range
    if inputs.numel() == 0:
        return
    observed_min, observed_max = torch.stack(torch.aminmax(inputs.detach())).tolist()
    if not (math.isfinite(observed_min) and math.isfinite(observed_max)):
        raise ValueError(f"{name} contain NaN or Inf values; expected finite pixel values in [{low}, {high}]")
    if observed_min < low or observed_max > high:
        raise ValueError(
            f"{name} lie in [{observed_min:.4g}, {observed_max:.4g}] but input_range is [{low}, {high}]. "
            "pml-tride attacks pixels in input_range (eps is in pixel units); normalise images inside the "
            "model (see pml_tride.models.Embedder) or pass input_range matching your data"
        )


def check_attack_finite(
    last_loss: Optional[torch.Tensor], adversarial: torch.Tensor, gradient_was_nan: Optional[torch.Tensor] = None
) -> None:
    """Raise a FloatingPointError when an attack ended with a NaN/Inf objective or iterate, or met a NaN input
    gradient (``torch.sign`` maps NaN to 0, so a NaN gradient would silently leave pixels where they are).

    Checked once per attack (one host read), not per step: the engine accumulates ``gradient_was_nan`` on the
    device, and a non-finite iterate stays non-finite (the projection propagates NaN).
    """
    failed = ~torch.isfinite(adversarial).all()
    if last_loss is not None:
        failed = failed | ~torch.isfinite(last_loss)
    if gradient_was_nan is not None:
        failed = failed | gradient_was_nan
    if bool(failed):
        value = "none" if last_loss is None else f"{last_loss.item():.4g}"
        raise FloatingPointError(
            f"the attack's objective (last value {value}) or its input gradient became NaN or Inf: the model's "
            "embeddings of the perturbed images are not finite, or the objective is not differentiable there "
            "(e.g. a square root or a norm at 0). Check the model on inputs in input_range, and the objective"
        )


@contextlib.contextmanager
def frozen_model(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters; restore everything on exit, also on error.

    Restored exactly: each module's ``training`` flag, each parameter's ``requires_grad`` and ``.grad``
    (the same tensor object), and each buffer's values (e.g. BatchNorm running statistics).
    """
    modes = [(module, module.training) for module in model.modules()]
    parameters = list(model.parameters())
    flags = [parameter.requires_grad for parameter in parameters]
    grads = [parameter.grad for parameter in parameters]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        model.eval()
        for parameter in parameters:
            parameter.requires_grad_(False)
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for parameter, flag, grad in zip(parameters, flags, grads):
            parameter.requires_grad_(flag)
            parameter.grad = grad
        with torch.no_grad():
            for buffer, saved in buffers:
                # unconditionally (comparing first would read every buffer on the host: one sync each); through
                # .data: an in-place write on the buffer itself would bump its autograd version and break the
                # backward of the caller's forward passes that saved it (e.g. BatchNorm)
                buffer.data.copy_(saved)


def _validate(
    eps: float, alpha: float, steps: int, input_range: Tuple[float, float], chunk_size: Optional[int]
) -> None:
    check_number("eps", eps, minimum=0, meaning="pixel units, e.g. 8/255")
    check_number("alpha", alpha, minimum=0, meaning="pixel units, e.g. 1/255")
    check_number("steps", steps, minimum=0, integer=True)
    if len(input_range) != 2 or not input_range[0] < input_range[1]:
        raise ValueError(f"input_range must be (low, high) with low < high, got {input_range!r}")
    check_number("chunk_size", chunk_size, minimum=1, integer=True, optional=True)


class _PassCounter:
    """Images forwarded and back-propagated through the model by one attack."""

    def __init__(self) -> None:
        self.forward_images = 0
        self.backward_images = 0


def _loss_and_gradient(
    model: nn.Module,
    adversarial: torch.Tensor,
    objective: Objective,
    stop_condition: Optional[StopCondition],
    chunk_size: Optional[int],
    counter: _PassCounter,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The objective at ``adversarial`` and its input gradient (``None`` when the stop condition holds).

    Unchunked: one forward with grad and ``autograd.grad``. Chunked: embeddings without grad chunk by chunk,
    d objective / d embeddings once, then per chunk a forward with grad and a vector-Jacobian product.
    """
    rows = len(adversarial)
    chunked = chunk_size is not None and rows > chunk_size
    if chunked:
        with torch.no_grad():
            embeddings = torch.cat([model(adversarial[part]) for part in chunk_slices(rows, chunk_size)])
        embeddings.requires_grad_(True)
        source = embeddings
    else:
        adversarial = adversarial.detach().requires_grad_(True)
        embeddings = model(adversarial)
        source = adversarial
    counter.forward_images += rows
    loss = objective(embeddings)
    if loss.dim() != 0:
        raise ValueError(f"the PGD objective must return a scalar, got shape {tuple(loss.shape)}")
    if stop_condition is not None and stop_condition(loss.detach()):
        return loss.detach(), None
    if not loss.requires_grad:
        return loss.detach(), torch.zeros_like(adversarial)
    (gradient,) = torch.autograd.grad(loss, source, allow_unused=True)
    if gradient is None:
        return loss.detach(), torch.zeros_like(adversarial)
    if not chunked:
        counter.backward_images += rows
        return loss.detach(), gradient
    input_gradient = torch.empty_like(adversarial)
    for part in chunk_slices(rows, chunk_size):
        piece = adversarial[part].detach().requires_grad_(True)
        (input_gradient[part],) = torch.autograd.grad(model(piece), piece, grad_outputs=gradient[part])
        counter.forward_images += len(piece)
        counter.backward_images += len(piece)
    return loss.detach(), input_gradient


def projected_gradient_descent(
    model: nn.Module,
    inputs: torch.Tensor,
    objective: Objective,
    *,
    eps: float,
    alpha: float,
    steps: int,
    input_range: Tuple[float, float] = (0.0, 1.0),
    random_start: bool = False,
    generator: Optional[torch.Generator] = None,
    stop_condition: Optional[StopCondition] = None,
    chunk_size: Optional[int] = None,
) -> PGDResult:
    """Minimise ``objective(model(x_adv))`` over the L-inf ball of radius ``eps`` around ``inputs``.

    Args:
        model: maps inputs to embeddings. Run in eval mode with frozen parameters during the attack.
        inputs: clean inputs inside ``input_range``; never modified.
        objective: maps the embeddings of the current iterate to a scalar loss to *minimise*.
        eps: L-inf radius in input units (0 returns the clean inputs).
        alpha: signed step size in input units.
        steps: maximum number of signed steps.
        input_range: (low, high) bounds of valid inputs.
        random_start: start from a uniform draw in the eps-ball (off by default, as in the literature).
        generator: random generator for the random start.
        stop_condition: called with the (detached) loss before each step; ``True`` ends the attack.
        chunk_size: most rows pushed through the model at once (None: all). The result does not depend on it.
    """
    _validate(eps, alpha, steps, input_range, chunk_size)
    low, high = input_range
    clean = inputs.detach()
    lower_bound = (clean - eps).clamp(low, high)
    upper_bound = (clean + eps).clamp(low, high)
    adversarial = clean.clone()
    if eps == 0 or steps == 0:
        return PGDResult(adversarial=adversarial, steps_taken=0, stopped_early=False, last_loss=None)
    if random_start:
        noise = torch.rand(clean.shape, generator=generator, device="cpu", dtype=clean.dtype).to(clean.device)
        adversarial = torch.max(torch.min(clean + (2 * noise - 1) * eps, upper_bound), lower_bound)
    steps_taken, stopped_early, last_loss = 0, False, None
    gradient_was_nan = torch.zeros((), dtype=torch.bool, device=clean.device)
    counter = _PassCounter()
    with frozen_model(model), torch.enable_grad():
        for _ in range(steps):
            last_loss, gradient = _loss_and_gradient(model, adversarial, objective, stop_condition, chunk_size, counter)
            if gradient is None:
                stopped_early = True
                break
            with torch.no_grad():
                gradient_was_nan |= gradient.isnan().any()
                # x - alpha sign(g), projected on the ball and the range: lower_bound <= upper_bound everywhere, so
                # the clamp equals max(min(x, upper), lower)
                adversarial = torch.sub(adversarial, gradient.sign(), alpha=alpha)
                adversarial = torch.clamp(adversarial, lower_bound, upper_bound)
            steps_taken += 1
    check_attack_finite(last_loss, adversarial, gradient_was_nan)
    return PGDResult(
        adversarial=adversarial.detach(),
        steps_taken=steps_taken,
        stopped_early=stopped_early,
        last_loss=last_loss,
        forward_images=counter.forward_images,
        backward_images=counter.backward_images,
    )
