"""Augmenters: φ → distribution → transform, and the learned one, ``InstaAug``.

Every augmenter is an ``nn.Module`` composed of three parts: a φ network (or fixed parameters) that gives, for a
batch of inputs, a distribution p(τ; φ(x)) satisfying the contract of ``instaaug.distributions``; samples of τ;
and a ``TransformStack`` that applies them (colour in one fused pass, crop ∘ geometry ∘ flip in one resampling).
Its call ``aug(x, y=None)`` returns an ``AugmentOutput``: n_copies views per input, ordered so that the views of
input b are rows b·n … b·n + n - 1 (``out.repeat(y)`` repeats labels to match).

Every augmenter saves as JSON + safetensors (``aug.save(dir)``) and loads with ``Augmenter.load(dir)`` (also
``InstaAug.load``), which rebuilds the right class from one registry and executes no pickled code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .controller import EntropyController, PartControllers
from .distributed import is_main_process
from .distributions import (
    DEFAULT_MIN_WIDTH,
    CropCategorical,
    FlipBernoulli,
    FlowHead,
    Product,
    TransformDistribution,
    UniformMixture,
    UniformRanges,
)
from .distributions.mixture import symmetric_centres
from .io import load_tensors, read_json, save_tensors, write_json
from .models import BACKBONES, NORMS
from .networks import MODES, CropLevels, InvarianceNet, MixtureRangeHead, UniformRangeHead, phi_backbone
from .objective import InstaAugObjective
from .targets import Targets
from .transforms import DISCRETE_FAMILIES, FAMILIES, PADDING_MODES, Family, TransformStack
from .validation import (
    brief,
    check_choice,
    check_flag,
    check_images,
    check_labels,
    check_number,
    check_numbers,
    check_positive_int,
    dataclass_from_dict,
    size_pair,
)
from .views import AugmentOutput

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "instaaug.augmenter"
FORMAT_VERSION = 2
#: Formats written by release 0.1 (version 1), still loaded.
_LEGACY_UNIFORM, _LEGACY_CROP = "instaaug.InstaAug", "instaaug.InstaAugCrop"

#: The size φ sees inputs at when the augmenter has LRP crops and ``phi_size`` is not given: the crop recipe's
#: (tuned on 48×48 cluttered digits), so that candidate boxes are the same fractions of any image.
CROP_PHI_SIZE = (48, 48)
#: The longest side φ sees an input at when ``phi_size`` is not given and there are no crops: larger inputs are
#: downscaled (aspect kept), so φ's cost stops growing with the image (a small-CNN training step with rotation +
#: colour at batch 64: 3.10× a random-augmentation step at 128 px with φ at full size, 1.59× with this cap;
#: ``bench.phi_size_ratio``).
PHI_MAX_SIDE = 32
#: The crop recipe's band on the categorical part (about 2–3 effective crops; ``instaaug run crop``), shifted by
#: the jitter's entropy, and its λ controller (start, step, floor).
CROP_ENTROPY_RANGE = (0.6, 1.0)
CROP_CONTROLLER = {"lam_init": 0.25, "rate": 1.005, "lam_min": 0.1}
#: Default band of a learned flip: from p ≈ 0.1 (0.33 nats) to p = 0.5 (log 2).
FLIP_ENTROPY_RANGE = (0.33, math.log(2))

# Upper bounds on what an augmenter's config may ask for, far beyond any use. They are checked when the config is
# made, before any module is built, so that a config file cannot make ``Augmenter.load`` allocate without bound
# (a φ width of 10^9 once asked for 108 GB). ``phi_size`` and ``output_size`` sides are at most
# ``validation.MAX_IMAGE_SIDE`` (8192).
MAX_WIDTH = 1024
MAX_DEPTH = 8
MAX_IN_CHANNELS = 64
MAX_COPIES = 4096
MAX_CLASSES = 1_000_000
#: φ's parameters, and a class-mode table of num_classes × outputs, hold at most this many elements each (1 GiB in
#: float32).
MAX_ELEMENTS = 2**28
#: The largest feature map of the pass at ``phi_size`` that places the crop candidates (256 MiB in float32; the pass
#: holds a few such maps at once).
MAX_FEATURE_ELEMENTS = 2**26
#: The most LRP crop candidates (units of the crop levels' feature maps at ``phi_size``, plus the global crop).
MAX_CROP_CANDIDATES = 2**20
#: The distributions ``InstaAug`` can put over the interval families (``InstaAugConfig.distribution``).
DISTRIBUTIONS = ("uniform", "mixture", "flow")
#: Where a mixture's components start (``InstaAugConfig.mixture_init``).
MIXTURE_INITS = ("spread", "symmetric")
#: Bounds on the options of the mixture and the flow.
MAX_DISTRIBUTION_OPTIONS = {
    "components": 16,
    "symmetry_divisions": 15,
    "flow_context": 1024,
    "flow_transforms": 16,
    "flow_hidden": 4096,
    "entropy_samples": 1024,
}
#: ``init_half_width`` has one entry per interval dimension: never more than all the families have together.
MAX_INTERVAL_DIMS = sum(len(f.params) for f in FAMILIES.values())


def check_transforms(value: Any, key: str = "transforms") -> tuple[str, ...]:
    """Family names as a tuple (one name may be given as a string): known ones, none repeated; else an error
    naming ``key``."""
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{key} must be a sequence of family names, got {brief(value)}")
    known = sorted([*FAMILIES, *DISCRETE_FAMILIES])
    for name in names:
        if name not in known:
            raise ValueError(f"{key}: unknown transform {brief(name)}; known transforms: {known}")
    if len(set(names)) != len(names):
        raise ValueError(f"{key} must not repeat, got {brief(tuple(names))}")
    return tuple(names)


def canonical_order(transforms: Sequence[str]) -> tuple[str, ...]:
    """Families in parameter-column order: crop first, the interval families as given, flip last."""
    names = (transforms,) if isinstance(transforms, str) else tuple(transforms)
    if len(set(names)) != len(names):
        raise ValueError(f"transforms must not repeat, got {names}")
    middle = tuple(n for n in names if n not in DISCRETE_FAMILIES)
    return (("crop",) if "crop" in names else ()) + middle + (("flip",) if "flip" in names else ())


class Augmenter(nn.Module):
    """An augmenter: a distribution per batch (``_distribution``) whose samples a ``TransformStack`` applies.

    Subclasses implement ``_distribution(x, y)`` and hold a frozen dataclass ``config`` (their constructor's
    options; ``config_class`` names its type); this class validates input, samples n copies, applies the
    transforms in one batched pass, packs an ``AugmentOutput``, and saves and loads every augmenter alike.
    """

    #: the registry of saveable augmenters, by class name (filled by ``__init_subclass__``).
    registry: ClassVar[dict[str, type[Augmenter]]] = {}
    config_class: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Augmenter.registry[cls.__name__] = cls

    def __init__(
        self,
        transforms: Sequence[str],
        *,
        in_channels: int = 3,
        n_copies: int = 1,
        padding_mode: str = "zeros",
        output_size: tuple[int, int] | None = None,
        min_width: float = DEFAULT_MIN_WIDTH,
        check_inputs: bool | None = None,
    ) -> None:
        super().__init__()
        self.stack = TransformStack(canonical_order(transforms), padding_mode, output_size)
        self.in_channels = check_positive_int(in_channels, "in_channels", MAX_IN_CHANNELS)
        self.stack.check_channels(in_channels)
        self.n_copies = check_positive_int(n_copies, "n_copies", MAX_COPIES)
        self.min_width = min_width
        #: Check image values (finite, in [0, 1]) on every call: True always, False never, None (default) for
        #: tensors in host memory only: on an accelerator each check would be a device synchronisation, so values
        #: there are checked where data enter (``train``, the loaders) instead.
        self.check_inputs = check_inputs
        #: Labels must lie in [0, num_classes) when known.
        self.num_classes: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Per-dimension parameter names in column order, e.g. ``("crop_x", ..., "rotation", "hue")``."""
        return self.stack.param_names

    @property
    def families(self) -> tuple[str, ...]:
        """The transform families in column order."""
        return self.stack.names

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> TransformDistribution:
        raise NotImplementedError

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        on_host = not isinstance(x, torch.Tensor) or x.device.type == "cpu"
        values = self.check_inputs if self.check_inputs is not None else on_host
        check_images(x, channels=self.in_channels, check_values=values)
        if y is not None:
            check_labels(y, x.shape[0], self.num_classes)

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> TransformDistribution:
        """The distribution p(τ; φ(x)) for images x (B, C, H, W) in [0, 1] (batch B, event D = ``len(names)``).

        A ``UniformRanges`` (``.low``/``.high`` (B, D)) for interval families alone, a ``CropCategorical`` for
        crops alone, and a ``Product`` of the parts (crop, intervals, flip, in that order) otherwise.
        """
        self._check(x, y)
        return self._distribution(x, y)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        n_copies: int | None = None,
        generator: torch.Generator | None = None,
        targets: Targets | Mapping[str, Any] | None = None,
    ) -> AugmentOutput:
        """Sample ``n_copies`` views of every image of x (B, C, H, W); see ``AugmentOutput`` for the shapes.

        Args:
            x: images in [0, 1].
            y: labels (B,), used by class-conditional augmenters.
            n_copies: overrides the augmenter's own ``n_copies`` for this call.
            generator: a ``torch.Generator`` for reproducible sampling.
            targets: masks, heat maps, boxes or keypoints of x (a ``Targets`` or a mapping of its fields), moved
                by the same sampled transforms: ``out.targets`` (see ``instaaug.targets``).
        """
        self._check(x, y)
        in_size = (x.shape[-2], x.shape[-1])
        if targets is not None:
            targets = Targets.of(targets)
            targets.check(x.shape[0], in_size)
        n = self.n_copies if n_copies is None else check_positive_int(n_copies, "n_copies")
        dist = self._distribution(x, y)
        batch = x.shape[0]
        value, log_prob, score = dist.draw((n,), generator)  # (n, B, D), (n, B), (n, B)
        params = value.transpose(0, 1).reshape(batch * n, -1)
        theta = self.stack.grid_matrix(params.to(x.dtype), in_size) if self.stack.resamples else None
        images = self.stack(x if n == 1 else x.repeat_interleave(n, dim=0), params, theta)  # n = 1: no copy
        view_targets = None
        if targets is not None:
            flipped = params[:, self.stack.columns("flip")][:, 0] if "flip" in self.families else None
            out_size = (images.shape[-2], images.shape[-1])
            view_targets = targets.repeat(n).warp(theta, in_size, out_size, self.stack.padding_mode, flipped)
        return AugmentOutput(
            images=images,
            params=params,
            log_prob=log_prob.transpose(0, 1).reshape(batch * n),
            entropy=dist.entropy(),
            n_copies=n,
            reparameterized=dist.has_rsample,
            distribution=dist,
            score_log_prob=score.transpose(0, 1).reshape(batch * n),
            theta=theta,
            input_size=in_size,
            targets=view_targets,
        )

    @torch.no_grad()
    def top_views(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The k most probable crops of every image of x (B, C, H, W), as views (B·k, C, h, w) in view order; the
        other families at their identity. Needs an augmenter with LRP crops."""
        self._check(x, y)
        dist = self._distribution(x, y)
        crop = dist if isinstance(dist, CropCategorical) else None
        if isinstance(dist, Product):
            crop = dist.part(CropCategorical)
        if crop is None:
            raise ValueError(f"top views need an augmenter with learned crops, got families {self.families}")
        boxes, _ = crop.topk(k)
        params = x.new_zeros(x.shape[0] * k, len(self.names))
        params[:, self.stack.columns("crop")] = boxes.reshape(-1, 4).to(x.dtype)
        return self.stack(x.repeat_interleave(k, dim=0), params)

    @torch.no_grad()
    def canonicalise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bring every image of x (B, C, H, W) to a canonical pose: transform it by the most probable parameters
        of its learned distribution over the interval families (``mode()`` of the interval part: the centre of a
        uniform interval, the densest mixture component, a flow's mode); crop and flip stay at the identity.

        If φ learned that the rotations r that keep x's label are those near −a (x tilted by a), its mode is ≈ −a
        and the result is x turned back upright (modulo the shape's symmetry, where the invariance has several
        modes). Returns (B, C, h, w)."""
        self._check(x, y)
        dist = self._distribution(x, y)
        parts = dist.parts if isinstance(dist, Product) else (dist,)
        interval = next((p for p in parts if hasattr(p, "mode") and not isinstance(p, CropCategorical)), None)
        if interval is None:
            raise ValueError(f"canonicalise needs interval families (rotation, colour, ...), got {self.families}")
        params = x.new_zeros(x.shape[0], len(self.names))
        columns = [i for i, name in enumerate(self.names) if name in interval.names]
        params[:, columns] = interval.mode().to(x.dtype)
        return self.stack(x, params)

    # ------------------------------------------------------------------------------------------------------------
    # Persistence: one format for every augmenter

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``directory`` (created), each atomically.

        Under torch.distributed only rank 0 writes (every rank holds the same weights).
        """
        directory = Path(directory)
        if not is_main_process():
            return directory
        save_tensors(directory / WEIGHTS_FILE, self.state_dict())
        config = dataclasses.asdict(self.config)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "class": type(self).__name__, "config": config}
        write_json(directory / CONFIG_FILE, meta)
        return directory

    @classmethod
    def from_config(cls, config: Any) -> Augmenter:
        """A fresh augmenter built from its config."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> Augmenter:
        """Rebuild any augmenter saved with ``save`` (or by release 0.1); reads JSON and safetensors only (no
        pickled code runs).

        Every value of the config is checked (type, range, and the sizes against the ``MAX_*`` bounds) before any
        module is built, and every weight before it is used: a bad file gives a ValueError or TypeError naming
        the file and the key or tensor.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        meta = read_json(config_path)
        try:
            aug, renames = _augmenter_from_meta(meta)
        except (ValueError, TypeError) as e:
            # The checks name the key; the user also needs to know which file held it.
            raise (TypeError if isinstance(e, TypeError) else ValueError)(f"{config_path}: {e}") from None
        load_weights(aug, directory / WEIGHTS_FILE, renames)
        return aug.to(map_location)


def _augmenter_from_meta(meta: Any) -> tuple[Augmenter, dict[str, str]]:
    """The augmenter a ``config.json``'s content describes (any format), and the renames of its weights."""
    if not isinstance(meta, dict) or "config" not in meta or not isinstance(meta["config"], dict):
        raise ValueError("not an augmenter config (no 'config' mapping)")
    fmt, version = meta.get("format"), meta.get("version")
    if fmt in (_LEGACY_UNIFORM, _LEGACY_CROP):
        if version != 1:
            raise ValueError(f"unsupported {fmt} format version {brief(version)} (expected 1)")
        return _legacy_augmenter(fmt, meta["config"])
    if fmt != FORMAT:
        raise ValueError(f"not an augmenter config (format {brief(fmt)}; expected {FORMAT!r})")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported augmenter format version {brief(version)} (expected {FORMAT_VERSION})")
    name = meta.get("class")
    kind = Augmenter.registry.get(name) if isinstance(name, str) else None
    if kind is None or kind.config_class is None:
        known = sorted(k for k, v in Augmenter.registry.items() if v.config_class is not None)
        raise ValueError(f"unknown augmenter class {brief(name)}; known: {known}")
    config = dataclass_from_dict(kind.config_class, meta["config"], what=f"{kind.__name__} config")
    return kind.from_config(config), {}


#: Room for a safetensors header (names, dtypes, shapes, offsets as JSON) beside the tensors' data.
_HEADER_BYTES = 2**20


def load_weights(module: nn.Module, path: Path, renames: dict[str, str] | None = None) -> None:
    """Load a safetensors state into ``module``, with an error naming missing, unexpected, reshaped or non-finite
    tensors.

    ``renames`` maps key prefixes of the file to the module's (for formats of earlier releases). A file bigger
    than the module's tensors could be (at 8 bytes an element) is refused before it is read.
    """
    target = module.state_dict()
    most = 8 * sum(v.numel() for v in target.values()) + _HEADER_BYTES + 256 * len(target)
    state = load_tensors(path, max_bytes=most)
    for old, new in (renames or {}).items():
        state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
    expected = {k: tuple(v.shape) for k, v in target.items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        reshaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
        raise ValueError(
            f"{path} does not match its config: missing {brief(missing)}, unexpected {brief(unexpected)}, "
            f"wrong shape {brief(reshaped)}"
        )
    # An integer tensor would be cast silently into a float weight (and a float into an integer buffer).
    retyped = sorted(k for k, v in state.items() if v.is_floating_point() != target[k].is_floating_point())
    if retyped:
        raise ValueError(f"{path} does not match its config: wrong dtype {brief(retyped)}")
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if bad:
        raise ValueError(f"{path}: tensor(s) {brief(bad)} hold NaN or Inf values")
    module.load_state_dict(state)


@dataclass(frozen=True)
class InstaAugConfig:
    """Everything that defines an ``InstaAug`` module; saved as JSON beside its weights.

    Attributes:
        transforms: family names (see ``instaaug.transforms``): interval families, ``crop`` (LRP) and ``flip``.
        mode: ``instance`` (φ depends on x), ``global`` (input-independent) or ``class`` (per label).
        network: φ's backbone: ``small_cnn`` or ``preact_resnet18``.
        width: φ's first-stage channel count (1 … 1024).
        depth: stages of ``small_cnn`` (1 … 8).
        norm: φ's normalisation: ``layer`` (per input; the same in training and eval), ``batch`` or ``none``.
        in_channels: image channels C (1 … 64).
        num_classes: number of classes (``class`` mode only; 1 … 1,000,000).
        n_copies: views sampled per input on each call (1 … 4096).
        entropy_range: the [Hmin, Hmax] band the entropy controller keeps the mean entropy in; None for the sum of
            the parts' defaults (intervals: ``TransformStack.default_entropy_range()``; crops: the crop recipe's
            (0.6, 1.0) plus the jitter's entropy; flip: (0.33, log 2)).
        entropy_widths: per interval family, (name, narrow, wide): the interval widths (in the family's units)
            whose log-widths set that family's share of the default band, in place of the family's own
            ``entropy_widths`` (e.g. ``(("rotation", 0.5, 1.0),)`` for rotations between 0.5 and 1 rad wide).
            Ignored when ``entropy_range`` is given.
        init_half_width: the initial interval [-w, w] per interval dimension; None for the families' defaults.
        min_width: narrowest interval (keeps the entropy finite); below every family's full width.
        symmetric: intervals [-w, w] instead of free [low, high] (Augerino's parameterisation).
        padding_mode: how the resampling fills pixels from outside the image.
        phi_size: the (H, W) φ sees its input at; None for the input's own size up to ``PHI_MAX_SIDE`` (32) px on
            its longer side (larger inputs are downscaled, aspect kept), or 48×48 with crops (the recipe).
        output_size: the views' (H, W); None keeps the input size. Sides of both sizes are at most 8192.
        levels, global_crop, level_bias, box_scale, min_inside, centre_jitter, size_jitter: the LRP crop
            candidates (see ``instaaug.networks.CropLevels``); the defaults are the crop recipe.
        flip_init: the initial flip probability.
        lam_init, lam_rate, lam_min: the λ controller of ``aug.controller()``; None for the defaults (crops: the
            recipe's 0.25, 1.005, 0.1; otherwise ``EntropyController``'s).
        distribution: p(τ; φ(x)) over the interval families: ``uniform`` (one interval per parameter, InstaAug's),
            ``mixture`` (``components`` weighted boxes, ``UniformMixture``: unions of arcs; exact entropy) or
            ``flow`` (a conditional normalizing flow, ``FlowRanges``: any density on the bounds, periodic for
            rotation; Monte Carlo entropy from ``entropy_samples`` samples). Crop and flip keep their own parts.
        components: the mixture's K (1 … 16).
        mixture_init: where the mixture's components start: ``spread`` evenly over the bounds, or ``symmetric``: on
            every periodic parameter (rotation) at the identity turned by each multiple of 2π / ``symmetry_divisions``
            (the rotations that n-fold symmetric inputs keep, for every n dividing it), every other parameter at the
            identity; a candidate on the ±π seam becomes two boxes touching the ends, so ``components`` must be
            ``symmetry_divisions`` + 1 when it is even, ``symmetry_divisions`` when odd (the error names the number).
            Components that start on a label-preserving arc only have to widen, those in the gaps to lose weight
            (``instaaug run multimodal``).
        symmetry_divisions: M of ``mixture_init="symmetric"`` (1 … 15).
        flow_context, flow_transforms, flow_hidden: the flow's context size (φ's outputs it is conditioned on), its
            number of transforms and their hidden width.
        entropy_samples: samples per input of the flow's Monte Carlo entropy.

    Every field is checked on construction (a TypeError or ValueError naming it), and so are the sizes they
    multiply to before anything is allocated: φ's parameters and class-mode tables hold at most ``MAX_ELEMENTS``
    (2^28) elements each, the feature maps of the pass at ``phi_size`` that places the crop candidates at most
    ``MAX_FEATURE_ELEMENTS`` (2^26), and there are at most ``MAX_CROP_CANDIDATES`` (2^20) crop candidates.
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
    entropy_widths: tuple[tuple[str, float, float], ...] = ()
    init_half_width: tuple[float, ...] | None = None
    min_width: float = DEFAULT_MIN_WIDTH
    symmetric: bool = False
    padding_mode: str = "zeros"
    phi_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    levels: tuple[int, ...] = CropLevels.levels
    global_crop: bool = CropLevels.global_crop
    level_bias: tuple[float, ...] | None = CropLevels.level_bias
    box_scale: float = CropLevels.box_scale
    min_inside: float = CropLevels.min_inside
    centre_jitter: float = CropLevels.centre_jitter
    size_jitter: float = CropLevels.size_jitter
    flip_init: float = 0.5
    lam_init: float | None = None
    lam_rate: float | None = None
    lam_min: float | None = None
    distribution: str = "uniform"
    components: int = 3
    mixture_init: str = "spread"
    symmetry_divisions: int = 6
    flow_context: int = 32
    flow_transforms: int = 3
    flow_hidden: int = 64
    entropy_samples: int = 8

    def __post_init__(self) -> None:
        # Every field is checked here, so that a config built in code, read from a file or from release 0.1 fails
        # alike, with an error naming the key, before any module (or any size it asks for) is allocated. The
        # lenient forms of the Python API (a family name as a string, an int size, levels as an int,
        # entropy_widths as a dict) become the canonical tuples first.
        transforms = check_transforms(self.transforms)
        if not transforms:
            raise ValueError("transforms must name at least one transform family")
        object.__setattr__(self, "transforms", transforms)
        check_choice(self.mode, "mode", MODES)
        if isinstance(self.network, str) and self.network not in BACKBONES:
            raise ValueError(f"unknown network {brief(self.network)}; network must be one of {tuple(BACKBONES)}")
        check_choice(self.network, "network", tuple(BACKBONES))
        check_choice(self.norm, "norm", NORMS)
        check_choice(self.padding_mode, "padding_mode", PADDING_MODES)
        for key, most in (("width", MAX_WIDTH), ("depth", MAX_DEPTH), ("in_channels", MAX_IN_CHANNELS)):
            check_positive_int(getattr(self, key), key, most)
        check_positive_int(self.n_copies, "n_copies", MAX_COPIES)
        if self.num_classes is not None:
            check_positive_int(self.num_classes, "num_classes", MAX_CLASSES)
        for key in ("phi_size", "output_size"):
            object.__setattr__(self, key, size_pair(getattr(self, key), key))
        for key in ("symmetric", "global_crop"):
            check_flag(getattr(self, key), key)
        self._check_entropy_options()
        intervals = [FAMILIES[name] for name in transforms if name in FAMILIES]
        # The narrowest interval must fit inside every family's bounds (the head keeps [-w, w] within them).
        room = min((min(-f.bounds[0], f.bounds[1]) for f in intervals), default=math.inf)
        check_number(self.min_width, "min_width", 0.0, 2 * room, low_open=True, high_open=True)
        if self.init_half_width is not None:
            init = check_numbers(self.init_half_width, "init_half_width", MAX_INTERVAL_DIMS, low=0.0, low_open=True)
            object.__setattr__(self, "init_half_width", init)
        check_number(self.flip_init, "flip_init", 1e-6, 1 - 1e-6)
        self._check_crop_options()
        for key, low in (("lam_init", 0.0), ("lam_rate", 1.0), ("lam_min", 0.0)):
            if getattr(self, key) is not None:
                check_number(getattr(self, key), key, low, low_open=True)
        check_choice(self.distribution, "distribution", DISTRIBUTIONS)
        check_choice(self.mixture_init, "mixture_init", MIXTURE_INITS)
        if self.mixture_init != "spread" and self.distribution != "mixture":
            raise ValueError(f"mixture_init is a mixture's option; distribution is {self.distribution!r}")
        for key, most in MAX_DISTRIBUTION_OPTIONS.items():
            check_positive_int(getattr(self, key), key, most)
        if self.distribution != "uniform" and self.symmetric:
            raise ValueError(f"symmetric intervals are a uniform distribution's; distribution is {self.distribution!r}")
        self._check_sizes(intervals)

    def _check_entropy_options(self) -> None:
        if self.entropy_range is not None:
            if not isinstance(self.entropy_range, list | tuple):
                raise TypeError(f"entropy_range must be (Hmin, Hmax) or None, got {brief(self.entropy_range)}")
            if len(self.entropy_range) != 2:
                raise ValueError(f"entropy_range must be (Hmin, Hmax), got {brief(self.entropy_range)}")
            lo, hi = (check_number(h, f"entropy_range[{i}]") for i, h in enumerate(self.entropy_range))
            if lo > hi:
                raise ValueError(f"entropy_range must satisfy Hmin ≤ Hmax, got {(lo, hi)}")
            object.__setattr__(self, "entropy_range", (lo, hi))
        widths = self.entropy_widths
        if isinstance(widths, Mapping):
            widths = tuple((k, *v) if isinstance(v, list | tuple) else (k, v) for k, v in widths.items())
        if not isinstance(widths, list | tuple):
            raise TypeError(f"entropy_widths must be a list of (family, narrow, wide) triples, got {brief(widths)}")
        triples: list[tuple[str, float, float]] = []
        for item in widths:
            if not isinstance(item, list | tuple) or len(item) != 3 or not isinstance(item[0], str):
                raise ValueError(f"entropy_widths must hold (family, narrow, wide) triples, got {brief(item)}")
            name = item[0]
            if name not in self.transforms or name in DISCRETE_FAMILIES:
                raise ValueError(f"entropy_widths names {brief(name)}, not an interval family of {self.transforms}")
            if any(name == t[0] for t in triples):
                raise ValueError(f"entropy_widths names {name!r} twice")
            narrow = check_number(item[1], f"entropy_widths[{name!r}] narrow", 0.0, low_open=True)
            wide = check_number(item[2], f"entropy_widths[{name!r}] wide", narrow)
            triples.append((name, narrow, wide))
        object.__setattr__(self, "entropy_widths", tuple(triples))

    def _check_crop_options(self) -> None:
        # Checked with or without crops: a saved config holds them either way, and a bad value is a bad file.
        levels = (self.levels,) if isinstance(self.levels, int) and not isinstance(self.levels, bool) else self.levels
        if not isinstance(levels, list | tuple):
            raise TypeError(f"levels must be a list of stage indices, got {brief(levels)}")
        if not 1 <= len(levels) <= MAX_DEPTH:
            raise ValueError(f"levels must be stage indices, 1 … {MAX_DEPTH} of them, got {brief(levels)}")
        for i, level in enumerate(levels):
            if isinstance(level, bool) or not isinstance(level, int):
                raise TypeError(f"levels[{i}] must be a stage index (an int), got {brief(level)}")
            if not -MAX_DEPTH <= level < MAX_DEPTH:
                raise ValueError(f"levels[{i}] must be a stage index in [{-MAX_DEPTH}, {MAX_DEPTH}), got {level}")
        object.__setattr__(self, "levels", tuple(levels))
        if self.level_bias is not None:
            # One bias per level plus the global crop's; the exact count is checked when the levels are resolved.
            bias = check_numbers(self.level_bias, "level_bias", MAX_DEPTH + 1)
            object.__setattr__(self, "level_bias", bias)
        check_number(self.box_scale, "box_scale", 0.0, low_open=True)
        check_number(self.min_inside, "min_inside", 0.0, 1.0, low_open=True)
        check_number(self.centre_jitter, "centre_jitter", 0.0, 1.0)
        check_number(self.size_jitter, "size_jitter", 0.0, 1.0, high_open=True)

    def _check_sizes(self, intervals: list[Family]) -> None:
        """Refuse a φ whose parameters, crop-placing feature maps, crop candidates or class table would exceed
        their ``MAX_*`` bound: the bounds on each key alone still allow products (width × phi_size²,
        num_classes × candidates) far beyond memory."""
        candidates = 0
        if self.mode == "instance" or self.has_crop:  # the modes that build φ's backbone
            with torch.device("meta"):  # shapes only: nothing is allocated
                backbone = phi_backbone(self.network, self.in_channels, self.width, self.depth, self.norm)
            parameters = sum(p.numel() for p in backbone.parameters())
            if parameters > MAX_ELEMENTS:
                depth = f", depth {self.depth}" if self.network == "small_cnn" else ""  # the other's depth is fixed
                raise ValueError(
                    f"φ ({self.network}) at width {self.width}{depth} would have {parameters} parameters, more "
                    f"than {MAX_ELEMENTS}"
                )
            if self.has_crop:
                height, width = self.phi_size or CROP_PHI_SIZE
                # The pass that places the candidates runs φ at phi_size: its largest map is the first stage's.
                elements = max(self.in_channels, self.width) * height * width
                if elements > MAX_FEATURE_ELEMENTS:
                    raise ValueError(
                        f"phi_size {(height, width)} with width {self.width} needs feature maps of {elements} "
                        f"elements to place the crop candidates, more than {MAX_FEATURE_ELEMENTS}"
                    )
                geometry = backbone.stage_geometry()
                stages = len(geometry)
                # A stage of stride j has ⌈H / j⌉ × ⌈W / j⌉ units; levels out of range are refused when φ is built.
                used = {s % stages for s in self.levels if -stages <= s < stages}
                candidates = int(self.global_crop) + sum(
                    math.ceil(height / geometry[s].jump[0]) * math.ceil(width / geometry[s].jump[1]) for s in used
                )
                if candidates > MAX_CROP_CANDIDATES:
                    raise ValueError(
                        f"phi_size {(height, width)} with levels {self.levels} gives up to {candidates} crop "
                        f"candidates, more than {MAX_CROP_CANDIDATES}"
                    )
        if self.mode == "class" and self.num_classes is not None:
            outputs = sum(len(f.params) for f in intervals) * (1 if self.symmetric else 2)
            outputs += int("flip" in self.transforms) + candidates
            if self.num_classes * outputs > MAX_ELEMENTS:
                raise ValueError(
                    f"num_classes {self.num_classes} × {outputs} outputs per class is more than {MAX_ELEMENTS} "
                    "elements in φ's class table"
                )

    @property
    def has_crop(self) -> bool:
        return "crop" in self.transforms

    def crop_levels(self) -> CropLevels:
        """The LRP options, a subset of this config's fields under the same names."""
        return CropLevels(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CropLevels)})


