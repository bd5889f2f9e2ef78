"""Transform families: batched, differentiable, per-sample image transformations.

Every family is identified by name and acts on images (N, C, H, W) in [0, 1] with per-sample parameters
(N, D_family). A parameter of zero is the identity. Units and valid ranges:

==============  =========================  =============  =====================================================
family          parameters                 valid range    meaning
==============  =========================  =============  =====================================================
``rotation``    ``rotation``               [-π, π]        angle in radians, counter-clockwise as displayed
``translation`` ``translate_x/_y``         [-0.5, 0.5]    shift as a fraction of the image width / height;
                                                          +x moves content right, +y moves it down
``scale``       ``scale``                  [-ln 2, ln 2]  natural log of the zoom factor; > 0 enlarges content
``hue``         ``hue``                    [-0.5, 0.5]    hue shift in turns of the colour wheel (0.5 = 180°)
``saturation``  ``saturation``             [-1, 1]        HSV saturation multiplied by 1 + δ, clipped to [0, 1]
``value``       ``value``                  [-1, 1]        HSV value (brightness) multiplied by 1 + δ, clipped
``contrast``    ``contrast``               [-1, 1]        distance from the image's mean grey level multiplied
                                                          by 1 + δ, clipped to [0, 1]
==============  =========================  =============  =====================================================

Geometric families (rotation, translation, scale) are composed into one affine matrix per sample and applied with
a single resampling (kornia's ``warp_affine``); colour families share one RGB→HSV→RGB round trip. Colour is applied
before geometry so that the padding of the resampling stays the padding value (black by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb, rgb_to_grayscale, rgb_to_hsv
from kornia.geometry.transform import get_affine_matrix2d, warp_affine

PADDING_MODES = ("zeros", "border", "reflection")


@dataclass(frozen=True)
class Family:
    """A transform family: its parameter names, valid range, units and default widths.

    Attributes:
        name: the family's name, as passed to ``InstaAug(transforms=...)``.
        params: one name per parameter dimension.
        bounds: the valid (low, high) range of every parameter; low < 0 < high.
        kind: ``"geometric"`` (resampled) or ``"colour"`` (pointwise).
        unit: the unit of the parameters, for documentation and figures.
        init_half_width: half-width of the interval a learned augmenter starts from.
        entropy_widths: the (narrow, wide) interval widths that set the default entropy band.
        needs_rgb: whether the family requires 3-channel images.
    """

    name: str
    params: tuple[str, ...]
    bounds: tuple[float, float]
    kind: str
    unit: str
    init_half_width: float
    entropy_widths: tuple[float, float]
    needs_rgb: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("rotation", ("rotation",), (-math.pi, math.pi), "geometric", "rad", 0.38, (math.pi / 2, math.pi)),
        Family(
            "translation",
            ("translate_x", "translate_y"),
            (-0.5, 0.5),
            "geometric",
            "fraction",
            0.05,
            (0.1, 0.2),
        ),
        Family("scale", ("scale",), (-math.log(2), math.log(2)), "geometric", "log-factor", 0.05, (0.2, 0.4)),
        Family("hue", ("hue",), (-0.5, 0.5), "colour", "turns", 0.05, (0.1, 0.3), needs_rgb=True),
        Family("saturation", ("saturation",), (-1.0, 1.0), "colour", "factor-1", 0.1, (0.4, 0.8), needs_rgb=True),
        Family("value", ("value",), (-1.0, 1.0), "colour", "factor-1", 0.1, (0.4, 0.8)),
        Family("contrast", ("contrast",), (-1.0, 1.0), "colour", "factor-1", 0.1, (0.4, 0.8)),
    )
}


def get_family(name: str) -> Family:
    """Return the family called ``name``, or raise a ValueError listing the known ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown transform {name!r}; known transforms: {sorted(FAMILIES)}") from None


# ----------------------------------------------------------------------------------------------------------------
# Functional ops


