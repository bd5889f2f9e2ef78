"""Property-based checks (hypothesis) of every transform and distribution over shapes, dtypes and parameter ranges:
finite outputs, bounds respected, the identity at zero parameters."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from instaaug.distributions import CropCategorical, UniformCrops, UniformRanges
from instaaug.networks import UniformRangeHead
from instaaug.transforms import (
    FAMILIES,
    TransformStack,
    adjust_contrast,
    adjust_hsv,
    affine_matrix,
    crop_resize,
    warp,
)

FAST = settings(max_examples=25, deadline=None, derandomize=True)
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16])
EXACT_DTYPES = st.sampled_from([torch.float32, torch.float64])
CHANNELS = st.sampled_from([1, 3])
PADDINGS = st.sampled_from(["zeros", "border", "reflection"])
#: Identity tolerance per dtype: resampling and the HSV round trip are exact up to rounding (and kornia's 1e-8
#: guard against division by zero in RGB→HSV).
ATOL = {torch.float32: 1e-5, torch.float64: 1e-7, torch.bfloat16: 0.05}


@st.composite
def images(draw, dtypes=DTYPES, channels=CHANNELS):
    """A batch (N, C, H, W) in [0, 1], with saturated extremes (0 and 1) mixed into random values."""
    n, c = draw(st.integers(1, 3)), draw(channels)
    h, w = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    mode = draw(st.sampled_from(["rand", "binary", "constant"]))
    if mode == "binary":
        x = (x > 0.5).double()
    elif mode == "constant":
        x = torch.full_like(x, draw(st.sampled_from([0.0, 0.5, 1.0])))
    return x.to(draw(dtypes))


def _params(draw, stack: TransformStack, n: int, dtype: torch.dtype, fraction: float) -> torch.Tensor:
    """Parameters (n, D) anywhere in the families' valid ranges (``fraction`` of the way to the bounds)."""
    low, high = stack.bounds()
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    u = torch.rand(n, stack.dim, generator=g, dtype=torch.float64)
    lo, hi = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    return ((lo + u * (hi - lo)) * fraction).to(dtype)


def _families(draw, channels: int) -> tuple[str, ...]:
    allowed = [name for name, f in FAMILIES.items() if channels == 3 or not f.needs_rgb]
    return tuple(draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=len(allowed), unique=True)))


def _finite_in_unit_interval(y: torch.Tensor, dtype: torch.dtype) -> None:
    assert y.dtype == dtype
    y = y.double()
    assert torch.isfinite(y).all()
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert y.min() >= -tol and y.max() <= 1 + tol, (float(y.min()), float(y.max()))


# ------------------------------------------------------------------------------------------------------------------
# Transforms


@FAST
@given(data=st.data(), x=images(), fraction=st.floats(0.0, 1.0))
def test_transform_stack_is_finite_and_in_range(data, x, fraction):
    stack = TransformStack(_families(data.draw, x.shape[1]), data.draw(PADDINGS))
    params = _params(data.draw, stack, x.shape[0], x.dtype, fraction)
    y = stack(x, params)
    assert y.shape == x.shape
    _finite_in_unit_interval(y, x.dtype)


@FAST
@given(data=st.data(), x=images())
def test_transform_stack_is_the_identity_at_zero(data, x):
    stack = TransformStack(_families(data.draw, x.shape[1]))
    y = stack(x, torch.zeros(x.shape[0], stack.dim, dtype=x.dtype))
    torch.testing.assert_close(y.double(), x.double(), atol=ATOL[x.dtype], rtol=0)


