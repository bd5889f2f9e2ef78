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
``gain``        ``gain_r/_g/_b``           [-1, 1]        each RGB channel multiplied by 1 + δ_c in linear light
                                                          (sRGB decoded, scaled, clipped to [0, 1], re-encoded):
                                                          a change of the illuminant's colour and intensity
``local_hue``,  ``hue_00`` … ``hue_11``      as above       hue, saturation or value changed by a smooth field over
``local_saturation``, ``local_value``                     the image instead of one number: one δ per anchor of a
                                                          2×2 grid (``LOCAL_ANCHORS``), spread to every pixel
                                                          with inverse-cube distance weights (``local_field``)
``crop``        ``crop_x/_y/_w/_h``        [0, 1]         the box (centre x, centre y, width, height) the view
                                                          shows, in fractions of the image; identity at
                                                          (0.5, 0.5, 1, 1); drawn from ``CropCategorical`` (LRP)
                                                          or ``UniformCrops``, not from intervals
``flip``        ``flip``                   {0, 1}         1 mirrors the view left-right; drawn from
                                                          ``FlipBernoulli``
==============  =========================  =============  =====================================================

``FAMILIES`` holds the interval families (all but the last two, parameterised by ``UniformRanges``); ``crop`` and
``flip`` are in ``DISCRETE_FAMILIES``. Crop, flip and the geometric families are composed into one affine map per
sample and applied with a single resampling (``view_grid_matrix``: the view's output grid → the input image); colour
families are applied in closed form in RGB (the results of an HSV round trip, without one), the gain first (it
acts on the light falling on the scene), then hue, saturation and value, then their local versions, then
contrast. Colour is applied before geometry so that the padding of the resampling stays the padding value (black by
default).

The local families are the InstaAug reference code's spatially varying colour jitter: there φ predicts H, S and V
ranges at its convolution units' centres and spreads each unit's draw over the image with distance⁻³ weights. Here
the anchors are a fixed 2×2 grid and φ's head predicts one interval per anchor; a field with the same δ at every
anchor is the global family's change exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
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
        periodic: whether the parameters live on a circle (rotation: −π and π are the same transformation).
    """

    name: str
    params: tuple[str, ...]
    bounds: tuple[float, float]
    kind: str
    unit: str
    init_half_width: float
    entropy_widths: tuple[float, float]
    needs_rgb: bool = False
    periodic: bool = False


#: The families whose parameters are not drawn from intervals: their own distributions (see the table above).
DISCRETE_FAMILIES: dict[str, Family] = {
    "crop": Family("crop", ("crop_x", "crop_y", "crop_w", "crop_h"), (0.0, 1.0), "geometric", "fraction", 0.0, (0, 0)),
    "flip": Family("flip", ("flip",), (0.0, 1.0), "geometric", "indicator", 0.0, (0, 0)),
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "rotation",
            ("rotation",),
            (-math.pi, math.pi),
            "geometric",
            "rad",
            0.38,
            (math.pi / 2, math.pi),
            periodic=True,
        ),
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
        Family(
            "gain",
            ("gain_r", "gain_g", "gain_b"),
            (-1.0, 1.0),
            "colour",
            "factor-1",
            0.1,
            (0.4, 0.8),
            needs_rgb=True,
        ),
    )
}


#: The anchors of the local colour families: the centres of a 2×2 grid, as (x, y) fractions of the image, row by row.
LOCAL_ANCHORS = ((0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
#: local family → the global family whose change it applies pixel by pixel.
LOCAL_FAMILIES = {"local_hue": "hue", "local_saturation": "saturation", "local_value": "value"}
for _name, _base in LOCAL_FAMILIES.items():
    _family = FAMILIES[_base]
    # Anchor names row, column: hue_00 top left, hue_01 top right, hue_10 bottom left, hue_11 bottom right.
    FAMILIES[_name] = Family(
        _name,
        tuple(f"{_base}_{int(y > 0.5)}{int(x > 0.5)}" for x, y in LOCAL_ANCHORS),
        _family.bounds,
        "colour",
        _family.unit,
        _family.init_half_width,
        _family.entropy_widths,
        needs_rgb=_family.needs_rgb,
    )
del _name, _base, _family

#: Geometric interval families, composed with crop and flip into one resampling.
GEOMETRIC = ("rotation", "translation", "scale")


def get_family(name: str) -> Family:
    """Return the family called ``name``, or raise a ValueError listing the known ones."""
    try:
        return FAMILIES.get(name) or DISCRETE_FAMILIES[name]
    except (KeyError, TypeError):
        known = sorted([*FAMILIES, *DISCRETE_FAMILIES])
        raise ValueError(f"unknown transform {name!r}; known transforms: {known}") from None


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
    # Constants filled on the device (``torch.tensor`` of a list would copy from the host on every call).
    centre = torch.stack([torch.full((n,), (side - 1) / 2, device=device, dtype=dtype) for side in (w, h)], -1)
    pixels = torch.stack((translation[:, 0] * w, translation[:, 1] * h), -1)
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
    grid_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    ref = boxes.new_empty((), dtype=grid_dtype)
    theta = view_grid_matrix(tuple(images.shape[-2:]), images.shape[0], reference=ref, box=boxes)
    return resample(images, theta, size, padding_mode)


def view_grid_matrix(
    in_size: tuple[int, int],
    n: int,
    *,
    reference: torch.Tensor,
    box: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
    angle: torch.Tensor | None = None,
    translation: torch.Tensor | None = None,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-view affine maps (N, 2, 3) from the view's normalised output coordinates to the input's, for
    ``F.affine_grid`` / ``F.grid_sample`` with ``align_corners=False``: crop, then the geometric transforms about
    the crop's centre, then the flip, all in one map.

    The view shows the box (cx, cy, w, h) (fractions of the input; default the whole image); inside it the content
    is rotated by ``angle`` (radians, counter-clockwise as displayed), zoomed by exp(``log_scale``) and shifted by
    ``translation`` (fractions of the box's width and height), all about the box's centre in pixel units (so
    rotations stay rigid on non-square images); ``flip`` = 1 mirrors the result left-right.

    Args:
        in_size: the input (H, W).
        n: the number of views N.
        reference: a tensor whose device and dtype the maps take.
        box: (N, 4) or None; flip: (N,) in {0, 1} or None; angle, log_scale: (N,) or None; translation: (N, 2).
    """
    height, width = in_size
    device, dtype = reference.device, reference.dtype
    one = torch.ones(n, device=device, dtype=dtype)
    zero = torch.zeros(n, device=device, dtype=dtype)
    cx, cy, bw, bh = box.to(dtype).unbind(-1) if box is not None else (one / 2, one / 2, one, one)
    # Output coordinates (u, v) ∈ [-1, 1]² → pixels from the box centre: q = (u·bw·W/2, v·bh·H/2).
    dx, dy = bw * (width / 2), bh * (height / 2)
    f = one if flip is None else 1 - 2 * flip.to(dtype)
    cos, sin = (one, zero) if angle is None else (torch.cos(angle), torch.sin(angle))
    inv_zoom = one if log_scale is None else torch.exp(-log_scale)
    # Inverse map of dest = R·S·src + t: src = S⁻¹·R⁻¹·(dest - t), R⁻¹ = [[cos, -sin], [sin, cos]] for a
    # counter-clockwise (as displayed, y down) forward rotation; the flip acts on dest first.
    r00, r01, r10, r11 = inv_zoom * cos, -inv_zoom * sin, inv_zoom * sin, inv_zoom * cos
    a00, a01 = 2 / width * r00 * f * dx, 2 / width * r01 * dy
    a10, a11 = 2 / height * r10 * f * dx, 2 / height * r11 * dy
    b0, b1 = 2 * cx - 1, 2 * cy - 1
    if translation is not None:
        tx, ty = translation[:, 0] * bw * width, translation[:, 1] * bh * height
        b0 = b0 - 2 / width * (r00 * tx + r01 * ty)
        b1 = b1 - 2 / height * (r10 * tx + r11 * ty)
    return torch.stack((torch.stack((a00, a01, b0), -1), torch.stack((a10, a11, b1), -1)), -2)


def resample(
    images: torch.Tensor,
    theta: torch.Tensor,
    size: tuple[int, int] | None = None,
    padding_mode: str = "zeros",
    mode: str = "bilinear",
) -> torch.Tensor:
    """Resample images (N, C, H, W) on the grids of affine maps theta (N, 2, 3) (see ``view_grid_matrix``) into
    (N, C, h, w), ``size`` = (h, w) (default: the input's)."""
    out_h, out_w = size if size is not None else images.shape[-2:]
    # affine_grid has no reduced-precision CPU kernel for an output side of 1 (bfloat16): build the grid in float32.
    grid_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    grid = F.affine_grid(theta.to(grid_dtype), [images.shape[0], images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid.to(images.dtype), mode=mode, padding_mode=padding_mode, align_corners=False)


def _per_pixel(param: torch.Tensor) -> torch.Tensor:
    """A per-sample parameter (N,) as (N, 1, 1, 1); a per-pixel field (N, 1, H, W) as it is."""
    return param.view(-1, 1, 1, 1) if param.dim() == 1 else param


def local_field(delta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spread per-anchor changes delta (N, K) over images of ``size`` (H, W): a field (N, 1, H, W).

    Each pixel takes the mean of the anchors' δ weighted by 1 / (d³ + ε), d its distance to the anchor in image
    heights (Shepard interpolation with power 3, the reference code's weighting; ε = 1e-4 keeps a pixel on an
    anchor finite). The weights sum to 1: equal δ at every anchor give that δ everywhere. Anchors:
    ``LOCAL_ANCHORS``.
    """
    h, w = size
    if delta.dim() != 2 or delta.shape[1] != len(LOCAL_ANCHORS):
        raise ValueError(f"delta must be (N, {len(LOCAL_ANCHORS)}), got {tuple(delta.shape)}")
    dtype = delta.dtype if delta.is_floating_point() else torch.float32
    ys = (torch.arange(h, device=delta.device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=delta.device, dtype=dtype) + 0.5) / w
    anchors = torch.arange(len(LOCAL_ANCHORS), device=delta.device)
    # Anchor k sits at x = 0.25 + 0.5·(k mod 2), y = 0.25 + 0.5·(k div 2) (``LOCAL_ANCHORS``), built on the device.
    ax = (0.25 + 0.5 * (anchors % 2)).to(dtype)
    ay = (0.25 + 0.5 * (anchors // 2)).to(dtype)
    dx = (xs[None, None, :] - ax[:, None, None]) * (w / h)  # distances in image heights, so circles stay round
    dy = ys[None, :, None] - ay[:, None, None]
    weights = 1.0 / ((dx * dx + dy * dy) ** 1.5 + 1e-4)  # (K, H, W)
    weights = weights / weights.sum(0, keepdim=True)
    return torch.einsum("nk,khw->nhw", delta.to(dtype), weights).unsqueeze(1)


def _hue_sectors(images: torch.Tensor, v: torch.Tensor, chroma: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """k = (n + h + 6·hue) mod 6 (N, 3, H, W) of RGB images (N, 3, H, W) with max v and chroma (N, 1, H, W): h the
    hue in sixths of a turn, n = 5, 3, 1 for red, green, blue; each channel is then v − chroma·clamp(min(k, 4 − k),
    0, 1). ``hue``: per sample (N,) or per pixel (N, 1, H, W)."""
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    safe = chroma.clamp_min(torch.finfo(images.dtype).tiny)
    # Hue in [0, 6) from the sector of the largest channel, red first on ties (as kornia's argmax).
    h = torch.where(
        v == r, torch.remainder((g - b) / safe, 6), torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = h + 6 * _per_pixel(hue)
    # Per-channel offsets n = 5, 3, 1 (red, green, blue), made on the device (no host-to-device copy).
    offsets = torch.arange(5, 0, -2, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return torch.remainder(offsets + h, 6)


def adjust_hsv(
    images: torch.Tensor,
    hue: torch.Tensor | None = None,
    saturation: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shift hue (turns) and scale saturation and value by (1 + δ); parameters per sample (N,) or per pixel
    (N, 1, H, W) (``local_field``), or None.

    The result is that of an RGB→HSV→RGB round trip (kornia's, to 1e-6 in float32), computed in closed form in RGB
    without building the HSV image: each change keeps the other two HSV coordinates, so they apply one after the
    other. With v = max(r, g, b) and chroma c = v - min(r, g, b):

    * hue: the hue in sixths of a turn from the largest channel's sector, shifted, and each channel rebuilt as
      v - c·clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6, n = 5, 3, 1 for red, green, blue;
    * saturation s = c / v → min(s·(1 + δ), 1): every channel moves away from v by the factor min(1 + δ, v / c);
    * value v → min(v·(1 + δ), 1): every channel scales by the new v over the old.

    Single-channel images accept only ``value`` (for them HSV value is the pixel itself).
    """
    if images.shape[1] != 3:
        if hue is not None or saturation is not None:
            raise ValueError(f"hue and saturation need 3-channel RGB images, got {images.shape[1]} channel(s)")
        return images if value is None else (images * (1 + _per_pixel(value))).clamp(0, 1)
    tiny = torch.finfo(images.dtype).tiny
    v = images.amax(1, keepdim=True)
    chroma = v - images.amin(1, keepdim=True)
    if hue is not None:
        k = _hue_sectors(images, v, chroma, hue)
        images = v - chroma * torch.minimum(k, 4 - k).clamp(0, 1)
    if saturation is not None:
        ratio = torch.minimum(1 + _per_pixel(saturation), v / chroma.clamp_min(tiny))
        images = v - (v - images) * ratio
    if value is not None:
        scaled = (v * (1 + _per_pixel(value))).clamp(max=1)
        images = images * torch.where(v > 0, scaled / v.clamp_min(tiny), torch.zeros_like(v))
    return images.clamp(0, 1)  # rounding: the smallest channel at full saturation can come out at -6e-8


def adjust_contrast(images: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean grey level by (1 + contrast) (N,), clipped to [0, 1]."""
    grey = rgb_to_grayscale(images) if images.shape[1] == 3 else images.mean(1, keepdim=True)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + (images - mean) * (1 + contrast)[:, None, None, None]).clamp(0, 1)


#: Luma weights of ``rgb_to_grayscale`` (ITU-R BT.601), whose mean ``adjust_contrast`` scales about.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


class _ParamColour(torch.autograd.Function):
    """``adjust_hsv`` then ``adjust_contrast`` on RGB images that need no gradient, differentiable in the per-sample
    parameters alone.

    The forward runs the same operations as those functions (the same values, bit for bit) and keeps only what the
    parameters' gradients need; the backward forms those gradients in closed form, a few passes over the images,
    where autograd would record and replay some forty elementwise steps (the colour backward was twice the
    colour forward). Where a step's derivative has a kink (a clip, the minimum of two terms), the side taken is
    autograd's, except on ties (a measure-zero set of parameters). Inputs: images (N, 3, H, W), each parameter (N,)
    or None (family absent); output (N, 3, H, W). The forward repeats those functions' code: a test holds the two
    to identical views and to autograd's gradients (``tests/test_transforms.py``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        images: torch.Tensor,
        hue: torch.Tensor | None,
        saturation: torch.Tensor | None,
        value: torch.Tensor | None,
        contrast: torch.Tensor | None,
    ) -> torch.Tensor:
        tiny = torch.finfo(images.dtype).tiny
        v = images.amax(1, keepdim=True)
        chroma = v - images.amin(1, keepdim=True)
        saved: dict[str, torch.Tensor] = {}
        if hue is not None:
            k = _hue_sectors(images, v, chroma, hue)
            images = v - chroma * torch.minimum(k, 4 - k).clamp(0, 1)
            # d/dk of clamp(min(k, 4 - k), 0, 1): 1 on [0, 1], -1 on [3, 4], 0 elsewhere (times the chroma).
            slope = (k <= 1).to(images.dtype) - ((k >= 3) & (k <= 4)).to(images.dtype)
            saved.update(hue_slope=slope * chroma)
        if saturation is not None:
            bound = v / chroma.clamp_min(tiny)
            ratio = torch.minimum((1 + saturation)[:, None, None, None], bound)
            below_v = v - images
            images = v - below_v * ratio
            # min(1 + δ, bound): the gradient reaches δ where 1 + δ is the smaller.
            saved.update(below_v=below_v, ratio=ratio, saturation_free=(1 + saturation)[:, None, None, None] < bound)
        if value is not None:
            grown = v * (1 + value)[:, None, None, None]
            scale = torch.where(v > 0, grown.clamp(max=1) / v.clamp_min(tiny), torch.zeros_like(v))
            saved.update(
                before_value=images,
                scale=scale,
                value_slope=torch.where((v > 0) & (grown <= 1), v, 0) / v.clamp_min(tiny),
            )
            images = images * scale
        if hue is not None or saturation is not None or value is not None:
            saved.update(hsv_inside=(images >= 0) & (images <= 1))  # adjust_hsv's last clip (rounding)
            images = images.clamp(0, 1)
        if contrast is not None:
            grey = rgb_to_grayscale(images)
            mean = grey.mean(dim=(1, 2, 3), keepdim=True)
            stretched = mean + (images - mean) * (1 + contrast)[:, None, None, None]
            saved.update(centred=images - mean, contrast_inside=(stretched >= 0) & (stretched <= 1))
            images = stretched.clamp(0, 1)
        ctx.names = tuple(saved)
        ctx.save_for_backward(*saved.values(), contrast)
        ctx.has = (hue is not None, saturation is not None, value is not None, contrast is not None)
        return images

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        tensors = ctx.saved_tensors
        saved = dict(zip(ctx.names, tensors[: len(ctx.names)], strict=True))
        contrast = tensors[-1]
        has_hue, has_saturation, has_value, has_contrast = ctx.has
        grads: list[torch.Tensor | None] = [None] * 4  # hue, saturation, value, contrast
        if has_contrast:
            grad = grad * saved["contrast_inside"]
            grads[3] = (grad * saved["centred"]).sum(dim=(1, 2, 3))
            # out = (1 + c)·x - c·mean(grey(x)): the mean spreads -c·Σ grad over the pixels by the luma weights.
            spread = -contrast * grad.sum(dim=(1, 2, 3)) / (grad.shape[2] * grad.shape[3])
            # Python floats times a tensor: no constant copied to the device on every call.
            spread = torch.cat([spread[:, None, None, None] * w for w in GREY_WEIGHTS], dim=1)
            grad = grad * (1 + contrast)[:, None, None, None] + spread
        if "hsv_inside" in saved:
            grad = grad * saved["hsv_inside"]
        if has_value:
            grads[2] = ((grad * saved["before_value"]).sum(1, keepdim=True) * saved["value_slope"]).sum(dim=(1, 2, 3))
            grad = grad * saved["scale"]
        if has_saturation:
            free = saved["saturation_free"]
            grads[1] = -((grad * saved["below_v"]).sum(1, keepdim=True) * free).sum(dim=(1, 2, 3))
            grad = grad * saved["ratio"]
        if has_hue:
            # A channel is v - chroma·w(k), k moving by 6 per turn of hue.
            grads[0] = -6 * (grad * saved["hue_slope"]).sum(dim=(1, 2, 3))
        return (None, *(g if present else None for g, present in zip(grads, ctx.has, strict=True)))


def srgb_to_linear(images: torch.Tensor) -> torch.Tensor:
    """Decode sRGB values in [0, 1] (any shape) to linear light (IEC 61966-2-1), elementwise."""
    # The power branch sees only values above its threshold: pow's gradient at 0 would be inf · 0 = NaN.
    power = ((images.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(images <= 0.04045, images / 12.92, power)


def linear_to_srgb(images: torch.Tensor) -> torch.Tensor:
    """Encode linear light in [0, 1] (any shape) as sRGB values (IEC 61966-2-1), elementwise."""
    power = 1.055 * images.clamp_min(0.0031308) ** (1 / 2.4) - 0.055
    # Rounding: 1.055 · 1 - 0.055 can come out a hair above 1.
    return torch.where(images <= 0.0031308, images * 12.92, power).clamp(max=1)


def adjust_gain(images: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Multiply each RGB channel of images (N, 3, H, W) in [0, 1] by 1 + gain (N, 3) in linear light, clipped.

    The white-balance change a new illuminant makes: sRGB is decoded to linear light, channel c is scaled by
    1 + gain[:, c], clipped to [0, 1] (the sensor saturates) and re-encoded. gain = 0 is the identity.
    """
    if images.shape[1] != 3 or gain.shape != (images.shape[0], 3):
        raise ValueError(
            f"gain needs RGB images (N, 3, H, W) and gains (N, 3), got {tuple(images.shape)} and {tuple(gain.shape)}"
        )
    linear = srgb_to_linear(images.clamp(0, 1)) * (1 + gain)[:, :, None, None]
    return linear_to_srgb(linear.clamp(0, 1))


# ----------------------------------------------------------------------------------------------------------------
# Composition


class TransformStack:
    """Several families applied in one pass to per-sample parameters (N, D).

    The columns of the parameter tensor follow ``param_names``: the families in the order given, each
    contributing its own parameter dimensions. Colour families act first (one fused pass); crop, the geometric
    families and flip then act together in one resampling (see ``view_grid_matrix``).

    Args:
        names: family names, e.g. ``("crop", "rotation", "hue")``; no duplicates; none for the identity.
        padding_mode: how geometric transforms fill pixels from outside the image: ``"zeros"``, ``"border"``
            or ``"reflection"``.
        output_size: the views' (H, W); None keeps the input's size.
    """

    def __init__(
        self, names: Sequence[str], padding_mode: str = "zeros", output_size: tuple[int, int] | None = None
    ) -> None:
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
        self.output_size = output_size
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

    @property
    def interval_families(self) -> tuple[Family, ...]:
        """The families parameterised by intervals (``FAMILIES``), in order."""
        return tuple(f for f in self.families if f.name in FAMILIES)

    def bounds(self) -> tuple[list[float], list[float]]:
        """Per-dimension valid (low, high) bounds of the interval families, each a list of their D dimensions."""
        low = [f.bounds[0] for f in self.interval_families for _ in f.params]
        high = [f.bounds[1] for f in self.interval_families for _ in f.params]
        return low, high

    def periodic(self) -> list[bool]:
        """Per dimension of the interval families, whether it is periodic (see ``Family.periodic``)."""
        return [f.periodic for f in self.interval_families for _ in f.params]

    def init_half_widths(self) -> list[float]:
        """Per-dimension half-width of the interval a learned augmenter starts from (interval families)."""
        return [f.init_half_width for f in self.interval_families for _ in f.params]

    def default_entropy_range(self, widths: dict[str, tuple[float, float]] | None = None) -> tuple[float, float]:
        """The default [Hmin, Hmax] of the interval families: Σ over dimensions of log(narrow width),
        log(wide width) (see FAMILIES); ``widths`` replaces some families' (narrow, wide) widths."""
        widths = widths or {}
        pairs = [(widths.get(f.name, f.entropy_widths), len(f.params)) for f in self.interval_families]
        lo = sum(math.log(w[0]) * dims for w, dims in pairs)
        hi = sum(math.log(w[1]) * dims for w, dims in pairs)
        return lo, hi

    def columns(self, name: str) -> slice:
        """The parameter columns of family ``name``."""
        return self._columns[name]

    def check_channels(self, channels: int) -> None:
        if self.needs_rgb and channels != 3:
            rgb = [f.name for f in self.families if f.needs_rgb]
            raise ValueError(f"transforms {rgb} need 3-channel RGB images, got {channels} channel(s)")

    @property
    def resamples(self) -> bool:
        """Whether the stack moves pixels (crop, flip or a geometric family), i.e. needs a resampling."""
        return any(n in self._columns for n in ("crop", "flip", *GEOMETRIC)) or self.output_size is not None

    def grid_matrix(self, params: torch.Tensor, in_size: tuple[int, int]) -> torch.Tensor:
        """The affine maps (N, 2, 3) from each view's normalised coordinates to the input's (``view_grid_matrix``)
        for params (N, D) and inputs of size (H, W)."""
        p = {name: params[:, cols] for name, cols in self._columns.items()}
        return view_grid_matrix(
            in_size,
            params.shape[0],
            reference=params if params.is_floating_point() else params.float(),
            box=p.get("crop"),
            flip=p["flip"][:, 0] if "flip" in p else None,
            angle=p["rotation"][:, 0] if "rotation" in p else None,
            translation=p.get("translation"),
            log_scale=p["scale"][:, 0] if "scale" in p else None,
        )

    def colour(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply the colour families only: images (N, C, H, W), params (N, D)."""
        p = {name: params[:, cols] for name, cols in self._columns.items()}
        if "gain" in p:  # first: a change of the light falling on the scene, before any camera-side edit
            images = adjust_gain(images, p["gain"].to(images.dtype))
        hsv = [p[name][:, 0] if name in p else None for name in ("hue", "saturation", "value")]
        contrast = p["contrast"][:, 0] if "contrast" in p else None
        local = {base: p[name] for name, base in LOCAL_FAMILIES.items() if name in p}
        fused = images.shape[1] == 3 and not images.requires_grad and params.requires_grad and torch.is_grad_enabled()
        if fused and not local and (contrast is not None or any(t is not None for t in hsv)):
            # The usual training step: fixed images, learned parameters. Same values, a cheaper backward pass.
            return _ParamColour.apply(images, *hsv, contrast)
        if any(n in p for n in ("hue", "saturation", "value")):
            images = adjust_hsv(
                images,
                hue=p["hue"][:, 0] if "hue" in p else None,
                saturation=p["saturation"][:, 0] if "saturation" in p else None,
                value=p["value"][:, 0] if "value" in p else None,
            )
        if local:  # the spatially varying changes, after the global ones (which they refine), before contrast
            fields = {base: local_field(d.to(images.dtype), tuple(images.shape[-2:])) for base, d in local.items()}
            images = adjust_hsv(images, **fields)
        if "contrast" in p:
            images = adjust_contrast(images, p["contrast"][:, 0])
        return images

    def __call__(self, images: torch.Tensor, params: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the stack: images (N, C, H, W), params (N, D) → views (N, C, h, w) (h, w: ``output_size``).

        ``theta``: the views' maps (N, 2, 3) when already computed (``grid_matrix``), else computed here."""
        images = self.colour(images, params)
        if self.resamples:
            if theta is None:
                theta = self.grid_matrix(params.to(images.dtype), tuple(images.shape[-2:]))
            # Bilinear weights sum to 1 only up to rounding: an all-white patch can come out at 1 + 1e-7.
            images = resample(images, theta, self.output_size, self.padding_mode).clamp(0, 1)
        return images

    def __repr__(self) -> str:
        return f"TransformStack({self.names!r}, padding_mode={self.padding_mode!r})"