def affine_matrix(
    size: tuple[int, int],
    angle: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample affine matrices (N, 2, 3) in pixel coordinates, about the image centre.

    Args:
        size: the image size (H, W).
        angle: (N,) radians, counter-clockwise as displayed; None for no rotation.
        translation: (N, 2) fractions of (W, H); None for no shift.
        log_scale: (N,) natural log of the zoom factor; None for no zoom.
    At least one of the parameters must be given (it sets N, device and dtype).
    """
    ref = next(t for t in (angle, translation, log_scale) if t is not None)
    n, device, dtype = ref.shape[0], ref.device, ref.dtype
    h, w = size
    if angle is None:
        angle = torch.zeros(n, device=device, dtype=dtype)
    if translation is None:
        translation = torch.zeros(n, 2, device=device, dtype=dtype)
    if log_scale is None:
        log_scale = torch.zeros(n, device=device, dtype=dtype)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=device, dtype=dtype).expand(n, 2)
    pixels = translation * torch.tensor([w, h], device=device, dtype=dtype)
    scale = torch.exp(log_scale)[:, None].expand(n, 2)
    # kornia's positive angle turns clockwise on screen (y points down); ours turns counter-clockwise.
    matrix = get_affine_matrix2d(pixels, centre, scale, torch.rad2deg(-angle))
    return matrix[:, :2]


def warp(images: torch.Tensor, matrix: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Resample images (N, C, H, W) with per-sample affine matrices (N, 2, 3) (bilinear, same size)."""
    return warp_affine(images, matrix, tuple(images.shape[-2:]), padding_mode=padding_mode, align_corners=True)


def crop_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int] | None = None,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Crop boxes out of images and resize them, every box of the batch in one bilinear resampling.

    Args:
        images: (N, C, H, W).
        boxes: (N, 4) per-image boxes (cx, cy, w, h) in fractions of the image: the image spans [0, 1] from the
            left edge of its first pixel to the right edge of its last, x to the right, y down.
        size: the output size (h, w); None keeps (H, W).
        padding_mode: how parts of a box outside the image are filled (see ``PADDING_MODES``).

    Returns (N, C, h, w); differentiable with respect to ``images`` and ``boxes``.
    """
    if boxes.shape != (images.shape[0], 4):
        raise ValueError(f"boxes must be (N, 4) = ({images.shape[0]}, 4), got {tuple(boxes.shape)}")
    out_h, out_w = size if size is not None else images.shape[-2:]
    # affine_grid has no reduced-precision CPU kernel for an output side of 1 (bfloat16): build the grid in float32.
    grid_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    cx, cy, w, h = boxes.to(grid_dtype).unbind(-1)
    zero = torch.zeros_like(cx)
    # grid_sample's normalised coordinates with align_corners=False also put -1 and 1 at the image's outer
    # pixel edges, so a box maps to output coordinates by a scale and a shift.
    theta = torch.stack((torch.stack((w, zero, 2 * cx - 1), -1), torch.stack((zero, h, 2 * cy - 1), -1)), -2)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_h, out_w], align_corners=False)
    grid = grid.to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def adjust_hsv(
    images: torch.Tensor,
    hue: torch.Tensor | None = None,
    saturation: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shift hue (turns) and scale saturation and value by (1 + δ), per sample; parameters (N,) or None.

    Three-channel images go through one RGB→HSV→RGB round trip. Single-channel images accept only ``value``
    (for them HSV value is the pixel itself).
    """
    if images.shape[1] != 3:
        if hue is not None or saturation is not None:
            raise ValueError(f"hue and saturation need 3-channel RGB images, got {images.shape[1]} channel(s)")
        return images if value is None else (images * (1 + value)[:, None, None, None]).clamp(0, 1)
    h, s, v = rgb_to_hsv(images).unbind(1)
    if hue is not None:
        h = torch.remainder(h + (2 * math.pi) * hue[:, None, None], 2 * math.pi)
    if saturation is not None:
        s = (s * (1 + saturation)[:, None, None]).clamp(0, 1)
    if value is not None:
        v = (v * (1 + value)[:, None, None]).clamp(0, 1)
    return hsv_to_rgb(torch.stack((h, s, v), dim=1))


