"""The TTA experiment: the quick run end to end, the frozen classifier under φ's training, config validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from instaaug import InstaAug
from instaaug.config_files import config_from_mapping
from instaaug.experiments import get_experiment, tta
from instaaug.experiments.common import apply_overrides
from instaaug.train import TrainConfig


def _quiet(config: tta.Config, **changes) -> tta.Config:
    """``config`` without progress bars, with ``changes``."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False), **changes)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tta")
    config = _quiet(tta.Config.quick(), threads=1)
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
    assert len(metrics["timings"]) == 1 and metrics["seeds"] == [0]
    assert metrics["per_seed"]["instaaug-n4"][0]["accuracy"] == metrics["methods"]["instaaug-n4"]["accuracy"]
    assert metrics["per_seed"]["instaaug-n4"][0]["seed"] == 0
    assert isinstance(InstaAug.load(out / "seed0" / "phi"), InstaAug)


def test_summary_lists_every_entry(quick_run):
    config, _, result = quick_run
    text = tta.summary(result)
    assert "accuracy (A)" in text and "transfer (B)" in text
    for name in tta.entry_names(config):
        assert name in text


def test_run_refuses_data(tmp_path):
    with pytest.raises(ValueError, match="no --data"):
        tta.run(tta.Config.quick(), tmp_path, data=tmp_path / "digits.npz")


@pytest.mark.parametrize("which", [0, 1], ids=["classifier_a", "classifier_b"])
def test_policy_training_leaves_the_frozen_classifier_unchanged(which):
    config = _quiet(tta.Config.quick(), n_train=64, aug_epochs=2)
    train_set, _, _ = tta.split_data(config)
    data = (train_set.images, train_set.labels)
    # Both classifiers have BatchNorm: its running statistics would move if the classifier were in training mode.
    model = tta.build_classifiers(config)[which]
    assert tta.train_classifier(model, data, config, seed=0) is model
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
    assert any(float(h.weight.detach().abs().sum()) > 0 for h in aug.net.heads)


def test_policy_training_refuses_a_trainable_classifier():
    config = tta.Config.quick()
    train_set, _, _ = tta.split_data(config)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 10))
    with pytest.raises(ValueError, match="frozen"):
        tta.train_policy(model, (train_set.images[:8], train_set.labels[:8]), config, seed=0)


def test_view_sources_are_reproducible_nested_and_top_views_are_most_probable():
    config = tta.Config.quick()
    _, val_set, _ = tta.split_data(config)
    aug = tta.build_policy(config)[0].eval()
    with torch.no_grad():
        for h in aug.net.heads:
            h.weight.normal_(generator=torch.Generator().manual_seed(0))
    x = val_set.images[:3]
    sources = tta.view_sources(config, aug)
    assert [e for s in sources.values() for e in s.entries] == tta.entry_names(config)
    sampled = sources["instaaug"]
    assert sampled.n == 4 and sampled.entries == {"instaaug-n2": 2, "instaaug-n4": 4}
    a, boxes_a = sampled.make(x, torch.Generator().manual_seed(1))
    b, boxes_b = sampled.make(x, torch.Generator().manual_seed(1))
    assert a.shape == (12, 1, 48, 48) and torch.equal(a, b) and torch.equal(boxes_a, boxes_b)
    top = sources["instaaug-top"]
    images, boxes = top.make(x, torch.Generator())
    assert top.n == 2 and images.shape == (6, 1, 48, 48)
    dist = aug.distribution(x)
    torch.testing.assert_close(boxes.view(3, 2, 4)[:, 0], dist.boxes[dist.probs.argmax(-1)])
    torch.testing.assert_close(images, aug.top_views(x, 2))
    images, boxes = sources["none"].make(x, torch.Generator())
    assert torch.equal(images, x) and torch.equal(boxes, torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 3))


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
        ({"train": TrainConfig(epochs=0)}, "train.epochs"),
        ({"aug_epochs": 0}, "aug_epochs"),
        ({"workers": -1}, "workers"),
        ({"transfer_blocks": ()}, "transfer_blocks"),
        ({"transfer_blocks": (1, 0)}, "transfer_blocks"),
        ({"box_scale": 0.0}, "box_scale"),
        ({"levels": (4,)}, "levels"),
        ({"levels": ()}, "levels"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tta.Config(), **changes)


