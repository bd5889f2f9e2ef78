"""The crop experiment: method construction, the geometry of its metrics, and the quick run end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from instaaug import InstaAug
from instaaug.baselines import NoAugment, RandomCrop
from instaaug.cli import main
from instaaug.data.digits import cluttered_digits
from instaaug.experiments import crop
from instaaug.experiments.common import apply_overrides
from instaaug.transforms import TransformStack


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("crop")
    assert main(["run", "crop", "--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_quick_run_reports_every_method_and_setting(quick_run):
    out, metrics = quick_run
    config = crop.Config.quick()
    expected = {*crop.METHODS, *(f"random-{s:g}" for s in config.random_min_scales)}
    assert set(metrics["methods"]) == expected
    for name, m in metrics["methods"].items():
        for key in ("accuracy", "accuracy_tta", "object_coverage", "mean_crop_scale"):
            # Zooming out (translation and zoom methods) shows more than the image: a crop scale up to 2.
            assert 0 <= m[key] <= (2 if key == "mean_crop_scale" else 1), (name, key, m[key])
            assert m[f"{key}_std"] == 0.0  # one seed
        assert m["seeds"] == 1
    best = metrics["methods"]["random"]
    assert best["min_scale"] in config.random_min_scales
    assert best["accuracy_tta"] == max(
        metrics["methods"][f"random-{s:g}"]["accuracy_tta"] for s in config.random_min_scales
    )
    assert metrics["methods"]["none"]["mean_crop_scale"] == pytest.approx(1.0)
    assert (out / "crops.png").stat().st_size > 10_000
    for name in ("instaaug", "instaaug-global", "instaaug-class", "instaaug-uniform", "augerino"):
        assert isinstance(InstaAug.load(out / name / "seed0"), InstaAug | InstaAug)
    for name, runs in metrics["per_seed"].items():  # every seed's own metrics, next to the summary
        assert [r["seed"] for r in runs] == [config.seed]
        assert runs[0]["accuracy_tta"] == metrics["methods"][name]["accuracy_tta"]


def test_random_crop_sweep_metrics_follow_min_scale(quick_run):
    _, metrics = quick_run
    small, large = (metrics["methods"][f"random-{s:g}"] for s in crop.Config.quick().random_min_scales)
    # E[side] = (min_scale + 1) / 2 for side ~ U[min_scale, 1]; 4 views × 64 test images.
    assert small["mean_crop_scale"] == pytest.approx((0.5 + 1) / 2, abs=0.03)
    assert large["mean_crop_scale"] == pytest.approx((0.85 + 1) / 2, abs=0.02)
    assert large["object_coverage"] > small["object_coverage"]


def test_crop_methods_build_kinds():
    config = crop.Config.quick()
    kinds = {name: crop.METHODS.build(name, config, 10)[0] for name in crop.METHODS if name != "random"}
    assert isinstance(kinds["none"], NoAugment)
    assert kinds["instaaug"].mode == "instance" and kinds["instaaug-global"].mode == "global"
    assert kinds["instaaug-class"].mode == "class"
    assert kinds["instaaug-uniform"].names == ("translate_x", "translate_y", "scale")
    assert isinstance(crop.METHODS.build("random-0.7", config, 10)[0], RandomCrop)
    with pytest.raises(ValueError, match="unknown method"):
        crop.METHODS.build("bogus", config, 10)


def test_jitter_shifts_the_lrp_entropy_band_by_the_jitter_entropy():
    config = dataclasses.replace(crop.Config.quick(), centre_jitter=0.0, size_jitter=0.0)
    aug, objective = crop.METHODS.build("instaaug", config, 10)
    assert aug.jitter_entropy == 0.0
    assert (objective.controller.h_min, objective.controller.h_max) == pytest.approx(config.entropy_range)
    jittered = dataclasses.replace(config, centre_jitter=1.0, size_jitter=0.1)
    aug, objective = crop.METHODS.build("instaaug", jittered, 10)
    assert aug.jitter_entropy < -5
    band = (objective.controller.h_min, objective.controller.h_max)
    assert band == pytest.approx(tuple(h + aug.jitter_entropy for h in config.entropy_range))


def test_view_boxes_of_translation_and_zoom_match_the_warp():
    """A zoom by e^s after a shift t shows the box centred at 0.5 - t·e^(-s) with side e^(-s)."""
    aug = InstaAug(crop.UNIFORM_TRANSFORMS, in_channels=1)
    params = torch.tensor([[0.1, -0.2, 0.5], [0.0, 0.0, 0.0], [-0.25, 0.15, 0.3]])
    boxes = crop.view_boxes(aug, params)
    image = torch.zeros(3, 1, 64, 64)
    image[:, :, 20:28, 36:44] = 1  # a bright square
    warped = TransformStack(crop.UNIFORM_TRANSFORMS)(image, params)
    for b in range(3):
        # Where the square's centre (x 40, y 24 in pixel-edge units) lands after the warp, by its centre of mass.
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        mass = warped[b, 0]
        landed = torch.stack(((mass * xs).sum() / mass.sum(), (mass * ys).sum() / mass.sum())) + 0.5
        cx, cy, w, h = boxes[b]
        expected = (torch.tensor([40.0, 24.0]) / 64 - torch.stack((cx - w / 2, cy - h / 2))) / w * 64
        assert torch.allclose(landed, expected, atol=0.6), (b, landed, expected)


def test_crop_config_validation():
    with pytest.raises(ValueError, match="seeds"):
        crop.Config(seeds=0)
    with pytest.raises(ValueError, match="random_min_scales"):
        crop.Config(random_min_scales=(1.5,))
    with pytest.raises(ValueError, match="methods"):
        crop.Config(methods=("instaaug", "nope"))
    with pytest.raises(ValueError, match="workers"):
        crop.Config(workers=-1)
    with pytest.raises(ValueError, match="aug_lr_schedule"):
        apply_overrides(crop.Config(), ["train.aug_lr_schedule=linear"])
    with pytest.raises(TypeError, match="train must be a TrainConfig"):
        crop.Config(train={"epochs": 1})
    with pytest.raises(ValueError, match="validation"):
        crop.Config(validation=1300)
    with pytest.raises(ValueError, match="validation"):
        crop.Config(validation=-1)
    with pytest.raises(ValueError, match="centre_jitter"):
        crop.Config(centre_jitter=1.5)
    with pytest.raises(ValueError, match="size_jitter"):
        crop.Config(size_jitter=1.0)
    crop.Config(methods=("random",), centre_jitter=1.5)  # LRP keys matter only to the LRP methods


def test_validation_holds_out_the_last_training_images():
    fit, held_out = crop._datasets(crop.Config(n_train=100, validation=30))
    assert fit.images.shape[0] == 70 and held_out.images.shape[0] == 30
    train_images = cluttered_digits("train").images
    assert torch.equal(fit.images, train_images[:70]) and torch.equal(held_out.images, train_images[70:100])
    assert held_out.boxes.shape == (30, 4) and held_out.labels.shape == (30,)
    _, test = crop._datasets(crop.Config(n_train=100, n_test=40))
    assert torch.equal(test.images, cluttered_digits("test").images[:40])


def test_crop_experiment_refuses_data(tmp_path, capsys):
    assert main(["run", "crop", "--quick", "--out", str(tmp_path), "--data", "x.npz"]) == 2
    assert "takes no --data" in capsys.readouterr().err


def test_a_bad_seeds_flag_is_refused_in_one_line(tmp_path, capsys):
    assert main(["run", "crop", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "seeds must be ≥ 1, got 0" in err and len(err.splitlines()) == 1


def test_training_keys_are_nested_and_the_old_flat_ones_still_work():
    config = apply_overrides(crop.Config(), ["train.batch_size=64", "entropy_range=0.4,0.8"])
    assert config.train.batch_size == 64 and config.train.epochs == 24 and config.entropy_range == (0.4, 0.8)
    with pytest.warns(DeprecationWarning, match="'aug_lr' is deprecated.*train.aug_lr"):
        old = apply_overrides(crop.Config(), ["aug_lr=3e-4", "aug_lr_schedule=constant"])
    assert (old.train.aug_lr, old.train.aug_lr_schedule, old.train.batch_size) == (3e-4, "constant", 32)
