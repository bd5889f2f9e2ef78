"""Augmenters: φ → distribution → sample → apply, and the learned one, ``InstaAug``.

Every augmenter is an ``nn.Module`` whose call ``aug(x, y=None)`` returns an ``AugmentOutput``: n_copies views per
input, ordered so that the views of input b are rows b·n … b·n + n - 1 (``out.repeat(y)`` repeats labels to match).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .distributed import is_main_process
from .distributions import DEFAULT_MIN_WIDTH, UniformRanges
from .io import load_tensors, read_json, save_tensors, write_json
from .models import NORMS
from .networks import MODES, InvarianceNet, UniformRangeHead
from .transforms import PADDING_MODES, TransformStack
from .validation import check_images, check_labels, check_positive_int, dataclass_from_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
_FORMAT = "instaaug.InstaAug"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class AugmentOutput:
    """The result of ``aug(x)`` for a batch of B inputs and n copies each.

    Attributes:
        images: (B·n, C, H, W) augmented views; rows b·n … b·n + n - 1 come from input b.
        params: (B·n, D) the sampled transformation parameters (differentiable when reparameterised).
        log_prob: (B·n,) log-probability of each view's parameters under p(τ; φ(x)), with the parameters
            treated as fixed (the score-function term of REINFORCE).
        entropy: (B,) entropy of p(τ; φ(x)) per input.
        n_copies: n.
        reparameterized: whether gradients reach φ through ``params`` (uniform ranges) rather than only
            through ``log_prob`` (categorical crops).
        distribution: the distribution the views were drawn from (batch B).
    """

    images: torch.Tensor
    params: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor
    n_copies: int
    reparameterized: bool
    distribution: Any = None

    def repeat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Repeat a per-input tensor (B, ...) to match the views (B·n, ...), e.g. the labels."""
        return tensor if self.n_copies == 1 else tensor.repeat_interleave(self.n_copies, dim=0)


class Augmenter(nn.Module):
    """Shared machinery of augmenters with a uniform parameterisation over a ``TransformStack``.

    Subclasses implement ``_distribution(x, y)``; this class validates input, samples n copies with the
    reparameterisation trick, applies the transforms in one batched pass and packs an ``AugmentOutput``.
    """

    def __init__(
        self,
        transforms: Sequence[str],
        *,
        in_channels: int = 3,
        n_copies: int = 1,
        padding_mode: str = "zeros",
        min_width: float = DEFAULT_MIN_WIDTH,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        self.stack = TransformStack(transforms, padding_mode)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.stack.check_channels(in_channels)
        self.n_copies = check_positive_int(n_copies, "n_copies")
        self.min_width = min_width
        #: Check image values (finite, in [0, 1]) on every call; a host synchronisation on GPU.
        self.check_inputs = check_inputs
        #: Labels must lie in [0, num_classes) when known.
        self.num_classes: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Per-dimension parameter names, e.g. ``("rotation", "hue")``."""
        return self.stack.param_names

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> UniformRanges:
        raise NotImplementedError

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        check_images(x, channels=self.in_channels, check_values=self.check_inputs)
        if y is not None:
            check_labels(y, x.shape[0], self.num_classes)

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> UniformRanges:
        """The distribution p(τ; φ(x)) for images x (B, C, H, W) in [0, 1]; ``.low``/``.high`` are (B, D)."""
        self._check(x, y)
        return self._distribution(x, y)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        n_copies: int | None = None,
        generator: torch.Generator | None = None,
    ) -> AugmentOutput:
        """Sample ``n_copies`` views of every image of x (B, C, H, W); see ``AugmentOutput`` for the shapes.

        Args:
            x: images in [0, 1].
            y: labels (B,), used by class-conditional augmenters.
            n_copies: overrides the augmenter's own ``n_copies`` for this call.
            generator: a ``torch.Generator`` for reproducible sampling.
        """
        self._check(x, y)
        n = self.n_copies if n_copies is None else check_positive_int(n_copies, "n_copies")
        dist = self._distribution(x, y)
        return sample_views(x, dist, self.stack, n, generator)


def sample_views(
    x: torch.Tensor,
    dist: UniformRanges,
    stack: TransformStack,
    n: int,
    generator: torch.Generator | None = None,
) -> AugmentOutput:
    """Draw n parameter vectors per input from ``dist`` (batch B) and apply ``stack`` to x (B, C, H, W)."""
    params, log_prob = draw(dist, batch=x.shape[0], n=n, generator=generator)
    images = stack(x if n == 1 else x.repeat_interleave(n, dim=0), params)  # n = 1: no copy
    return pack_views(images, params, log_prob, dist, n)


def draw(
    dist: Any, *, batch: int, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples per input from ``dist`` (batch B) in view order: params (B·n, D), log_prob (B·n,)."""
    samples, log_prob = dist.sample_with_log_prob((n,), generator)  # (n, B, D), (n, B)
    return samples.transpose(0, 1).reshape(batch * n, -1), log_prob.transpose(0, 1).reshape(batch * n)


def pack_views(images: torch.Tensor, params: torch.Tensor, log_prob: torch.Tensor, dist: Any, n: int) -> AugmentOutput:
    """The ``AugmentOutput`` of views already drawn (see ``draw``) and applied."""
    return AugmentOutput(
        images=images,
        params=params,
        log_prob=log_prob,
        entropy=dist.entropy(),
        n_copies=n,
        reparameterized=dist.has_rsample,
        distribution=dist,
    )


def check_augmenter_options(config: Any) -> None:
    """Validate the options every learned augmenter's config shares (φ's mode, norm, sizes, the entropy band)."""
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    if config.norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {config.norm!r}")
    if config.padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {config.padding_mode!r}")
    for key in ("width", "depth", "in_channels", "n_copies"):
        check_positive_int(getattr(config, key), key)
    if config.entropy_range is not None:
        lo, hi = config.entropy_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"entropy_range must be finite (Hmin, Hmax) with Hmin ≤ Hmax, got {config.entropy_range}")


