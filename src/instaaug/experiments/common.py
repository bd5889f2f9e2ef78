"""Pieces every experiment shares: method construction, config overrides, metrics files."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..augment import Augmenter, InstaAug
from ..baselines import Augerino, NoAugment, RandomAugment
from ..config_files import renamed_keys, warn_renamed
from ..controller import EntropyController
from ..distributed import is_main_process
from ..io import write_json
from ..objective import AugerinoObjective, InstaAugObjective, TaskObjective
from ..provenance import provenance
from ..train import accuracy, predict
from .methods import MethodRegistry

#: Where an experiment that generates its own data sends a user who gives it theirs.
OWN_DATA_HINT = "for your own images: instaaug fit --data DIR (or instaaug tta for a frozen model)"
#: The methods of the uniform-parameterisation experiments (rotation, colour), in reporting order. Each builds
#: ``(augmenter, objective)`` from the transform names and keyword options (see ``build_method``).
UNIFORM_METHODS = MethodRegistry("uniform-range")


@UNIFORM_METHODS.register("none", "no augmentation")
def _none(transforms: Sequence[str], *, in_channels: int, **options: Any) -> tuple[Augmenter, nn.Module]:
    return NoAugment(in_channels=in_channels), TaskObjective()


@UNIFORM_METHODS.register("random", "random augmentation at fixed ranges (random_ranges)")
def _random(
    transforms: Sequence[str],
    *,
    in_channels: int,
    random_ranges: dict[str, float | tuple[float, float]] | None = None,
    **options: Any,
) -> tuple[Augmenter, nn.Module]:
    return RandomAugment(transforms, random_ranges, in_channels=in_channels), TaskObjective()


@UNIFORM_METHODS.register("augerino", "one learned range for every input (Augerino)")
def _augerino(
    transforms: Sequence[str], *, in_channels: int, augerino_weight: float = 0.01, **options: Any
) -> tuple[Augmenter, nn.Module]:
    return Augerino(transforms, in_channels=in_channels), AugerinoObjective(augerino_weight)


@UNIFORM_METHODS.register("instaaug", "InstaAug: a learned range per input")
def _instaaug(
    transforms: Sequence[str],
    *,
    in_channels: int,
    instaaug_options: dict[str, Any] | None = None,
    controller_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[Augmenter, nn.Module]:
    aug = InstaAug(transforms, in_channels=in_channels, **(instaaug_options or {}))
    controller = EntropyController(*aug.entropy_range, **(controller_options or {}))
    return aug, InstaAugObjective(controller)


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
    """The augmenter and the objective of a method of ``UNIFORM_METHODS``: ``random`` at ``random_ranges``,
    ``augerino`` with weight ``augerino_weight``, ``instaaug`` with ``InstaAug(**instaaug_options)`` and an
    ``EntropyController(**controller_options)`` over its entropy band."""
    return UNIFORM_METHODS.build(
        method,
        transforms,
        in_channels=in_channels,
        random_ranges=random_ranges,
        augerino_weight=augerino_weight,
        instaaug_options=instaaug_options,
        controller_options=controller_options,
    )


def accuracy_on(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "cpu") -> float:
    """Accuracy (a fraction) of ``model`` on images x (N, C, H, W) with labels y (N,)."""
    return accuracy(predict(model, x, device=device), y.cpu())


@torch.no_grad()
def learned_ranges(
    aug: Augmenter, x: torch.Tensor, batch_size: int = 512, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned intervals low, high (N, D) of ``aug`` (in eval mode) for images x (N, C, H, W), on the CPU."""
    aug.eval()
    lows, highs = [], []
    # Quiet unless attached to a terminal, and on ranks other than 0.
    for xb in tqdm(
        x.split(batch_size), desc="learned ranges", disable=None if is_main_process() else True, leave=False
    ):
        dist = aug.distribution(xb.to(device))
        lows.append(dist.low.cpu())
        highs.append(dist.high.cpu())
    return torch.cat(lows), torch.cat(highs)


#: The ``TrainConfig`` keys that experiments used to hold flat (``--set lr=...``), before nesting them as ``train``.
FLAT_TRAIN_KEYS = (
    "epochs",
    "pretrain_epochs",
    "batch_size",
    "lr",
    "aug_lr",
    "aug_lr_schedule",
    "weight_decay",
    "device",
    "channels_last",
    "progress",
)


