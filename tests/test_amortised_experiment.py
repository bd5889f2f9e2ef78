"""The amortised experiment: its data, and the quick run end to end through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from instaaug.amortised import load_backbone
from instaaug.cli import main
from instaaug.experiments import amortised


def test_coloured_digits_targets_match_the_images():
    data = amortised.coloured_digits(64, "train", seed=0, size=20)
    assert data.images.shape == (64, 3, 20, 20) and data.images.dtype == torch.float32
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.digit.dtype == data.colour.dtype == torch.int64
    assert data.colour.max() < amortised.NUM_COLOURS and data.digit.max() <= 9
    # The position target is the centre of the ink's bounding box (to within the blank rows of an 8×8 digit).
    ink = data.images.amax(1) > 0.05
    ys, xs = torch.arange(20.0)[None, :, None], torch.arange(20.0)[None, None, :]
    centroid = torch.stack(((ink * xs).sum((1, 2)), (ink * ys).sum((1, 2))), 1) / ink.sum((1, 2))[:, None]
    assert ((centroid + 0.5) / 20 - data.position).abs().amax() < 0.15
    # The hue class is what the colour of the ink says: each class's mean chromaticity differs from the others'.
    chroma = data.images.sum((2, 3)) / data.images.sum((1, 2, 3))[:, None]
    means = torch.stack([chroma[data.colour == c].mean(0) for c in range(amortised.NUM_COLOURS)])
    assert torch.cdist(means, means).add(torch.eye(amortised.NUM_COLOURS)).min() > 0.05
    # Test images come from the held-out source digits; generation is reproducible.
    again = amortised.coloured_digits(64, "train", seed=0, size=20)
    assert torch.equal(again.images, data.images)


def test_quick_run_writes_the_promised_metrics(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "amortised", "--quick", "--out", str(out), "--set", "threads=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["experiment"] == "amortised" and metrics["config"]["threads"] == 1
    assert list(metrics["tasks"]) == ["digit", "colour", "position"]
    # One ordinary model with every augmentation, and one per task's own corner (the task-specific comparison).
    assert set(metrics["methods"]) == {"amortised", "unconditioned", "unconditioned_0,1", "unconditioned_1,0"}
    for method in metrics["methods"].values():
        assert method["chance_loss"] == pytest.approx(math.log(2 * 64 - 1))
    for name, task in metrics["tasks"].items():
        assert task["metric"] == ("r2" if name == "position" else "accuracy")
        assert set(task["learned_i"]) == {"spatial", "appearance"}
        assert all(0 <= v <= 1 for v in task["learned_i"].values())
        assert list(task["score_corners"]) == ["0,1", "1,0", "1,1"]
        assert task["task_corner"] == amortised.TASK_CORNERS[name]
        assert (
            task["score_task_specific"]
            == task["score_ordinary_models"][
                "unconditioned" if name == "digit" else f"unconditioned_{task['task_corner']}"
            ]
        )
        scores = [task["score_learned"], task["score_unconditioned"], task["score_task_specific"]]
        for value in [*scores, *task["score_corners"].values()]:
            assert isinstance(value, float) and value <= 1
            if task["metric"] == "accuracy":
                assert value >= 0
    assert (out / "amortised_i.png").stat().st_size > 5_000
    for name in ("amortised", "unconditioned"):
        net = load_backbone(out / name)
        assert net(torch.rand(2, 3, 16, 16), {"spatial": 1.0, "appearance": 0.0}).shape == (2, net.feature_dim)


def test_config_rejects_unknown_tasks_and_data_files(tmp_path, capsys):
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        amortised.Config(tasks=("digit", "shape"))
    assert main(["run", "amortised", "--quick", "--out", str(tmp_path), "--data", "x.npz"]) == 2
    assert "built-in data only" in capsys.readouterr().err