#: The config keys that build φ's network, shared by every learned augmenter's config.
PHI_NETWORK_KEYS = ("mode", "network", "in_channels", "num_classes", "width", "depth", "norm")


def phi_network_options(config: Any) -> dict[str, Any]:
    """The keyword arguments of φ's network (``InvarianceNet`` or ``CropLogitsNet``) taken from an augmenter config."""
    return {key: getattr(config, key) for key in PHI_NETWORK_KEYS}


@dataclass(frozen=True)
class InstaAugConfig:
    """Everything that defines an ``InstaAug`` module; saved as JSON beside its weights.

    Attributes:
        transforms: transform family names (see ``instaaug.transforms.FAMILIES``).
        mode: ``instance`` (φ depends on x), ``global`` (input-independent) or ``class`` (per label).
        network: φ's backbone in instance mode: ``small_cnn`` or ``preact_resnet18``.
        width: φ's first-stage channel count.
        depth: stages of ``small_cnn``.
        norm: φ's normalisation: ``layer`` (per input; the same in training and eval), ``batch`` or ``none``.
        in_channels: image channels C.
        num_classes: number of classes (``class`` mode only).
        n_copies: views sampled per input on each call.
        entropy_range: the [Hmin, Hmax] band the entropy controller keeps the mean entropy in; None for
            ``TransformStack.default_entropy_range()``.
        init_half_width: the initial interval [-w, w] per parameter dimension; None for the families' defaults.
        min_width: narrowest interval (keeps the entropy finite).
        symmetric: intervals [-w, w] instead of free [low, high] (Augerino's parameterisation).
        padding_mode: how geometric transforms fill pixels from outside the image.
    """

    transforms: tuple[str, ...] = ("rotation",)
    mode: str = "instance"
    network: str = "small_cnn"
    width: int = 16
    depth: int = 3
    norm: str = "layer"
    in_channels: int = 3
    num_classes: int | None = None
    n_copies: int = 1
    entropy_range: tuple[float, float] | None = None
    init_half_width: tuple[float, ...] | None = None
    min_width: float = DEFAULT_MIN_WIDTH
    symmetric: bool = False
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        if isinstance(self.transforms, str):
            object.__setattr__(self, "transforms", (self.transforms,))
        if not self.transforms:
            raise ValueError("transforms must name at least one transform family")
        check_augmenter_options(self)
        if not (isinstance(self.min_width, float | int) and self.min_width > 0):
            raise ValueError(f"min_width must be > 0, got {self.min_width!r}")


