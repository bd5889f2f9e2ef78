"""Targets follow the sampled transform: planted objects, exact inverses, dense TTA merges, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_aug
from instaaug import InstaAug, RandomAugment
from instaaug.distributions import UniformRanges
from instaaug.segmentation import segmentation_loss
from instaaug.targets import IGNORE_INDEX, Targets
from instaaug.transforms import TransformStack, resample
from instaaug.tta import MERGE_MODES, DenseTTAWrapper, merge_predictions

H, W = 40, 56
COMPOSITES = {
    "crop+rotation+scale+flip": (
        ("crop", "rotation", "scale", "flip"),
        {"crop": (0.6, 1.0), "rotation": 0.7, "scale": 0.3},
    ),
    "rotation+translation": (("rotation", "translation"), {"rotation": math.pi, "translation": 0.15}),
    "crop+flip+hue": (("crop", "flip", "hue"), {"crop": (0.5, 0.9), "hue": 0.3}),
}


def planted(batch: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) with one bright rectangle each (random place and size), its mask (label 3 on 0)
    and its box (B, 1, 4) in pixels."""
    g = torch.Generator().manual_seed(3)
    x = torch.full((batch, 3, H, W), 0.1)
    masks = torch.zeros(batch, 1, H, W, dtype=torch.long)
    boxes = torch.zeros(batch, 1, 4)
    for b in range(batch):
        w, h = int(torch.randint(16, 24, (), generator=g)), int(torch.randint(12, 17, (), generator=g))
        x0, y0 = int(torch.randint(10, W - 10 - w, (), generator=g)), int(torch.randint(8, H - 8 - h, (), generator=g))
        x[b, :, y0 : y0 + h, x0 : x0 + w] = 0.9
        masks[b, :, y0 : y0 + h, x0 : x0 + w] = 3
        boxes[b, 0] = torch.tensor([x0, y0, x0 + w, y0 + h], dtype=torch.float32)
    return x, masks, boxes


def augmenters() -> list[tuple[str, torch.nn.Module]]:
    out = [(name, RandomAugment(t, r)) for name, (t, r) in COMPOSITES.items()]
    learned = tiny_aug(
        ("crop", "rotation", "scale", "flip"), init_half_width=(0.8, 0.3), phi_size=(24, 24), levels=(1,)
    )
    return [*out, ("InstaAug crop+rotation+scale+flip", learned)]


AUGMENTERS = augmenters()


def tight_boxes(objects: torch.Tensor) -> torch.Tensor:
    """Boxes (N, 4) around the True pixels of (N, h, w), in pixel units (x1, y1 exclusive)."""
    cols, rows = objects.any(1), objects.any(2)
    ar_w, ar_h = torch.arange(objects.shape[2]), torch.arange(objects.shape[1])
    x0 = torch.where(cols, ar_w, objects.shape[2]).amin(1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(1)
    y0 = torch.where(rows, ar_h, objects.shape[1]).amin(1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(1)
    return torch.stack((x0, y0, x1, y1), -1).float()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ix = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    iy = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = ix * iy
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("name,aug", AUGMENTERS, ids=[n for n, _ in AUGMENTERS])
def test_planted_mask_and_box_follow_the_object(name: str, aug: torch.nn.Module) -> None:
    x, masks, boxes = planted()
    out = aug(x, targets=Targets(masks=masks, boxes=boxes), n_copies=6)
    seen = out.images.mean(1) > 0.5  # the warped object's pixels
    labelled = out.targets.masks[:, 0] == 3
    # Views where most of the object left the frame say little; the others must agree pixel for pixel.
    enough = seen.sum((1, 2)) >= 20
    assert enough.sum() >= 10, name
    inter = (seen & labelled).sum((1, 2)).float()
    union = (seen | labelled).sum((1, 2)).float()
    assert (inter / union)[enough].min() >= 0.95, name
    # Boxes: the transformed corners' enclosing box is tight around the transformed object, when it is whole. The
    # object is located on the same views rendered at 4× the resolution (the maps are in normalised coordinates).
    fine = resample(x.repeat_interleave(6, 0), out.theta, (4 * H, 4 * W)).mean(1) > 0.5
    whole = enough & out.targets.box_valid[:, 0]
    box = out.targets.boxes[:, 0]
    inside = (box[:, 0] > 0.5) & (box[:, 1] > 0.5) & (box[:, 2] < W - 0.5) & (box[:, 3] < H - 0.5)
    check = whole & inside
    assert check.sum() >= 2, name
    assert box_iou(box[check], tight_boxes(fine)[check] / 4).min() >= 0.9, name


def test_masks_keep_their_labels_and_mark_padding() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 2, 7, 19], dtype=torch.uint8)
    masks = labels[torch.randint(0, 4, (4, 1, H, W), generator=g)]
    aug = RandomAugment(("rotation", "scale"), {"rotation": math.pi, "scale": (-0.5, -0.3)})  # zoom out: padding
    x = torch.rand(4, 3, H, W, generator=g)
    out = aug(x, targets={"masks": masks})
    view = out.targets.masks
    assert view.dtype == torch.uint8 and view.shape == masks.shape
    assert set(view.unique().tolist()) <= {0, 2, 7, 19, IGNORE_INDEX}
    # Padding (the image's zero padding) is exactly where the mask reads the ignore label.
    ones = aug.stack(torch.ones(4, 1, H, W), out.params, out.theta)
    padding = out.targets.masks == IGNORE_INDEX
    assert padding.any()
    assert (ones[padding] < 0.5).all() and (ones[~padding] > 0.5).all()
    # Another ignore label, and border padding: no ignore label at all.
    assert (aug(x, targets=Targets(masks=masks, ignore_index=99)).targets.masks == 99).any()
    border = RandomAugment(("rotation", "scale"), {"rotation": math.pi, "scale": (-0.5, -0.3)}, padding_mode="border")
    assert set(border(x, targets={"masks": masks}).targets.masks.unique().tolist()) <= {0, 2, 7, 19}


