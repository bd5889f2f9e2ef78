"""Invariance networks φ: from an input (or only its label, or nothing) to distribution parameters.

``InvarianceNet`` produces, in one pass, unconstrained outputs (B, out_dim) and, when it has crop levels, the
logits (B, N) of the location-related parameterisation (LRP) of crops, in one of three modes:

- ``instance``: a CNN of x (the InstaAug model);
- ``global``: one learned vector shared by every input (the paper's "w/o input" ablation);
- ``class``: one learned vector per class, looked up from the label y during training. At test time, when no
  label is passed, it falls back to the mean of the class vectors (the augmentation of an "average class");
  pass predicted labels as ``y`` to use the class-specific vectors instead.

``UniformRangeHead`` maps those outputs to intervals [low, high] for the uniform parameterisation.

LRP crops: candidate boxes are the receptive fields of the units of chosen backbone stages (``crop_candidates``),
and a 1×1 convolution on each stage scores every unit's box; the same backbone pass feeds the pooled features of
the other outputs, so crops and intervals come from one φ pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import DEFAULT_MIN_WIDTH
from .distributions.mixture import centre_offsets
from .models import StageGeometry, build_backbone

MODES = ("instance", "global", "class")
#: Whether φ's backbone runs on channels-last input on the CPU, where torch's max-pool is about 10× and ReLU's
#: backward about 2× faster in that layout; accelerators keep the input's layout.
PHI_CHANNELS_LAST_ON_CPU = True


def phi_backbone(network: str, in_channels: int, width: int, depth: int, norm: str) -> nn.Module:
    """φ's backbone: ``small_cnn`` with ``depth`` stages, or ``preact_resnet18`` (fixed depth)."""
    kwargs = {"width": width, "norm": norm}
    if network == "small_cnn":
        kwargs["depth"] = depth
    return build_backbone(network, in_channels, **kwargs)


def check_num_classes(num_classes: int | None) -> None:
    """``class`` mode needs a positive class count."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"mode 'class' needs num_classes ≥ 1, got {num_classes!r}")


def _bounds_and_init(
    bounds: tuple[Sequence[float], Sequence[float]], init_half_width: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bounds (low, high) and initial half-widths as float64 (D,) tensors, checked: one entry per dimension
    each, and low < 0 < high (every family's identity is 0)."""
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in bounds)
    init = torch.tensor(init_half_width, dtype=torch.float64)
    if not (lo.shape == hi.shape == init.shape) or lo.dim() != 1:
        raise ValueError("bounds and init_half_width must all have one entry per dimension")
    if bool((lo >= 0).any() | (hi <= 0).any()):
        raise ValueError(f"bounds must satisfy low < 0 < high, got {bounds}")
    return lo, hi, init


