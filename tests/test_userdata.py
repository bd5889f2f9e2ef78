"""instaaug.userdata: a user's images and labels, split, cached or streamed, and the regression metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from instaaug.userdata import load_user_data, regression_metrics, stratified_split


def test_stratified_split_holds_out_the_fraction_of_every_class_and_is_seeded():
    labels = np.repeat(np.arange(5), [10, 20, 2, 40, 3])
    train, val = stratified_split(labels, len(labels), 0.25, seed=3)
    assert set(train).isdisjoint(val) and sorted([*train, *val]) == list(range(len(labels)))
    held = np.bincount(labels[val], minlength=5)
    assert held.tolist() == [2, 5, 1, 10, 1]  # round(n/4), at least 1, at most n - 1
    assert np.array_equal(stratified_split(labels, len(labels), 0.25, seed=3)[1], val)
    assert not np.array_equal(stratified_split(labels, len(labels), 0.25, seed=4)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, len(labels), 0.0, seed=0)


def test_streamed_data_give_the_same_images_as_cached_data(photos):
    cached = load_user_data(str(photos), image_size=20, cache="memory", channels=3)
    streamed = load_user_data(str(photos), image_size=20, cache="stream")
    assert streamed.train.streamed and not cached.train.streamed
    assert torch.equal(cached.train.y, streamed.train.y)
    x_stream, y_stream = next(iter(streamed.val.batches(8, workers=0)))
    x_cached, y_cached = next(iter(cached.val.batches(8)))
    assert torch.equal(y_stream, y_cached)
    torch.testing.assert_close(x_stream, x_cached, atol=0, rtol=0)
    batches = streamed.train.training_batches(16, workers=2)
    x, y = next(iter(batches))
    assert x.shape == (16, 3, 20, 20) and y.dtype == torch.int64


def test_tiny_imagenet_layout_uses_its_val_split(tmp_path):
    root = tmp_path / "tiny"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    lines = []
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        Image.fromarray(pixels).save(root / "val" / "images" / f"val_{c}.JPEG")
        lines.append(f"val_{c}.JPEG\t{wnid}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = load_user_data(str(root), image_size=16)
    assert (len(data.train), len(data.val)) == (6, 2) and data.val.y.tolist() == [0, 1]
    assert data.source["val"] == "tiny-imagenet val/"


def test_regression_metrics():
    y = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert regression_metrics(y, y) == {"r2": 1.0, "mae": 0.0, "rmse": 0.0}
    mean = regression_metrics(torch.full_like(y, 2.5), y)
    assert mean["r2"] == pytest.approx(0.0) and mean["mae"] == pytest.approx(1.0)
