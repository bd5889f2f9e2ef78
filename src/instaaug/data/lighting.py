"""Textures of real photographs under changing light: a small analogue of RawFooT (Cusano et al., 2016).

RawFooT photographs 68 food textures under 46 lighting conditions; a classifier trained under one daylight (D45) is
tested under all of them. This module builds the same kind of task from the colour photographs that installed
packages ship (``instaaug.data.photos.PHOTOGRAPHS``; no download):

* **classes**: the central square of each photograph, resized to ``photo_size`` pixels, is cut into a ``grid`` of
  regions; every region is a texture class.
* **train / test halves**: each region is cut into horizontal stripes of ``stripe`` rows; patches of even stripes
  are for training, of odd stripes for testing (RawFooT takes the upper and the lower half of each image; stripes
  keep the two halves alike in content on photographs that are not stationary textures). The right
  ``val_fraction`` of the training stripes is held out for validation patches, which share no pixel with training
  patches.
* **lighting** (``render``): the patch is decoded from sRGB to linear light, multiplied per channel by the
  illuminant's gain, clipped to [0, 1] (the sensor saturates) and re-encoded as sRGB. The photographs stand for
  the scene under the training light, so the training light's gain is (1, 1, 1): the camera is white-balanced for
  it, as RawFooT's camera settings were fixed for D45.
* **46 conditions** (``LIGHTS``, ids 1–46): 1 is the training light, a 4500 K black body ("D45-like");
  2–12 other black-body temperatures 2500–9500 K; 13–21 4500 K at 9 intensities 0.5–1.5; 22–28 seven
  temperature × intensity pairs; 29–38 ten coloured lights (pure red, green, blue, ...); 39–46 eight mixtures
  of a black body and a coloured light. Black-body colours come from the Planckian locus (Kim et al.'s cubic
  fit of the CIE 1931 chromaticity, 1667–25000 K) converted to linear sRGB and divided by 4500 K's.
* **easy / hard** (``LIGHT_GROUPS``): by chromatic distance from the training light, not by any model's accuracy:
  the distance is the norm of the log gains with their mean removed (intensity does not count),
  ``‖log g − mean(log g)‖₂``; a light is easy when it is at most ``EASY_DISTANCE`` (0.5: 23 easy, 23 hard, as
  in RawFooT), hard otherwise.

Everything is deterministic from the seed and generated in well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..transforms import linear_to_srgb, srgb_to_linear
from .photos import FOLDER_PHOTOS, PHOTOGRAPHS

#: The training light's colour temperature (kelvin): the white point the photographs stand for.
TRAIN_TEMPERATURE = 4500.0
#: A light is "easy" when its chromatic distance from the training light is at most this (log units).
EASY_DISTANCE = 0.5
#: Linear sRGB from CIE XYZ (D65 white; IEC 61966-2-1).
_XYZ_TO_LINEAR_SRGB = torch.tensor(
    [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]], dtype=torch.float64
)
#: Rec. 709 luminance weights of linear RGB: black bodies are scaled to the training light's luminance.
_LUMINANCE = torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64)


def planckian_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 chromaticity (x, y) of a black body at ``kelvin`` (1667–25000 K; Kim et al.'s cubic fit)."""
    if not 1667 <= kelvin <= 25000:
        raise ValueError(f"the Planckian fit covers 1667–25000 K, got {kelvin}")
    t = kelvin
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return x, y


def _blackbody_rgb(kelvin: float) -> torch.Tensor:
    """Linear sRGB (3,) float64 of a black body at ``kelvin`` with luminance Y = 1."""
    x, y = planckian_xy(kelvin)
    xyz = torch.tensor([x / y, 1.0, (1 - x - y) / y], dtype=torch.float64)
    return _XYZ_TO_LINEAR_SRGB @ xyz


