"""UniformRangeHead and InvarianceNet: interval constraints, initial interval, modes."""

from __future__ import annotations

import pytest
import torch

from conftest import structured_images
from instaaug.networks import InvarianceNet, UniformRangeHead
from instaaug.transforms import TransformStack

STACK = TransformStack(("rotation", "translation", "scale", "hue", "saturation"))
BOUNDS = STACK.bounds()
INIT = STACK.init_half_widths()
MIN_WIDTH = 1e-3


def check_intervals(low: torch.Tensor, high: torch.Tensor, min_width: float = MIN_WIDTH) -> None:
    lo_bound, hi_bound = (torch.tensor(b) for b in BOUNDS)
    assert torch.isfinite(low).all() and torch.isfinite(high).all()
    assert (low <= 0).all() and (high >= 0).all(), "every interval must contain the identity 0"
    assert (low >= lo_bound - 1e-6).all() and (high <= hi_bound + 1e-6).all(), "intervals must stay in bounds"
    assert (high - low >= min_width * (1 - 1e-5)).all(), "intervals must be at least min_width wide"


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_head_intervals_contain_zero_stay_in_bounds_and_are_wide_enough(symmetric, scale):
    head = UniformRangeHead(BOUNDS, INIT, MIN_WIDTH, symmetric=symmetric)
    raw = torch.randn(64, head.out_dim, generator=torch.Generator().manual_seed(0)) * scale
    low, high = head(raw)
    assert low.shape == high.shape == (64, STACK.dim)
    check_intervals(low, high)


@pytest.mark.parametrize("symmetric", [False, True])
def test_head_extreme_outputs_reach_the_limits(symmetric):
    head = UniformRangeHead(BOUNDS, INIT, MIN_WIDTH, symmetric=symmetric)
    low, high = head(torch.full((1, head.out_dim), -1e4))
    check_intervals(low, high)
    torch.testing.assert_close(high - low, torch.full_like(low, MIN_WIDTH), atol=1e-7, rtol=0)
    low, high = head(torch.full((1, head.out_dim), 1e4))
    check_intervals(low, high)
    lo_bound, hi_bound = (torch.tensor(b) for b in BOUNDS)
    if symmetric:
        torch.testing.assert_close(high[0], torch.minimum(-lo_bound, hi_bound), atol=1e-6, rtol=0)
    else:
        torch.testing.assert_close(low[0], lo_bound, atol=1e-6, rtol=0)
        torch.testing.assert_close(high[0], hi_bound, atol=1e-6, rtol=0)


