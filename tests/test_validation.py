"""Input validation at the public entry points: messages name the problem."""

from __future__ import annotations

import pytest
import torch

from conftest import structured_images, tiny_aug
from instaaug import InstaAugObjective, TTAWrapper
from instaaug.models import build_classifier
from instaaug.train import TrainConfig, train
from instaaug.validation import check_images, check_labels, check_positive_int, dataclass_from_dict, trusted_inputs


def good() -> torch.Tensor:
    return structured_images(2, 3, 8)


def with_value(value: float) -> torch.Tensor:
    x = good()
    x[1, 2, 3, 4] = value
    return x


BAD_IMAGES = [
    pytest.param((good() * 255).to(torch.uint8), TypeError, r"uint8.*x\.float\(\) / 255", id="uint8"),
    pytest.param(torch.zeros(2, 3, 8, 8, dtype=torch.int64), TypeError, "floating-point dtype", id="int64"),
    pytest.param(good().numpy(), TypeError, "torch.Tensor", id="numpy"),
    pytest.param(good()[0], ValueError, r"\(B, C, H, W\).*3 dimensions", id="rank3"),
    pytest.param(good()[None], ValueError, "5 dimensions", id="rank5"),
    pytest.param(structured_images(2, 1, 8), ValueError, "must have 3 channels, got 1", id="channels"),
    pytest.param(torch.zeros(0, 3, 8, 8), ValueError, "empty batch", id="empty"),
    pytest.param(with_value(float("nan")), ValueError, "NaN or Inf", id="nan"),
    pytest.param(with_value(float("inf")), ValueError, "NaN or Inf", id="inf"),
    pytest.param(with_value(1.5), ValueError, r"\[0, 1\].*1\.5", id="above"),
    pytest.param(with_value(-0.2), ValueError, r"\[0, 1\].*-0\.2", id="below"),
    pytest.param(good() * 255, ValueError, r"\[0, 1\]", id="0-255 floats"),
    pytest.param(torch.rand(2, 3, 1, 8), ValueError, "at least 2×2", id="tiny"),
]


@pytest.mark.parametrize(("x", "error", "match"), BAD_IMAGES)
def test_instaaug_forward_rejects_bad_images(x, error, match):
    aug = tiny_aug(("rotation", "hue"))
    with pytest.raises(error, match=match):
        aug(x)
    with pytest.raises(error, match=match):
        aug.distribution(x)


@pytest.mark.parametrize(("x", "error", "match"), BAD_IMAGES)
def test_train_rejects_bad_images(x, error, match):
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    y = torch.zeros(2, dtype=torch.long)  # the images are checked first
    with pytest.raises(error, match=match):
        train(model, tiny_aug(), InstaAugObjective(), (x, y), TrainConfig(epochs=1, progress=False))


def test_tta_rejects_bad_images():
    tta = TTAWrapper(build_classifier("small_cnn", 3, 2, width=4, depth=2), tiny_aug(), n_copies=2)
    with pytest.raises(TypeError, match="uint8"):
        tta((good() * 255).to(torch.uint8))


def test_tiny_rounding_outside_unit_interval_is_accepted():
    aug = tiny_aug()
    assert aug(with_value(1.0 + 1e-7)).images.shape == (2, 3, 8, 8)
    assert aug(with_value(-1e-7)).images.shape == (2, 3, 8, 8)


BAD_LABELS = [
    pytest.param(torch.tensor([0.0, 1.0]), TypeError, "integer dtype", id="float"),
    pytest.param(torch.tensor([True, False]), TypeError, "integer dtype", id="bool"),
    pytest.param([0, 1], TypeError, "torch.Tensor", id="list"),
    pytest.param(torch.tensor([0, 1, 1]), ValueError, r"shape \(2,\)", id="length"),
    pytest.param(torch.tensor([[0], [1]]), ValueError, r"shape \(2,\)", id="rank2"),
]


@pytest.mark.parametrize(("y", "error", "match"), BAD_LABELS)
def test_forward_rejects_bad_labels(y, error, match):
    with pytest.raises(error, match=match):
        tiny_aug()(good(), y)
    with pytest.raises(error, match=match):
        tiny_aug(mode="class", num_classes=2)(good(), y)


@pytest.mark.parametrize(("y", "error", "match"), [p for p in BAD_LABELS if p.id != "float"])
def test_train_rejects_bad_labels(y, error, match):
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    with pytest.raises(error, match=match):
        train(model, tiny_aug(), InstaAugObjective(), (good(), y), TrainConfig(epochs=1, progress=False))


def test_train_takes_float_targets_as_regression_and_names_a_shape_mismatch():
    """Float targets are regression targets (squared error): a model with 2 outputs for 1 target per input is a
    mistake named as such, not silently broadcast."""
    model = build_classifier("small_cnn", 3, 2, width=4, depth=2)
    config = TrainConfig(epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"outputs \(2, 2\) do not match the targets \(2,\)"):
        train(model, tiny_aug(), InstaAugObjective(), (good(), torch.tensor([0.0, 1.0])), config)
    for bad in (torch.tensor([0.0, float("nan")]), torch.zeros(2, 1, 1)):
        with pytest.raises(ValueError, match="regression targets"):
            train(model, tiny_aug(), InstaAugObjective(), (good(), bad), config)
    history = train(model, tiny_aug(), InstaAugObjective(), (good(), torch.rand(2, 2)), config)
    assert "train_mae" in history[-1] and "train_accuracy" not in history[-1]


@pytest.mark.parametrize("y", [torch.tensor([0, 3]), torch.tensor([-1, 0])])
def test_class_mode_rejects_labels_out_of_range(y):
    aug = tiny_aug(mode="class", num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        aug(good(), y)
    aug.eval()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        aug.distribution(good(), y)


def test_check_images_channels_optional_and_values_skippable():
    check_images(structured_images(1, 5, 4))  # any channel count when not asked
    check_images(with_value(float("nan")), check_values=False)
    with pytest.raises(ValueError, match="training images"):
        check_images(with_value(2.0), name="training images")


def test_check_labels_directly():
    check_labels(torch.tensor([0, 2], dtype=torch.int32), 2, num_classes=3)
    with pytest.raises(ValueError, match="lie in"):
        check_labels(torch.tensor([0, 2]), 2, num_classes=2)


def test_check_positive_int():
    assert check_positive_int(3, "n") == 3
    with pytest.raises(TypeError, match="n must be an int"):
        check_positive_int(True, "n")
    with pytest.raises(TypeError, match="int"):
        check_positive_int(2.0, "n")
    with pytest.raises(ValueError, match="n must be ≥ 1"):
        check_positive_int(0, "n")


def test_dataclass_from_dict_rejects_unknown_keys_and_restores_tuples():
    cfg = dataclass_from_dict(TrainConfig, {"epochs": 2, "batch_size": 8})
    assert cfg.epochs == 2 and cfg.batch_size == 8
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['epoch'\]"):
        dataclass_from_dict(TrainConfig, {"epoch": 2})


def test_trusted_inputs_skips_only_the_value_checks():
    aug = tiny_aug(("rotation",))
    bad = with_value(float("nan"))
    with trusted_inputs():
        aug(bad)  # values are not read inside the block
        check_labels(torch.tensor([0, 7]), 2, num_classes=3)
        with pytest.raises(ValueError, match="dimensions"):
            aug(bad[0])  # shapes still are
    with pytest.raises(ValueError, match="NaN"):
        aug(bad)
    with pytest.raises(ValueError, match="lie in"):
        check_labels(torch.tensor([0, 7]), 2, num_classes=3)