def test_keypoints_land_on_the_transformed_points() -> None:
    """Gaussian blobs planted at keypoints (as heat maps) end where the keypoints say, within 0.5 px."""
    batch, k, sigma = 6, 3, 1.5
    g = torch.Generator().manual_seed(1)
    points = torch.stack((torch.rand(batch, k, generator=g) * 24 + 16, torch.rand(batch, k, generator=g) * 16 + 12), -1)
    yy, xx = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    d2 = (xx - points[..., 0, None, None]) ** 2 + (yy - points[..., 1, None, None]) ** 2
    heat = torch.exp(-d2 / (2 * sigma**2))  # (B, K, H, W)
    x = torch.rand(batch, 3, H, W, generator=g)
    for _, aug in augmenters():
        out = aug(x, targets=Targets(heatmaps=heat, keypoints=points), n_copies=8)
        maps, kp = out.targets.heatmaps, out.targets.keypoints
        h, w = maps.shape[-2:]
        vy, vx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        mass = maps.sum((2, 3))
        centroid = torch.stack(((maps * vx).sum((2, 3)), (maps * vy).sum((2, 3))), -1) / mass[..., None]
        margin = 4 * sigma / 0.6  # blobs well inside the view (a zoomed-in blob is larger)
        inside = (kp[..., 0] > margin) & (kp[..., 0] < w - margin) & (kp[..., 1] > margin) & (kp[..., 1] < h - margin)
        assert inside.sum() >= 10
        assert out.targets.keypoint_visible[inside].all()
        assert (centroid - kp).norm(dim=-1)[inside].max() < 0.5


def test_keypoints_leave_the_view_invisible_and_swap_when_flipped() -> None:
    points = torch.tensor([[[5.0, 5.0], [50.0, 20.0]]]).expand(8, 2, 2).clone()
    x = torch.rand(8, 3, H, W)
    aug = RandomAugment(("crop", "flip"), {"crop": (0.4, 0.4), "flip": 1.0})
    out = aug(x, targets=Targets(keypoints=points, keypoint_flip_index=(1, 0)))
    plain = aug(x, targets=Targets(keypoints=points), generator=torch.Generator().manual_seed(0))
    again = aug(
        x, targets=Targets(keypoints=points, keypoint_flip_index=(1, 0)), generator=torch.Generator().manual_seed(0)
    )
    # Every view is mirrored: the points trade places; visibility is inside the view.
    assert torch.equal(again.targets.keypoints, plain.targets.keypoints[:, [1, 0]])
    kp, vis = out.targets.keypoints, out.targets.keypoint_visible
    inside = (kp[..., 0] >= 0) & (kp[..., 0] <= W) & (kp[..., 1] >= 0) & (kp[..., 1] <= H)
    assert torch.equal(vis, inside) and not vis.all()
    missing = points.clone()
    missing[:, 0] = float("nan")
    assert not aug(x, targets=Targets(keypoints=missing)).targets.keypoint_visible[:, 0].any()