@pytest.mark.parametrize("symmetric", [False, True])
def test_head_zero_output_gives_initial_interval(symmetric):
    head = UniformRangeHead(BOUNDS, INIT, MIN_WIDTH, symmetric=symmetric)
    low, high = head(torch.zeros(3, head.out_dim))
    init = torch.tensor(INIT).expand(3, -1)
    torch.testing.assert_close(high, init, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(low, -init, atol=1e-6, rtol=1e-6)


def test_head_asymmetric_ends_are_driven_by_separate_columns():
    head = UniformRangeHead(BOUNDS, INIT, MIN_WIDTH)
    assert head.out_dim == 2 * STACK.dim
    raw = torch.zeros(1, head.out_dim)
    raw[0, 0] = 3.0  # the low end of dimension 0 only
    low, high = head(raw)
    assert low[0, 0] < -INIT[0] - 0.1
    torch.testing.assert_close(high[0], torch.tensor(INIT), atol=1e-6, rtol=0)
    torch.testing.assert_close(low[0, 1:], -torch.tensor(INIT[1:]), atol=1e-6, rtol=0)


def test_head_symmetric_mode():
    head = UniformRangeHead(BOUNDS, INIT, MIN_WIDTH, symmetric=True)
    assert head.out_dim == STACK.dim
    low, high = head(torch.randn(16, head.out_dim) * 3)
    torch.testing.assert_close(low, -high, atol=0, rtol=0)
    check_intervals(low, high)


def test_head_gradient_flows_to_raw_output():
    head = UniformRangeHead(BOUNDS, INIT, MIN_WIDTH)
    raw = torch.zeros(2, head.out_dim, requires_grad=True)
    low, high = head(raw)
    (high - low).sum().backward()
    assert (raw.grad > 0).all()  # raising any raw output widens its interval


@pytest.mark.parametrize(
    ("bounds", "init"),
    [
        (([0.0], [1.0]), [0.1]),  # low must be < 0
        (([-1.0], [1.0]), [2.0]),  # init outside bounds
        (([-1.0], [1.0]), [1e-4]),  # init below min_width / 2
        (([-1.0, -1.0], [1.0]), [0.1]),  # shapes differ
    ],
)
def test_head_bad_arguments(bounds, init):
    with pytest.raises(ValueError):
        UniformRangeHead(bounds, init, MIN_WIDTH)


# ------------------------------------------------------------------------------------------------------------------
# InvarianceNet


def randomise(net: InvarianceNet, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.output.parameters() if isinstance(net.output, torch.nn.Module) else [net.output]:
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("mode", ["instance", "global", "class"])
def test_all_modes_start_at_zero(mode):
    net = InvarianceNet(6, mode=mode, in_channels=3, num_classes=4, width=4, depth=2)
    x = structured_images(3, 3, 8)
    out = net(x, torch.tensor([0, 1, 3])).raw
    assert out.shape == (3, 6)
    assert (out == 0).all()


def test_global_mode_ignores_x():
    net = InvarianceNet(4, mode="global")
    randomise(net)
    a = net(structured_images(3, 3, 8, seed=0)).raw
    b = net(structured_images(3, 3, 8, seed=1), torch.tensor([0, 1, 2])).raw
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a[0], a[2], atol=0, rtol=0)
    assert a.abs().sum() > 0


def test_instance_mode_depends_on_x():
    net = InvarianceNet(4, mode="instance", in_channels=3, width=4, depth=2).eval()
    randomise(net)
    x = structured_images(4, 3, 8)
    out = net(x).raw
    assert out.shape == (4, 4)
    assert (out[0] - out[1]).abs().max() > 1e-4
    torch.testing.assert_close(net(x[1:2]).raw, out[1:2], atol=1e-5, rtol=0)  # eval mode: per-input function


def test_instance_mode_gradient_reaches_backbone():
    net = InvarianceNet(4, mode="instance", in_channels=3, width=4, depth=2)
    randomise(net)
    net(structured_images(4, 3, 8)).raw.square().sum().backward()
    conv = net.backbone.stages[0][0].weight
    assert conv.grad is not None and conv.grad.abs().sum() > 0


def test_class_mode_depends_on_y_and_falls_back_to_mean():
    net = InvarianceNet(4, mode="class", num_classes=3)
    randomise(net)
    x = structured_images(3, 3, 8)
    out = net(x, torch.tensor([0, 1, 2])).raw
    torch.testing.assert_close(out, net.output.weight, atol=0, rtol=0)
    assert (out[0] - out[1]).abs().max() > 1e-3
    torch.testing.assert_close(net(structured_images(3, 3, 8, seed=9), torch.tensor([0, 1, 2])).raw, out)  # not x
    fallback = net(x).raw
    torch.testing.assert_close(fallback, net.output.weight.mean(0).expand(3, -1))


def test_invalid_mode_and_num_classes():
    with pytest.raises(ValueError, match="mode"):
        InvarianceNet(4, mode="per_pixel")
    with pytest.raises(ValueError, match="num_classes"):
        InvarianceNet(4, mode="class")
    with pytest.raises(ValueError, match="num_classes"):
        InvarianceNet(4, mode="class", num_classes=0)
    with pytest.raises(ValueError, match="network"):
        InvarianceNet(4, mode="instance", network="vgg")


def test_only_the_small_cnn_phi_runs_channels_last_on_the_cpu():
    # The PreAct ResNet's 1×1 stride-2 shortcut convolutions crash torch's channels-last CPU backward for few
    # channels and an odd batch (measured: 4 channels, 16 px, batch 3 segfaults within a few hundred steps).
    assert InvarianceNet(4, mode="instance", network="small_cnn", in_channels=3, width=4).channels_last_on_cpu
    assert not InvarianceNet(4, mode="instance", network="preact_resnet18", in_channels=3, width=4).channels_last_on_cpu


def test_preact_resnet18_backbone_for_instance_mode():
    net = InvarianceNet(4, mode="instance", network="preact_resnet18", in_channels=3, width=4).eval()
    randomise(net)
    assert [f.shape[1] for f in net.backbone(structured_images(2, 3, 16))] == [4, 8, 16, 32]
    out = net(structured_images(3, 3, 16)).raw
    assert out.shape == (3, 4)
    assert (out[0] - out[1]).abs().max() > 1e-4
    out.square().sum().backward()
    assert net.backbone.stem.weight.grad.abs().sum() > 0


def test_unknown_network_is_named():
    with pytest.raises(ValueError, match="unknown network 'resnet9000'"):
        InvarianceNet(4, mode="instance", network="resnet9000")


def test_phi_sees_large_inputs_downscaled_and_small_ones_as_they_are():
    from instaaug import InstaAug
    from instaaug.augment import PHI_MAX_SIDE

    aug = InstaAug(("rotation", "hue"), width=4, depth=2)
    seen: list[tuple[int, ...]] = []
    aug.net.backbone.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    for size in ((24, 24), (128, 128), (64, 128)):
        aug(torch.rand(2, 3, *size))
    assert seen == [(24, 24), (PHI_MAX_SIDE, PHI_MAX_SIDE), (PHI_MAX_SIDE // 2, PHI_MAX_SIDE)]
    # An explicit phi_size is used as given.
    explicit = InstaAug(("rotation",), width=4, depth=2, phi_size=(96, 96))
    explicit.net.backbone.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    explicit(torch.rand(1, 3, 128, 128))
    assert seen[-1] == (96, 96)


def test_phi_runs_channels_last_on_cpu_with_the_same_outputs():
    # φ's backbone takes channels-last input on the CPU (much faster max-pool and ReLU backward there); the outputs
    # and gradients are those of the NCHW layout up to the convolutions' summation order (float64: to ~1e-12).
    torch.manual_seed(0)
    net = InvarianceNet(4, width=8, depth=3).double()
    with torch.no_grad():
        net.output.weight.normal_()
    x = torch.rand(6, 3, 24, 24, dtype=torch.float64)
    results = []
    for channels_last in (True, False):
        net.channels_last_on_cpu = channels_last
        net.zero_grad()
        raw = net(x).raw
        raw.square().sum().backward()
        results.append([raw.detach(), *[p.grad.clone() for p in net.parameters()]])
    assert net.channels_last_on_cpu is False and InvarianceNet(4).channels_last_on_cpu is True
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
