"""The lighting experiment: its renderer and lights, its patch generator, the per-channel gain family, its config
checks and a quick run end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from instaaug import InstaAug, TransformStack
from instaaug.baselines import Augerino, RandomAugment
from instaaug.cli import main
from instaaug.data import lighting as data
from instaaug.experiments import get_experiment, lighting
from instaaug.experiments.common import apply_overrides
from instaaug.transforms import FAMILIES, adjust_gain, adjust_hsv, linear_to_srgb, srgb_to_linear

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
    torch.testing.assert_close(out, data.render(x, 1 + gain), atol=1e-6, rtol=0)


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


# ----------------------------------------------------------------------------------------------------------------
# The experiment


def test_the_config_rejects_bad_values_with_clear_errors() -> None:
    base = lighting.Config.quick()
    for changes, message in (
        ({"train_lights": (9,)}, "train_lights"),
        ({"train_lights": (1, 1)}, "must not repeat"),
        ({"sweep": (0.1, 0.2)}, "triples"),
        ({"sweep": (0.0, 0.0, 0.0)}, "not all 0"),
        ({"validation": "test"}, "validation must be one of"),
        ({"photos": ("nope",)}, "photos must be names"),
        ({"seeds": ()}, "seeds"),
        ({"methods": ("none", "bogus")}, "methods"),
        ({"random_gain": 2.0}, "random_gain"),
        ({"n_test": 0}, "n_test"),
        ({"seeds": (0, 0)}, "must not repeat"),
        ({"workers": -1}, "workers"),
    ):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(base, **changes)


def test_overrides_parse_the_table4_and_sweep_keys() -> None:
    config = apply_overrides(lighting.Config.quick(), ["train_lights=1,2,4,8", "sweep=0,0.2,0.8", "seeds=0,1"])
    assert config.train_lights == (1, 2, 4, 8) and config.sweep_settings() == [(0.0, 0.2, 0.8)]
    assert config.seeds == (0, 1)
    assert get_experiment("lighting") is lighting


def test_a_quick_run_end_to_end(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["run", "lighting", "--quick", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "lighting"
    assert set(metrics["methods"]) == set(lighting.DEFAULT_METHODS)
    for method, values in metrics["methods"].items():
        for key in ("accuracy", "accuracy_tta", "accuracy_easy", "accuracy_hard", "accuracy_train_light"):
            assert 0 <= values[key] <= 1 and f"{key}_std" in values
        if method != "none":
            assert any(k.endswith("_width") for k in values)
    assert "gain_r_width" in metrics["methods"]["instaaug_gain"]
    assert metrics["methods"]["none"]["accuracy_tta"] == metrics["methods"]["none"]["accuracy"]
    assert set(metrics["methods"]["random_hsv"]["chosen"]) == {"hue", "saturation", "value"}
    assert len(metrics["sweep"]) == 2 and len(metrics["per_light"]["none"]) == 46
    assert set(metrics["targets"]) >= {"instaaug_vs_random_hsv_all", "instaaug_vs_augerino"}
    assert "value_centre_vs_brightness_corr" in metrics["figure_d1"]
    for figure in (lighting.LIGHTS_FIGURE, lighting.RANGES_FIGURE):
        assert figure in metrics["figures"] and (out / figure).stat().st_size > 0
    with pytest.raises(ValueError, match="takes no --data"):
        lighting.run(lighting.Config.quick(), tmp_path / "other", data="x.npz")


@pytest.mark.slow
def test_a_quick_table4_run(tmp_path) -> None:
    config = dataclasses.replace(
        lighting.Config.quick(), train_lights=(1, 2), methods=("none", "random_hsv", "instaaug")
    )
    metrics = lighting.run(config, tmp_path)
    assert set(metrics["table4"]) == {"1", "2"}
    assert set(metrics["table4_ordering"]["instaaug_minus_random_hsv"]) == {"1", "2"}
    assert (tmp_path / lighting.TABLE4_FIGURE).exists()


def test_seeds_flag_gives_that_many_seeds():
    from instaaug.experiments.lighting import Config

    assert Config(seeds=2).seeds == (0, 1)
    with pytest.raises(ValueError, match="seeds"):
        Config(seeds=0)


def _two_seed_config(**changes) -> lighting.Config:
    """A tiny two-seed run of ``none`` and ``random_hsv`` (two sweep settings)."""
    return dataclasses.replace(
        lighting.Config.quick(), methods=("none", "random_hsv"), seeds=(0, 1), n_train=8, n_val=4, **changes
    )


def test_every_seed_is_a_job_and_random_hsv_reuses_the_sweeps_first_seed_run(tmp_path) -> None:
    metrics = lighting.run(_two_seed_config(), tmp_path)
    sweep = metrics["sweep"]
    best = max(range(len(sweep)), key=lambda i: sweep[i]["val_accuracy"])
    chosen = metrics["methods"]["random_hsv"]["chosen"]
    assert chosen == {key: sweep[best][key] for key in ("hue", "saturation", "value")}
    runs = metrics["per_seed"]["random_hsv"]
    assert [r["seed"] for r in runs] == [0, 1] and runs[0]["val_accuracy"] == sweep[best]["val_accuracy"]
    # The chosen setting's first-seed run is the sweep's own (not trained again); the second seed is a new run.
    assert (tmp_path / "sweep" / f"sweep{best}").is_dir() and not (tmp_path / "random_hsv" / "seed0").exists()
    assert (tmp_path / "random_hsv" / "seed1").is_dir() and (tmp_path / "none" / "seed1").is_dir()
    for method, records in metrics["per_seed"].items():
        values = metrics["methods"][method]
        accuracies = [r["accuracy"] for r in records]
        assert values["seeds"] == 2 and values["per_seed_accuracy"] == accuracies
        assert values["accuracy"] == pytest.approx(sum(accuracies) / 2)
        assert values["accuracy_std"] == pytest.approx(float(torch.tensor(accuracies, dtype=torch.float64).std()))
        assert not any(key.startswith("light") for key in (*records[0], *values))  # per-light values: per_light
        # per_light is the mean over seeds of each light's accuracy, whose mean over lights is the accuracy.
        assert sum(metrics["per_light"][method]) / 46 == pytest.approx(values["accuracy"], abs=1e-5)


@pytest.mark.slow
def test_worker_processes_give_the_same_metrics(tmp_path) -> None:
    one = lighting.run(_two_seed_config(workers=1), tmp_path / "one")
    two = lighting.run(_two_seed_config(workers=2), tmp_path / "two")
    for method, values in one["methods"].items():
        same = {k: v for k, v in values.items() if "seconds" not in k}
        assert same == {k: v for k, v in two["methods"][method].items() if "seconds" not in k}
    assert one["per_light"] == two["per_light"] and one["sweep"] == two["sweep"]