def test_boxes_that_leave_the_view_are_invalid() -> None:
    x = torch.rand(2, 3, H, W)
    boxes = torch.tensor([[[0.0, 0.0, 6.0, 6.0], [20.0, 14.0, 36.0, 26.0]]]).expand(2, 2, 4)
    # A centred half-size crop: the corner box is outside, the central one inside.
    aug = RandomAugment(("crop",), {"crop": (0.5, 0.5)})
    aug.ranges["crop"] = (0.5, 0.5)
    out = aug(x, targets=Targets(boxes=boxes))
    params = out.params
    centred = ((params[:, 0] - 0.5).abs() < 0.1) & ((params[:, 1] - 0.5).abs() < 0.1)
    stack = TransformStack(("crop",))
    fixed = torch.tensor([[0.5, 0.5, 0.5, 0.5]]).expand(2, 4)
    theta = stack.grid_matrix(fixed, (H, W))
    view = Targets(boxes=boxes).warp(theta, (H, W), (H, W))
    assert view.box_valid.tolist() == [[False, True], [False, True]]
    assert torch.allclose(view.boxes[0, 1], torch.tensor([(20 - 14) * 2.0, (14 - 10) * 2.0, 44.0, 32.0]))
    # A box half inside is valid at min_visible 0.25 and invalid at 0.75.
    half = torch.tensor([[[10.0, 12.0, 18.0, 20.0]]]).expand(2, 1, 4)
    assert Targets(boxes=half).warp(theta, (H, W), (H, W)).box_valid.all()
    assert not Targets(boxes=half, min_visible=0.75).warp(theta, (H, W), (H, W)).box_valid.any()
    assert centred.dtype == torch.bool  # the sampled crops are (cx, cy, w, h) columns


def test_colour_leaves_targets_untouched_and_copies_repeat_them() -> None:
    x, masks, boxes = planted(3)
    aug = RandomAugment(("hue", "saturation"))
    out = aug(x, targets=Targets(masks=masks, boxes=boxes), n_copies=4)
    assert out.theta is None
    assert torch.equal(out.targets.masks, masks.repeat_interleave(4, 0))
    assert torch.equal(out.targets.boxes, boxes.repeat_interleave(4, 0))
    assert out.targets.box_valid.all()
    # n = 1 of a resampling augmenter: one row per input.
    out = RandomAugment(("rotation",))(x, targets=Targets(masks=masks))
    assert out.targets.masks.shape == masks.shape


def test_output_size_moves_targets_to_the_views_frame() -> None:
    x, masks, boxes = planted(2)
    aug = RandomAugment(("crop",), {"crop": (1.0, 1.0)}, output_size=(20, 28))
    out = aug(x, targets=Targets(masks=masks, boxes=boxes))
    assert out.targets.masks.shape == (2, 1, 20, 28)
    assert torch.allclose(out.targets.boxes, boxes / 2, atol=1e-4)


@pytest.mark.parametrize("name,aug", AUGMENTERS, ids=[n for n, _ in AUGMENTERS])
def test_inverse_of_forward_is_the_identity_on_the_visible_region(name: str, aug: torch.nn.Module) -> None:
    """Bilinear resampling reproduces affine functions exactly, so warping coordinate ramps forward and back
    returns them wherever the view saw the input (and saw no padding)."""
    yy, xx = torch.meshgrid(torch.linspace(0.1, 0.9, H), torch.linspace(0.1, 0.9, W), indexing="ij")
    x = torch.stack((xx, yy, (xx + yy) / 2))[None].expand(4, 3, H, W).contiguous().double()
    aug = aug.double()
    out = aug(x, n_copies=3)
    back, coverage = out.to_input(out.images)
    clean = aug.stack(torch.ones_like(x).repeat_interleave(3, 0), out.params, out.theta)
    clean_back, _ = out.to_input(clean)
    visible = (coverage[:, 0] > 1 - 1e-9) & (clean_back.amin(1) > 1 - 1e-9)
    assert visible.sum() > 0.2 * visible.numel(), name
    target = aug.stack.colour(x.repeat_interleave(3, 0), out.params)
    err = (back - target).abs().amax(1)[visible]
    assert err.max() < 1e-6, name
    # Coverage is 0 far outside every view's footprint and within [0, 1].
    assert coverage.min() >= 0 and coverage.max() <= 1 + 1e-9


