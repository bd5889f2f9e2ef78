"""The lighting-shift dataset (``instaaug.data.lighting``): its lights and renderer, and its patch generator."""

from __future__ import annotations

import pytest
import torch

from instaaug.data import lighting as data
from instaaug.transforms import linear_to_srgb, srgb_to_linear

SMALL = {"photos": ("china", "flower"), "n_train": 8, "n_val": 4, "n_test": 4}


# ----------------------------------------------------------------------------------------------------------------
# Lights and rendering


def test_forty_six_lights_split_in_two_groups_by_chromatic_distance() -> None:
    assert len(data.LIGHTS) == 46
    assert [light.id for light in data.LIGHTS] == list(range(1, 47))
    assert data.LIGHTS[data.TRAIN_LIGHT].gain == (1.0, 1.0, 1.0)
    easy, hard = data.LIGHT_GROUPS["easy"], data.LIGHT_GROUPS["hard"]
    assert sorted(easy + hard) == list(range(46))
    assert (len(easy), len(hard)) == (23, 23)
    assert data.TRAIN_LIGHT in easy
    assert data.LIGHTS[28].name == "red" and 28 in hard  # pure red light is hard
    assert all(data.LIGHTS[i].distance <= data.EASY_DISTANCE < data.LIGHTS[j].distance for i in easy for j in hard)
    # Intensity alone does not move a light away from the training light.
    assert data.LIGHTS[12].name == "4500K ×0.5" and data.LIGHTS[12].distance == pytest.approx(0.0, abs=1e-6)


def test_black_bodies_grow_bluer_with_temperature() -> None:
    ratios = [float(data.blackbody_gain(t)[2] / data.blackbody_gain(t)[0]) for t in (2500, 4500, 6500, 9500)]
    assert ratios == sorted(ratios)
    assert ratios[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="1667–25000 K"):
        data.planckian_xy(1000)


@pytest.mark.parametrize("index", range(46))
def test_a_grey_patch_takes_the_illuminants_chromaticity(index: int) -> None:
    # Linear grey 0.2: no light's gain (at most 2.2) clips it, so the lit patch is 0.2 · gain in linear light.
    grey = linear_to_srgb(torch.full((1, 3, 4, 4), 0.2))
    gain = data.light_gains([index])[0]
    lit = srgb_to_linear(data.render(grey, gain))
    chromaticity = lit.mean((0, 2, 3)) / lit.mean((0, 2, 3)).sum()
    torch.testing.assert_close(chromaticity, gain / gain.sum(), atol=1e-5, rtol=1e-4)


def test_a_white_patch_under_a_dim_light_takes_its_colour_and_intensity() -> None:
    white = torch.ones(2, 3, 4, 4)
    gain = torch.tensor([0.3, 0.6, 0.9])
    torch.testing.assert_close(srgb_to_linear(data.render(white, gain)), gain.view(1, 3, 1, 1).expand(2, 3, 4, 4))
    # A bright light clips: white stays white.
    torch.testing.assert_close(data.render(white, torch.tensor([2.0, 2.0, 2.0])), white, atol=1e-6, rtol=0)


def test_the_training_light_is_the_identity_on_the_training_patches() -> None:
    patches = data.make_lighting_dataset(**SMALL)
    lit = data.render(patches.train_images, data.light_gains([data.TRAIN_LIGHT])[0])
    assert (lit - patches.train_images).abs().max() < 1e-5


def test_render_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="RGB images"):
        data.render(torch.zeros(2, 1, 4, 4), torch.ones(3))
    with pytest.raises(ValueError, match="gains must be"):
        data.render(torch.zeros(2, 3, 4, 4), torch.ones(3, 3))


# ----------------------------------------------------------------------------------------------------------------
# Patch generator


def test_the_generator_is_deterministic_balanced_and_fast() -> None:
    a = data.make_lighting_dataset(**SMALL, seed=3)
    b = data.make_lighting_dataset(**SMALL, seed=3)
    c = data.make_lighting_dataset(**SMALL, seed=4)
    for field in ("train_images", "val_images", "test_images", "train_labels", "test_labels"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.train_images, c.train_images)
    assert a.num_classes == 8 and a.class_names[0] == "china-r0c0"
    assert a.train_images.shape == (64, 3, 32, 32) and a.test_images.shape == (32, 3, 32, 32)
    assert torch.equal(torch.bincount(a.train_labels), torch.full((8,), 8))
    assert float(a.train_images.min()) >= 0 and float(a.train_images.max()) <= 1


def test_the_generator_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="stripe"):
        data.make_lighting_dataset(patch=32, stripe=16)
    with pytest.raises(ValueError, match="unknown photograph"):
        data.make_lighting_dataset(photos=("nope",))
    with pytest.raises(ValueError, match="n_train"):
        data.make_lighting_dataset(n_train=0)


def test_lit_copies_spread_patches_over_the_lights_and_mean_hsv() -> None:
    images = torch.full((4, 3, 2, 2), 0.5)
    lit = data.lit_copies(images, (0, 28))  # training light, red light
    assert torch.allclose(lit[0], images[0]) and torch.allclose(lit[2], images[2])
    assert bool((lit[1, 0] > lit[1, 1]).all())  # red light: red above green
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    torch.testing.assert_close(data.mean_hsv(red), torch.tensor([[0.0, 1.0, 1.0]]))
