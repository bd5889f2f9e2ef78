"""Checks at the public boundary: bad input fails early with a message naming the problem."""

from __future__ import annotations

import contextvars
import dataclasses
import math
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

_RANGE_TOLERANCE = 1e-5

#: The longest image side a config may ask for (``phi_size``, ``output_size``): far beyond any use, small enough
#: that nothing sized by it can exhaust memory on its own.
MAX_IMAGE_SIDE = 8192

# Values quoted in error messages may come from a file: cut them short, so that a huge value cannot swamp the
# message and a deeply nested one cannot overflow the stack while it is printed.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 3
_BRIEF.maxstring = _BRIEF.maxother = _BRIEF.maxlong = 60
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = 8

T = TypeVar("T")

_VALUE_CHECKS = contextvars.ContextVar("instaaug_value_checks", default=True)


@contextmanager
def trusted_inputs() -> Iterator[None]:
    """Within this block, skip the checks that read tensor values (finite, ranges) back to the host.

    Shapes and dtypes are still checked. For loops over data that was validated once up front: on a GPU each
    value check is a device synchronisation.
    """
    token = _VALUE_CHECKS.set(False)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def value_checks_on() -> bool:
    """Whether checks that read tensor values back to the host run here.

    Not inside ``trusted_inputs()``, and not while ``torch.compile`` traces: there a value check would be a host
    synchronisation and a graph break in the hot path (and dynamo cannot trace ``ContextVar.get``), so compiled
    code relies on its data having been validated once up front.
    """
    return not torch.compiler.is_compiling() and _VALUE_CHECKS.get()


def check_images(x: Any, *, name: str = "images", channels: int | None = None, check_values: bool = True) -> None:
    """Validate a batch of images: a float tensor (B, C, H, W), B ≥ 1, finite, with values in [0, 1].

    Args:
        x: the candidate tensor.
        name: how the tensor is called in error messages.
        channels: the required channel count C, or None for any.
        check_values: also check finiteness and range. These read the values back to the host (a device
            synchronisation on GPU); pass False in a hot loop once the data source is trusted. They are skipped
            inside ``trusted_inputs()`` and under ``torch.compile``.

    Raises:
        TypeError: not a tensor, or not a floating-point dtype (uint8 images must be converted with ``x / 255``).
        ValueError: wrong rank, channel count, empty batch, NaN/Inf, or values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (convert uint8 images with x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}{hint}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {x.dim()} dimensions {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"{name} must be at least 2×2 pixels, got {tuple(x.shape[2:])}")
    if check_values and value_checks_on():
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf values")
        lo, hi = torch.aminmax(x.detach())
        if float(lo) < -_RANGE_TOLERANCE or float(hi) > 1 + _RANGE_TOLERANCE:
            raise ValueError(
                f"{name} values must lie in [0, 1], got range [{float(lo):.4g}, {float(hi):.4g}]; "
                "normalisation belongs inside the model"
            )


def check_labels(y: Any, batch: int, num_classes: int | None = None) -> None:
    """Validate integer class labels of shape (B,) with values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of shape (B,), got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must have an integer dtype, got {y.dtype}")
    if y.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},) to match the images, got {tuple(y.shape)}")
    if num_classes is not None and batch > 0 and value_checks_on():
        lo, hi = torch.aminmax(y)
        if int(lo) < 0 or int(hi) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(lo)}, {int(hi)}]")


def brief(value: Any) -> str:
    """A short repr of ``value`` for an error message: long and deeply nested values are cut."""
    try:
        return _BRIEF.repr(value)
    except (ValueError, RecursionError):  # an int too long to print (sys.set_int_max_str_digits), a broken __repr__
        return f"<a {type(value).__name__}>"


def check_positive_int(value: Any, name: str, most: int | None = None) -> int:
    """Return ``value`` if it is an int in [1, most] (``most`` None: no upper bound), else raise naming ``name``.

    Raises:
        TypeError: not an int (a bool is not an int here).
        ValueError: below 1 or above ``most``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {brief(value)} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be ≥ 1, got {value}")
    if most is not None and value > most:
        raise ValueError(f"{name} must be at most {most}, got {brief(value)}")
    return value


def check_int_fields(config: Any, keys: Sequence[str], least: int = 0) -> None:
    """Check that each attribute ``keys`` of ``config`` is an int ≥ ``least`` (a bool is not); the configs'
    shared check, so that every one words the error alike.

    Raises:
        ValueError: naming the first key that is not (also for a wrong type: config keys arrive from ``--set`` and
            files, and the CLI reports a ValueError as one line).
    """
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key} must be an int ≥ {least}, got {brief(value)}")


def check_number(
    value: Any,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float if it is a finite int or float in the range, else an error naming ``name``.

    The range is [low, high], open at either end on request. A bool or a string holding a number is not a number.

    Raises:
        TypeError: not an int or a float.
        ValueError: NaN, infinite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {brief(value)} ({type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if not math.isfinite(number) or below or above:
        raise ValueError(f"{name} must be a finite number{_span(low, high, low_open, high_open)}, got {brief(value)}")
    return number


def _span(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(low) and math.isinf(high):
        return ""
    if math.isinf(high):
        return f" {'>' if low_open else '≥'} {low:g}"
    if math.isinf(low):
        return f" {'<' if high_open else '≤'} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_numbers(value: Any, name: str, most_items: int, **limits: Any) -> tuple[float, ...]:
    """A list or tuple of at most ``most_items`` numbers (each checked by ``check_number`` with ``limits``)."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"{name} must be a list of numbers, got {brief(value)} ({type(value).__name__})")
    if len(value) > most_items:
        raise ValueError(f"{name} must hold at most {most_items} numbers, got {len(value)}")
    return tuple(check_number(v, f"{name}[{i}]", **limits) for i, v in enumerate(value))


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``; a TypeError (not a string) or ValueError naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {tuple(choices)}, got {brief(value)} ({type(value).__name__})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {brief(value)}")
    return value


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool (not 0/1, not "yes"); a TypeError naming ``name`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {brief(value)} ({type(value).__name__})")
    return value


def dataclass_from_dict(cls: type[T], values: Mapping[str, Any], *, what: str | None = None) -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting keys it does not define.

    Configs hold tuples, never lists, so lists (as JSON stores tuples) are turned back into tuples.
    """
    what = what or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(key) for key in set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {brief(unknown)}; valid keys: {sorted(fields)}")
    return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})


def size_pair(value: Any, key: str, most: int = MAX_IMAGE_SIDE) -> tuple[int, int] | None:
    """An image size as (H, W) from an int (square), a pair or None; a ValueError naming ``key`` otherwise."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most for v in pair)
    ):
        raise ValueError(f"{key} must be a positive int or (H, W), each at most {most}, got {brief(value)}")
    return (int(pair[0]), int(pair[1]))
