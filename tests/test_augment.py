"""InstaAug: shapes and ordering of views, gradients to φ, modes, dtype, persistence and its safety."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from conftest import perturb_output, structured_images, tiny_aug
from instaaug import InstaAug, InstaAugConfig, RandomAugment
from instaaug.augment import CONFIG_FILE, WEIGHTS_FILE
from instaaug.io import save_tensors
from instaaug.transforms import FAMILIES

ALL = tuple(FAMILIES)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [1, 3])
def test_output_shapes(n):
    aug = tiny_aug(("rotation", "translation", "hue"), n_copies=n)
    x = structured_images(4, 3, 8)
    out = aug(x)
    assert out.images.shape == (4 * n, 3, 8, 8)
    assert out.params.shape == (4 * n, 4)
    assert out.log_prob.shape == (4 * n,)
    assert out.entropy.shape == (4,)
    assert out.n_copies == n and out.reparameterized
    assert out.distribution.batch_shape == (4,)
    assert aug(x, n_copies=2).images.shape == (8, 3, 8, 8)  # per-call override


def test_zero_width_views_are_the_inputs_in_order():
    aug = RandomAugment(("translation",), ranges={"translation": (0.0, 0.0)}, n_copies=3)
    x = structured_images(4, 3, 8)
    out = aug(x)
    torch.testing.assert_close(out.images, x.repeat_interleave(3, dim=0), atol=1e-6, rtol=0)
    labels = torch.tensor([5, 6, 7, 8])
    assert out.repeat(labels).tolist() == [5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8]


def test_views_of_input_b_are_rows_b_n_to_b_n_plus_n_minus_1():
    n = 3
    aug = perturb_output(tiny_aug(("rotation", "hue"), n_copies=n)).eval()
    x = structured_images(4, 3, 8)
    out = aug(x, generator=gen(1))
    dist = out.distribution
    assert (dist.width[0] - dist.width[1]).abs().max() > 1e-3  # inputs get different intervals
    for b in range(4):
        rows = slice(b * n, b * n + n)
        params = out.params[rows].detach()
        assert (params >= dist.low[b].detach()).all() and (params <= dist.high[b].detach()).all()
        torch.testing.assert_close(out.images[rows], aug.stack(x[b : b + 1].expand(n, -1, -1, -1), params))
        torch.testing.assert_close(out.log_prob[rows], dist[b].log_prob(params).expand(n))
    torch.testing.assert_close(out.entropy, dist.entropy())


def test_generator_makes_sampling_reproducible():
    aug = tiny_aug(("rotation", "value"), n_copies=2).eval()
    x = structured_images(3, 3, 8)
    a, b, c = aug(x, generator=gen(5)), aug(x, generator=gen(5)), aug(x, generator=gen(6))
    torch.testing.assert_close(a.images, b.images, atol=0, rtol=0)
    assert not torch.equal(a.params, c.params)


@pytest.mark.parametrize("name", ALL)
def test_gradient_reaches_phi_through_every_family(name):
    aug = perturb_output(tiny_aug((name,), n_copies=2), std=0.1)
    x = structured_images(3, 3, 12)
    weight = torch.randn(6, 3, 12, 12, generator=gen(2))
    out = aug(x, generator=gen(3))
    (out.images * weight).sum().backward()
    bias = aug.net.output.bias.grad  # one raw output per interval end
    assert torch.isfinite(bias).all()
    assert (bias.abs() > 1e-6).all(), bias
    conv = aug.net.backbone.stages[0][0].weight.grad
    assert conv is not None and conv.abs().sum() > 0


def test_entropy_gradient_reaches_phi():
    aug = tiny_aug(("rotation",))
    out = aug(structured_images(2, 3, 8))
    out.entropy.sum().backward()
    assert (aug.net.output.bias.grad > 0).all()  # widening either end raises the entropy


def test_distribution_names_and_bounds():
    aug = tiny_aug(("rotation", "translation", "hue"))
    dist = aug.distribution(structured_images(2, 3, 8))
    assert dist.names == ("rotation", "translate_x", "translate_y", "hue")
    assert aug.names == dist.names
    init = torch.tensor([FAMILIES[f].init_half_width for f in ("rotation", "translation", "translation", "hue")])
    torch.testing.assert_close(dist.high.detach(), init.expand(2, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(dist.low.detach(), -init.expand(2, -1), atol=1e-6, rtol=0)


def test_init_half_width_and_entropy_range_options():
    aug = tiny_aug(("rotation", "hue"), init_half_width=(0.2, 0.1), entropy_range=(-3.0, -1.0))
    dist = aug.distribution(structured_images(1, 3, 8))
    torch.testing.assert_close(dist.high.detach(), torch.tensor([[0.2, 0.1]]), atol=1e-6, rtol=0)
    assert aug.entropy_range == (-3.0, -1.0)
    with pytest.raises(ValueError, match="init_half_width"):
        tiny_aug(("rotation", "hue"), init_half_width=(0.2,))


def test_default_entropy_range_follows_families():
    aug = tiny_aug(("rotation", "translation"))
    assert aug.entropy_range == pytest.approx(aug.stack.default_entropy_range())


def test_global_mode_ignores_x():
    aug = perturb_output(tiny_aug(("rotation", "hue"), mode="global"))
    a = aug.distribution(structured_images(3, 3, 8, seed=0))
    b = aug.distribution(structured_images(3, 3, 8, seed=4))
    torch.testing.assert_close(a.low, b.low, atol=0, rtol=0)
    torch.testing.assert_close(a.high[0], a.high[2], atol=0, rtol=0)


def test_instance_mode_depends_on_x():
    aug = perturb_output(tiny_aug(("rotation",))).eval()
    dist = aug.distribution(structured_images(3, 3, 8))
    assert (dist.high[0] - dist.high[1]).abs() > 1e-4


def test_class_mode_needs_labels_in_training_and_falls_back_in_eval():
    aug = perturb_output(tiny_aug(("rotation",), mode="class", num_classes=3))
    x = structured_images(3, 3, 8)
    with pytest.raises(ValueError, match="needs labels"):
        aug(x)
    with_labels = aug.distribution(x, torch.tensor([0, 1, 2]))
    assert (with_labels.high[0] - with_labels.high[1]).abs() > 1e-4
    aug.eval()
    fallback = aug.distribution(x)
    expected_low, expected_high = aug.head(aug.net.output.weight.mean(0, keepdim=True))
    torch.testing.assert_close(fallback.high, expected_high.expand(3, -1))
    torch.testing.assert_close(fallback.low, expected_low.expand(3, -1))
    assert aug(x).images.shape == x.shape


def test_class_mode_labels_out_of_range():
    aug = tiny_aug(("rotation",), mode="class", num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        aug(structured_images(2, 3, 8), torch.tensor([0, 3]))


def test_float64_input_gives_float64_output():
    aug = tiny_aug(("rotation", "hue")).eval()
    x = structured_images(2, 3, 8)
    out64 = aug(x.double(), generator=gen(0))
    assert out64.images.dtype == torch.float64 and out64.params.dtype == torch.float64
    assert out64.entropy.dtype == torch.float64
    # Same φ, same views: float32 images transformed with the same parameters agree.
    torch.testing.assert_close(out64.distribution.high.float(), aug.distribution(x).high, atol=1e-6, rtol=0)
    replay = aug.stack(x, out64.params.float())
    torch.testing.assert_close(out64.images.float(), replay, atol=1e-4, rtol=0)


def test_single_channel_images():
    aug = tiny_aug(("rotation", "value"), in_channels=1)
    out = aug(structured_images(2, 1, 8))
    assert out.images.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="3-channel"):
        tiny_aug(("hue",), in_channels=1)


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="unknown_option"):
        InstaAug(("rotation",), unknown_option=1)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mode": "pixel"}, "mode"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"n_copies": 0}, "n_copies"),
        ({"entropy_range": (1.0, -1.0)}, "entropy_range"),
        ({"min_width": 0.0}, "min_width"),
        ({"mode": "class"}, "num_classes"),
        ({"norm": "instance"}, "norm"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        tiny_aug(("rotation",), **options)


def test_no_transforms_is_an_error():
    with pytest.raises(ValueError, match="at least one transform"):
        InstaAug(())


def test_single_transform_name_as_string():
    # TransformStack and InstaAugConfig both accept a single family name as a string; InstaAug should too.
    assert InstaAugConfig(transforms="rotation").transforms == ("rotation",)
    aug = tiny_aug("rotation")
    assert aug.names == ("rotation",)


# ------------------------------------------------------------------------------------------------------------------
# Persistence


def test_save_load_round_trip(tmp_path):
    aug = perturb_output(tiny_aug(("rotation", "translation", "hue"), n_copies=2)).eval()
    aug.save(tmp_path / "aug")
    assert sorted(p.name for p in (tmp_path / "aug").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = InstaAug.load(tmp_path / "aug").eval()
    assert isinstance(loaded, InstaAug)
    assert loaded.names == aug.names and loaded.n_copies == 2
    x = structured_images(3, 3, 8)
    a, b = aug.distribution(x), loaded.distribution(x)
    torch.testing.assert_close(a.low, b.low, atol=0, rtol=0)
    torch.testing.assert_close(a.high, b.high, atol=0, rtol=0)
    oa, ob = aug(x, generator=gen(9)), loaded(x, generator=gen(9))
    torch.testing.assert_close(oa.images, ob.images, atol=0, rtol=0)
    for key, value in aug.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)


def test_save_load_preserves_config(tmp_path):
    aug = tiny_aug(
        ("rotation", "hue"), mode="class", num_classes=4, entropy_range=(-4.0, -1.0), init_half_width=(0.3, 0.1)
    )
    aug.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["config"]["num_classes"] == 4
    loaded = InstaAug.load(tmp_path)
    assert loaded.mode == "class"
    assert loaded.config == aug.config
    assert loaded.entropy_range == (-4.0, -1.0)


def test_load_rejects_unknown_config_key(tmp_path):
    tiny_aug(("rotation",)).save(tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["config"]["learning_rate"] = 0.1
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="learning_rate"):
        InstaAug.load(tmp_path)


def test_load_rejects_foreign_config(tmp_path):
    tiny_aug(("rotation",)).save(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not an augmenter config"):
        InstaAug.load(tmp_path)


def test_load_rejects_weights_of_another_shape(tmp_path):
    # Weights saved for ("rotation", "hue") beside a config for ("rotation",): same keys, other shapes.
    tiny_aug(("rotation",)).save(tmp_path / "b")
    tiny_aug(("rotation", "hue")).save(tmp_path / "c")
    (tmp_path / "c" / WEIGHTS_FILE).replace(tmp_path / "b" / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="does not match its config"):
        InstaAug.load(tmp_path / "b")


def test_load_rejects_weights_with_missing_entries(tmp_path):
    aug = tiny_aug(("rotation",))
    aug.save(tmp_path)
    state = {k: v for k, v in aug.state_dict().items() if not k.startswith("net.output")}
    save_tensors(tmp_path / WEIGHTS_FILE, state)
    with pytest.raises(ValueError, match=r"missing \['net.output"):
        InstaAug.load(tmp_path)


class _Payload:
    """Unpickling this object creates the file at ``marker`` (standing in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payload_does_run_when_unpickled(tmp_path):
    # Guard for the test below: the payload is live.
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


def test_load_never_unpickles_weights(tmp_path):
    aug = tiny_aug(("rotation",))
    aug.save(tmp_path)
    marker = tmp_path / "pwned"
    state = dict(aug.state_dict())
    state["payload"] = _Payload(str(marker))
    torch.save(state, tmp_path / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="safetensors"):
        InstaAug.load(tmp_path)
    assert not marker.exists()


def test_phi_gives_the_same_ranges_in_training_and_eval_mode():
    # The default per-input normalisation has no running statistics that could lag φ's weights.
    aug = tiny_aug(("rotation", "hue"))
    with torch.no_grad():
        aug.net.output.weight.normal_(0, 0.5)
    x = structured_images(6, 3, 16)
    train_low = aug.train().distribution(x).low
    eval_low = aug.eval().distribution(x).low
    alone_low = aug.distribution(x[:1]).low
    torch.testing.assert_close(train_low, eval_low)
    torch.testing.assert_close(alone_low, eval_low[:1])
    assert (train_low[0] - train_low[1]).abs().max() > 1e-4


def test_instaaug_learns_one_interval_per_anchor_of_a_local_colour_family(tmp_path):
    aug = InstaAug(("hue", "local_value"), in_channels=3, width=4)
    x = torch.rand(4, 3, 16, 16)
    dist = aug.distribution(x)
    assert dist.names == ("hue", "value_00", "value_01", "value_10", "value_11") and dist.low.shape == (4, 5)
    assert aug.entropy_range[0] == pytest.approx(math.log(0.1) + 4 * math.log(0.4))  # one log-width per anchor
    out = aug(x)
    out.images.mean().backward()
    assert all(p.grad is not None for p in aug.parameters() if p.requires_grad)
    aug.save(tmp_path)
    assert InstaAug.load(tmp_path).families == ("hue", "local_value")