class InstaAug(Augmenter):
    """Instance-specific learned augmentation (Miao et al., ICML 2023): any families, one φ pass.

    φ maps each input to one distribution over all its families: per-input intervals for the interval families
    (rotation, colour, ...; reparameterised), the location-related parameterisation for ``crop`` (a categorical
    over candidate boxes, learned by REINFORCE) and a Bernoulli for ``flip``; a composite is their ``Product``.
    All views are cut in one resampling.

    Example:
        >>> aug = InstaAug(transforms=("crop", "rotation", "hue"))
        >>> out = aug(x)                       # out.images (B, C, H, W), out.entropy (B,)
        >>> objective = aug.objective()        # InstaAugObjective with the recipe's λ controller

    Keyword options are the fields of ``InstaAugConfig``; unknown ones raise a ValueError. ``InstaAug.preset``
    gives named recipes.
    """

    config_class = InstaAugConfig

    def __init__(self, transforms: Sequence[str] = ("rotation",), **options: Any) -> None:
        config = dataclass_from_dict(InstaAugConfig, {"transforms": transforms, **options}, what="InstaAug option")
        phi_size = config.phi_size or (CROP_PHI_SIZE if config.has_crop else None)
        super().__init__(
            config.transforms,
            in_channels=config.in_channels,
            n_copies=config.n_copies,
            padding_mode=config.padding_mode,
            output_size=config.output_size,
            min_width=config.min_width,
        )
        interval = self.stack.interval_families
        self.interval_names = tuple(p for f in interval for p in f.params)
        self.head: UniformRangeHead | MixtureRangeHead | FlowHead | None = None
        out_dim = 0
        if interval:
            init = config.init_half_width or tuple(self.stack.init_half_widths())
            if len(init) != len(self.interval_names):
                raise ValueError(
                    f"init_half_width needs {len(self.interval_names)} entries {self.interval_names}, got {len(init)}"
                )
            bounds = self.stack.bounds()
            if config.distribution == "mixture":
                centres = self._symmetric_centres(config, bounds, init) if config.mixture_init == "symmetric" else None
                self.head = MixtureRangeHead(bounds, config.components, init, config.min_width, centres=centres)
            elif config.distribution == "flow":
                self.head = FlowHead(
                    bounds,
                    self.stack.periodic(),
                    context_dim=config.flow_context,
                    transforms=config.flow_transforms,
                    hidden=config.flow_hidden,
                    entropy_samples=config.entropy_samples,
                    init_half_width=init,
                )
            else:
                self.head = UniformRangeHead(bounds, init, config.min_width, symmetric=config.symmetric)
            out_dim = self.head.out_dim
        self.has_flip = "flip" in config.transforms
        self.flip_offset = math.log(config.flip_init / (1 - config.flip_init))
        self.net = InvarianceNet(
            out_dim + int(self.has_flip),
            mode=config.mode,
            network=config.network,
            in_channels=config.in_channels,
            num_classes=config.num_classes,
            width=config.width,
            depth=config.depth,
            norm=config.norm,
            crop=config.crop_levels() if config.has_crop else None,
            phi_size=phi_size,
            max_side=PHI_MAX_SIDE,
        )
        self.config = config
        self.num_classes = config.num_classes
        self._jitter_entropy = 0.0
        if config.has_crop and self.net.crop_jitter is not None:
            candidates = self.net.candidates()
            dist = CropCategorical(torch.zeros(1, candidates.num_candidates), candidates.boxes, candidates.jitter)
            self._jitter_entropy = float((self.net.initial_distribution() * dist.log_volume()).sum())

    def _symmetric_centres(
        self, config: InstaAugConfig, bounds: tuple[Sequence[float], Sequence[float]], init: Sequence[float]
    ) -> torch.Tensor:
        """The mixture's initial centres (K, D) of ``mixture_init="symmetric"``: the symmetry candidates on every
        periodic dimension, the identity (0) on the others; a ValueError if there is no periodic dimension or
        ``components`` is not the number of candidates."""
        periodic = self.stack.periodic()
        if not any(periodic):
            raise ValueError("mixture_init='symmetric' needs a periodic family (rotation) among the transforms")
        per_dim = [
            symmetric_centres(bounds[0][d], bounds[1][d], config.symmetry_divisions, init[d]) if p else None
            for d, p in enumerate(periodic)
        ]
        k = next(c.shape[0] for c in per_dim if c is not None)
        if config.components != k:
            raise ValueError(
                f"mixture_init='symmetric' with symmetry_divisions={config.symmetry_divisions} places {k} components "
                f"(a candidate on the ±π seam is split in two); got components={config.components}: set components={k}"
            )
        return torch.stack([c if c is not None else torch.zeros(k, dtype=torch.float64) for c in per_dim], dim=1)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> InstaAug:
        """A named recipe (see ``PRESETS``), with any option overridden: e.g. ``InstaAug.preset("crop")``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def num_candidates(self) -> int:
        """The number of LRP crop candidates N (0 without crops)."""
        return self.net.num_candidates

    @property
    def jitter_entropy(self) -> float:
        """E[log vol] of the crop jitter under the initial distribution (0 without jitter): the part of the crop
        entropy the continuous jitter adds at the start (negative: volumes are fractions of the image). Fixed at
        construction, so the default band does not move as φ learns."""
        return self._jitter_entropy

    @property
    def entropy_range(self) -> tuple[float, float]:
        """[Hmin, Hmax] for the entropy controller: the configured band, or the sum of the parts' defaults."""
        if self.config.entropy_range is not None:
            return self.config.entropy_range
        widths = {name: (narrow, wide) for name, narrow, wide in self.config.entropy_widths}
        lo, hi = self.stack.default_entropy_range(widths) if self.head is not None else (0.0, 0.0)
        if self.config.has_crop:
            lo, hi = lo + CROP_ENTROPY_RANGE[0] + self.jitter_entropy, hi + CROP_ENTROPY_RANGE[1] + self.jitter_entropy
        if self.has_flip:
            lo, hi = lo + FLIP_ENTROPY_RANGE[0], hi + FLIP_ENTROPY_RANGE[1]
        return lo, hi

    def controller(self, **overrides: Any) -> EntropyController:
        """An ``EntropyController`` for this augmenter's band with its λ settings (``lam_init``, ``rate``, ...)."""
        # The crop recipe's slow controller with a floor suits REINFORCE on crops alone; with interval families
        # (reparameterised, quick to widen) a floor of 0.1 held the entropy far above the band on photographs.
        options: dict[str, Any] = dict(CROP_CONTROLLER) if self.config.has_crop and self.head is None else {}
        for key, name in (("lam_init", "lam_init"), ("lam_rate", "rate"), ("lam_min", "lam_min")):
            if getattr(self.config, key) is not None:
                options[name] = getattr(self.config, key)
        return EntropyController(*self.entropy_range, **{**options, **overrides})

    def part_entropy_ranges(self) -> list[tuple[float, float]]:
        """The default band of every part of the distribution, in part order: crop (the recipe's categorical band
        plus the jitter's entropy), the interval families together, flip."""
        widths = {name: (narrow, wide) for name, narrow, wide in self.config.entropy_widths}
        bands: list[tuple[float, float]] = []
        if self.config.has_crop:
            bands.append((CROP_ENTROPY_RANGE[0] + self.jitter_entropy, CROP_ENTROPY_RANGE[1] + self.jitter_entropy))
        if self.head is not None:
            bands.append(self.stack.default_entropy_range(widths))
        if self.has_flip:
            bands.append(FLIP_ENTROPY_RANGE)
        return bands

    def part_controllers(self, **overrides: Any) -> PartControllers:
        """One ``EntropyController`` per part, each in its ``part_entropy_ranges()`` band (with ``controller()``'s
        λ settings): φ cannot then meet the band by widening one part alone."""
        if self.config.entropy_range is not None:
            raise ValueError(
                "part_controllers() uses the parts' default bands; this augmenter sets one total "
                "entropy_range (use controller(), or build PartControllers with bands of your own)"
            )
        settings = {name: getattr(self.controller(), name) for name in ("rate", "lam_min", "lam_max")}
        lam = float(self.controller().lam)
        return PartControllers(
            [
                EntropyController(*band, **{"lam_init": lam, **settings, **overrides})
                for band in self.part_entropy_ranges()
            ]
        )

    def objective(self, **controller_overrides: Any) -> InstaAugObjective:
        """``InstaAugObjective`` with ``controller()``: the loss of InstaAug for this augmenter."""
        return InstaAugObjective(self.controller(**controller_overrides))

    def _check(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super()._check(x, y)
        if self.mode == "class" and y is None and self.training:
            raise ValueError("mode 'class' needs labels y during training (at test time y=None uses the mean)")

    def _distribution(self, x: torch.Tensor, y: torch.Tensor | None) -> TransformDistribution:
        out = self.net(x, y)
        parts: list[TransformDistribution] = []
        if out.crop_logits is not None:
            parts.append(CropCategorical(out.crop_logits.to(x.dtype), self.net.crop_boxes, self.net.crop_jitter))
        if isinstance(self.head, UniformRangeHead):
            low, high = self.head(out.raw[:, : self.head.out_dim])
            parts.append(UniformRanges(low.to(x.dtype), high.to(x.dtype), self.interval_names, self.min_width))
        elif isinstance(self.head, MixtureRangeHead):
            low, high, logits = self.head(out.raw[:, : self.head.out_dim].float())
            parts.append(UniformMixture(low, high, logits, self.interval_names, self.min_width))
        elif self.head is not None:
            parts.append(self.head(out.raw[:, : self.head.out_dim].float(), self.interval_names))
        if self.has_flip:
            parts.append(FlipBernoulli((out.raw[:, -1] + self.flip_offset).to(x.dtype)))
        return parts[0] if len(parts) == 1 else Product(parts)


#: Named recipes for ``InstaAug.preset``.
PRESETS: dict[str, dict[str, Any]] = {
    # The crop experiment's tuned recipe (``instaaug run crop``): LRP over the 6×6 units of φ's stage 2 at 48×48,
    # boxes 1.4× their receptive field, jittered within their cell, band (0.6, 1.0) on the categorical part, the
    # slow λ controller with a floor. Train φ with Adam at 1e-3 decayed to 0 (cosine).
    "crop": {"transforms": ("crop",)},
    # Crop, flip and colour from one φ pass: the views of contrastive learning and of most training pipelines.
    "crop-colour-flip": {"transforms": ("crop", "flip", "hue", "saturation", "value")},
    # Rotation with the rotation experiment's band [log 0.95π, log 1.1π].
    "rotation": {"transforms": ("rotation",), "entropy_range": (math.log(0.95 * math.pi), math.log(1.1 * math.pi))},
}


#: Release 0.1's ``InstaAugCrop`` defaults where they differ from ``InstaAug``'s crop recipe.
LEGACY_CROP_DEFAULTS = {
    "levels": (-2, -1),
    "global_crop": True,
    "box_scale": 1.0,
    "centre_jitter": 0.0,
    "size_jitter": 0.0,
}


def legacy_crop(**options: Any) -> InstaAug:
    """An LRP crop ``InstaAug`` with release 0.1's ``InstaAugCrop`` defaults; its ``image_size`` is ``phi_size``."""
    image_size = size_pair(options.pop("image_size", (32, 32)), "image_size (phi_size)")
    options = {"phi_size": image_size, **LEGACY_CROP_DEFAULTS, **options}
    return InstaAug(("crop",), **options)


def _legacy_augmenter(fmt: str, config: dict[str, Any]) -> tuple[Augmenter, dict[str, str]]:
    """An augmenter saved by release 0.1 (format version 1), and the renames of its weights."""
    if fmt == _LEGACY_UNIFORM:
        return InstaAug(**config), {}
    aug = legacy_crop(**config)
    if aug.config.entropy_range is None:  # release 0.1's default band: [0.5, 0.6]·log N, shifted by the jitter
        log_n, shift = math.log(aug.num_candidates), aug.jitter_entropy
        aug.config = dataclasses.replace(aug.config, entropy_range=(0.5 * log_n + shift, 0.6 * log_n + shift))
    return aug, {"net.output": "net.crop_output"}


def InstaAugCrop(**options: Any) -> InstaAug:
    """Deprecated: use ``InstaAug(("crop",), phi_size=..., ...)`` (release 0.1's defaults are kept here; its
    ``image_size`` is φ's ``phi_size``)."""
    warnings.warn(
        "InstaAugCrop is deprecated; use InstaAug(('crop',), phi_size=..., ...), which also composes crops with "
        "other families",
        DeprecationWarning,
        stacklevel=2,
    )
    return legacy_crop(**options)
