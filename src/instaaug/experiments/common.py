"""Pieces every experiment shares: method construction, config overrides, metrics files."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..augment import Augmenter, InstaAug
from ..baselines import Augerino, NoAugment, RandomAugment
from ..controller import EntropyController
from ..io import write_json
from ..objective import AugerinoObjective, InstaAugObjective, TaskObjective

#: The methods of the uniform-parameterisation experiments, in reporting order.
METHODS = ("none", "random", "augerino", "instaaug")


def build_method(
    method: str,
    transforms: Sequence[str],
    *,
    in_channels: int,
    random_ranges: dict[str, float | tuple[float, float]] | None = None,
    augerino_weight: float = 0.01,
    instaaug_options: dict[str, Any] | None = None,
    controller_options: dict[str, Any] | None = None,
) -> tuple[Augmenter, nn.Module]:
    """The augmenter and the objective of a method named in ``METHODS``."""
    if method == "none":
        return NoAugment(in_channels=in_channels), TaskObjective()
    if method == "random":
        return RandomAugment(transforms, random_ranges, in_channels=in_channels), TaskObjective()
    if method == "augerino":
        return Augerino(transforms, in_channels=in_channels), AugerinoObjective(augerino_weight)
    if method == "instaaug":
        aug = InstaAug(transforms, in_channels=in_channels, **(instaaug_options or {}))
        controller = EntropyController(*aug.entropy_range, **(controller_options or {}))
        return aug, InstaAugObjective(controller)
    raise ValueError(f"unknown method {method!r}; known methods: {list(METHODS)}")


def check_methods(methods: Sequence[str], known: Sequence[str] = METHODS) -> tuple[str, ...]:
    """Validate a list of method names (a comma-separated string is accepted too)."""
    if isinstance(methods, str):
        methods = tuple(m for m in methods.split(",") if m)
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {list(known)}, got {list(methods)}")
    return tuple(methods)


def _coerce(value: str, default: Any, key: str) -> Any:
    """Parse ``value`` (from ``--set key=value``) into the type of the field's default."""
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return value
        if isinstance(default, tuple):
            items = [v.strip() for v in value.strip("()[]").split(",") if v.strip()]
            kinds = {type(d) for d in default} or {str}
            if kinds <= {int, float} and kinds:
                return tuple(float(v) if float in kinds else int(v) for v in items)
            return tuple(items)
        return json.loads(value)
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"cannot parse {value!r} for config key {key!r} (like {default!r})") from None


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Return a copy of the dataclass ``config`` with ``key=value`` overrides; unknown keys raise ValueError."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; valid keys: {sorted(fields)}")
        changes[key] = _coerce(value.strip(), getattr(config, key), key)
    return dataclasses.replace(config, **changes)


def write_metrics(
    out_dir: str | os.PathLike, experiment: str, methods: dict[str, dict[str, Any]], config: Any, **extra: Any
) -> Path:
    """Write ``out_dir/metrics.json``: ``{"experiment", "methods": {METHOD: {metric: value}}, "config", ...}``."""
    path = Path(out_dir) / "metrics.json"
    write_json(path, {"experiment": experiment, "methods": methods, "config": dataclasses.asdict(config), **extra})
    return path


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads (None leaves the default)."""
    if threads:
        torch.set_num_threads(threads)