def blackbody_gain(kelvin: float, intensity: float = 1.0) -> torch.Tensor:
    """The per-channel gain (3,) float64 of a black body at ``kelvin``, relative to the training light (4500 K):
    each linear channel divided by 4500 K's, then scaled to luminance ``intensity``."""
    rgb = _blackbody_rgb(kelvin) / _blackbody_rgb(TRAIN_TEMPERATURE)
    return rgb / float(_LUMINANCE @ rgb) * intensity


def coloured_gain(colour: Sequence[float], mean: float = 0.8) -> torch.Tensor:
    """The gain (3,) float64 of a coloured light of relative channel powers ``colour``, scaled so that the mean
    channel gain is ``mean`` (a pure red light (1, 0.1, 0.1) gives about (2.0, 0.2, 0.2))."""
    c = torch.tensor(colour, dtype=torch.float64)
    return c / c.mean() * mean


@dataclass(frozen=True)
class Light:
    """A lighting condition: ``id`` (1-based, as RawFooT's), a ``name`` and the linear-RGB ``gain`` (r, g, b)."""

    id: int
    name: str
    gain: tuple[float, float, float]

    @property
    def distance(self) -> float:
        """Chromatic distance from the training light: ‖log g − mean(log g)‖₂ (intensity does not count)."""
        logs = torch.tensor(self.gain, dtype=torch.float64).clamp_min(1e-3).log()
        return float((logs - logs.mean()).norm())

    @property
    def group(self) -> str:
        """``easy`` (distance ≤ ``EASY_DISTANCE``) or ``hard``."""
        return "easy" if self.distance <= EASY_DISTANCE else "hard"


_TEMPERATURES = (2500, 3000, 3500, 4000, 5000, 5500, 6000, 6500, 7500, 8500, 9500)
_INTENSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.35, 1.5)
_PAIRS = ((2500, 0.7), (3000, 1.3), (3500, 0.6), (5500, 1.4), (6500, 0.7), (7500, 1.25), (9500, 0.6))
_COLOURED = (
    ("red", (1.0, 0.1, 0.1)),
    ("green", (0.1, 1.0, 0.1)),
    ("blue", (0.1, 0.1, 1.0)),
    ("yellow", (1.0, 1.0, 0.15)),
    ("cyan", (0.15, 1.0, 1.0)),
    ("magenta", (1.0, 0.15, 1.0)),
    ("orange", (1.0, 0.5, 0.1)),
    ("amber", (1.0, 0.75, 0.35)),
    ("pink", (1.0, 0.55, 0.65)),
    ("teal", (0.2, 0.75, 0.65)),
)
#: Mixtures: (temperature, coloured light, the coloured light's share).
_MIXTURES = (
    (4500, "red", 0.5),
    (4500, "green", 0.5),
    (4500, "blue", 0.5),
    (6500, "magenta", 0.5),
    (2500, "blue", 0.5),
    (9500, "orange", 0.5),
    (4500, "cyan", 0.3),
    (3000, "teal", 0.4),
)


def _build_lights() -> tuple[Light, ...]:
    gains: list[tuple[str, torch.Tensor]] = [("4500K (training)", blackbody_gain(TRAIN_TEMPERATURE))]
    gains += [(f"{t}K", blackbody_gain(t)) for t in _TEMPERATURES]
    gains += [(f"4500K ×{k:g}", blackbody_gain(TRAIN_TEMPERATURE, k)) for k in _INTENSITIES]
    gains += [(f"{t}K ×{k:g}", blackbody_gain(t, k)) for t, k in _PAIRS]
    coloured = {name: coloured_gain(c) for name, c in _COLOURED}
    gains += list(coloured.items())
    gains += [(f"{t}K + {c} {s:g}", (1 - s) * blackbody_gain(t) + s * coloured[c]) for t, c, s in _MIXTURES]
    return tuple(
        Light(i + 1, name, tuple(round(float(v), 6) for v in gain))  # type: ignore[arg-type]
        for i, (name, gain) in enumerate(gains)
    )


