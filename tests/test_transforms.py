"""Transform families: identity, directions and units, colour semantics, bounds, batching, gradients, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import structured_images
from instaaug import InstaAug, RandomAugment
from instaaug.baselines import Augerino
from instaaug.data import lighting
from instaaug.transforms import (
    FAMILIES,
    LOCAL_ANCHORS,
    LOCAL_FAMILIES,
    TransformStack,
    adjust_gain,
    adjust_hsv,
    affine_matrix,
    get_family,
    local_field,
    srgb_to_linear,
    warp,
)

ALL = tuple(FAMILIES)
NON_RGB = tuple(name for name, f in FAMILIES.items() if not f.needs_rgb)


def params_for(stack: TransformStack, values: dict[str, float | tuple[float, ...]], n: int = 1) -> torch.Tensor:
    """An (n, D) parameter tensor for ``stack``, zero except for the families named in ``values``."""
    p = torch.zeros(n, stack.dim)
    for name, v in values.items():
        p[:, stack.columns(name)] = torch.tensor(v if isinstance(v, tuple) else (v,), dtype=torch.float32)
    return p


def single_pixel(size: int = 9, row: int = 4, col: int = 6) -> torch.Tensor:
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


def bright_pixels(img: torch.Tensor) -> list[tuple[int, int]]:
    return [tuple(rc) for rc in (img[0, 0] > 0.5).nonzero().tolist()]


def random_params(stack: TransformStack, n: int, fraction: float = 0.8, seed: int = 0) -> torch.Tensor:
    """Per-sample parameters uniformly within ``fraction`` of every family's bounds."""
    g = torch.Generator().manual_seed(seed)
    low, high = (torch.tensor(b) for b in stack.bounds())
    u = torch.rand(n, stack.dim, generator=g)
    return fraction * (low + u * (high - low))


# ------------------------------------------------------------------------------------------------------------------
# Identity


@pytest.mark.parametrize("name", ALL)
def test_zero_params_is_identity(name):
    x = structured_images(3, 3, 12)
    stack = TransformStack((name,))
    out = stack(x, torch.zeros(3, stack.dim))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_zero_params_is_identity_for_all_families_stacked():
    x = structured_images(3, 3, 12)
    stack = TransformStack(ALL)
    torch.testing.assert_close(stack(x, torch.zeros(3, stack.dim)), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NON_RGB)