def test_config_accepts_no_top_views_and_deduplicates():
    config = dataclasses.replace(tta.Config(), top_views=(), tta_views=(4, 4, 10))
    assert config.top_views == () and config.tta_views == (4, 10)
    assert tta.entry_names(config) == ["none", "random-n4", "random-n10", "instaaug-n4", "instaaug-n10"]


def test_policy_takes_every_lrp_setting_from_its_own_config():
    """The tta experiment names its φ settings: the crop experiment's jitter defaults do not leak into it."""
    plain = tta.build_policy(tta.Config())[0]
    assert plain.config.centre_jitter == 0.0 and plain.config.size_jitter == 0.0 and plain.jitter_entropy == 0.0
    jittered = tta.build_policy(dataclasses.replace(tta.Config(), centre_jitter=0.5, size_jitter=0.1))[0]
    assert (jittered.config.centre_jitter, jittered.config.size_jitter) == (0.5, 0.1)
    assert jittered.jitter_entropy < 0  # volumes are fractions of the image


def test_tta_experiment_is_registered_for_the_cli():
    assert get_experiment("tta") is tta


def test_two_seeds_are_two_jobs_with_their_own_records_and_timings(tmp_path):
    """One job per seed; ``train.epochs`` trains the classifiers, ``aug_epochs`` φ."""
    config = _quiet(tta.Config.quick(), seeds=2, n_train=64, n_val=16, n_test=32, threads=1, top_views=())
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
    metrics = tta.run(config, tmp_path)
    assert metrics["methods"]["none"]["seeds"] == 2
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["seeds"] == [0, 1] and [t["seed"] for t in saved["timings"]] == [0, 1]
    assert set(saved["timings"][0]) == {
        "seed",
        "classifier_a_seconds",
        "classifier_b_seconds",
        "phi_seconds",
        "evaluation_seconds",
    }
    for name, records in saved["per_seed"].items():
        assert [r["seed"] for r in records] == [0, 1]
        values = [r["accuracy_transfer"] for r in records]
        assert saved["methods"][name]["accuracy_transfer"] == pytest.approx(sum(values) / 2)
    for seed in (0, 1):
        epochs = {
            part: len((tmp_path / f"seed{seed}" / part / "metrics.jsonl").read_text().splitlines())
            for part in ("a", "b", "phi")
        }
        assert epochs == {"a": 2, "b": 2, "phi": 1}


def test_training_keys_are_nested_and_the_old_flat_ones_still_work():
    new = apply_overrides(tta.Config(), ["train.epochs=5", "train.batch_size=16", "train.aug_lr=1e-3", "aug_epochs=3"])
    assert (new.train.epochs, new.train.batch_size, new.train.aug_lr, new.aug_epochs) == (5, 16, 1e-3, 3)
    assert new.train.lr == 3e-3 and tta.Config().train.epochs == 18
    old = ["classifier_epochs=5", "batch_size=16", "aug_lr=1e-3", "aug_epochs=3"]
    with pytest.warns(DeprecationWarning) as caught:
        assert apply_overrides(tta.Config(), old) == new
    assert {str(w.message) for w in caught} >= {
        "config key 'classifier_epochs' is deprecated and will be removed: use 'train.epochs'",
        "config key 'batch_size' is deprecated and will be removed: use 'train.batch_size'",
    }
    for key, value, field in (
        ("lr", "0.01", "lr"),
        ("weight_decay", "0.001", "weight_decay"),
        ("device", "cpu", "device"),
        ("progress", "false", "progress"),
    ):
        with pytest.warns(DeprecationWarning, match=f"'{key}' is deprecated.*train.{field}"):
            config = apply_overrides(tta.Config(), [f"{key}={value}"])
        assert config == apply_overrides(tta.Config(), [f"train.{field}={value}"])
    with pytest.warns(DeprecationWarning) as caught:
        from_file = config_from_mapping(tta.Config, {"classifier_epochs": 5, "batch_size": 16, "aug_lr": 1e-3})
    assert (from_file.train.epochs, from_file.train.batch_size, from_file.train.aug_lr) == (5, 16, 1e-3)
    assert len(caught) == 3 and "use 'train.epochs'" in str(caught[0].message)
    with pytest.raises(ValueError, match="unknown config key 'epochs'"):  # tta never had a flat ``epochs``
        apply_overrides(tta.Config(), ["epochs=3"])