@FAST
@given(
    n=st.integers(1, 4),
    size=st.tuples(st.integers(2, 64), st.integers(2, 64)),
    dtype=EXACT_DTYPES,
    seed=st.integers(0, 2**31 - 1),
)
def test_affine_matrix_zero_is_identity_and_area_scales_with_zoom(n, size, dtype, seed):
    identity = affine_matrix(size, angle=torch.zeros(n, dtype=dtype))
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype).expand(n, 2, 3)
    torch.testing.assert_close(identity, expected, atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=g, dtype=dtype) * 2 - 1) * math.pi
    log_scale = (torch.rand(n, generator=g, dtype=dtype) * 2 - 1) * math.log(2)
    translation = torch.rand(n, 2, generator=g, dtype=dtype) - 0.5
    m = affine_matrix(size, angle=angle, translation=translation, log_scale=log_scale)
    assert torch.isfinite(m).all()
    torch.testing.assert_close(torch.linalg.det(m[:, :, :2]), torch.exp(2 * log_scale), atol=1e-5, rtol=1e-5)


@FAST
@given(x=images(), seed=st.integers(0, 2**31 - 1), padding=PADDINGS)
def test_warp_is_a_convex_combination_of_pixels(x, seed, padding):
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    m = affine_matrix(
        tuple(x.shape[-2:]),
        angle=((torch.rand(n, generator=g) * 2 - 1) * math.pi).to(x.dtype),
        translation=(torch.rand(n, 2, generator=g) - 0.5).to(x.dtype),
    )
    y = warp(x, m, padding).double()
    lo = 0.0 if padding == "zeros" else float(x.double().min())
    tol = 1e-2 if x.dtype == torch.bfloat16 else 1e-6
    assert torch.isfinite(y).all() and y.min() >= lo - tol and y.max() <= float(x.double().max()) + tol


