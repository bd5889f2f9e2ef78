"""Where a result came from: recorded in every ``metrics.json`` (``instaaug fit``, ``tta``, ``evaluate``, ``run``)."""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import platform
import shlex
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any

import torch

from . import distributed

_COMMAND: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("instaaug_command", default=None)
_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("instaaug_data", default=None)


@contextlib.contextmanager
def command_line(argv: Sequence[str], data: dict[str, Any] | None = None) -> Iterator[None]:
    """Within this block, ``provenance()`` records ``argv`` as the command that was run (the CLI sets it), and
    ``data`` as the data when the caller names none."""
    tokens = _COMMAND.set(tuple(argv)), _DATA.set(data)
    try:
        yield
    finally:
        _COMMAND.reset(tokens[0])
        _DATA.reset(tokens[1])


def _version() -> str:
    try:
        return metadata.version("instaaug")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(*, seed: int | None = None, device: str = "cpu", data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record: package, torch and Python versions, device (with the GPU's name), processes (``world_size``),
    torch threads, seed, the exact command line, the data (path and size), the platform and the UTC time."""
    device_name = str(device)
    if device_name.startswith("cuda") and torch.cuda.is_available():
        device_name = f"{device_name} ({torch.cuda.get_device_name(distributed.local_device(device))})"
    argv = _COMMAND.get()
    return {
        "instaaug": _version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name,
        "world_size": distributed.world_size(),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "command": shlex.join(argv) if argv is not None else shlex.join(sys.argv),
        "data": data if data is not None else (_DATA.get() or "built-in"),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