class InstaAug(Augmenter):
    """Instance-specific learned augmentation (Miao et al., ICML 2023), uniform parameterisation.

    φ maps each input to an interval [low, high] per transform dimension; views are drawn from
    U(low, high) with the reparameterisation trick, so the task loss trains φ through the sampled parameters.

    Example:
        >>> aug = InstaAug(transforms=("rotation", "hue"))
        >>> out = aug(x)                       # out.images (B, C, H, W), out.entropy (B,)
        >>> dist = aug.distribution(x)         # dist.low, dist.high (B, 2); dist.names == ("rotation", "hue")

    Keyword options are the fields of ``InstaAugConfig``; unknown ones raise a ValueError.
    """

    def __new__(cls, transforms: Sequence[str] = ("rotation",), **options: Any) -> Augmenter:
        # ``"crop"`` selects the location-related parameterisation, a different module with its own options.
        names = (transforms,) if isinstance(transforms, str) else tuple(transforms)
        if cls is InstaAug and "crop" in names:
            if names != ("crop",):
                raise ValueError(f"'crop' cannot be combined with other transforms yet, got {names}")
            from .crops import InstaAugCrop

            return InstaAugCrop(**options)
        return super().__new__(cls)

    def __init__(self, transforms: Sequence[str] = ("rotation",), **options: Any) -> None:
        config = dataclass_from_dict(InstaAugConfig, {"transforms": transforms, **options}, what="InstaAug option")
        super().__init__(
            config.transforms,
            in_channels=config.in_channels,
            n_copies=config.n_copies,
            padding_mode=config.padding_mode,
            min_width=config.min_width,
        )
        init = config.init_half_width or tuple(self.stack.init_half_widths())
        if len(init) != self.stack.dim:
            raise ValueError(f"init_half_width needs {self.stack.dim} entries {self.names}, got {len(init)}")
        self.head = UniformRangeHead(self.stack.bounds(), init, config.min_width, symmetric=config.symmetric)
        self.net = InvarianceNet(self.head.out_dim, **phi_network_options(config))
        self.config = config
        self.num_classes = config.num_classes

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def entropy_range(self) -> tuple[float, float]:
        """[Hmin, Hmax] for the entropy controller (the configured band or the families' default)."""
        return self.config.entropy_range or self.stack.default_entropy_range()

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super()._check(x, y)
        if self.mode == "class" and y is None and self.training:
            raise ValueError("mode 'class' needs labels y during training (at test time y=None uses the mean)")

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> UniformRanges:
        param = next(self.net.parameters())
        raw = self.net(x.to(param.dtype), y)
        low, high = self.head(raw)
        return UniformRanges(low.to(x.dtype), high.to(x.dtype), self.names, self.min_width)

    # ------------------------------------------------------------------------------------------------------------
    # Persistence

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``directory`` (created), each atomically."""
        return save_augmenter(self, directory, _FORMAT)

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Augmenter:
        """Rebuild an augmenter saved with ``save`` (``InstaAug``, ``Augerino`` or an LRP crop ``InstaAugCrop``);
        reads JSON and safetensors only (no pickled code runs)."""
        from .crops import CROP_FORMAT, CropConfig, InstaAugCrop

        directory = Path(directory)
        meta = read_json(directory / CONFIG_FILE)
        formats = {_FORMAT: (InstaAugConfig, InstaAug), CROP_FORMAT: (CropConfig, InstaAugCrop)}
        if not isinstance(meta, dict) or meta.get("format") not in formats or "config" not in meta:
            raise ValueError(
                f"{directory / CONFIG_FILE} is not an InstaAug config (expected format {_FORMAT!r} or {CROP_FORMAT!r})"
            )
        if meta.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported InstaAug format version {meta.get('version')!r}")
        config_cls, aug_cls = formats[meta["format"]]
        config = dataclass_from_dict(config_cls, meta["config"], what=f"{aug_cls.__name__} config")
        aug = aug_cls.from_config(config)
        load_weights(aug, directory / WEIGHTS_FILE)
        return aug.to(map_location)

    @classmethod
    def from_config(cls, config: InstaAugConfig) -> InstaAug:
        """A fresh augmenter built from a config."""
        options = dataclasses.asdict(config)
        return InstaAug(options.pop("transforms"), **options)


def save_augmenter(aug: nn.Module, directory: str | os.PathLike, format_name: str) -> Path:
    """Write ``aug.config`` as JSON and ``aug``'s state as safetensors into ``directory``, each atomically.

    Under torch.distributed only rank 0 writes (every rank holds the same weights).
    """
    directory = Path(directory)
    if not is_main_process():
        return directory
    save_tensors(directory / WEIGHTS_FILE, aug.state_dict())
    write_json(
        directory / CONFIG_FILE,
        {"format": format_name, "version": _FORMAT_VERSION, "config": dataclasses.asdict(aug.config)},
    )
    return directory


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a safetensors state into ``module``, with an error naming missing, unexpected or reshaped keys."""
    state = load_tensors(path)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        reshaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
        raise ValueError(
            f"{path} does not match its config: missing {missing}, unexpected {unexpected}, wrong shape {reshaped}"
        )
    module.load_state_dict(state)