@st.composite
def boxes(draw, n: int, dtype: torch.dtype):
    """Boxes (n, 4) (cx, cy, w, h): centres anywhere in [-0.5, 1.5], sizes in [0.01, 2] (partly outside is allowed)."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    centre = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 0.5
    size = 0.01 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 1.99
    return torch.cat((centre, size), 1).to(dtype)


@FAST
@given(data=st.data(), x=images(), out=st.tuples(st.integers(1, 10), st.integers(1, 10)))
def test_crop_resize_is_finite_and_within_the_image_values(data, x, out):
    padding = data.draw(PADDINGS)
    b = data.draw(boxes(x.shape[0], x.dtype))
    y = crop_resize(x, b, out, padding)
    assert y.shape == (*x.shape[:2], *out) and y.dtype == x.dtype
    y = y.double()
    lo = min(0.0, float(x.double().min())) if padding == "zeros" else float(x.double().min())
    tol = 1e-2 if x.dtype == torch.bfloat16 else 1e-6
    assert torch.isfinite(y).all() and y.min() >= lo - tol and y.max() <= float(x.double().max()) + tol


@FAST
@given(x=images())
def test_crop_resize_of_the_whole_image_is_the_identity(x):
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]], dtype=x.dtype).expand(x.shape[0], 4)
    torch.testing.assert_close(crop_resize(x, whole).double(), x.double(), atol=ATOL[x.dtype], rtol=0)


@FAST
@given(x=images(channels=st.just(3)), seed=st.integers(0, 2**31 - 1))
def test_adjust_hsv_and_contrast_stay_in_range(x, seed):
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]

    def draw(lo: float, hi: float) -> torch.Tensor:
        return (lo + torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo)).to(x.dtype)

    _finite_in_unit_interval(adjust_hsv(x, draw(-0.5, 0.5), draw(-1, 1), draw(-1, 1)), x.dtype)
    _finite_in_unit_interval(adjust_contrast(x, draw(-1, 1)), x.dtype)
    # A full turn of hue is the identity again.
    turned = adjust_hsv(x, hue=torch.full((n,), 1.0, dtype=x.dtype))
    torch.testing.assert_close(turned.double(), x.double(), atol=max(ATOL[x.dtype], 1e-4), rtol=0)


@FAST
@given(x=images())
def test_colour_ops_are_the_identity_at_zero(x):
    zero = torch.zeros(x.shape[0], dtype=x.dtype)
    if x.shape[1] == 3:
        torch.testing.assert_close(adjust_hsv(x, zero, zero, zero).double(), x.double(), atol=ATOL[x.dtype], rtol=0)
    torch.testing.assert_close(adjust_hsv(x, value=zero).double(), x.double(), atol=ATOL[x.dtype], rtol=0)
    torch.testing.assert_close(adjust_contrast(x, zero).double(), x.double(), atol=ATOL[x.dtype], rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Distributions


@FAST
@given(
    b=st.integers(1, 4),
    d=st.integers(1, 5),
    s=st.integers(1, 4),
    dtype=EXACT_DTYPES,
    seed=st.integers(0, 2**31 - 1),
    zero_width=st.booleans(),
)
def test_uniform_ranges_samples_lie_in_their_intervals(b, d, s, dtype, seed, zero_width):
    g = torch.Generator().manual_seed(seed)
    low = (torch.rand(b, d, generator=g, dtype=dtype) - 1) * 4
    high = low if zero_width else low + torch.rand(b, d, generator=g, dtype=dtype) * 4
    dist = UniformRanges(low, high, [f"p{i}" for i in range(d)])
    samples, log_prob = dist.sample_with_log_prob((s,), g)
    assert samples.shape == (s, b, d) and log_prob.shape == (s, b)
    assert (samples >= low).all() and (samples <= high).all()
    entropy = dist.entropy()
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()
    torch.testing.assert_close(log_prob, -entropy.expand(s, b))  # uniform: log p = -H everywhere inside
    outside = high + 1.0
    assert torch.isneginf(dist.log_prob(outside)).all()


@FAST
@given(b=st.integers(1, 3), dtype=EXACT_DTYPES, seed=st.integers(0, 2**31 - 1))
def test_uniform_ranges_at_zero_width_give_the_identity(b, dtype, seed):
    zero = torch.zeros(b, 3, dtype=dtype)
    dist = UniformRanges(zero, zero, ("rotation", "hue", "value"))
    assert (dist.rsample((2,), torch.Generator().manual_seed(seed)) == 0).all()


@st.composite
def crop_distributions(draw, dtype=EXACT_DTYPES):
    """A ``CropCategorical`` over a grid of disjoint candidates (with or without jitter), logits of any scale,
    some masked to -inf (never all)."""
    dtype = draw(dtype)
    k = draw(st.integers(1, 4))  # a k×k grid of cells
    b = draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    centres = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    side = 0.5 / k
    boxes = torch.stack((cx.flatten(), cy.flatten(), torch.full((k * k,), side), torch.full((k * k,), side)), 1)
    jitter = None
    if draw(st.booleans()):
        jitter = torch.tensor([[0.2 / k, 0.2 / k, 0.1]], dtype=torch.float64).expand(k * k, 3).clone()
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4]))
    logits = torch.randn(b, k * k, generator=g, dtype=torch.float64) * scale
    if k > 1 and draw(st.booleans()):
        mask = torch.rand(b, k * k, generator=g) < 0.5
        mask[:, 0] = False  # never every candidate
        logits = logits.masked_fill(mask, -torch.inf)
    return CropCategorical(logits.to(dtype), boxes.to(dtype), None if jitter is None else jitter.to(dtype))


@FAST
@given(dist=crop_distributions(), s=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_crop_categorical_samples_are_candidates_with_finite_log_prob(dist, s, seed):
    g = torch.Generator().manual_seed(seed)
    boxes, log_prob = dist.sample_with_log_prob((s,), g)
    b = dist.batch_shape[0]
    assert boxes.shape == (s, b, 4) and log_prob.shape == (s, b)
    assert torch.isfinite(boxes).all() and torch.isfinite(log_prob).all()
    # Samples come only from unmasked candidates, and log_prob of a sample agrees with the one returned.
    index = dist.sample_index((s,), torch.Generator().manual_seed(seed))
    assert torch.isfinite(dist.logits.gather(-1, index.T).T).all()
    torch.testing.assert_close(dist.log_prob(boxes), log_prob, atol=1e-4, rtol=1e-4)
    # Boxes stay inside their cell (jitter never crosses into a neighbour) and keep positive size.
    assert (boxes[..., 2:] > 0).all()


@FAST
@given(dist=crop_distributions())
def test_crop_categorical_entropy_is_finite_and_bounded(dist):
    entropy = dist.entropy()
    n = dist.num_candidates
    assert torch.isfinite(entropy).all()
    categorical = entropy - (dist.probs * dist.log_volume()).sum(-1)
    tol = 1e-6 if dist.logits.dtype == torch.float64 else 1e-4
    assert (categorical >= -tol).all() and (categorical <= math.log(n) + tol).all()
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones_like(entropy))
    # The entropy's gradient is finite even with masked candidates and huge logits.
    logits = dist.logits.detach().clone().requires_grad_(True)
    CropCategorical(logits, dist.boxes, dist.jitter).entropy().sum().backward()
    assert torch.isfinite(logits.grad).all()


@FAST
@given(
    lo=st.floats(0.01, 1.0),
    width=st.floats(0.0, 1.0),
    b=st.integers(1, 4),
    s=st.integers(1, 3),
    dtype=EXACT_DTYPES,
    seed=st.integers(0, 2**31 - 1),
)
def test_uniform_crops_lie_inside_the_image(lo, width, b, s, dtype, seed):
    hi = min(1.0, lo + width)
    dist = UniformCrops(lo, hi, b, torch.zeros((), dtype=dtype))
    boxes, log_prob = dist.sample_with_log_prob((s,), torch.Generator().manual_seed(seed))
    assert boxes.shape == (s, b, 4) and boxes.dtype == dtype
    cx, cy, w, h = boxes.unbind(-1)
    tol = 1e-6
    assert ((w >= lo - tol) & (w <= hi + tol) & (w == h)).all()
    assert ((cx - w / 2 >= -tol) & (cx + w / 2 <= 1 + tol) & (cy - h / 2 >= -tol) & (cy + h / 2 <= 1 + tol)).all()
    assert torch.isfinite(log_prob).all() and torch.isfinite(dist.entropy()).all()


@FAST
@given(b=st.integers(1, 3), dtype=EXACT_DTYPES, seed=st.integers(0, 2**31 - 1))
def test_full_size_uniform_crops_are_the_identity(b, dtype, seed):
    dist = UniformCrops(1.0, 1.0, b, torch.zeros((), dtype=dtype))
    boxes = dist.sample((2,), torch.Generator().manual_seed(seed))
    torch.testing.assert_close(boxes, torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=dtype).expand(2, b, 4))
    x = torch.rand(b, 3, 5, 7, dtype=dtype)
    torch.testing.assert_close(crop_resize(x, boxes[0]), x, atol=ATOL[dtype], rtol=0)


@FAST
@given(
    names=st.lists(st.sampled_from(sorted(FAMILIES)), min_size=1, max_size=4, unique=True),
    scale=st.sampled_from([0.0, 1.0, 100.0, 1e30]),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_uniform_range_head_keeps_intervals_inside_the_bounds(names, scale, symmetric, seed):
    stack = TransformStack(names)
    head = UniformRangeHead(stack.bounds(), stack.init_half_widths(), symmetric=symmetric)
    raw = torch.randn(3, head.out_dim, generator=torch.Generator().manual_seed(seed)) * scale
    low, high = head(raw)
    bound_low, bound_high = (torch.tensor(b) for b in stack.bounds())
    if symmetric:
        bound_low = bound_high = torch.minimum(-bound_low, bound_high)
        bound_low = -bound_low
    assert torch.isfinite(low).all() and torch.isfinite(high).all()
    assert (low >= bound_low - 1e-6).all() and (high <= bound_high + 1e-6).all()
    assert (low <= 0).all() and (high >= 0).all()  # every interval contains the identity
    assert (high - low >= head.min_width * (1 - 1e-5)).all()
    dist = UniformRanges(low, high, stack.param_names)
    assert torch.isfinite(dist.entropy()).all()
