"""Checks at the public boundary: bad input fails early with a message naming the problem."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

_RANGE_TOLERANCE = 1e-5

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


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an int ≥ 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be ≥ 1, got {value}")
    return value


def dataclass_from_dict(cls: type[T], values: Mapping[str, Any], *, what: str | None = None) -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting keys it does not define.

    Configs hold tuples, never lists, so lists (as JSON stores tuples) are turned back into tuples.
    """
    what = what or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; valid keys: {sorted(fields)}")
    return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})


def size_pair(value: Any, key: str, most: int = 8192) -> tuple[int, int] | None:
    """An image size as (H, W) from an int (square), a pair or None; a ValueError naming ``key`` otherwise."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most for v in pair)
    ):
        raise ValueError(f"{key} must be a positive int or (H, W), each at most {most}, got {value!r}")
    return (int(pair[0]), int(pair[1]))
