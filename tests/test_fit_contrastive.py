"""`instaaug fit --task contrastive`: self-supervised pre-training of the user's encoder on their image folder."""

from __future__ import annotations

import json

import pytest
import torch

from instaaug import Augmenter, RandomAugment
from instaaug.cli import main
from instaaug.data.photos import write_photo_folder
from instaaug.fit_contrastive import InstanceBatches, build_contrastive_augmenter
from instaaug.objective import ContrastiveInstaAugObjective, TaskObjective
from instaaug.usermodel import build_model, load_model_weights

QUICK = ["--quick", "--image-size", "16", "--set", "train.batch_size=32", "--set", "tta_views=[1,2]"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_folder(tmp_path_factory.mktemp("data") / "photos", per_class=4, size=16, photos=("coffee",))


def test_fit_contrastive_trains_an_encoder_and_probes_it(photos, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "--data", str(photos), "--task", "contrastive", "--augment", "crop,value,flip", "--out", str(out)]
    assert main([*argv, *QUICK, "--set", "feature_dim=16"]) == 0
    assert "tta-n2" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "contrastive" and set(metrics["val"]) == {"none", "tta-n1", "tta-n2"}
    assert 0 <= metrics["val"]["tta-n2"]["accuracy"] <= 1
    assert "train_positive_top1" in metrics["history"][-1]
    assert Augmenter.load(out / "augmenter").config.n_copies == 2
    encoder = build_model("small_cnn", in_channels=3, outputs=16, args={})
    load_model_weights(encoder, str(out / "model.safetensors"))  # the encoder alone, without the projection head
    assert (out / "views.png").is_file()


def test_fit_contrastive_refuses_methods_without_two_views_in_one_line(photos, tmp_path, capsys):
    argv = ["fit", "--data", str(photos), "--task", "contrastive", "--method", "none", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "contrastive" in err and len(err.splitlines()) == 1


def test_builders_and_instance_ids():
    aug, objective = build_contrastive_augmenter(
        "instaaug", ("crop", "hue"), channels=3, augment_options={}, random_ranges={}
    )
    assert aug.n_copies == 2 and isinstance(objective, ContrastiveInstaAugObjective)
    assert len(objective.controller.parts) == 2  # one band for the crops, one for the colour intervals
    aug, objective = build_contrastive_augmenter("random", ("crop",), channels=1, augment_options={}, random_ranges={})
    assert isinstance(aug, RandomAugment) and aug.n_copies == 2 and isinstance(objective, TaskObjective)
    with pytest.raises(ValueError, match="labels"):
        build_contrastive_augmenter(
            "instaaug", ("crop",), channels=3, augment_options={"mode": "class", "num_classes": 2}, random_ranges={}
        )
    batches = [(torch.zeros(4, 1, 8, 8), torch.tensor([3, 3, 1, 0])), (torch.zeros(2, 1, 8, 8), torch.tensor([1, 1]))]
    ids = [y.tolist() for _, y in InstanceBatches(batches)]
    assert ids == [[0, 1, 2, 3], [0, 1]] and len(InstanceBatches(batches)) == 2