def flat_train_aliases() -> dict[str, str]:
    """``RENAMED_KEYS`` entries for an experiment that nests its ``TrainConfig`` as ``train``: each old flat
    training key → ``train.KEY`` (still accepted, with a DeprecationWarning)."""
    return {key: f"train.{key}" for key in FLAT_TRAIN_KEYS}


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


def _int_or_list(config: Any, key: str) -> bool:
    """Whether field ``key`` of the dataclass ``config`` is annotated ``int | tuple[int, ...]``."""
    annotation = str(next(f.type for f in dataclasses.fields(config) if f.name == key))
    return isinstance(getattr(config, key), int) and "tuple[int" in annotation


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Return a copy of the dataclass ``config`` with ``key=value`` overrides; unknown keys raise ValueError.

    A dotted key reaches into a nested config: ``train.lr=0.1`` sets ``config.train.lr``.
    """
    fields = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    nested: dict[str, list[str]] = {}
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    renames = getattr(type(config), "RENAMED_KEYS", {})
    for key, value in list(pairs):
        if key not in renames:
            continue
        # A deprecated key: its new one is set instead, with a warning (``renamed_keys``).
        pairs.remove((key, value))
        new, bracket, _ = renames[key].partition("[")
        if not bracket:  # a plain or a nested (``train.lr``) key: set below like any other
            warn_renamed(key, new)
            pairs.append((new, value))
            continue
        element = getattr(config, new)[int(renames[key][len(new) + 1 : -1])]
        converted = renamed_keys(type(config), {key: _coerce(value.strip(), element, key)}, config)
        config = dataclasses.replace(config, **converted)
    for key, value in pairs:
        head, dot, rest = key.partition(".")
        if head not in fields:
            raise ValueError(f"unknown config key {key!r}; valid keys: {sorted(fields)}")
        if dot:
            if not dataclasses.is_dataclass(getattr(config, head)):
                raise ValueError(f"config key {head!r} has no sub-keys (got {key!r})")
            nested.setdefault(head, []).append(f"{rest}={value}")
        elif dataclasses.is_dataclass(getattr(config, key)):
            raise ValueError(f"config key {key!r} is a group; set its keys as {key}.KEY=VALUE")
        elif _int_or_list(config, key) and "," in value:  # e.g. ``seeds``: a count, or the seeds themselves
            changes[key] = _coerce(value.strip(), (0,), key)
        else:
            changes[key] = _coerce(value.strip(), getattr(config, key), key)
    for head, items in nested.items():
        try:
            changes[head] = apply_overrides(getattr(config, head), items)
        except ValueError as e:
            raise ValueError(f"in {head!r}: {e}") from None
    return dataclasses.replace(config, **changes)


def config_device(config: Any) -> str | None:
    """The device an experiment's config asks for: its ``device`` key, else its nested ``train.device`` (None: it
    names none)."""
    for holder in (config, getattr(config, "train", None)):
        if isinstance(getattr(holder, "device", None), str):
            return holder.device
    return None


def write_metrics(
    out_dir: str | os.PathLike, experiment: str, methods: dict[str, dict[str, Any]], config: Any, **extra: Any
) -> Path:
    """Write ``out_dir/metrics.json``: ``{"experiment", "methods": {METHOD: {metric: value}}, "config", ...}``."""
    path = Path(out_dir) / "metrics.json"
    record = provenance(seed=getattr(config, "seed", None), device=config_device(config) or "cpu")
    if is_main_process():  # under torchrun every rank computes the metrics; one writes them
        write_json(
            path,
            {
                "experiment": experiment,
                "methods": methods,
                "config": dataclasses.asdict(config),
                **extra,
                "provenance": record,
            },
        )
    return path


def run_on_builtin_data(
    name: str,
    run: Callable[[Any, Path], dict[str, Any]],
    config: Any,
    out_dir: str | os.PathLike,
    data: str | os.PathLike | None,
    uses: str,
    config_type: type | None = None,
) -> dict[str, Any]:
    """The ``run`` entry point of an experiment on built-in data: ``--data`` is refused with one message (``uses``
    says what the experiment uses instead), a config of another type than ``config_type`` with a TypeError, and
    ``run(config, out_dir)`` goes with ``config.threads`` torch threads."""
    if data is not None:
        raise ValueError(f"the {name} experiment uses {uses}; it takes no --data; {OWN_DATA_HINT}")
    if config_type is not None and not isinstance(config, config_type):
        raise TypeError(f"config must be a {config_type.__module__}.Config, got {type(config).__name__}")
    with torch_threads(getattr(config, "threads", 0)):
        return run(config, Path(out_dir))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``threads`` (0 or None: unchanged), then restore it."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
