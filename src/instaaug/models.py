"""Reference networks: convolutional backbones and the classifiers built on them.

Backbones return a list of feature maps, one per stage (the multi-level taps used by invariance networks);
classifiers pool the last stage and apply a linear layer. Every network takes images in [0, 1] and normalises
them in its first layer, so transforms and figures stay in pixel space.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class InputNorm(nn.Module):
    """(x - mean) / std with fixed per-channel statistics; the default maps [0, 1] to about [-2, 2]."""

    def __init__(self, channels: int, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), mean))
        self.register_buffer("std", torch.full((1, channels, 1, 1), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


NORMS = ("batch", "layer", "none")


@dataclass(frozen=True)
class StageGeometry:
    """Where the units of one feature map look, in input pixel coordinates (pixel centres at 0, 1, 2, ...).

    Per axis (y, x): the unit at cell (i, j) is centred on input pixel ``(start[0] + i·jump[0],
    start[1] + j·jump[1])`` and sees a window of ``receptive_field`` pixels around it.
    """

    receptive_field: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def trace_geometry(layers: Iterable[nn.Module], geometry: StageGeometry | None = None) -> StageGeometry:
    """Receptive-field arithmetic through a chain of convolutions and poolings, in the order they are applied.

    Each ``Conv2d``/``MaxPool2d``/``AvgPool2d`` with kernel k, stride s, padding p and dilation d grows the
    receptive field by (d(k - 1))·jump, multiplies the jump by s and moves the first centre by
    (d(k - 1)/2 - p)·jump. Other modules (normalisation, activations) do not change the geometry.
    """
    geometry = geometry or StageGeometry((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))
    rf, jump, start = list(geometry.receptive_field), list(geometry.jump), list(geometry.start)
    for layer in layers:
        if not isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            continue
        kernel, stride, padding = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
        dilation = _pair(getattr(layer, "dilation", 1))
        for axis in range(2):
            span = dilation[axis] * (kernel[axis] - 1)
            rf[axis] += span * jump[axis]
            start[axis] += (span / 2 - padding[axis]) * jump[axis]
            jump[axis] *= stride[axis]
    return StageGeometry(tuple(rf), tuple(jump), tuple(start))


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer: ``batch`` (BatchNorm2d), ``layer`` (per-sample over C, H, W: GroupNorm with one
    group, no running statistics, so outputs do not depend on the batch or on train/eval mode) or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class ConvBackbone(nn.Module):
    """A plain CNN: ``depth`` stages of conv3×3 → normalisation → ReLU → 2×2 max-pool.

    Channels double per stage from ``width`` up to ``4 * width``. ``forward`` maps (B, C, H, W) to a list of
    ``depth`` feature maps; stage s has ``channels[s]`` channels and spatial size H / 2^(s+1).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 3, norm: str = "batch") -> None:
        super().__init__()
        self.channels = tuple(min(width * 2**s, 4 * width) for s in range(depth))
        self.norm = InputNorm(in_channels)
        stages, c_in = [], in_channels
        for c_out in self.channels:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    make_norm(norm, c_out),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.out_channels = self.channels[-1]

    def stage_geometry(self) -> list[StageGeometry]:
        """The receptive field, jump and first centre of every stage's units (see ``StageGeometry``)."""
        geometries, geometry = [], None
        for stage in self.stages:
            geometry = trace_geometry(stage, geometry)
            geometries.append(geometry)
        return geometries

    def forward(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """x (B, C, H, W) → the feature maps of the first ``stages`` stages (default: all)."""
        x = self.norm(x)
        features = []
        for stage in self.stages[:stages]:
            x = stage(x)
            features.append(x)
        return features


class PreActBlock(nn.Module):
    """A pre-activation residual block (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str = "batch") -> None:
        super().__init__()
        self.bn1 = make_norm(norm, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNetBackbone(nn.Module):
    """PreAct-ResNet-18 for small images: a 3×3 stem and four stages of two blocks (strides 1, 2, 2, 2).

    ``width`` is the first stage's channel count (64 in the standard network). ``forward`` returns the four
    stage outputs; the last is passed through the final BatchNorm → ReLU.
    """

    def __init__(
        self, in_channels: int = 3, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2), norm: str = "batch"
    ) -> None:
        super().__init__()
        self.norm = InputNorm(in_channels)
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.channels = tuple(width * 2**s for s in range(len(blocks)))
        stages, c_in = [], width
        for s, (c_out, n) in enumerate(zip(self.channels, blocks, strict=True)):
            layers = [
                PreActBlock(c_in if i == 0 else c_out, c_out, (1 if s == 0 else 2) if i == 0 else 1, norm)
                for i in range(n)
            ]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.final = nn.Sequential(make_norm(norm, c_in), nn.ReLU(inplace=True))
        self.out_channels = c_in

    def stage_geometry(self) -> list[StageGeometry]:
        """The receptive field, jump and first centre of every stage's units (see ``StageGeometry``).

        Traced along the residual branch (conv1 → conv2 of every block): a 1×1 shortcut has the same stride and
        a receptive field inside the branch's, so it changes neither.
        """
        geometry = trace_geometry([self.stem])
        geometries = []
        for stage in self.stages:
            geometry = trace_geometry([m for block in stage for m in (block.conv1, block.conv2)], geometry)
            geometries.append(geometry)
        return geometries

    def forward(self, x: torch.Tensor, stages: int | None = None) -> list[torch.Tensor]:
        """x (B, C, H, W) → the feature maps of the first ``stages`` stages (default: all; the final
        normalisation only applies to the last stage of the network)."""
        x = self.stem(self.norm(x))
        features = []
        for stage in self.stages[:stages]:
            x = stage(x)
            features.append(x)
        if len(features) == len(self.stages):
            features[-1] = self.final(features[-1])
        return features


class Classifier(nn.Module):
    """A backbone, global average pooling of its last stage, and a linear layer: (B, C, H, W) → logits (B, K)."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1].mean(dim=(2, 3)))


def _conv_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
        make_norm(norm, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none"),
        make_norm(norm, c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net for dense prediction: (B, C, H, W) → per-pixel logits (B, K, H, W), any H, W ≥ 4.

    ``depth`` halvings of the resolution (width, 2·width, ... channels), then as many upsamplings, each joined with
    the encoder's features of its resolution.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 2, width: int = 16, depth: int = 2, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.input_norm = InputNorm(in_channels)
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_conv_block(c_in, c_out, norm) for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)]
        )
        self.up = nn.ModuleList(
            [_conv_block(widths[i + 1] + widths[i], widths[i], norm) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = self.input_norm(x)
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat((h, skip), 1))
        return self.head(h)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": ConvBackbone,
    "preact_resnet18": PreActResNetBackbone,
}


def build_backbone(name: str, in_channels: int, **kwargs: Any) -> nn.Module:
    """Create a registered backbone by name (``small_cnn`` or ``preact_resnet18``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown network {name!r}; known networks: {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels=in_channels, **kwargs)


def build_classifier(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> Classifier:
    """A classifier on a registered backbone, e.g. ``build_classifier("small_cnn", 3, 10, width=32, depth=4)``."""
    return Classifier(build_backbone(name, in_channels, **kwargs), num_classes)
