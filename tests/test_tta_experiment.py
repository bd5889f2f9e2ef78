"""The TTA experiment: the quick run end to end, the frozen classifier under φ's training, config validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from instaaug import InstaAug
from instaaug.crops import InstaAugCrop
from instaaug.experiments import tta


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tta")
    config = dataclasses.replace(tta.Config.quick(), threads=1, progress=False)
    return config, out, tta.run(config, out)


def test_quick_run_writes_every_entry_with_both_accuracies(quick_run):
    config, out, result = quick_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "tta"
    names = tta.entry_names(config)
    assert names == ["none", "random-n2", "random-n4", "instaaug-n2", "instaaug-n4", "instaaug-top2"]
    assert list(metrics["methods"]) == names == list(result["methods"])
    for name, m in metrics["methods"].items():
        for key in ("accuracy", "accuracy_transfer", "val_accuracy", "val_accuracy_transfer", "object_coverage"):
            assert 0 <= m[key] <= 1, (name, key)
            assert m[f"{key}_std"] == 0  # one seed
        assert m["seeds"] == 1
        assert ("final_entropy" in m) == name.startswith("instaaug")
    assert metrics["methods"]["none"]["object_coverage"] == 1  # the full image holds every digit
    assert (out / "tta_crops.png").is_file() and metrics["figures"] == ["tta_crops.png"]
    assert len(metrics["timings"]) == 1
    assert isinstance(InstaAug.load(out / "seed0" / "phi"), InstaAugCrop)


def test_summary_lists_every_entry(quick_run):
    config, _, result = quick_run
    text = tta.summary(result)
    assert "accuracy (A)" in text and "transfer (B)" in text
    for name in tta.entry_names(config):
        assert name in text


def test_run_refuses_data(tmp_path):
    with pytest.raises(ValueError, match="no --data"):
        tta.run(tta.Config.quick(), tmp_path, data=tmp_path / "digits.npz")


def test_policy_training_leaves_the_frozen_classifier_unchanged():
    config = dataclasses.replace(tta.Config.quick(), n_train=64, aug_epochs=2, progress=False)
    train_set, _, _ = tta.split_data(config)
    data = (train_set.images, train_set.labels)
    # preact_resnet18 has BatchNorm: its running statistics would move if the classifier were in training mode.
    model = tta.train_classifier("preact_resnet18", 4, data, config, seed=0)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert any("running_mean" in k for k in before)
    aug, history = tta.train_policy(model, data, config, seed=0)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert not model.training
    assert len(history) == 2 and all("entropy" in h for h in history)
    # φ did learn: its crop heads start at zero and move away from it.
    assert any(float(h.weight.abs().sum()) > 0 for h in aug.net.heads)


def test_policy_training_refuses_a_trainable_classifier():
    config = tta.Config.quick()
    train_set, _, _ = tta.split_data(config)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 10))
    with pytest.raises(ValueError, match="frozen"):
        tta.train_policy(model, (train_set.images[:8], train_set.labels[:8]), config, seed=0)


def test_views_are_reproducible_and_top_views_are_most_probable():
    config = tta.Config.quick()
    _, val_set, _ = tta.split_data(config)
    aug = tta.build_policy(config).eval()
    with torch.no_grad():
        for h in aug.net.heads:
            h.weight.normal_(generator=torch.Generator().manual_seed(0))
    x = val_set.images[:3]
    fns = tta.view_functions(config, aug)
    n, fn = fns["instaaug-n4"]
    a, boxes_a = fn(x, torch.Generator().manual_seed(1))
    b, boxes_b = fn(x, torch.Generator().manual_seed(1))
    assert n == 4 and a.shape == (12, 1, 48, 48) and torch.equal(a, b) and torch.equal(boxes_a, boxes_b)
    k, top = fns["instaaug-top2"]
    images, boxes = top(x, torch.Generator())
    assert k == 2 and images.shape == (6, 1, 48, 48)
    dist = aug.distribution(x)
    best = dist.probs.argmax(-1)
    torch.testing.assert_close(boxes.view(3, 2, 4)[:, 0], dist.boxes[best])
    torch.testing.assert_close(images, aug.top_views(x, 2))
    full_n, full = fns["none"]
    images, boxes = full(x, torch.Generator())
    assert full_n == 1 and torch.equal(images, x) and torch.equal(boxes, torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 3))


def test_validation_images_are_held_out_of_training():
    config = tta.Config.quick()
    train_set, val_set, test_set = tta.split_data(config)
    assert (len(train_set), len(val_set), len(test_set)) == (config.n_train, config.n_val, config.n_test)
    assert not set(train_set.source.tolist()) & set(val_set.source.tolist())
    assert not set(val_set.source.tolist()) & set(test_set.source.tolist())
    no_val = dataclasses.replace(config, n_val=0)
    assert len(tta.split_data(no_val)[1]) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": 0}, "seeds"),
        ({"n_val": -1}, "n_val"),
        ({"n_train": 1200, "n_val": 200}, "n_train"),
        ({"n_test": 498}, "n_test"),
        ({"pretrain_min_scale": 0.0}, "pretrain_min_scale"),
        ({"pretrain_min_scale": 1.5}, "pretrain_min_scale"),
        ({"transfer_network": "vgg"}, "transfer_network"),
        ({"tta_views": ()}, "tta_views"),
        ({"tta_views": (0, 4)}, "tta_views"),
        ({"top_views": (-1,)}, "top_views"),
        ({"classifier_epochs": 0}, "classifier_epochs"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tta.Config(), **changes)


def test_config_accepts_no_top_views_and_deduplicates():
    config = dataclasses.replace(tta.Config(), top_views=(), tta_views=(4, 4, 10))
    assert config.top_views == () and config.tta_views == (4, 10)
    assert tta.entry_names(config) == ["none", "random-n4", "random-n10", "instaaug-n4", "instaaug-n10"]