def test_inverse_of_colour_views_is_the_identity() -> None:
    x = torch.rand(2, 3, H, W)
    out = RandomAugment(("hue",))(x, n_copies=2)
    values, coverage = out.to_input(out.images)
    assert values is out.images and (coverage == 1).all()
    with pytest.raises(ValueError, match="views' size"):
        out.to_input(out.images[..., :10])
    with pytest.raises(ValueError, match=r"\(B·n, K, h, w\)"):
        out.to_input(out.images[:1])


def test_merge_modes() -> None:
    logits = torch.randn(2, 3, 4, 5, 5)  # (B, n, K, H, W)
    weights = torch.rand(2, 3, 1, 5, 5)
    weights[:, :, :, 0, 0] = 0  # nobody saw pixel (0, 0)
    weights[:, 1:, :, 1, 1] = 0  # only view 0 saw pixel (1, 1)
    for merge in MERGE_MODES:
        merged = merge_predictions(logits, merge, weights)
        assert merged.shape == (2, 4, 5, 5)
        assert (merged[..., 0, 0] == (0.25 if merge == "gmean" else 0)).all()
        if merge in ("logits", "mean", "max", "min"):
            assert torch.allclose(merged[..., 1, 1], logits[:, 0, :, 1, 1])
    w = weights.expand_as(logits)
    probs = logits.softmax(2)
    expected = {
        "logits": (logits * w).sum(1) / w.sum(1),
        "probs": (probs * w).sum(1) / w.sum(1),
        "log_probs": (probs.log() * w).sum(1) / w.sum(1),
        "tsharpen": (probs**0.3 * w).sum(1) / w.sum(1),
        "max": logits.masked_fill(w == 0, -torch.inf).amax(1),
        "min": logits.masked_fill(w == 0, torch.inf).amin(1),
    }
    expected["gmean"] = (expected["log_probs"]).softmax(1)
    for merge, want in expected.items():
        got = merge_predictions(logits, merge, weights, temperature=0.3)
        keep = weights.sum(1)[:, 0] > 0
        assert torch.allclose(got.movedim(1, -1)[keep], want.movedim(1, -1)[keep], atol=1e-5), merge
    assert torch.allclose(merge_predictions(logits, "gmean", weights).sum(1)[..., 1:, 1:], torch.ones(2, 4, 4))
    # Unweighted classification outputs (B, n, K).
    flat = torch.randn(3, 5, 7)
    assert torch.allclose(merge_predictions(flat, "mean"), flat.mean(1))
    assert torch.allclose(merge_predictions(flat, "max"), flat.amax(1))
    with pytest.raises(ValueError, match="merge must be one of"):
        merge_predictions(flat, "median")
    with pytest.raises(ValueError, match="temperature"):
        merge_predictions(flat, "tsharpen", temperature=0)


class PixelModel(torch.nn.Module):
    """An equivariant 'segmentation model': per-pixel logits from a 1×1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_dense_tta_of_an_equivariant_model_returns_its_own_prediction() -> None:
    """A per-pixel model commutes with the views up to resampling: merging the inverted views of a smooth input
    gives the model's prediction on the input."""
    yy, xx = torch.meshgrid(torch.linspace(0.2, 0.8, H), torch.linspace(0.2, 0.8, W), indexing="ij")
    x = torch.stack((xx, yy, 0.5 + 0.3 * torch.sin(3 * xx) * yy))[None].expand(2, 3, H, W).contiguous()
    model = PixelModel()
    aug = RandomAugment(("crop", "flip", "rotation"), {"crop": (0.7, 1.0), "rotation": 0.3})
    direct = model(x)
    for merge in ("logits", "mean", "max", "min"):
        tta = DenseTTAWrapper(model, aug, n_copies=6, merge=merge, include_identity=False)
        values, coverage = tta.view_outputs(x)
        assert values.shape == (2, 6, 4, H, W) and coverage.shape == (2, 6, 1, H, W)
        merged = merge_predictions(values, merge, coverage)
        inner = (coverage > 0.999).any(1)[:, 0]  # pixels some view saw fully, away from the input's border
        inner[:, :3] = inner[:, -3:] = inner[..., :3] = inner[..., -3:] = False
        err = (merged - direct).abs().amax(1)[inner]
        assert err.max() < 0.03, merge
    # With the input itself among the views every pixel has a prediction.
    tta = DenseTTAWrapper(model, aug, n_copies=4, merge="probs")
    assert tta(x).shape == (2, 4, H, W)
    assert torch.allclose(tta(x).sum(1), torch.ones(2, H, W), atol=1e-5)
    with pytest.raises(ValueError, match="dense outputs"):
        DenseTTAWrapper(torch.nn.Sequential(torch.nn.Flatten()), aug)(x)