#: The 46 lighting conditions, id order; ``LIGHTS[0]`` is the training light.
LIGHTS: tuple[Light, ...] = _build_lights()
TRAIN_LIGHT = 0
#: group name → 0-based indices into ``LIGHTS``.
LIGHT_GROUPS: dict[str, tuple[int, ...]] = {
    group: tuple(i for i, light in enumerate(LIGHTS) if light.group == group) for group in ("easy", "hard")
}
#: The order in which lights join the training set when ``k`` training lights are asked for (the Table 4
#: analogue): the training light, then black bodies far apart, a dim light and coloured lights.
TRAIN_LIGHT_ORDER: tuple[int, ...] = (0, 8, 2, 11, 12, 28, 30, 29)


def light_gains(indices: Sequence[int] | None = None) -> torch.Tensor:
    """The gains (L, 3) float32 of the lights at 0-based ``indices`` (default: all 46)."""
    chosen = range(len(LIGHTS)) if indices is None else indices
    return torch.tensor([LIGHTS[i].gain for i in chosen], dtype=torch.float32)


def render(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in sRGB [0, 1] lit by illuminants ``gains`` (3,) or (N, 3) in linear RGB.

    sRGB → linear, multiplied per channel by the gain, clipped to [0, 1], → sRGB. Returns (N, 3, H, W).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"render needs RGB images (N, 3, H, W), got {tuple(images.shape)}")
    gains = gains.to(images)
    if gains.dim() == 1:
        gains = gains.expand(images.shape[0], 3)
    if gains.shape != (images.shape[0], 3):
        raise ValueError(f"gains must be (3,) or (N, 3) = ({images.shape[0]}, 3), got {tuple(gains.shape)}")
    linear = srgb_to_linear(images.clamp(0, 1)) * gains[:, :, None, None]
    return linear_to_srgb(linear.clamp(0, 1))


