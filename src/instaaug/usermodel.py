"""The user's model for ``instaaug fit``, ``tta`` and ``evaluate``: a built-in name or any importable factory.

``build_model("small_cnn", ...)`` builds a built-in classifier; ``build_model("package.module:callable", ...)``
imports the module and calls the factory with the JSON keyword arguments (``num_classes`` and ``in_channels`` are
filled in when the factory takes them and they are not given), so a timm or torchvision model works on a machine that
has those packages: ``torchvision.models:resnet50`` with ``{"num_classes": 1000}``. Initial weights come from a
safetensors file or a ``torch.save`` file read with ``weights_only=True`` (no pickled code ever runs).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .io import load_foreign_weights
from .models import BACKBONES, build_classifier

#: Per-channel normalisations a pre-trained model may expect of its [0, 1] inputs.
INPUT_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class Normalised(nn.Module):
    """A model behind a fixed per-channel normalisation (x − mean) / std of its [0, 1] inputs (B, C, H, W)."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _factory(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model {spec!r}: expected a built-in name {sorted(BACKBONES)} or 'package.module:callable'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model {spec!r}: cannot import {module_name!r} ({e})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"model {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"model {spec!r}: {attribute!r} is not callable")
    return target


def _accepts(factory: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def build_model(
    spec: str, *, in_channels: int, outputs: int, args: Mapping[str, Any] | None = None, input_norm: str = "none"
) -> nn.Module:
    """The model named by ``spec``: a built-in backbone name (``small_cnn``, ``preact_resnet18``; ``args`` such as
    ``width``/``depth`` go to the backbone) with a linear head of ``outputs``, or ``package.module:callable`` called
    with ``args`` (plus ``num_classes=outputs`` and ``in_channels`` when it takes them and they are not given).
    ``input_norm``: ``imagenet`` puts the model behind ImageNet's mean/std normalisation of [0, 1] inputs."""
    if not isinstance(args, Mapping):
        raise TypeError(f"model arguments must be a JSON object (a dict), got {type(args).__name__}")
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {sorted(INPUT_NORMS)}, got {input_norm!r}")
    kwargs = dict(args or {})
    if spec in BACKBONES:
        try:
            model: Any = build_classifier(spec, in_channels, outputs, **kwargs)
        except TypeError as e:
            raise ValueError(f"model {spec!r} does not take these arguments {kwargs}: {e}") from None
    else:
        factory = _factory(spec)
        for name, value in (("num_classes", outputs), ("in_channels", in_channels)):
            if name not in kwargs and _accepts(factory, name):
                kwargs[name] = value
        try:
            model = factory(**kwargs)
        except TypeError as e:
            raise ValueError(f"model {spec!r} could not be built with {kwargs}: {e}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    norm = INPUT_NORMS[input_norm]
    if norm is not None:
        mean, std = norm
        if len(mean) != in_channels:
            raise ValueError(f"input_norm {input_norm!r} is for {len(mean)} channels, the images have {in_channels}")
        model = Normalised(model, mean, std)
    return model


def build_model_with_weights(
    spec: str, weights: str, *, in_channels: int, outputs: int, args: Mapping[str, Any], input_norm: str
) -> nn.Module:
    """``build_model``, then ``load_model_weights`` from ``weights`` when it is not empty."""
    model = build_model(spec, in_channels=in_channels, outputs=outputs, args=args, input_norm=input_norm)
    if weights:
        load_model_weights(model, weights)
    return model


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load initial weights into ``model`` (strictly: every parameter and buffer, nothing else) from a safetensors
    file or a weights-only ``torch.save`` file. A state dict saved from a ``DistributedDataParallel`` or
    ``torch.compile`` wrapper (keys prefixed ``module.`` or ``_orig_mod.``) loads too."""
    state = load_foreign_weights(path)
    target = model.model if isinstance(model, Normalised) else model
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit the model: {len(missing)} missing key(s) {missing[:3]}, {len(unexpected)} "
            f"unexpected {unexpected[:3]}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{path}: {len(wrong)} tensor(s) have the wrong shape, e.g. {k!r} {tuple(state[k].shape)} vs the model's "
            f"{tuple(expected[k].shape)}"
        )
    target.load_state_dict(state)