def test_zero_params_is_identity_on_single_channel(name):
    x = structured_images(2, 1, 10)
    stack = TransformStack((name,))
    torch.testing.assert_close(stack(x, torch.zeros(2, stack.dim)), x, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Geometry: directions and units


@pytest.mark.parametrize(
    ("angle", "expected"),
    [(math.pi / 2, (2, 4)), (-math.pi / 2, (6, 4)), (math.pi, (4, 2))],
)
def test_rotation_is_counter_clockwise_as_displayed(angle, expected):
    # A bright pixel two columns right of the centre (4, 4); rows grow downward, so "above" is a smaller row.
    stack = TransformStack(("rotation",))
    out = stack(single_pixel(), torch.tensor([[angle]]))
    assert bright_pixels(out) == [expected]


@pytest.mark.parametrize(
    ("shift", "expected"), [((1 / 9, 0.0), (4, 7)), ((0.0, 1 / 9), (5, 6)), ((-2 / 9, 0.0), (4, 4))]
)
def test_translation_units_and_direction(shift, expected):
    # +x moves content right by x·W pixels, +y moves it down by y·H pixels.
    stack = TransformStack(("translation",))
    out = stack(single_pixel(), torch.tensor([shift]))
    assert bright_pixels(out) == [expected]


def test_translation_is_a_fraction_of_width_and_height_on_non_square_images():
    x = torch.zeros(1, 1, 8, 12)  # H = 8, W = 12
    x[0, 0, 3, 5] = 1.0
    stack = TransformStack(("translation",))
    assert bright_pixels(stack(x, torch.tensor([[1 / 12, 0.0]]))) == [(3, 6)]
    assert bright_pixels(stack(x, torch.tensor([[0.0, 1 / 8]]))) == [(4, 5)]


def test_scale_is_about_the_centre_by_exp_of_the_parameter():
    # log 2 doubles distances from the centre (4, 4): a pixel two columns right of it lands four columns right.
    out = TransformStack(("scale",))(single_pixel(), torch.tensor([[math.log(2)]]))
    assert out[0, 0, 4].argmax().item() == 8
    assert out[0, 0, 4, 8].item() == pytest.approx(1.0, abs=1e-5)


def test_positive_scale_enlarges_negative_shrinks():
    x = torch.zeros(1, 1, 33, 33)
    x[..., 12:21, 12:21] = 1.0  # a 9×9 square at the centre
    stack = TransformStack(("scale",))
    mass = x.sum()
    bigger = stack(x, torch.tensor([[math.log(1.5)]])).sum()
    smaller = stack(x, torch.tensor([[-math.log(1.5)]])).sum()
    assert bigger / mass == pytest.approx(1.5**2, rel=0.1)
    assert smaller / mass == pytest.approx(1.5**-2, rel=0.1)


def test_geometric_stack_is_a_single_resampling():
    x = structured_images(2, 3, 16)
    angle = torch.tensor([0.7, -0.4])
    shift = torch.tensor([[0.13, -0.07], [-0.11, 0.09]])  # fractional pixel shifts: resampling blurs
    stack = TransformStack(("rotation", "translation"))
    together = stack(x, torch.cat([angle[:, None], shift], 1))

    composed = warp(x, affine_matrix((16, 16), angle=angle, translation=shift))
    torch.testing.assert_close(together, composed, atol=5e-6, rtol=0)  # kornia's warp vs our grid: rounding only

    rotated = TransformStack(("rotation",))(x, angle[:, None])
    twice = TransformStack(("translation",))(rotated, shift)
    assert (twice - together).abs().max() > 0.05  # two resamplings differ from the one the stack does


def test_column_order_follows_family_order():
    x = structured_images(2, 3, 12)
    a = TransformStack(("translation", "hue", "rotation"))
    b = TransformStack(("rotation", "translation", "hue"))
    assert a.param_names == ("translate_x", "translate_y", "hue", "rotation")
    values = {"rotation": 0.5, "translation": (0.1, -0.2), "hue": 0.2}
    torch.testing.assert_close(a(x, params_for(a, values, 2)), b(x, params_for(b, values, 2)), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Colour


def test_hue_half_turn_twice_returns_the_image():
    x = structured_images(2, 3, 8)
    stack = TransformStack(("hue",))
    half = torch.full((2, 1), 0.5)
    once = stack(x, half)
    assert (once - x).abs().max() > 0.1
    torch.testing.assert_close(stack(once, half), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("turns", "expected"), [(1 / 3, (0.0, 1.0, 0.0)), (2 / 3, (0.0, 0.0, 1.0)), (-1 / 3, (0, 0, 1))]
)
def test_hue_shift_maps_red_to_green_and_blue(turns, expected):
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    out = TransformStack(("hue",))(red, torch.tensor([[turns]]))
    target = torch.tensor(expected, dtype=torch.float32)[None, :, None, None].expand_as(red)
    torch.testing.assert_close(out, target, atol=1e-5, rtol=0)


def test_saturation_minus_one_gives_grey_with_value_kept():
    x = structured_images(2, 3, 8)
    out = TransformStack(("saturation",))(x, torch.full((2, 1), -1.0))
    torch.testing.assert_close(out, out[:, :1].expand_as(out), atol=1e-6, rtol=0)  # all channels equal
    torch.testing.assert_close(out[:, 0], x.max(dim=1).values, atol=1e-5, rtol=0)  # HSV value unchanged


def test_value_scales_rgb_and_single_channel_images():
    x = structured_images(2, 3, 8) * 0.6  # ≤ 0.57 so ×1.5 does not clip
    out = TransformStack(("value",))(x, torch.tensor([[0.5], [-0.5]]))
    torch.testing.assert_close(out[0], x[0] * 1.5, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1] * 0.5, atol=1e-5, rtol=0)
    grey = structured_images(1, 1, 8)
    torch.testing.assert_close(TransformStack(("value",))(grey, torch.tensor([[0.2]])), (grey * 1.2).clamp(0, 1))


def test_contrast_minus_one_gives_flat_image_at_mean_grey():
    x = structured_images(2, 3, 8)
    out = TransformStack(("contrast",))(x, torch.full((2, 1), -1.0))
    weights = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    mean_grey = (x * weights).sum(1).mean(dim=(1, 2))
    torch.testing.assert_close(out, mean_grey[:, None, None, None].expand_as(x), atol=1e-5, rtol=0)


def test_contrast_scales_distance_from_mean_grey():
    x = 0.4 + 0.2 * structured_images(1, 1, 8)  # in [0.41, 0.59]: ×1.5 deviation stays inside [0, 1]
    out = TransformStack(("contrast",))(x, torch.tensor([[0.5]]))
    mean = x.mean()
    torch.testing.assert_close(out - mean, (x - mean) * 1.5, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["value", "contrast"])
def test_colour_outputs_are_clipped_to_unit_interval(name):
    x = structured_images(2, 3, 8)
    out = TransformStack((name,))(x, torch.ones(2, 1))
    assert out.min() >= 0 and out.max() <= 1
    assert out.max() == pytest.approx(1.0, abs=1e-6)  # some pixel saturates: clipping took place


def test_saturation_is_clipped_at_full_saturation():
    x = structured_images(2, 3, 8)
    out = TransformStack(("saturation",))(x, torch.ones(2, 1))
    assert out.min() >= 0 and out.max() <= 1
    # S = 1 - min/max is clipped to 1, so the smallest channel of some pixels becomes exactly 0.
    assert out.min(dim=1).values.min() == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(out.max(dim=1).values, x.max(dim=1).values, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Bounds, batching, dtype


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fraction=st.floats(0.0, 1.0))
def test_all_families_stay_finite_and_in_unit_interval(seed, fraction):
    stack = TransformStack(ALL)
    x = structured_images(3, 3, 8, seed=seed % 1000)
    out = stack(x, random_params(stack, 3, fraction, seed))
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_extreme_images_stay_in_unit_interval(seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 3, 8, 8, generator=g) > 0.5).float()  # only 0 and 1: black, white, pure colours
    stack = TransformStack(ALL)
    out = stack(x, random_params(stack, 2, 1.0, seed))
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_batched_application_equals_per_sample_application():
    stack = TransformStack(ALL)
    x = structured_images(5, 3, 12)
    p = random_params(stack, 5, 0.7)
    batched = stack(x, p)
    looped = torch.cat([stack(x[i : i + 1], p[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, looped, atol=1e-5, rtol=0)
    assert (batched[0] - batched[1]).abs().max() > 0.01  # different parameters did different things


def test_float64_in_float64_out():
    stack = TransformStack(ALL)
    x = structured_images(2, 3, 8)
    p = random_params(stack, 2, 0.5)
    out = stack(x.double(), p.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), stack(x, p), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("name", ALL)
def test_gradients_wrt_params_and_images_are_finite_and_nonzero(name):
    stack = TransformStack((name,))
    x = structured_images(3, 3, 12).requires_grad_(True)
    p = torch.full((3, stack.dim), 0.2, requires_grad=True)
    weight = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    (stack(x, p) * weight).sum().backward()
    assert torch.isfinite(p.grad).all()
    assert (p.grad.abs() > 1e-4).all(), p.grad
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 1e-3


def test_gradients_of_full_stack_are_finite_with_flat_grey_regions():
    # Grey and black pixels are where the HSV conversion is singular (undefined hue).
    stack = TransformStack(ALL)
    x = structured_images(2, 3, 12)
    x[:, :, :4] = 0.5
    x[:, :, 4:6] = 0.0
    x.requires_grad_(True)
    p = random_params(stack, 2, 0.3).requires_grad_(True)
    stack(x, p).square().sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(x.grad).all()
    assert (p.grad.abs() > 0).all()


# ------------------------------------------------------------------------------------------------------------------
# Errors


def test_unknown_family_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown transform 'shear'.*rotation"):
        TransformStack(("rotation", "shear"))
    with pytest.raises(ValueError, match="known transforms"):
        get_family("blur")


def test_duplicate_families_rejected():
    with pytest.raises(ValueError, match="repeat"):
        TransformStack(("hue", "rotation", "hue"))


def test_empty_stack_is_the_identity_and_bad_padding_rejected():
    x = torch.rand(2, 3, 8, 8)
    stack = TransformStack(())
    assert stack.dim == 0 and stack.param_names == ()
    assert torch.equal(stack(x, x.new_zeros(2, 0)), x)
    with pytest.raises(ValueError, match="padding_mode"):
        TransformStack(("rotation",), padding_mode="wrap")


@pytest.mark.parametrize("name", ["hue", "saturation"])
def test_hue_and_saturation_need_rgb(name):
    x = structured_images(2, 1, 8)
    stack = TransformStack((name,))
    with pytest.raises(ValueError, match="3-channel"):
        stack(x, torch.zeros(2, 1))
    with pytest.raises(ValueError, match="3-channel"):
        stack.check_channels(1)
    with pytest.raises(ValueError, match="3-channel"):
        adjust_hsv(x, **{name: torch.zeros(2)})


def test_single_name_string_is_one_family():
    stack = TransformStack("translation")
    assert stack.names == ("translation",) and stack.dim == 2


def test_closed_form_hsv_matches_kornias_round_trip():
    """Hue, saturation and value in closed form give the HSV round trip's result, on grey, black, saturated and
    tied pixels too, and keep gradients finite."""
    from kornia.color import hsv_to_rgb, rgb_to_hsv

    from instaaug.transforms import adjust_hsv

    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 12, 12, generator=g)
    x[:8] = x[:8, :1].expand(-1, 3, -1, -1)  # grey
    x[8:16, 0], x[8:16, 1] = 1.0, 0.0  # saturated
    x[16:20] = 0.0  # black
    x[20:24, 0] = x[20:24, 1]  # ties for the largest channel
    x[24:28] = 1.0  # white

    def round_trip(images, hue=None, saturation=None, value=None):
        h, s, v = rgb_to_hsv(images).unbind(1)
        if hue is not None:
            h = torch.remainder(h + 2 * math.pi * hue[:, None, None], 2 * math.pi)
        if saturation is not None:
            s = (s * (1 + saturation)[:, None, None]).clamp(0, 1)
        if value is not None:
            v = (v * (1 + value)[:, None, None]).clamp(0, 1)
        return hsv_to_rgb(torch.stack((h, s, v), 1))

    n = x.shape[0]
    hue = torch.rand(n, generator=g) - 0.5
    sat, val = torch.rand(n, generator=g) * 2 - 1, torch.rand(n, generator=g) * 2 - 1
    for kwargs in ({"hue": hue}, {"saturation": sat}, {"value": val}, {"hue": hue, "saturation": sat, "value": val}):
        assert (adjust_hsv(x, **kwargs) - round_trip(x, **kwargs)).abs().max() < 1e-5, list(kwargs)
    params = {k: v.clone().requires_grad_() for k, v in {"hue": hue, "saturation": sat, "value": val}.items()}
    images = x.clone().requires_grad_()
    adjust_hsv(images, **params).square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (images, *params.values()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_colour_of_fixed_images_has_the_same_values_and_parameter_gradients_as_autograd(dtype):
    # Fixed images and learned parameters (the training step) take a fused backward pass; images that need a
    # gradient take autograd's path. Both give the same views, bit for bit, and the same parameter gradients, for
    # every subset of the HSV and contrast families, on random pixels plus grey, black, white, saturated pixels
    # and ties between channels.
    torch.manual_seed(0)
    x = torch.rand(16, 3, 9, 11, dtype=dtype)
    x[0] = 0.5
    x[1, :, :3] = 0
    x[2, 0], x[2, 1:] = 1, 0
    x[3] = 1
    x[4, :, 0, 0] = torch.tensor([1.0, 1.0, 0.2])
    names = ("hue", "saturation", "value", "contrast")
    for r in range(1, 5):
        for families in itertools.combinations(names, r):
            stack = TransformStack(("rotation", *families))
            params = (torch.rand(16, 1 + r, dtype=dtype) - 0.5) * 1.6
            upstream = torch.randn(16, 3, 9, 11, dtype=dtype)
            fused, reference = params.clone().requires_grad_(), params.clone().requires_grad_()
            got = stack.colour(x, fused)
            assert got.grad_fn.name() == "_ParamColourBackward"
            want = stack.colour(x.clone().requires_grad_(), reference)
            assert torch.equal(got, want.detach()), families
            (got * upstream).sum().backward()
            (want * upstream).sum().backward()
            tolerance = 1e-12 if dtype == torch.float64 else 1e-6
            scale = reference.grad.abs().max()
            torch.testing.assert_close(fused.grad, reference.grad, atol=tolerance * scale, rtol=0, msg=str(families))
            assert fused.grad[:, 0].abs().max() == 0  # rotation does not act on colour


# ------------------------------------------------------------------------------------------------------------------
# Local (spatially varying) colour families


def test_local_field_weights_sum_to_one_and_peak_at_their_anchor():
    size = (24, 32)
    for k, (ax, ay) in enumerate(LOCAL_ANCHORS):
        field = local_field(torch.eye(len(LOCAL_ANCHORS))[k : k + 1].double(), size)[0, 0]
        row, col = divmod(int(field.argmax()), size[1])
        # The pixel nearest the anchor holds almost all of the anchor's weight; the opposite corner almost none.
        assert abs((row + 0.5) / size[0] - ay) <= 1 / size[0] and abs((col + 0.5) / size[1] - ax) <= 1 / size[1]
        assert field.max() > 0.95 and field[size[0] - 1 - row, size[1] - 1 - col] < 0.05
    delta = torch.rand(5, len(LOCAL_ANCHORS), dtype=torch.float64)
    total = sum(local_field(torch.eye(4, dtype=torch.float64)[k : k + 1], size) for k in range(4))
    assert torch.allclose(total, torch.ones_like(total))  # a partition of unity
    constant = local_field(delta[:, :1].expand(-1, 4), size)
    assert torch.allclose(constant, delta[:, :1, None, None].expand_as(constant))
    with pytest.raises(ValueError, match="delta must be"):
        local_field(torch.zeros(2, 3), size)


def test_local_family_with_equal_anchors_is_its_global_family_and_zero_is_the_identity():
    images = torch.rand(6, 3, 20, 20)
    images[0] = 0.5  # grey
    images[1, 0], images[1, 1:] = 1.0, 0.0  # saturated red
    for local, base in LOCAL_FAMILIES.items():
        assert FAMILIES[local].params == tuple(f"{base}_{r}{c}" for r in "01" for c in "01")
        delta = torch.empty(6).uniform_(-0.4, 0.4)
        same = TransformStack((local,))(images, delta[:, None].expand(-1, 4).contiguous())
        assert torch.allclose(same, TransformStack((base,))(images, delta[:, None]), atol=1e-5), local
        identity = TransformStack((local,))(images, torch.zeros(6, 4))
        assert torch.allclose(identity, images, atol=1e-6)  # the hue sector rebuild rounds at 1e-7


def test_local_value_brightens_only_around_its_anchor():
    grey = torch.full((1, 3, 32, 32), 0.4)
    top_left = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    out = TransformStack(("local_value",))(grey, top_left)
    assert out[0, :, 8, 8].mean() == pytest.approx(0.4 * 1.5, abs=0.02)  # the anchor (0.25, 0.25)
    assert out[0, :, 24, 24].mean() == pytest.approx(0.4, abs=0.01)  # the opposite anchor
    assert (out >= grey - 1e-6).all()


def test_local_colour_is_differentiable_in_its_anchor_parameters():
    images = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    stack = TransformStack(("local_hue", "local_saturation"))
    params = torch.empty(2, 8, dtype=torch.float64).uniform_(-0.2, 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: stack(images, p), (params,))


# ----------------------------------------------------------------------------------------------------------------
# The gain family


def test_gain_is_an_rgb_colour_family() -> None:
    family = FAMILIES["gain"]
    assert family.params == ("gain_r", "gain_g", "gain_b") and family.kind == "colour" and family.needs_rgb
    with pytest.raises(ValueError, match="need 3-channel"):
        TransformStack(("gain",)).check_channels(1)


def test_gain_is_the_identity_at_zero_and_acts_per_channel_in_linear_light() -> None:
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(adjust_gain(x, torch.zeros(3, 3)), x, atol=1e-5, rtol=0)
    gain = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.5, 0.0], [0.0, 0.0, 0.25]])
    out = adjust_gain(x, gain)
    for i in range(3):
        changed = gain[i] != 0
        torch.testing.assert_close(out[i, ~changed], x[i, ~changed], atol=1e-5, rtol=0)
        expected = (srgb_to_linear(x[i, changed]) * (1 + gain[i, changed]).view(-1, 1, 1)).clamp(0, 1)
        torch.testing.assert_close(srgb_to_linear(out[i, changed]), expected, atol=1e-5, rtol=1e-4)
    # The family applies the same operation as the light renderer.
    torch.testing.assert_close(out, lighting.render(x, 1 + gain), atol=1e-6, rtol=0)


def test_gain_gradients_flow_and_it_composes_with_hue() -> None:
    x = torch.rand(4, 3, 8, 8) * 0.9 + 0.05
    params = torch.zeros(4, 4, requires_grad=True)  # hue, gain_r, gain_g, gain_b
    stack = TransformStack(("hue", "gain"))
    out = stack(x, params + torch.tensor([0.1, 0.2, -0.1, 0.05]))
    out.sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all() and bool((params.grad[:, 1:] != 0).all())
    # The gain acts first (the light), then hue.
    p = torch.tensor([0.1, 0.2, -0.1, 0.05]).expand(4, 4)
    expected = adjust_hsv(adjust_gain(x, p[:, 1:]), hue=p[:, 0])
    torch.testing.assert_close(out.detach(), expected)


@pytest.mark.parametrize("make", [InstaAug, Augerino, RandomAugment])
def test_gain_works_in_every_augmenter(make: type) -> None:
    torch.manual_seed(0)
    aug = make(("hue", "saturation", "value", "contrast", "gain"))
    out = aug(torch.rand(2, 3, 16, 16), n_copies=2)
    assert out.images.shape == (4, 3, 16, 16) and out.params.shape == (4, 7)
    assert bool(out.images.isfinite().all())