class UniformRangeHead(nn.Module):
    """Maps raw outputs (B, 2D) to intervals low, high (B, D) inside the families' bounds.

    Columns [0, D) of the raw output drive the lower ends and [D, 2D) the upper ends:

        low  = -(m/2 + (|A| - m/2) · σ(r_low + c_low))
        high =   m/2 + (B  - m/2) · σ(r_high + c_high)

    for bounds (A, B) with A < 0 < B and minimum width m. So every interval contains the identity (0), may be
    asymmetric, never leaves the bounds and is at least m wide, which keeps the entropy finite. The constants
    c make a zero raw output give the initial interval [-init_half_width, init_half_width].

    With ``symmetric=True`` (Augerino's parameterisation) the raw output is (B, D) and
    high = -low = m/2 + (min(|A|, B) - m/2) · σ(r + c).
    """

    def __init__(
        self,
        bounds: tuple[Sequence[float], Sequence[float]],
        init_half_width: Sequence[float],
        min_width: float = DEFAULT_MIN_WIDTH,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        lo, hi, init = _bounds_and_init(bounds, init_half_width)
        half = min_width / 2
        if bool((init <= half).any() | (init >= torch.minimum(-lo, hi)).any()):
            raise ValueError(
                f"init_half_width must lie in ({half}, min(|low|, high)) per dimension, got {init.tolist()}"
            )
        self.min_width = min_width
        self.symmetric = symmetric
        self.dim = lo.shape[0]
        rooms = (torch.minimum(-lo, hi) - half,) if symmetric else (-lo - half, hi - half)
        room = torch.cat(rooms)
        self.register_buffer("room", room.float())
        self.register_buffer("offset", torch.logit((init.repeat(len(rooms)) - half) / room).float())

    @property
    def out_dim(self) -> int:
        """Length of the raw output this head consumes (D if symmetric, else 2D)."""
        return self.room.shape[0]

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """raw (B, out_dim) → low, high (B, D)."""
        extent = self.min_width / 2 + self.room * torch.sigmoid(raw + self.offset)
        if self.symmetric:
            return -extent, extent
        return -extent[:, : self.dim], extent[:, self.dim :]


class MixtureRangeHead(nn.Module):
    """Maps raw outputs (B, K·(2D + 1)) to a mixture of K boxes inside the families' bounds (``UniformMixture``).

    Per component k and dimension d, a centre c and a half-width h:

        c = A + (B − A) · σ(r_c + c0_k),   h = m/2 + ((B − A)/2 − m/2) · σ(r_h + h0),
        low = max(c − h, A),   high = min(c + h, B)

    and a logit per component. Unlike one interval, a box need not contain the identity: together they can cover a
    union of arcs. With zero raw outputs the K centres are spread evenly over the bounds (A + (k + ½)(B − A)/K),
    with half-width ``init_half_width`` and equal weights, so training starts with every part of the range in reach.
    """

    def __init__(
        self,
        bounds: tuple[Sequence[float], Sequence[float]],
        components: int,
        init_half_width: Sequence[float],
        min_width: float = DEFAULT_MIN_WIDTH,
        centres: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        lo, hi, init = _bounds_and_init(bounds, init_half_width)
        if components < 1:
            raise ValueError(f"components must be ≥ 1, got {components}")
        if centres is not None and tuple(centres.shape) != (components, lo.shape[0]):
            raise ValueError(f"centres must have shape ({components}, {lo.shape[0]}), got {tuple(centres.shape)}")
        half = min_width / 2
        span = hi - lo
        if bool((init <= half).any() | (init >= span / 2).any()):
            raise ValueError(f"init_half_width must lie in ({half}, half the range) per dimension, got {init.tolist()}")
        self.dim, self.components, self.min_width = lo.shape[0], components, min_width
        if centres is None:
            fractions = (torch.arange(components, dtype=torch.float64) + 0.5) / components  # (K,)
            offsets = torch.logit(fractions)[:, None].expand(-1, self.dim)
        else:  # the given starting centres (K, D), e.g. ``symmetric_centres`` on a periodic dimension
            offsets = torch.stack(
                [centre_offsets(centres[:, d], float(lo[d]), float(hi[d])) for d in range(self.dim)], 1
            )
        self.register_buffer("low_bound", lo.float())
        self.register_buffer("span", span.float())
        self.register_buffer("centre_offset", offsets.float().clone())
        self.register_buffer("room", (span / 2 - half).float())
        self.register_buffer("width_offset", torch.logit((init - half) / (span / 2 - half)).float())

    @property
    def out_dim(self) -> int:
        """Length of the raw output this head consumes: K·(2D + 1)."""
        return self.components * (2 * self.dim + 1)

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """raw (B, out_dim) → low, high (B, K, D) and logits (B, K)."""
        k, d = self.components, self.dim
        centre_raw = raw[:, : k * d].view(-1, k, d)
        width_raw = raw[:, k * d : 2 * k * d].view(-1, k, d)
        logits = raw[:, 2 * k * d :]
        centre = self.low_bound + self.span * torch.sigmoid(centre_raw + self.centre_offset)
        half = self.min_width / 2 + self.room * torch.sigmoid(width_raw + self.width_offset)
        low = torch.maximum(centre - half, self.low_bound)
        high = torch.minimum(centre + half, self.low_bound + self.span)
        return low, high, logits


def count_parameters(module: nn.Module) -> int:
    """The number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------------------
# Location-related parameterisation of crops


@dataclass(frozen=True)
class CropCandidates:
    """The candidate crops of an LRP network for one input size.

    Attributes:
        boxes: (N, 4) boxes (cx, cy, w, h) in fractions of the image, level by level, each level's cells in
            row-major order (i, j).
        jitter: (N, 3) jitter half-ranges (see ``CropCategorical``), or None without jitter.
        level: (N,) the level index of every candidate (0 … L - 1; the global crop, if any, is the last level).
        grid_shapes: (h, w) of every level's feature map ((1, 1) for the global crop).
        keep: per level, the (h·w,) boolean mask of cells kept as candidates.
        level_counts: per level, the number of candidates kept.
    """

    boxes: torch.Tensor
    jitter: torch.Tensor | None
    level: torch.Tensor
    grid_shapes: tuple[tuple[int, int], ...]
    keep: tuple[torch.Tensor, ...]
    level_counts: tuple[int, ...]

    @property
    def num_candidates(self) -> int:
        return self.boxes.shape[0]


def _inside_fraction(boxes: torch.Tensor) -> torch.Tensor:
    """(N,) the fraction of each box (cx, cy, w, h) lying inside the unit square."""
    lo = (boxes[:, :2] - boxes[:, 2:] / 2).clamp(0, 1)
    hi = (boxes[:, :2] + boxes[:, 2:] / 2).clamp(0, 1)
    return ((hi - lo).clamp_min(0) / boxes[:, 2:]).prod(-1)


def crop_candidates(
    geometries: Sequence[StageGeometry],
    grid_shapes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    *,
    global_crop: bool = True,
    box_scale: float = 1.0,
    min_inside: float = 0.5,
    centre_jitter: float = 0.0,
    size_jitter: float = 0.0,
) -> CropCandidates:
    """Candidate boxes from the receptive fields of feature maps: one box per unit, plus the whole image.

    The unit at cell (i, j) of a level with geometry g (see ``StageGeometry``) proposes the box centred on its
    receptive field's centre (g.start + (i, j)·g.jump, in input pixels) whose side is ``box_scale`` times the
    receptive field, at most the image side. Boxes with less than ``min_inside`` of their area inside the image
    (units near the border of deep layers, whose receptive field hangs over the edge) are left out.

    Args:
        geometries: per level, the stage geometry.
        grid_shapes: per level, the feature map's (h, w).
        image_size: the input (H, W).
        global_crop: add the whole image as one more level.
        box_scale: box side ÷ receptive field.
        min_inside: the smallest fraction of a box's area inside the image for it to be a candidate.
        centre_jitter: jitter each centre uniformly within this fraction of its cell (0 … 1; the global crop's
            cell is the coarsest level's).
        size_jitter: jitter each box's size by a factor in [1 - size_jitter, 1 + size_jitter].
    """
    if len(geometries) != len(grid_shapes):
        raise ValueError("one grid shape per geometry is needed")
    if not box_scale > 0:
        raise ValueError(f"box_scale must be > 0, got {box_scale}")
    if not 0 < min_inside <= 1:
        raise ValueError(f"min_inside must be in (0, 1], got {min_inside}")
    if not 0 <= centre_jitter <= 1:
        raise ValueError(f"centre_jitter must be in [0, 1] (a fraction of the cell), got {centre_jitter}")
    if not 0 <= size_jitter < 1:
        raise ValueError(f"size_jitter must be in [0, 1), got {size_jitter}")
    height, width = image_size
    scale = torch.tensor([width, height], dtype=torch.float64)
    boxes, halves, levels, shapes, keeps, counts = [], [], [], [], [], []
    specs = [
        (g.start, g.jump, g.receptive_field, tuple(shape)) for g, shape in zip(geometries, grid_shapes, strict=True)
    ]
    if global_crop:
        # The whole image's "cell" is the coarsest level's: its jitter is a shift of at most half that cell, like
        # any other candidate's (a cell of the whole image would shift it by up to half the image).
        coarsest = (
            max((g.jump[0] for g in geometries), default=height),
            max((g.jump[1] for g in geometries), default=width),
        )
        specs.append(((height / 2 - 0.5, width / 2 - 0.5), coarsest, (height, width), (1, 1)))
    for index, (start, jump, rf, (rows, cols)) in enumerate(specs):
        ys = start[0] + jump[0] * torch.arange(rows, dtype=torch.float64)
        xs = start[1] + jump[1] * torch.arange(cols, dtype=torch.float64)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        centre = (torch.stack((xx, yy), -1).reshape(-1, 2) + 0.5) / scale
        side = (box_scale * torch.tensor([rf[1], rf[0]], dtype=torch.float64) / scale).clamp(max=1.0)
        level_boxes = torch.cat((centre, side.expand_as(centre)), -1)
        keep = _inside_fraction(level_boxes) >= min_inside - 1e-9
        if not bool(keep.any()):
            raise ValueError(
                f"crop level {index} keeps no candidate: every box has less than min_inside={min_inside} of its "
                "area inside the image; lower min_inside or choose another level"
            )
        half_cell = torch.tensor([jump[1], jump[0]], dtype=torch.float64) / scale / 2
        half = torch.cat((centre_jitter * half_cell, torch.tensor([size_jitter], dtype=torch.float64)))
        boxes.append(level_boxes[keep])
        halves.append(half.expand(int(keep.sum()), 3))
        levels.append(torch.full((int(keep.sum()),), index, dtype=torch.long))
        shapes.append((rows, cols))
        keeps.append(keep)
        counts.append(int(keep.sum()))
    _check_disjoint(boxes, centre_jitter, size_jitter)
    jitter = torch.cat(halves).float() if (centre_jitter > 0 or size_jitter > 0) else None
    return CropCandidates(
        torch.cat(boxes).float(), jitter, torch.cat(levels), tuple(shapes), tuple(keeps), tuple(counts)
    )


def _check_disjoint(level_boxes: Sequence[torch.Tensor], centre_jitter: float, size_jitter: float) -> None:
    """Different levels must not propose the same crop, or the entropy over candidates would overcount."""
    sides = [float(b[0, 2]) for b in level_boxes]
    for a in range(len(sides)):
        for b in range(a + 1, len(sides)):
            sa, sb = sides[a], sides[b]
            if size_jitter > 0 and abs(sa - sb) < size_jitter * (sa + sb):
                raise ValueError(
                    f"crop levels {a} and {b} (box sides {sa:.3g}, {sb:.3g}) overlap in size with "
                    f"size_jitter={size_jitter}; lower size_jitter"
                )
            if size_jitter == 0 and math.isclose(sa, sb, rel_tol=1e-6):
                same = torch.cdist(level_boxes[a][:, :2], level_boxes[b][:, :2]).min() < 1e-6
                if centre_jitter > 0 or bool(same):
                    raise ValueError(
                        f"crop levels {a} and {b} propose boxes of the same side {sa:.3g}; drop one of them "
                        "(e.g. global_crop=False) or change box_scale"
                    )


@dataclass(frozen=True)
class CropLevels:
    """φ's location-related parameterisation of crops (see ``crop_candidates``).

    Attributes:
        levels: backbone stage indices (0-based, negative from the end) whose units propose crops.
        global_crop: add the whole image as a candidate (its own level, last).
        level_bias: initial per-level logit biases (levels, then the global crop); None for zeros (every level
            gets the same initial probability).
        box_scale, min_inside, centre_jitter, size_jitter: see ``crop_candidates``.
    """

    levels: tuple[int, ...] = (2,)
    global_crop: bool = False
    level_bias: tuple[float, ...] | None = None
    box_scale: float = 1.4
    min_inside: float = 0.5
    centre_jitter: float = 1.0
    size_jitter: float = 0.1


class PhiOutput(NamedTuple):
    """What one φ pass produces: raw outputs (B, out_dim) for the interval and flip heads, and the LRP crop
    logits (B, N) (None without crops)."""

    raw: torch.Tensor
    crop_logits: torch.Tensor | None


class InvarianceNet(nn.Module):
    """φ: (x, y) → ``PhiOutput``: raw outputs (B, out_dim) and, with ``crop``, LRP crop logits (B, N).

    Args:
        out_dim: the number of raw outputs per input (0: crops only).
        mode: see the module docstring.
        network: the backbone for ``instance`` mode, ``small_cnn`` (default, ≈23k parameters at width 16) or
            ``preact_resnet18``.
        in_channels: image channels C.
        num_classes: the number of classes, required in ``class`` mode.
        width: the backbone's first-stage channel count.
        depth: the number of stages of ``small_cnn``.
        norm: the backbone's normalisation, ``layer`` (default), ``batch`` or ``none``. ``layer`` normalises each
            input on its own, so φ(x) does not depend on the rest of the batch and is the same in training and
            in eval mode; BatchNorm's running statistics lag φ's weights, which shifts the ranges seen at test
            time, in figures and in saved augmenters.
        crop: LRP crop levels (None: no crops).
        phi_size: the (H, W) φ sees its input at (resized, antialiased, when it differs); None for the input's
            own size, downscaled (aspect kept) when a side exceeds ``max_side``. Crops need it: their candidates
            are built once for this size, as fractions of the image, so they stay exact in the original frame of
            any input.
        max_side: with ``phi_size`` None, the longest side φ sees (None: any).

    Every output layer starts at zero, so every mode begins from the heads' initial distribution for every input.
    The logit of crop candidate k of level l is head_k(x) + bias_l - log N_l: a 1×1 convolution on the level's
    feature map (a linear layer on the pooled last stage for the global crop), a learnable per-level bias and N_l
    the level's number of candidates, so equal biases give every level the same initial mass.
    """

    def __init__(
        self,
        out_dim: int,
        mode: str = "instance",
        network: str = "small_cnn",
        in_channels: int = 3,
        num_classes: int | None = None,
        width: int = 16,
        depth: int = 3,
        norm: str = "layer",
        *,
        crop: CropLevels | None = None,
        phi_size: tuple[int, int] | None = None,
        max_side: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "class":
            check_num_classes(num_classes)
        self.mode = mode
        self.out_dim = out_dim
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.phi_size = None if phi_size is None else (int(phi_size[0]), int(phi_size[1]))
        self.max_side = max_side
        self.crop = crop
        #: Run the backbone on channels-last (NHWC) input when it is on the CPU (see ``forward``). Only the small CNN:
        #: torch 2.13's CPU backward of a channels-last 1×1 stride-2 convolution (the PreAct ResNet's shortcuts)
        #: corrupts memory for ≤ 8 channels and an odd batch (e.g. 4 channels, 16 px, batch 3: a segfault or abort).
        self.channels_last_on_cpu = PHI_CHANNELS_LAST_ON_CPU and network == "small_cnn"
        backbone = phi_backbone(network, in_channels, width, depth, norm) if mode == "instance" or crop else None
        if mode == "instance":
            self.backbone = backbone
        if out_dim > 0:
            if mode == "instance":
                self.output = nn.Linear(backbone.out_channels, out_dim)
                nn.init.zeros_(self.output.weight)
                nn.init.zeros_(self.output.bias)
            elif mode == "global":
                self.output = nn.Parameter(torch.zeros(out_dim))
            else:
                self.output = nn.Embedding(num_classes, out_dim)
                nn.init.zeros_(self.output.weight)
        self.global_head = None
        if crop is not None:
            self._build_crop(backbone, crop)

    # ------------------------------------------------------------------------------------------------------------
    # LRP crops

    def _build_crop(self, backbone: nn.Module, crop: CropLevels) -> None:
        if self.phi_size is None:
            raise ValueError("crops need phi_size, the (H, W) φ sees its input at")
        stages = len(backbone.stages)
        if not crop.levels or any(not -stages <= s < stages for s in crop.levels):
            raise ValueError(f"crop levels must be stage indices in [{-stages}, {stages}), got {tuple(crop.levels)}")
        self.levels = tuple(sorted({s % stages for s in crop.levels}))
        geometry = [backbone.stage_geometry()[s] for s in self.levels]
        was_training = backbone.training
        with torch.no_grad():
            features = backbone.eval()(torch.zeros(1, self.in_channels, *self.phi_size))
        backbone.train(was_training)
        shapes = [tuple(features[s].shape[-2:]) for s in self.levels]
        candidates = crop_candidates(
            geometry,
            shapes,
            self.phi_size,
            global_crop=crop.global_crop,
            box_scale=crop.box_scale,
            min_inside=crop.min_inside,
            centre_jitter=crop.centre_jitter,
            size_jitter=crop.size_jitter,
        )
        self._candidates = candidates
        num_levels = len(candidates.level_counts)
        # Constants as (non-persistent) buffers: they follow .to(device) and cost no host transfer per call.
        self.register_buffer("crop_boxes", candidates.boxes.clone(), persistent=False)
        self.register_buffer(
            "crop_jitter", None if candidates.jitter is None else candidates.jitter.clone(), persistent=False
        )
        onehot = (candidates.level[:, None] == torch.arange(num_levels)).float()
        self.register_buffer("crop_level_onehot", onehot, persistent=False)
        self.register_buffer("crop_log_counts", torch.tensor(candidates.level_counts).float().log(), persistent=False)
        # Index buffers instead of boolean masks: masked indexing has a data-dependent shape (a host sync on GPU
        # and a dynamic shape under torch.compile).
        for i, keep in enumerate(candidates.keep[: len(self.levels)]):
            self.register_buffer(f"crop_keep_{i}", keep.nonzero()[:, 0], persistent=False)
        bias = torch.zeros(num_levels) if crop.level_bias is None else torch.tensor(crop.level_bias, dtype=torch.float)
        if bias.shape != (num_levels,):
            raise ValueError(f"level_bias needs {num_levels} entries (levels plus the global crop), got {bias.shape}")
        self.level_bias = nn.Parameter(bias)
        if self.mode == "instance":
            self.heads = nn.ModuleList(nn.Conv2d(backbone.channels[s], 1, 1, bias=False) for s in self.levels)
            self.global_head = nn.Linear(backbone.out_channels, 1, bias=False) if crop.global_crop else None
            for layer in [*self.heads, *([self.global_head] if crop.global_crop else [])]:
                nn.init.zeros_(layer.weight)
        elif self.mode == "global":
            self.crop_output = nn.Parameter(torch.zeros(candidates.num_candidates))
        else:
            self.crop_output = nn.Embedding(self.num_classes, candidates.num_candidates)
            nn.init.zeros_(self.crop_output.weight)

    def candidates(self) -> CropCandidates:
        """The candidate crops (on the CPU); φ's crops are built for ``phi_size``."""
        if self.crop is None:
            raise ValueError("this φ has no crops")
        return self._candidates

    @property
    def num_candidates(self) -> int:
        """The number of crop candidates N (0 without crops)."""
        return 0 if self.crop is None else self._candidates.num_candidates

    def level_offsets(self) -> torch.Tensor:
        """(N,) bias_l - log N_l for every candidate."""
        offsets = self.level_bias - self.crop_log_counts
        # A one-hot product rather than offsets[level]: indexing's backward is a scatter-add, which torch 2.13's
        # inductor fails to generate for CPU with several threads (vectorised atomic add).
        return self.crop_level_onehot @ offsets

    def initial_distribution(self) -> torch.Tensor:
        """(N,) the candidate probabilities with zero heads: level masses softmax(level_bias), uniform within."""
        return torch.softmax(self.level_offsets().detach(), 0)

    def _crop_logits(self, features: list[torch.Tensor] | None, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        if self.mode == "instance":
            scores = [
                head(features[s]).flatten(1).index_select(1, getattr(self, f"crop_keep_{i}"))
                for i, (head, s) in enumerate(zip(self.heads, self.levels, strict=True))
            ]
            if self.global_head is not None:
                scores.append(self.global_head(features[-1].mean(dim=(2, 3))))
            raw = torch.cat(scores, dim=1)
        elif self.mode == "global":
            raw = self.crop_output.expand(batch, -1)
        elif y is None:
            raw = self.crop_output.weight.mean(0).expand(batch, -1)
        else:
            raw = self.crop_output(y)
        return raw + self.level_offsets()

    # ------------------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> PhiOutput:
        """x (B, C, H, W), optional labels y (B,) → ``PhiOutput`` (raw (B, out_dim), crop logits (B, N))."""
        batch = x.shape[0]
        features = None
        if self.mode == "instance":
            dtype = next(self.backbone.parameters()).dtype
            x = x.to(dtype)
            size = self.phi_size
            if size is None and self.max_side is not None and max(x.shape[-2:]) > self.max_side:
                scale = self.max_side / max(x.shape[-2:])
                size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            if size is not None and tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            if self.channels_last_on_cpu and x.device.type == "cpu":
                # torch's CPU max-pool and ReLU backward are much slower on NCHW maps than on NHWC ones: a
                # small-CNN step with rotation + colour at batch 64 / 32 px costs 1.76× a random-augmentation step
                # with this, 2.16× without (``bench.uniform_breakdown``). Same values up to the convolutions'
                # summation order.
                x = x.contiguous(memory_format=torch.channels_last)
            # Crops alone (no global crop) never need stages deeper than the last level.
            crops_only = self.out_dim == 0 and self.crop is not None and self.global_head is None
            features = self.backbone(x, self.levels[-1] + 1 if crops_only else None)
        if self.out_dim == 0:
            raw = x.new_zeros(batch, 0)
        elif self.mode == "instance":
            raw = self.output(features[-1].mean(dim=(2, 3)))
        elif self.mode == "global":
            raw = self.output.expand(batch, self.out_dim)
        elif y is None:
            raw = self.output.weight.mean(0).expand(batch, self.out_dim)
        else:
            raw = self.output(y)
        crop_logits = None if self.crop is None else self._crop_logits(features, y, batch)
        return PhiOutput(raw, crop_logits)

    def extra_repr(self) -> str:
        crops = "" if self.crop is None else f", crop levels={self.levels}, candidates={self.num_candidates}"
        return f"mode={self.mode!r}, out_dim={self.out_dim}{crops}"
