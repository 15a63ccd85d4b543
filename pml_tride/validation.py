"""Argument checks shared by the package: one wording for every "must be" error.

Each check raises a ``ValueError`` (``TypeError`` for :func:`check_instance`) that names the argument, what was
expected and what was given, e.g. ``steps must be an integer >= 0, got 2.5``. Booleans are not numbers here:
``True`` is refused where a number is expected.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple, Union

__all__ = ["check_number", "check_choice", "check_bool", "check_instance"]


def _describe(name: str, meaning: str) -> str:
    return f"{name} ({meaning})" if meaning else name


def check_number(
    name: str,
    value: Any,
    *,
    minimum: Optional[float] = None,
    above: bool = False,
    integer: bool = False,
    optional: bool = False,
    meaning: str = "",
) -> None:
    """Raise a ValueError unless ``value`` is a finite number (an ``int`` when ``integer``) that is ``>= minimum``
    (``> minimum`` when ``above``); ``None`` passes when ``optional``. ``meaning`` is shown after the name."""
    if optional and value is None:
        return
    kind = "an integer" if integer else "a finite number"
    bound = "" if minimum is None else f" {'>' if above else '>='} {minimum}"
    expected = f"{'None or ' if optional else ''}{kind}{bound}"
    number_types: Union[type, Tuple[type, ...]] = int if integer else (int, float)
    valid = not isinstance(value, bool) and isinstance(value, number_types) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if above else value >= minimum
    if not valid:
        raise ValueError(f"{_describe(name, meaning)} must be {expected}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise a ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """Raise a ValueError unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_instance(name: str, value: Any, expected: Union[type, Tuple[type, ...]], description: str,
                   optional: bool = False) -> None:
    """Raise a TypeError unless ``value`` is an instance of ``expected`` (or ``None`` when ``optional``);
    ``description`` says what was expected, e.g. "a pytorch_metric_learning BaseMiner"."""
    if optional and value is None:
        return
    if not isinstance(value, expected):
        raise TypeError(f"{name} must be {description}{' or None' if optional else ''}, got {type(value).__name__}")