def adjust_contrast(images: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean grey level by (1 + contrast) (N,), clipped to [0, 1]."""
    grey = rgb_to_grayscale(images) if images.shape[1] == 3 else images.mean(1, keepdim=True)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + (images - mean) * (1 + contrast)[:, None, None, None]).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------------
# Composition


class TransformStack:
    """Several families applied in one pass to per-sample parameters (N, D).

    The columns of the parameter tensor follow ``param_names``: the families in the order given, each
    contributing its own parameter dimensions.

    Args:
        names: family names, e.g. ``("rotation", "hue")``; no duplicates; none for the identity.
        padding_mode: how geometric transforms fill pixels from outside the image: ``"zeros"``, ``"border"``
            or ``"reflection"``.
    """

    def __init__(self, names: Sequence[str], padding_mode: str = "zeros") -> None:
        if isinstance(names, str):
            names = (names,)
        names = tuple(names)
        if len(set(names)) != len(names):
            raise ValueError(f"transforms must not repeat, got {names}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.families = tuple(get_family(n) for n in names)
        self.names = names
        self.padding_mode = padding_mode
        self.param_names = tuple(p for f in self.families for p in f.params)
        self.dim = len(self.param_names)
        self._columns: dict[str, slice] = {}
        start = 0
        for f in self.families:
            self._columns[f.name] = slice(start, start + len(f.params))
            start += len(f.params)

    @property
    def needs_rgb(self) -> bool:
        return any(f.needs_rgb for f in self.families)

    def bounds(self) -> tuple[list[float], list[float]]:
        """Per-dimension valid (low, high) bounds, each a list of length D."""
        low = [f.bounds[0] for f in self.families for _ in f.params]
        high = [f.bounds[1] for f in self.families for _ in f.params]
        return low, high

    def init_half_widths(self) -> list[float]:
        """Per-dimension half-width of the interval a learned augmenter starts from."""
        return [f.init_half_width for f in self.families for _ in f.params]

    def default_entropy_range(self) -> tuple[float, float]:
        """The default [Hmin, Hmax]: Σ over dimensions of log(narrow width), log(wide width) (see FAMILIES)."""
        lo = sum(math.log(f.entropy_widths[0]) * len(f.params) for f in self.families)
        hi = sum(math.log(f.entropy_widths[1]) * len(f.params) for f in self.families)
        return lo, hi

    def columns(self, name: str) -> slice:
        """The parameter columns of family ``name``."""
        return self._columns[name]

    def check_channels(self, channels: int) -> None:
        if self.needs_rgb and channels != 3:
            rgb = [f.name for f in self.families if f.needs_rgb]
            raise ValueError(f"transforms {rgb} need 3-channel RGB images, got {channels} channel(s)")

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply the stack: images (N, C, H, W), params (N, D) → transformed images (N, C, H, W)."""
        p = {name: params[:, cols] for name, cols in self._columns.items()}
        if any(n in p for n in ("hue", "saturation", "value")):
            images = adjust_hsv(
                images,
                hue=p["hue"][:, 0] if "hue" in p else None,
                saturation=p["saturation"][:, 0] if "saturation" in p else None,
                value=p["value"][:, 0] if "value" in p else None,
            )
        if "contrast" in p:
            images = adjust_contrast(images, p["contrast"][:, 0])
        if any(n in p for n in ("rotation", "translation", "scale")):
            matrix = affine_matrix(
                tuple(images.shape[-2:]),
                angle=p["rotation"][:, 0] if "rotation" in p else None,
                translation=p.get("translation"),
                log_scale=p["scale"][:, 0] if "scale" in p else None,
            )
            # Bilinear weights sum to 1 only up to rounding: an all-white patch can come out at 1 + 1e-7.
            images = warp(images, matrix, self.padding_mode).clamp(0, 1)
        return images

    def __repr__(self) -> str:
        return f"TransformStack({self.names!r}, padding_mode={self.padding_mode!r})"
