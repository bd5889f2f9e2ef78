"""Learned and random crops: augmenters whose views are boxes cut out of the image and resized.

- ``InstaAugCrop``: InstaAug's location-related parameterisation (LRP). φ (``CropLogitsNet``) scores every
  candidate box given by the receptive fields of chosen CNN stages; views are drawn from the resulting
  ``CropCategorical`` and the task loss reaches φ through the score function (REINFORCE, see
  ``InstaAugObjective``). ``InstaAug(transforms=("crop",), ...)`` builds one too.
- ``RandomCrop``: the random-crop baseline, side uniform in [min_scale, max_scale], position uniform inside.

Both return ``AugmentOutput``s whose ``params`` are the boxes (cx, cy, w, h) in fractions of the image, and
cut all views of a batch with one batched resampling (``transforms.crop_resize``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .augment import (
    Augmenter,
    AugmentOutput,
    check_augmenter_options,
    draw,
    pack_views,
    phi_network_options,
    save_augmenter,
)
from .distributions import CROP_PARAMS, CropCategorical, UniformCrops
from .networks import CropLogitsNet
from .transforms import crop_resize
from .validation import check_positive_int, dataclass_from_dict

CROP_FORMAT = "instaaug.InstaAugCrop"


def _size_pair(value: int | Sequence[int] | None, key: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{key} must be a positive int or (H, W), got {value!r}")
    return (int(pair[0]), int(pair[1]))


class CropAugmenter(Augmenter):
    """Shared machinery of crop augmenters: sample boxes, cut them out in one pass, pack an ``AugmentOutput``.

    Subclasses implement ``_distribution(x, y)`` returning a distribution over boxes with
    ``sample_with_log_prob``, ``entropy`` and ``has_rsample``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        n_copies: int = 1,
        output_size: int | Sequence[int] | None = None,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__((), in_channels=in_channels, n_copies=n_copies, padding_mode=padding_mode)
        self.output_size = _size_pair(output_size, "output_size")
        self.padding_mode = padding_mode

    @property
    def names(self) -> tuple[str, ...]:
        return CROP_PARAMS

    def crop(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Cut boxes (N, 4) out of images x (N, C, H, W) and resize them to the output size."""
        return crop_resize(x, boxes, self.output_size, self.padding_mode)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        n_copies: int | None = None,
        generator: torch.Generator | None = None,
    ) -> AugmentOutput:
        """Sample ``n_copies`` crops of every image of x (B, C, H, W); ``params`` are the boxes (B·n, 4)."""
        self._check(x, y)
        n = self.n_copies if n_copies is None else check_positive_int(n_copies, "n_copies")
        dist = self._distribution(x, y)
        boxes, log_prob = draw(dist, batch=x.shape[0], n=n, generator=generator)
        images = self.crop(x if n == 1 else x.repeat_interleave(n, dim=0), boxes)  # n = 1: no copy
        return pack_views(images, boxes, log_prob, dist, n)


class RandomCrop(CropAugmenter):
    """Random crops: side s ~ U[min_scale, max_scale] of the image's width and height, position uniform inside.

    Args:
        min_scale, max_scale: the range of the crop side as a fraction of the image side.
        output_size: the views' (H, W) (an int for square); None keeps the input size.
        in_channels, n_copies, padding_mode: as for ``InstaAug``.
    """

    def __init__(
        self,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
        *,
        output_size: int | Sequence[int] | None = None,
        in_channels: int = 3,
        n_copies: int = 1,
    ) -> None:
        super().__init__(in_channels=in_channels, n_copies=n_copies, output_size=output_size)
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"need 0 < min_scale ≤ max_scale ≤ 1, got min_scale={min_scale}, max_scale={max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> UniformCrops:
        return UniformCrops(self.min_scale, self.max_scale, x.shape[0], x)

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale}, max_scale={self.max_scale}"


@dataclass(frozen=True)
class CropConfig:
    """Everything that defines an ``InstaAugCrop``; saved as JSON beside its weights.

    Attributes:
        image_size: the input (H, W) the candidates are built for (instance mode also accepts other sizes).
        output_size: the views' (H, W); None keeps the input size.
        levels: φ's backbone stages (0-based, negative from the end) whose units propose crops.
        global_crop: add the whole image as a candidate.
        level_bias: initial per-level logit biases (levels, then the global crop); None for zeros (every level
            gets the same initial probability).
        box_scale: candidate box side ÷ the unit's receptive field (boxes never exceed the image side).
        min_inside: candidates with less of their area inside the image are left out.
        centre_jitter: jitter of each centre within this fraction of its cell (0: none).
        size_jitter: jitter of each box size by a factor in [1 - size_jitter, 1 + size_jitter] (0: none).
        mode: ``instance`` (LRP, φ depends on x), ``global`` (one distribution for all inputs) or ``class``.
        network, width, depth, norm: φ's backbone (see ``InvarianceNet``).
        in_channels: image channels C.
        num_classes: number of classes (``class`` mode).
        n_copies: views per input on each call.
        entropy_range: [Hmin, Hmax] for the entropy controller; None for [0.5, 0.6]·log N with N candidates
            (the paper's [3.0, 3.5] for 321 candidates is [0.52, 0.61]·log 321), plus, with jitter, the expected
            log-volume of the jitter at the start.
        padding_mode: how parts of a box outside the image are filled.
    """

    image_size: tuple[int, int] = (32, 32)
    output_size: tuple[int, int] | None = None
    levels: tuple[int, ...] = (-2, -1)
    global_crop: bool = True
    level_bias: tuple[float, ...] | None = None
    box_scale: float = 1.0
    min_inside: float = 0.5
    centre_jitter: float = 0.0
    size_jitter: float = 0.0
    mode: str = "instance"
    network: str = "small_cnn"
    width: int = 16
    depth: int = 3
    norm: str = "layer"
    in_channels: int = 3
    num_classes: int | None = None
    n_copies: int = 1
    entropy_range: tuple[float, float] | None = None
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _size_pair(self.image_size, "image_size"))
        object.__setattr__(self, "output_size", _size_pair(self.output_size, "output_size"))
        if isinstance(self.levels, int):
            object.__setattr__(self, "levels", (self.levels,))
        check_augmenter_options(self)


class InstaAugCrop(CropAugmenter):
    """Instance-specific learned crops with the location-related parameterisation (Miao et al., ICML 2023).

    Example:
        >>> aug = InstaAugCrop(image_size=(64, 64), levels=(1, 2), in_channels=3)
        >>> out = aug(x)              # out.images (B, 3, 64, 64); out.params: boxes (B, 4); out.log_prob (B,)
        >>> dist = aug.distribution(x)    # a CropCategorical: dist.probs (B, N), dist.boxes (N, 4)

    Train with ``InstaAugObjective`` (the REINFORCE surrogate switches on because the views are not
    reparameterised). Keyword options are the fields of ``CropConfig``; unknown ones raise a ValueError.
    """

    def __init__(self, **options: Any) -> None:
        config = dataclass_from_dict(CropConfig, options, what="InstaAugCrop option")
        super().__init__(
            in_channels=config.in_channels,
            n_copies=config.n_copies,
            output_size=config.output_size,
            padding_mode=config.padding_mode,
        )
        self.net = CropLogitsNet(
            config.image_size,
            config.levels,
            global_crop=config.global_crop,
            level_bias=config.level_bias,
            box_scale=config.box_scale,
            min_inside=config.min_inside,
            centre_jitter=config.centre_jitter,
            size_jitter=config.size_jitter,
            **phi_network_options(config),
        )
        self.config = config
        self.num_classes = config.num_classes

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def num_candidates(self) -> int:
        """The number of candidate crops N at the configured image size."""
        return self.net.candidates().num_candidates

    @property
    def jitter_entropy(self) -> float:
        """E[log vol] of the jitter under the initial distribution (0 without jitter): the part of the entropy the
        continuous jitter adds at the start (negative: volumes are fractions of the image)."""
        candidates = self.net.candidates()
        if candidates.jitter is None:
            return 0.0
        dist = CropCategorical(torch.zeros(1, candidates.num_candidates), candidates.boxes, candidates.jitter)
        return float((self.net.initial_distribution() * dist.log_volume()).sum())

    @property
    def entropy_range(self) -> tuple[float, float]:
        """[Hmin, Hmax] for the entropy controller (the configured band or [0.5, 0.6]·log N)."""
        if self.config.entropy_range is not None:
            return self.config.entropy_range
        log_n = math.log(self.num_candidates)
        # With jitter the entropy also counts E[log vol] (negative): shift the band by its value at the start,
        # or the band could lie out of reach.
        shift = self.jitter_entropy
        return 0.5 * log_n + shift, 0.6 * log_n + shift

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super()._check(x, y)
        if self.mode == "class" and y is None and self.training:
            raise ValueError("mode 'class' needs labels y during training (at test time y=None uses the mean)")

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> CropCategorical:
        return self.net(x, y)

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> CropCategorical:
        """The crop distribution for images x (B, C, H, W): ``.probs`` (B, N) over ``.boxes`` (N, 4)."""
        return super().distribution(x, y)

    @torch.no_grad()
    def top_views(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The k most probable crops of every image of x (B, C, H, W), as views (B·k, C, h, w) in view order."""
        self._check(x, y)
        boxes, _ = self._distribution(x, y).topk(k)
        return self.crop(x.repeat_interleave(k, dim=0), boxes.reshape(-1, 4))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.safetensors``; load with ``InstaAug.load``."""
        return save_augmenter(self, directory, CROP_FORMAT)

    @classmethod
    def from_config(cls, config: CropConfig) -> InstaAugCrop:
        """A fresh augmenter built from a config."""
        return cls(**{f: getattr(config, f) for f in config.__dataclass_fields__})