def test_dense_tta_resizes_strided_outputs() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, stride=2, padding=1))
    tta = DenseTTAWrapper(model, RandomAugment(("crop",)), n_copies=2, chunk_size=1)
    assert tta(torch.rand(3, 3, H, W)).shape == (3, 2, H, W)


def test_soft_mask_targets_give_the_exact_rotation_gradient() -> None:
    """E_θ~U(l,h)[L(θ)] has d/dh = (L(h) - E)/(h - l) and d/dl = (E - L(l))/(h - l); the pathwise estimate through
    soft mask targets (images and labels both moved by θ) matches them. Nearest-neighbour labels do not: their
    gradient misses how the labels move."""
    torch.manual_seed(0)
    x, masks, _ = planted(1)
    x, masks = x.double(), masks
    model = PixelModel().double()
    stack = TransformStack(("rotation",))
    low0, high0 = -0.3, 0.5

    def view_losses(theta_values: torch.Tensor, soft: bool = True, frame: str = "view") -> torch.Tensor:
        params = theta_values[:, None]
        n = params.shape[0]
        theta = stack.grid_matrix(params, (H, W))
        views = stack(x.expand(n, -1, -1, -1), params, theta)
        targets = Targets(masks=masks.expand(n, -1, -1, -1)).warp(theta, (H, W), (H, W))
        return segmentation_loss(model(views), targets, soft=soft, frame=frame)

    def exact_gradient(frame: str) -> torch.Tensor:
        with torch.no_grad():
            grid = torch.linspace(low0, high0, 801, dtype=torch.float64)
            values = view_losses(grid, frame=frame)
            mean = torch.trapezoid(values, grid) / (high0 - low0)
            return torch.stack(((mean - values[0]) / (high0 - low0), (values[-1] - mean) / (high0 - low0)))

    exact = exact_gradient("view")

    def estimate(soft: bool, frame: str = "view") -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tensor([[low0]], dtype=torch.float64, requires_grad=True)
        high = torch.tensor([[high0]], dtype=torch.float64, requires_grad=True)
        dist = UniformRanges(low, high, ("rotation",))
        samples = dist.rsample((2000,), generator=torch.Generator().manual_seed(1))[:, 0, 0]
        losses = view_losses(samples, soft, frame)
        grads = torch.autograd.grad(losses.mean(), (low, high, samples), retain_graph=True)
        # Each loss depends on its own sample only: its gradient in (l, h) is dL/dθ · (1 - u, u).
        u = (samples - low0) / (high0 - low0)
        per_sample = grads[2][:, None] * len(samples) * torch.stack((1 - u, u), -1)
        return torch.cat(grads[:2]).flatten(), per_sample.std(0) / math.sqrt(len(samples))

    soft_grad, stderr = estimate(soft=True)
    assert ((soft_grad - exact).abs() < 4 * stderr + 1e-4).all(), (soft_grad, exact, stderr)
    hard_grad, _ = estimate(soft=False)
    assert ((hard_grad - exact).abs() > 4 * stderr).any(), (hard_grad, exact)
    # The input-frame loss maps the predictions back through the same θ: its pathwise gradient is exact too.
    input_grad, input_stderr = estimate(soft=True, frame="input")
    input_exact = exact_gradient("input")
    assert ((input_grad - input_exact).abs() < 4 * input_stderr + 1e-4).all(), (input_grad, input_exact)


