"""Segmentation end to end: masks through train(), the built-in masks, the `segment` experiment's quick run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from instaaug import InstaAug, RandomAugment
from instaaug.config_files import load_config
from instaaug.data.digits import INK_THRESHOLD, cluttered_digits
from instaaug.experiments import segment
from instaaug.experiments.common import apply_overrides
from instaaug.models import UNet
from instaaug.objective import TaskObjective
from instaaug.segmentation import confusion_matrix, mean_iou
from instaaug.train import TrainConfig, predict, train


def squares(n: int, size: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright square on noise and its mask (label 1 on 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g) * 0.3
    masks = torch.zeros(n, 1, size, size, dtype=torch.long)
    for i in range(n):
        s = int(torch.randint(6, 11, (), generator=g))
        r, c = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        x[i, :, r : r + s, c : c + s] += 0.6
        masks[i, :, r : r + s, c : c + s] = 1
    return x.clamp(0, 1), masks


def test_train_with_masks_learns_to_segment_through_augmented_views() -> None:
    x, masks = squares(128)
    test_x, test_masks = squares(64, seed=1)
    torch.manual_seed(0)
    model = UNet(1, 2, width=8, depth=1)
    aug = RandomAugment(("rotation", "flip"), {"rotation": math.pi}, in_channels=1)
    history = train(model, aug, TaskObjective(), (x, masks), TrainConfig(epochs=6, batch_size=32, lr=1e-2))
    assert history[-1]["train_accuracy"] > history[0]["train_accuracy"]
    assert 0 <= history[-1]["train_accuracy"] <= 1
    predicted = predict(model, test_x).argmax(1, keepdim=True)
    _, iou = mean_iou(confusion_matrix(predicted, test_masks, 2))
    assert iou[1] > 0.6, iou


def test_instaaug_learns_from_dense_losses() -> None:
    x, masks = squares(64)
    torch.manual_seed(0)
    model = UNet(1, 2, width=4, depth=1)
    aug = InstaAug(("rotation", "scale"), in_channels=1, width=4, depth=2)
    before = [p.detach().clone() for p in aug.parameters()]
    history = train(model, aug, aug.objective(), (x, masks), TrainConfig(epochs=2, batch_size=32))
    assert all(math.isfinite(h["entropy"]) and math.isfinite(h["task_loss"]) for h in history)
    assert any(not torch.equal(b, p) for b, p in zip(before, aug.parameters(), strict=True))


def test_train_refuses_masks_that_do_not_match_the_images() -> None:
    x, masks = squares(8)
    model = UNet(1, 2, width=4, depth=1)
    with pytest.raises(ValueError, match="match the images"):
        train(model, RandomAugment(("rotation",), in_channels=1), TaskObjective(), (x, masks[..., :20]))
    with pytest.raises(TypeError, match="integer labels"):
        train(model, RandomAugment(("rotation",), in_channels=1), TaskObjective(), (x, masks.float()))


def test_cluttered_digit_masks_label_the_digit_ink() -> None:
    data = cluttered_digits("test")
    assert data.masks.shape == (497, 1, 48, 48) and data.masks.dtype == torch.uint8
    labelled = data.masks[:, 0] > 0
    # Every labelled pixel carries its image's digit class + 1, and lies inside the digit's box.
    assert torch.equal(
        data.masks[:, 0][labelled].long(), (data.labels[:, None, None] + 1).expand_as(labelled)[labelled]
    )
    rows, cols = labelled.any(2), labelled.any(1)
    assert torch.equal(cols.float().argmax(1), data.boxes[:, 0].long())
    assert torch.equal(rows.float().argmax(1), data.boxes[:, 1].long())
    # Ink: the labelled pixels are bright in the image.
    assert (data.images[:, 0][labelled] > INK_THRESHOLD).all()


def test_segment_quick_run(tmp_path) -> None:
    metrics = segment.run(segment.Config.quick(), tmp_path)
    assert set(metrics["methods"]) == set(segment.METHODS)
    for values in metrics["methods"].values():
        for key in ("miou", "miou_tta", "pixel_accuracy", "pixel_accuracy_tta"):
            assert 0 <= values[key] <= 1, (key, values)
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "segment_views.png").is_file()
    aug = InstaAug.load(tmp_path / "instaaug" / "seed0")
    assert aug.families == ("crop", "rotation", "value")
    assert "instaaug" in segment.summary(metrics)


def test_segment_config_refuses_bad_settings(tmp_path) -> None:
    with pytest.raises(ValueError, match="no --data"):
        segment.run(segment.Config.quick(), tmp_path, data="photos/")
    with pytest.raises(ValueError, match="3-channel"):
        segment.Config(transforms=("crop", "hue"))
    with pytest.raises(ValueError, match="methods"):
        segment.Config(methods=("augerino",))
    with pytest.raises(ValueError, match="validation"):
        segment.Config(validation=1300)


def test_cli_refuses_data_for_segment_in_one_line(tmp_path, capsys):
    from instaaug.cli import main

    assert main(["run", "segment", "--quick", "--out", str(tmp_path), "--data", "photos/"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "takes no --data" in err and "Traceback" not in err
    assert main(["run", "segment", "--quick", "--set", "loss_frame=output"]) == 2
    assert "loss_frame" in capsys.readouterr().err


def test_training_keys_live_in_the_nested_train_config_and_old_flat_keys_still_work(tmp_path):
    config = apply_overrides(segment.Config(), ["train.epochs=3", "train.lr=0.01"])
    assert (config.train.epochs, config.train.lr, config.train.pretrain_epochs) == (3, 0.01, 10)
    with pytest.warns(DeprecationWarning, match="'batch_size' is deprecated.*train.batch_size"):
        old = apply_overrides(segment.Config(), ["batch_size=16", "tta_views=3"])
    assert old.train.batch_size == 16 and old.tta_views == 3 and old.train.epochs == 20
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 2, "train": {"lr": 0.02}}))
    with pytest.warns(DeprecationWarning, match="'epochs'"):
        loaded = load_config(path, segment.Config)
    assert (loaded.train.epochs, loaded.train.lr, loaded.train.batch_size) == (2, 0.02, 32)