@dataclass
class LightingData:
    """Patches under the training light, and how to light them.

    Attributes:
        train_images, val_images, test_images: (N, 3, P, P) sRGB in [0, 1], under the training light.
        train_labels, val_labels, test_labels: (N,) int64 class indices.
        class_names: ``<photo>-r<row>c<col>`` per class.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _square_photo(name: str, side: int) -> torch.Tensor:
    """The central square of photograph ``name``, resized to side × side: (3, side, side) in [0, 1]."""
    if name not in PHOTOGRAPHS:
        raise ValueError(f"unknown photograph {name!r}; known: {sorted(PHOTOGRAPHS)}")
    pixels = torch.as_tensor(PHOTOGRAPHS[name]()[..., :3].copy()).permute(2, 0, 1).float() / 255
    h, w = pixels.shape[1:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = pixels[None, :, top : top + s, left : left + s]
    return F.interpolate(square, size=(side, side), mode="bilinear", antialias=True)[0].clamp(0, 1)


def _cut(pixels: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, patch: int) -> torch.Tensor:
    """Patches (N, 3, patch, patch) of pixels (3, S, S) with top-left corners (ys, xs) (N,), by one gather."""
    offsets = torch.arange(patch)
    rows = (ys[:, None] + offsets)[:, :, None]  # (N, P, 1)
    cols = (xs[:, None] + offsets)[:, None, :]  # (N, 1, P)
    return pixels[:, rows, cols].permute(1, 0, 2, 3)


def make_lighting_dataset(
    *,
    photos: Sequence[str] = FOLDER_PHOTOS,
    grid: int = 2,
    photo_size: int = 384,
    patch: int = 32,
    stripe: int = 48,
    n_train: int = 150,
    n_val: int = 30,
    n_test: int = 20,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> LightingData:
    """Texture patches of real photographs (see the module docstring), under the training light.

    Args:
        photos: names in ``PHOTOGRAPHS``; each gives grid² classes.
        grid: regions per side of each photograph.
        photo_size: the side (pixels) the central square of each photograph is resized to.
        patch: patch side (pixels).
        stripe: stripe height (pixels), ≥ ``patch``; even stripes of a region train, odd ones test.
        n_train, n_val, n_test: patches per class.
        val_fraction: the right-hand fraction of each training stripe kept for validation patches.
        seed: the patch positions.
    Returns:
        a ``LightingData``; patch positions are uniform within the allowed areas, deterministic from ``seed``.
    """
    for key, value in (("grid", grid), ("photo_size", photo_size), ("patch", patch), ("stripe", stripe)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an int ≥ 1, got {value!r}")
    for key, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an int ≥ 1, got {value!r}")
    if not photos or len(set(photos)) != len(photos):
        raise ValueError(f"photos must be distinct names from {sorted(PHOTOGRAPHS)}, got {list(photos)}")
    region = photo_size // grid
    if stripe < patch or 2 * stripe > region:
        raise ValueError(
            f"need patch ≤ stripe ≤ region/2 (region = photo_size // grid = {region}), got patch={patch}, "
            f"stripe={stripe}"
        )
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    val_left = round(region * (1 - val_fraction))
    if val_left < patch or region - val_left < patch:
        raise ValueError(
            f"val_fraction={val_fraction} leaves a training or validation area narrower than a {patch}-pixel patch "
            f"(region {region} pixels wide)"
        )
    stripes = region // stripe
    even = torch.arange(0, stripes, 2)
    odd = torch.arange(1, stripes, 2)
    generator = torch.Generator().manual_seed(seed)

    def positions(count: int, stripe_ids: torch.Tensor, x_low: int, x_high: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Region-relative top-left corners: a stripe, then a place inside it (x in [x_low, x_high - patch]).
        pick = stripe_ids[torch.randint(len(stripe_ids), (count,), generator=generator)]
        ys = pick * stripe + torch.randint(stripe - patch + 1, (count,), generator=generator)
        xs = x_low + torch.randint(x_high - x_low - patch + 1, (count,), generator=generator)
        return ys, xs

    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    names: list[str] = []
    for name in photos:
        pixels = _square_photo(name, photo_size)
        for r in range(grid):
            for c in range(grid):
                label = len(names)
                names.append(f"{name}-r{r}c{c}")
                for split, count, ids, (x0, x1) in (
                    ("train", n_train, even, (0, val_left)),
                    ("val", n_val, even, (val_left, region)),
                    ("test", n_test, odd, (0, region)),
                ):
                    ys, xs = positions(count, ids, x0, x1)
                    parts[split].append(_cut(pixels, ys + r * region, xs + c * region, patch))
                    parts[split].append(torch.full((count,), label, dtype=torch.long))
    images = {k: torch.cat(v[0::2]) for k, v in parts.items()}
    labels = {k: torch.cat(v[1::2]) for k, v in parts.items()}
    return LightingData(
        images["train"],
        labels["train"],
        images["val"],
        labels["val"],
        images["test"],
        labels["test"],
        tuple(names),
    )


def lit_copies(images: torch.Tensor, light_indices: Sequence[int]) -> torch.Tensor:
    """Images (N, 3, H, W) each lit by one of ``light_indices`` in turn (image i by light i mod k): (N, 3, H, W).

    The training set of the Table 4 analogue: the same patches, spread evenly over k training lights."""
    if not light_indices:
        raise ValueError("light_indices must name at least one light")
    gains = light_gains(light_indices)
    which = torch.arange(images.shape[0]) % len(light_indices)
    return render(images, gains[which])


def mean_hsv(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean hue (turns, circular mean), saturation and value: images (N, 3, H, W) → (N, 3)."""
    v = images.amax(1)
    chroma = v - images.amin(1)
    s = torch.where(v > 0, chroma / v.clamp_min(1e-8), torch.zeros_like(v))
    r, g, b = images.unbind(1)
    # Hue angle from the opponent axes (the hexcone's hue up to <2° of distortion), averaged on the circle.
    angle = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    hue = torch.atan2(torch.sin(angle).mean((1, 2)), torch.cos(angle).mean((1, 2))) / (2 * math.pi)
    return torch.stack((torch.remainder(hue, 1.0), s.mean((1, 2)), v.mean((1, 2))), 1)