@pytest.mark.parametrize(
    "targets,error,match",
    [
        ({"masks": torch.zeros(2, 1, H, W)}, TypeError, "integer labels"),
        ({"masks": torch.zeros(2, H, W, dtype=torch.long)}, ValueError, r"\(B, 1, H, W\)"),
        ({"masks": torch.zeros(2, 2, H, W, dtype=torch.long)}, ValueError, r"\(B, 1, H, W\)"),
        ({"masks": torch.zeros(3, 1, H, W, dtype=torch.long)}, ValueError, "match the images"),
        ({"masks": torch.zeros(2, 1, H, W + 1, dtype=torch.long)}, ValueError, "match the images"),
        ({"masks": torch.zeros(2, 1, H, W, dtype=torch.uint8), "ignore_index": -1}, ValueError, "does not fit"),
        ({"heatmaps": torch.zeros(2, 3, H, W, dtype=torch.long)}, TypeError, "floating point"),
        ({"boxes": torch.zeros(2, 4)}, ValueError, r"\(B, K, 4\)"),
        ({"boxes": torch.zeros(2, 1, 4, dtype=torch.long)}, TypeError, "floating point"),
        ({"boxes": torch.tensor([[[5.0, 0.0, 1.0, 4.0]]]).expand(2, 1, 4)}, ValueError, "x1 ≥ x0"),
        ({"boxes": torch.full((2, 1, 4), float("nan"))}, ValueError, "NaN"),
        ({"boxes": torch.zeros(1, 1, 4)}, ValueError, "2 rows"),
        ({"keypoints": torch.zeros(2, 3, 3)}, ValueError, r"\(B, K, 2\)"),
        ({"keypoints": torch.zeros(2, 3, 2), "keypoint_flip_index": (0, 0, 1)}, ValueError, "permutation"),
        ({"boxes": torch.zeros(2, 1, 4), "min_visible": 2}, ValueError, "min_visible"),
        ({"mask": torch.zeros(2, 1, H, W)}, ValueError, "unknown target keys"),
        ({}, ValueError, "hold nothing"),
        ([1, 2], TypeError, "mapping"),
        ({"masks": "mask.png"}, TypeError, "torch.Tensor"),
    ],
)
def test_bad_targets_are_refused(targets, error, match) -> None:
    aug = RandomAugment(("rotation",))
    with pytest.raises(error, match=match):
        aug(torch.rand(2, 3, H, W), targets=targets)


def test_targets_through_instaaug_with_gradients() -> None:
    """A learned composite carries targets; heat maps stay differentiable in φ through the sampled rotation."""
    aug = InstaAug(("crop", "rotation", "flip"), width=4, depth=2, phi_size=(24, 24), levels=(1,))
    x, masks, boxes = planted(2)
    heat = torch.rand(2, 1, H, W)
    out = aug(x, targets=Targets(masks=masks, boxes=boxes, heatmaps=heat), n_copies=2)
    assert out.targets.masks.shape == (4, 1, H, W) and out.targets.boxes.shape == (4, 1, 4)
    out.targets.heatmaps.sum().backward()
    assert aug.head is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in aug.net.parameters())


def test_input_frame_loss_does_not_reward_views_that_drop_the_object():
    """Two equal crops, one holding the object and one of empty background, with a predictor that is good on the
    background and fair on the object: the view-frame loss prefers the empty view (the degenerate choice), the
    input-frame loss the one that shows the object."""
    size, k = 24, 3
    masks = torch.zeros(2, 1, size, size, dtype=torch.long)
    masks[:, :, 2:9, 2:9] = 2
    stack = TransformStack(("crop",))
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])
    theta = stack.grid_matrix(boxes, (size, size))
    view = Targets(masks=masks).warp(theta, (size, size), (size, size))
    labels = view.masks[:, 0]
    confidence = torch.where(labels == 2, 1.5, 4.0)[:, None]
    logits = F.one_hot(labels.clamp(max=k - 1), k).permute(0, 3, 1, 2).float() * confidence
    on_view = segmentation_loss(logits, view)
    on_input = segmentation_loss(logits, view, frame="input")
    assert on_view[0] > on_view[1]  # the object is harder than background: the empty view looks cheaper
    assert on_input[0] < on_input[1]  # it pays log K for the whole object class it drops
    # Uninformed logits cost log K everywhere; an identity view is the class-balanced cross-entropy.
    assert torch.allclose(segmentation_loss(torch.zeros_like(logits), view, frame="input"), torch.tensor(math.log(k)))
    flat = torch.randn(2, k, size, size)
    by_class = (
        torch.stack(
            [
                F.cross_entropy(flat, masks[:, 0], reduction="none")[i][masks[i, 0] == c].mean()
                for i in range(2)
                for c in (0, 2)
            ]
        )
        .view(2, 2)
        .mean(1)
    )
    assert torch.allclose(segmentation_loss(flat, masks, frame="input"), by_class, atol=1e-6)
    with pytest.raises(ValueError, match="frame"):
        segmentation_loss(flat, masks, frame="output")
